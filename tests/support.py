"""Test support: a telescope-shaped module whose tasks take clock time, and helpers to run daemons.

The module exercises the runtime with real work: progress, products written atomically, domain events,
failures and cancellation. Run as a script (``python tests/support.py CONFIG PORT_FILE [real]``) it is a daemon process (the drill
telescope, or with ``real`` the telescope module itself) that a test can kill -9.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from astropy.io import fits
from google.protobuf.duration_pb2 import Duration

from toros.config import Config, load_config
from toros.daemons import build_daemon
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.files import atomic_write
from toros.runtime.module import Module, Task
from toros.runtime.server import Daemon
from toros.runtime.workers import TaskContext, TaskFailed
from toros.simulation.ccd import Sensor, make_frame
from toros.telescope import orders

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def write_config(folder: Path, **sections: Any) -> Path:
    """A config file in ``folder`` with test defaults (port 0, fast clock, everything under ``folder``)."""
    data: dict[str, Any] = {
        "logging": {"file": "logs/toros.log", "level": "DEBUG"},
        "database": {"path": "toros.db"},
        "storage": {"root": "data"},
        "clock": {"rate": 20.0},
        "alert": {"port": 0},
        "telescope": {"port": 0},
        "preprocessor": {"port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = folder / "toros.conf.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def toros_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess:
    """Runs the installed ``toros`` command (``input``: its standard input)."""
    return subprocess.run(
        [str(VENV_BIN / "toros"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input,
    )


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Polls until ``predicate`` returns something true; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def glade_plus_line(number: int, ra: float, dec: float, dist: float | None, b: float = 15.0) -> str:
    fields = ["null"] * 40
    fields[0], fields[2] = str(number), f"NGC{number}"
    fields[8], fields[9], fields[10] = f"{ra:.6f}", f"{dec:.6f}", f"{b:.2f}"
    fields[32] = "null" if dist is None else f"{dist:.3f}"
    return " ".join(fields)


NIGHT_TIME = "2026-11-23T03:00:00Z"  # Macon: the Sun at -42 deg
SMALL_CAMERA = {"width": 64, "height": 48, "overscan": 8, "readout_s": 2.0}


def telescope_daemon(config: Config) -> Daemon:
    return build_daemon("telescope", config)


STEP_SECONDS = 1.0  # clock seconds per step of a drill task


class DrillTelescope(Module):
    """Validates like the telescope; dome moves take clock time, observations write one file per target."""

    name = "telescope"

    def tasks(self) -> dict[str, Task[Any]]:
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
        night = self.storage_root / "night"
        for index, target in enumerate(context.task.targets):
            context.check()
            if target.name == "fail":
                raise TaskFailed(f"targets[{index}]: cannot observe {target.name}")
            if target.name == "poison":  # a work order that takes the daemon down, as one exhausting memory does
                os.kill(os.getpid(), signal.SIGKILL)
            if target.name == "stubborn":  # a long step that notices no cancellation
                time.sleep(60)
            path = night / f"{context.id}-{index}.txt"
            with atomic_write(path) as stream:
                stream.write(f"{target.name} {target.ra_deg} {target.dec_deg}\n".encode())
            product = context.add_product(path, "image")
            context.emit(
                image_ready=pb.ImageReady(
                    path=str(path), sha256=product.sha256, size_bytes=product.size_bytes, object=target.name
                )
            )
            context.progress(100.0 * (index + 1) / len(context.task.targets))
        return f"{len(context.task.targets)} targets observed"


KINDS = {
    pb.IMAGE_TYPE_BIAS: "bias",
    pb.IMAGE_TYPE_DARK: "dark",
    pb.IMAGE_TYPE_FLAT: "flat",
    pb.IMAGE_TYPE_LIGHT: "light",
}
SMALL_SENSOR = Sensor(width=96, height=80, overscan=8)


class CameraDrillTelescope(DrillTelescope):
    """The drill telescope with a simulated camera: raw FITS frames from the project's frame generator."""

    def tasks(self) -> dict[str, Task[Any]]:
        return {
            **super().tasks(),
            "take_calibrations": Task(orders.check_take_calibrations, self.take_calibrations),
            "observe_targets": Task(orders.check_observe_targets, self.observe),
        }

    def _expose(self, context: TaskContext, image_type: int, exposure: float, filter: str, name: str) -> None:
        sequence = self.journal.events.last_sequence
        when = datetime(2026, 11, 23, 1, 0, tzinfo=UTC) + timedelta(seconds=sequence)
        frame = make_frame(
            SMALL_SENSOR,
            KINDS[image_type],
            exposure_time=exposure,
            filter=filter,
            seed=sequence,
            date_obs=when,
            object_name=name,
            stars=20 if image_type == pb.IMAGE_TYPE_LIGHT else 0,
        )
        path = self.storage_root / "2026-11-22" / f"{context.id}-{sequence:05d}.fits"
        with atomic_write(path) as stream:
            fits.PrimaryHDU(frame.data, frame.header).writeto(stream)
        product = context.add_product(path, "raw")
        context.emit(
            image_ready=pb.ImageReady(
                path=str(path),
                sha256=product.sha256,
                size_bytes=product.size_bytes,
                image_type=image_type,
                filter=filter,
                exposure_time=Duration(seconds=int(exposure)),
                object=name,
                night="2026-11-22",
            )
        )

    def take_calibrations(self, context: TaskContext) -> str:
        task = context.task
        exposure = task.exposure_time.seconds if task.image_type != pb.IMAGE_TYPE_FLAT else 5
        for _ in range(task.count):
            self._expose(context, task.image_type, exposure, task.filter or "r", KINDS[task.image_type])
        return f"{task.count} {KINDS[task.image_type]} frames"

    def observe(self, context: TaskContext) -> str:
        for target in context.task.targets:
            self._expose(
                context, pb.IMAGE_TYPE_LIGHT, target.exposure_time.seconds or 30, target.filter or "r", target.name
            )
        return f"{len(context.task.targets)} targets observed"


def camera_daemon(config: Config) -> Daemon:
    return Daemon(config, CameraDrillTelescope, "telescope")


def drill_daemon(config: Config) -> Daemon:
    return Daemon(config, DrillTelescope, "telescope")


def dome_order(id: str = "", action: int = pb.DOME_ACTION_OPEN, **fields: Any) -> pb.WorkOrder:
    return pb.WorkOrder(id=id, dome_control=pb.DomeControl(action=action), **fields)


if __name__ == "__main__":
    from toros.daemons import build_daemon
    from toros.runtime.logs import setup_logging

    loaded = load_config(sys.argv[1])
    setup_logging(loaded.logging, "telescope")
    daemon = build_daemon("telescope", loaded) if sys.argv[3:] == ["real"] else drill_daemon(loaded)
    port = daemon.start()
    port_file = Path(sys.argv[2])
    port_file.with_suffix(".tmp").write_text(str(port))
    port_file.with_suffix(".tmp").rename(port_file)
    daemon.serve_until_signal()


class SteppedClock(Clock):
    """Clock time that moves only when someone sleeps or the test sets it: unit tests of the telescope's
    logic (safety, the night) run a whole night in milliseconds, with no thread racing the clock."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start=start)
        self.now_s = start.timestamp()

    def timestamp(self) -> float:
        return self.now_s

    def set(self, moment: datetime) -> None:
        self.now_s = moment.timestamp()

    def sleep(self, clock_seconds: float, interrupt: threading.Event | None = None) -> bool:
        self.now_s += max(0.0, clock_seconds)
        return interrupt is not None and interrupt.is_set()


def confined(context: Any, origin: str) -> list[str]:
    """Fails every request a page makes outside the node (the console's origin); returns the list of them."""
    outside: list[str] = []

    def check(route: Any) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", check)
    return outside
