"""Test support: a telescope-shaped module whose tasks take clock time, and helpers to run daemons.

The module exercises the runtime with real work: progress, products written atomically, domain events,
failures and cancellation. Run as a script (``python tests/support.py CONFIG PORT_FILE [real]``) it is a daemon process (the drill
telescope, or with ``real`` the telescope module itself) that a test can kill -9.
"""

from __future__ import annotations

import json
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

import grpc
import pytest
import yaml
from astropy.io import fits
from google.protobuf.duration_pb2 import Duration

import toros
from toros.config import Config, load_config
from toros.daemons import build_daemon
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.preprocessor.library import MasterLibrary
from toros.preprocessor.pipeline import NightCalibration
from toros.preprocessor.settings import CalibrationConfig
from toros.runtime.clock import Clock
from toros.runtime.config import DatabaseConfig
from toros.runtime.files import atomic_write
from toros.runtime.module import Module, Task
from toros.runtime.server import Daemon
from toros.runtime.states import FINAL_STATES
from toros.runtime.workers import TaskContext, TaskFailed
from toros.simulation.ccd import Sensor, make_frame
from toros.simulation.sky import Conditions, Galaxy, Kilonova, SimulatedSky, StarCatalog, write_calibrated_frame
from toros.telescope import orders

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SUPPORT_SCRIPT = Path(__file__).resolve()  # run as a daemon process (a test can kill -9 it)
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


# -- shared by the tests of several rooms ----------------------------------------------------------------------

DAY_TIME = "2026-11-22T18:00:00Z"  # local early afternoon


def run(stub: FrontDeskStub, order: pb.WorkOrder, timeout: float = 60.0) -> pb.WorkOrderStatus:
    receipt = stub.Submit(order)
    return wait_for(
        lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id=receipt.id))).state in FINAL_STATES and s,
        timeout=timeout,
    )


def finished(stub: FrontDeskStub, id: str) -> pb.WorkOrderStatus | None:
    """The work order once it has finished; None while it runs or before it exists."""
    try:
        status = stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id))
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return status if status.state in FINAL_STATES else None


def refused(stub: FrontDeskStub, order: pb.WorkOrder) -> str:
    with pytest.raises(grpc.RpcError) as error:
        stub.Submit(order)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION, error.value.details()
    return error.value.details()


def calibrations(image_type: int, count: int, **fields: Any) -> pb.TakeCalibrations:
    return pb.TakeCalibrations(image_type=image_type, count=count, **fields)


def step(value: int) -> pb.NightOperation:
    return pb.NightOperation(step=value)


def images(stub: FrontDeskStub, work_order_id: str = "") -> list[pb.Event]:
    request = pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_IMAGE_READY], work_order_id=work_order_id)
    return list(stub.Watch(request))


def devices(stub: FrontDeskStub) -> dict[str, pb.Device]:
    return {d.name: d for d in stub.GetStatus(pb.GetStatusRequest()).devices}


DATA = Path(toros.__file__).parent / "data" / "alerts"
MULTIORDER = DATA / "MS181101ab-bayestar.multiorder.fits"


def done(stub, id):
    return wait_for(
        lambda: (
            (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id))).state
            in (pb.WORK_ORDER_STATE_DONE, pb.WORK_ORDER_STATE_FAILED)
            and s
        ),
        timeout=60,
    )


def submit(stub, name_or_bytes, id):
    payload = name_or_bytes if isinstance(name_or_bytes, bytes) else (DATA / name_or_bytes).read_bytes()
    return stub.Submit(
        pb.WorkOrder(id=id, process_alert=pb.ProcessAlert(payload=payload, source=str(name_or_bytes)[:50]))
    )


class Message:
    def __init__(self, offset: int, value: bytes, error: str | None = None) -> None:
        self._offset, self._value, self._error = offset, value, error

    def topic(self):
        return "igwn.gwalert"

    def partition(self):
        return 0

    def offset(self):
        return self._offset

    def value(self):
        return self._value

    def error(self):
        return self._error


class FakeConsumer:
    """Delivers from the last committed offset, like a broker with a fixed consumer group."""

    def __init__(self, log: list[bytes], committed: list[int], journal, crash_on_commit: int | None = None) -> None:
        self.log, self.committed, self.journal, self.crash_on_commit = log, committed, journal, crash_on_commit
        self.position = committed[-1] + 1 if committed else 0

    def subscribe(self, topics):
        assert topics == ["igwn.gwalert"]

    def poll(self, timeout):
        if self.position >= len(self.log):
            time.sleep(min(timeout, 0.05))
            return None
        self.position += 1
        return Message(self.position - 1, self.log[self.position - 1])

    def commit(self, message, asynchronous):
        assert not asynchronous
        key = f"kafka-igwn.gwalert-0-{message.offset()}"
        recorded = self.journal.get(key) is not None or any(
            e.work_order_id == key for e in self.journal.read_events(0, 100000)
        )
        assert recorded, "committed before the notice (or its refusal) was journaled"
        if message.offset() == self.crash_on_commit:
            self.crash_on_commit = None
            raise RuntimeError("connection lost")
        self.committed.append(message.offset())

    def close(self):
        pass


SENSOR = Sensor(width=192, height=160, overscan=12)


class Recorder:
    def __init__(self) -> None:
        self.stages: list[tuple[str, int, int]] = []
        self.products: list[tuple[Path, str]] = []

    def stage(self, stage: str, done: int, total: int, path: str = "") -> None:
        self.stages.append((stage, done, total))

    def product(self, path: Path, kind: str, sha256: str | None = None) -> None:
        self.products.append((path, kind))

    def check(self) -> None:
        pass


def calibrate(root: Path, paths: list[Path], night: str | None = "2026-11-23", **settings) -> tuple:
    library = MasterLibrary(DatabaseConfig(path=root / "toros.db"))
    recorder = Recorder()
    pipeline = NightCalibration(
        CalibrationConfig(**settings), library, root, longitude_deg=-67.32, work_order_id="wo-test", now=lambda: 0.0
    )
    result = pipeline.run(paths, recorder, night=night)
    library.close()
    return result, recorder


def launch(config: Path, port_file: Path, kind: str = "drill") -> tuple[subprocess.Popen, int]:
    """A daemon as a process (a test can kill -9 it): the drill telescope, the ``real`` telescope or the
    ``alert`` daemon."""
    port_file.unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, str(SUPPORT_SCRIPT), str(config), str(port_file), kind], stderr=subprocess.DEVNULL
    )
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), timeout=30))
    return process, port


# -- the kilonova pair (difference imaging) ----------------------------------------------------------------------

FIELD = (11.888, -25.288)
EVENT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
WHEN = EVENT + timedelta(days=1)
SIZE = 768
SCALE = 0.47
HOST = Galaxy("NGC-TEST", FIELD[0] + 0.012, FIELD[1] + 0.006, 14.5, 60.0)
KILONOVA_OFFSET = (6.0, 3.0)  # arcsec of RA and Dec from the host's centre: 6", 1.8 kpc (GW170817's was 2 kpc)
ZTF = TESTS / "data" / "ztf"  # real ZTF packets (see its README)


def ztf_cutouts(packet: str, folder: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A ZTF packet's science and template cut-outs as FITS files with a WCS (ZTF's 1.01"/px, the candidate at
    the centre: the cut-outs carry none) and ZTF's zero point on the science one; nothing else (no FWHM, no
    template zero point). A JPEG cut-out is written as it is. Returns the candidate record too."""
    import gzip
    import io

    import fastavro
    import numpy as np

    from toros.floor.sky_geometry import tan_wcs

    with open(ZTF / f"{packet}.avro", "rb") as stream:
        record = next(iter(fastavro.reader(stream)))
    assert isinstance(record, dict)
    candidate = record["candidate"]
    paths = []
    for kind in ("Science", "Template"):
        raw = record[f"cutout{kind}"]["stampData"]
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        path = folder / f"{packet}-{kind.lower()}.fits"
        paths.append(path)
        if not data.startswith(b"SIMPLE"):
            path.write_bytes(data)
            continue
        pixels = fits.open(io.BytesIO(data))[0].data.astype(np.float32)
        header = fits.Header()
        header.update(tan_wcs(candidate["ra"], candidate["dec"], *pixels.shape[::-1], 1.012).to_header())
        header["GAIN"], header["FILTER"] = 6.2, "r"
        if kind == "Science" and candidate.get("magzpsci") is not None:
            header["MAGZP"] = candidate["magzpsci"]
        fits.PrimaryHDU(pixels, header).writeto(path)
    return paths[0], paths[1], candidate


def science_ready_with_truth(path: Path, truth, fwhm_arcsec: float, **cards) -> Path:
    """What the science step leaves: the true zero point and the FWHM in the header (the WCS is already true)."""
    with fits.open(path, mode="update") as hdus:
        hdus[0].header["MAGZP"] = round(truth.magzp, 4)
        hdus[0].header["FWHM"] = round(fwhm_arcsec / SCALE, 3)
        hdus[0].header["LIMMAG"] = 21.0
        for key, value in cards.items():
            hdus[0].header[key] = value
    return path


def kilonova_pair(folder: Path) -> dict[str, Any]:
    """A deep reference a month before the event and a new frame a day after it, with an AT2017gfo-like kilonova
    at 60 Mpc 6" from its host's nucleus; the frames' pointings differ by 20"."""
    stars = StarCatalog()
    kilonova = Kilonova(HOST.ra_deg + KILONOVA_OFFSET[0] / 3600, HOST.dec_deg + KILONOVA_OFFSET[1] / 3600, EVENT, 60.0)
    reference_path, new_path = folder / "ref.fits", folder / "new.fits"
    reference = write_calibrated_frame(
        reference_path, SimulatedSky(stars, [HOST]), (FIELD[0] + 0.005, FIELD[1] - 0.003), SIZE,
        pointing_error_arcsec=(0.0, 0.0), pixel_scale_arcsec=SCALE,
        conditions=Conditions("r", 300.0, 1.1, 1.5, EVENT - timedelta(days=30)), seed=11,
    )  # fmt: skip
    new = write_calibrated_frame(
        new_path, SimulatedSky(stars, [HOST], [kilonova]), FIELD, SIZE, pointing_error_arcsec=(0.0, 0.0),
        pixel_scale_arcsec=SCALE, conditions=Conditions("r", 120.0, 1.2, 2.0, WHEN), seed=12,
    )  # fmt: skip
    science_ready_with_truth(reference_path, reference, 1.5)
    science_ready_with_truth(
        new_path, new, 2.0, ALERTID="S261122a", EVENTT=EVENT.strftime("%Y-%m-%dT%H:%M:%S.000"), DRILL=False
    )
    return {"folder": folder, "reference": reference_path, "new": new_path, "kilonova": kilonova, "truth": new}


if __name__ == "__main__":
    from toros.daemons import build_daemon
    from toros.runtime.logs import setup_logging

    loaded = load_config(sys.argv[1])
    setup_logging(loaded.logging, "telescope")
    kind = sys.argv[3] if len(sys.argv) > 3 else "drill"  # real: the telescope module; alert: the alert daemon
    if kind == "alert":
        setup_logging(loaded.logging, "alert")
    daemon = {"real": telescope_daemon, "alert": lambda c: build_daemon("alert", c)}.get(kind, drill_daemon)(loaded)
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


def avro_notice(notice: dict[str, Any], schema: Any = None, records: int = 1) -> bytes:
    """An igwn.gwalert JSON notice as LVK writes it in Avro (``igwn.alerts.Alert``, the schema LVK publishes, in
    an object container as Hopskotch carries it): the sky maps are bytes (base64 in JSON), the rest the same."""
    import base64
    import io
    from importlib import resources

    import fastavro

    if schema is None:
        avsc = resources.files("igwn_gwalert_schema") / "igwn.alerts.Alert.avsc"
        schema = fastavro.parse_schema(json.loads(avsc.read_text()))
    record = json.loads(json.dumps(notice))
    for part, key in (("event", "skymap"), ("external_coinc", "combined_skymap")):
        if isinstance(record.get(part), dict) and record[part].get(key):
            record[part][key] = base64.b64decode(record[part][key])
    if "superevent_id" in record:
        record.setdefault("urls", {})
    out = io.BytesIO()
    fastavro.writer(out, schema, [record] * records)
    return out.getvalue()
