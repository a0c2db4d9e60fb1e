"""The telescope module as the runtime sees it: its tasks and devices."""

from __future__ import annotations

from toros.runtime.module import Module, Task
from toros.telescope import orders


class TelescopeModule(Module):
    name = "telescope"

    def tasks(self) -> dict[str, Task]:
        return {
            "observe_targets": Task(orders.check_observe_targets),
            "take_calibrations": Task(orders.check_take_calibrations),
            "night_operation": Task(orders.check_night_operation),
            "dome_control": Task(orders.check_dome_control),
        }

    def status_message(self) -> str:
        return f"mode {self.config.telescope.mode}, site {self.config.telescope.site.name}"
