"""Test support: a telescope-shaped module whose tasks take clock time, and helpers to run daemons.

The module exercises the runtime with real work: progress, products written atomically, domain events,
failures and cancellation. Run as a script (``python tests/support.py CONFIG``) it is a daemon process that a
test can kill -9.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from toros.generated import toros_pb2 as pb
from toros.runtime.config import Config, load_config
from toros.runtime.files import atomic_write
from toros.runtime.module import Module, Services, Task
from toros.runtime.server import Daemon
from toros.runtime.workers import TaskContext, TaskFailed
from toros.telescope import orders

STEP_SECONDS = 1.0  # clock seconds per step of a drill task


class DrillTelescope(Module):
    """Validates like the telescope; dome moves take clock time, observations write one file per target."""

    name = "telescope"

    def tasks(self) -> dict[str, Task]:
        return {
            "dome_control": Task(orders.check_dome_control, self.move_dome),
            "observe_targets": Task(orders.check_observe_targets, self.observe),
            "take_calibrations": Task(orders.check_take_calibrations),
            "night_operation": Task(orders.check_night_operation),
        }

    def move_dome(self, context: TaskContext) -> str:
        for step in range(4):
            context.sleep(STEP_SECONDS)
            context.progress(25.0 * (step + 1), f"step {step + 1} of 4")
        return f"dome {pb.DomeAction.Name(context.task.action)} done"

    def observe(self, context: TaskContext) -> str:
        night = Path(self.config.storage.root) / "night"
        for index, target in enumerate(context.task.targets):
            context.check()
            if target.name == "fail":
                raise TaskFailed(f"targets[{index}]: cannot observe {target.name}")
            path = night / f"{context.id}-{index}.txt"
            with atomic_write(path) as stream:
                stream.write(f"{target.name} {target.ra_deg} {target.dec_deg}\n".encode())
            product = context.add_product(path, "image")
            context.emit(image_ready=pb.ImageReady(path=str(path), sha256=product.sha256, size_bytes=product.size_bytes, object=target.name))
            context.progress(100.0 * (index + 1) / len(context.task.targets))
        return f"{len(context.task.targets)} targets observed"


def drill_daemon(config: Config) -> Daemon:
    return Daemon(config, DrillTelescope, "telescope")


def dome_order(id: str = "", action: int = pb.DOME_ACTION_OPEN, **fields: Any) -> pb.WorkOrder:
    return pb.WorkOrder(id=id, dome_control=pb.DomeControl(action=action), **fields)


if __name__ == "__main__":
    from toros.runtime.logs import setup_logging

    loaded = load_config(sys.argv[1])
    setup_logging(loaded.logging, "telescope")
    daemon = drill_daemon(loaded)
    port = daemon.start()
    port_file = Path(sys.argv[2])
    port_file.with_suffix(".tmp").write_text(str(port))
    port_file.with_suffix(".tmp").rename(port_file)
    daemon.serve_until_signal()
