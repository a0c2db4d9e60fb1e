"""The preprocessor module as the runtime sees it: its tasks."""

from __future__ import annotations

from toros.preprocessor import orders
from toros.runtime.module import Module, Task


class PreprocessorModule(Module):
    name = "preprocessor"

    def tasks(self) -> dict[str, Task]:
        return {
            "calibrate_night": Task(orders.check_calibrate_night),
            "calibrate_images": Task(orders.check_calibrate_images),
        }
