"""The alert module as the runtime sees it: its tasks."""

from __future__ import annotations

from toros.alert import orders
from toros.runtime.module import Module, Task


class AlertModule(Module):
    name = "alert"

    def tasks(self) -> dict[str, Task]:
        return {"process_alert": Task(orders.check_process_alert)}

    def status_message(self) -> str:
        observatories = ", ".join(o.name for o in self.config.alert.observatories) or "none configured"
        return f"observatories: {observatories}"
