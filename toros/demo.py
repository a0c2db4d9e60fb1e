"""`make demo`: one observatory from one command — the whole chain on embedded defaults.

The three daemons start on loopback (SQLite, simulated hardware, an accelerated clock on an autumn evening
at Macón when the sample event's region rises); the shipped sample LVK alert (MS181101ab, igwn.gwalert JSON
with its sky map) is replayed as a drill; the alert robot ranks galaxies of a small synthetic catalog and
relays targets; the telescope runs its robotic night (bias and darks, twilight flats, then the targets); the
preprocessor follows the telescope's image stream and calibrates each image as it arrives. The demo ends by
printing where the calibrated images, the target list, the sky-map plot and the night-plan plot are, and
stops the daemons. Everything goes under ./demo/ (ignored by git).

``run_chain`` is also what the end-to-end test runs, with smaller frames and a faster clock.
"""

from __future__ import annotations

import csv
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml
from astropy.io import fits
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toros import MODULES
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.runtime.states import FINAL_STATES
from toros.simulation.galaxies import write_glade_plus
from toros.simulation.sky import StarCatalog

SAMPLES = Path(__file__).resolve().parent / "data" / "alerts"
ALERT = SAMPLES / "MS181101ab-preliminary.json"
REFERENCE_CATALOG = "reference-stars.csv"
REFERENCE_MARGIN_DEG = 0.1  # beyond a frame's half-diagonal: the mount's pointing error and then some
CLOCK_START = "2026-05-01T21:40:00Z"  # Macón, the Sun at +9 deg; the sample region rises during the night


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ChainResult:
    ok: bool
    lines: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    light_frames: int = 0
    calibrated: list[str] = field(default_factory=list)
    science_ready: list[str] = field(default_factory=list)  # calibrated frames with a fitted WCS and MAGZP


def write_config(
    folder: Path,
    *,
    frame: int,
    pixel_scale: float = 0.47,
    rate: float,
    galaxies: int,
    clock_start: str = CLOCK_START,
    exposure_s: float = 60.0,
) -> Path:
    """A node config with free loopback ports and everything under ``folder`` (started afresh)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    catalog = folder / "galaxies-glade+.txt"
    write_glade_plus(catalog, galaxies, seed=7, near_fraction=0.05)
    ports = {module: free_port() for module in MODULES}
    config = {
        "logging": {"file": "logs/toros.log", "level": "INFO"},
        "database": {"path": "toros.db"},
        "storage": {"root": "data"},
        "clock": {"start": clock_start, "rate": rate},
        "alert": {
            "port": ports["alert"],
            "catalog": catalog.name,
            "process_test_alerts": True,
            "targets_per_observatory": 6,
            "exposure": {"exposure_time_s": exposure_s, "exposure_count": 2, "filter": "r"},
            "observatories": [
                {
                    "name": "macon",
                    "latitude": -24.62,
                    "longitude": -67.32,
                    "elevation": 4650,
                    "telescope": f"127.0.0.1:{ports['telescope']}",
                }
            ],
        },
        "telescope": {
            "port": ports["telescope"],
            "mode": "robotic",
            "camera": {
                "width": frame,
                "height": frame,
                "overscan": max(8, frame // 32),
                "readout_s": 5.0,
                "pixel_scale_arcsec": pixel_scale,
            },
            "sky": {"galaxy_catalog": catalog.name},
            "calibrations": {
                "bias_count": 5,
                "dark_count": 5,
                "dark_times_s": [exposure_s],
                "flat_count": 5,
                "flat_filters": ["r"],
            },
        },
        "preprocessor": {
            "port": ports["preprocessor"],
            "http": f"http://127.0.0.1:{ports['preprocessor']}",
            "follow": [{"name": "macon", "address": f"127.0.0.1:{ports['telescope']}"}],
            "science": {"reference_catalog": REFERENCE_CATALOG},
        },
    }
    path = folder / "toros.demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_reference_stars(folder: Path, radius_deg: float) -> int:
    """The site's reference catalog for the fields the alert robot chose: the simulated sky's stars around
    each target (a real site keeps a Gaia or Pan-STARRS extract)."""
    centres = []
    for targets in (folder / "data" / "alerts").glob("*/*/targets-*.csv"):
        with open(targets, newline="", encoding="utf-8") as stream:
            centres += [(float(row["ra_deg"]), float(row["dec_deg"])) for row in csv.DictReader(stream)]
    return StarCatalog().write_reference_catalog(folder / REFERENCE_CATALOG, centres, radius_deg)


def wait_serving(port: int, logs: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"a daemon on port {port} did not start; see {logs}")


class Node:
    """The three daemons of one node as processes (so that they can be stopped, killed and restarted)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.folder = config.parent
        self.ports = {m: yaml.safe_load(config.read_text())[m]["port"] for m in MODULES}
        self.logs = self.folder / "logs" / "toros.log"
        self.processes: dict[str, subprocess.Popen] = {}
        self._channels: dict[str, grpc.Channel] = {}

    def start(self, module: str) -> None:
        command = [sys.executable, "-m", "toros.cli", "serve", module, "--config", str(self.config)]
        self.processes[module] = subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=self.folder)
        wait_serving(self.ports[module], self.logs)

    def kill(self, module: str) -> None:
        """kill -9: no goodbye, as in a power cut or a crash."""
        process = self.processes.pop(module)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self._close(module)

    def stop(self) -> dict[str, int]:
        """SIGTERM to every daemon still running; their exit codes."""
        for module in list(self._channels):
            self._close(module)
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        codes = {module: process.wait(timeout=60) for module, process in self.processes.items()}
        self.processes.clear()
        return codes

    def stub(self, module: str) -> FrontDeskStub:
        if module not in self._channels:
            self._channels[module] = grpc.insecure_channel(f"127.0.0.1:{self.ports[module]}")
        return FrontDeskStub(self._channels[module])

    def _close(self, module: str) -> None:
        channel = self._channels.pop(module, None)
        if channel is not None:
            channel.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "toros.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            cwd=self.folder,
        )

    def work_orders(self, module: str, task: str) -> dict[str, pb.WorkOrderUpdate]:
        """The latest update of each work order of ``task`` (from the event journal)."""
        latest: dict[str, pb.WorkOrderUpdate] = {}
        request = pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_WORK_ORDER_UPDATE])
        for event in self.stub(module).Watch(request, timeout=30):
            if event.work_order_update.task == task or event.work_order_id in latest:
                latest[event.work_order_id] = event.work_order_update
        return latest

    def light_frames(self) -> list[pb.ImageReady]:
        events = self.stub("telescope").Watch(
            pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_IMAGE_READY]), timeout=30
        )
        return [e.image_ready for e in events if e.image_ready.image_type == pb.IMAGE_TYPE_LIGHT]

    def progress(self) -> tuple[str, bool, int, int]:
        """(a line for people, whether the targets and their calibration are all finished, lights, calibrated)."""
        telescope = self.stub("telescope").GetStatus(pb.GetStatusRequest(), timeout=10)
        observing = self.work_orders("telescope", "observe_targets")
        lights = len(self.light_frames())
        follows = self.work_orders("preprocessor", "calibrate_images")
        calibrated = sum(u.state == pb.WORK_ORDER_STATE_DONE for u in follows.values())
        state = telescope.activity
        line = (
            f"{telescope.clock_time.ToDatetime():%H:%M} UTC: telescope {state}, {lights} science frames; "
            f"preprocessor {calibrated} calibrated"
        )
        finished = (
            bool(observing)
            and all(u.state in FINAL_STATES for u in observing.values())
            and all(u.state in FINAL_STATES for u in follows.values())
            and len(follows) >= lights
        )
        return line, finished, lights, calibrated


def run_chain(
    folder: Path,
    *,
    frame: int = 2048,
    pixel_scale: float = 0.47,
    rate: float = 300.0,
    galaxies: int = 20000,
    timeout: float = 540.0,
    say: Callable[[str], None] = print,
) -> ChainResult:
    """Runs the whole chain under ``folder`` and stops the daemons; never leaves a daemon running."""
    node = Node(write_config(folder, frame=frame, pixel_scale=pixel_scale, rate=rate, galaxies=galaxies))
    result = ChainResult(ok=False)
    say(f"starting alert, telescope and preprocessor on loopback (config {node.config})")
    try:
        for module in MODULES:
            node.start(module)
            say(f"{module} is serving on 127.0.0.1:{node.ports[module]}")
        say(f"replaying the sample LVK alert {ALERT.name} (a drill)")
        replay = node.cli("alert", "replay", str(ALERT), "--wait")
        for line in replay.stdout.strip().splitlines():
            say(f"  {line.strip()}")
        if replay.returncode != 0:
            raise RuntimeError(f"the alert was not processed: {replay.stderr.strip() or replay.stdout.strip()}")
        stars = write_reference_stars(folder, frame * pixel_scale / 3600.0 * 0.71 + REFERENCE_MARGIN_DEG)
        say(f"reference catalog: {stars} synthetic stars around the targets ({REFERENCE_CATALOG})")
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            line, finished, lights, calibrated = node.progress()
            if line != shown:
                say(line)
                shown = line
            if finished:
                result.light_frames, result.ok = lights, calibrated == lights > 0
                for id, update in node.work_orders("telescope", "observe_targets").items():
                    say(f"telescope work order {id}: {update.message}")
                break
            time.sleep(1.0)
        else:
            say(f"the chain did not finish within {timeout:.0f} s; see {node.logs}")
    except (RuntimeError, grpc.RpcError) as exc:
        say(f"demo failed: {exc}")
    finally:
        result.exit_codes = node.stop()
    say("daemons stopped (exit codes: " + ", ".join(f"{m} {c}" for m, c in result.exit_codes.items()) + ")")
    result.calibrated = sorted(str(p) for p in (folder / "data" / "calibrated").rglob("*_cal.fits"))
    result.science_ready = [p for p in result.calibrated if "MAGZP" in fits.getheader(p)]
    result.ok = result.ok and not any(result.exit_codes.values())
    return result


def main() -> int:
    folder = Path("demo").resolve()
    result = run_chain(folder, say=lambda line: print(f"demo: {line}", flush=True))
    data = folder / "data"
    print("demo: where things are:")
    for label, pattern in (
        ("calibrated images", "calibrated/*"),
        ("source catalogs", "calibrated/*/*_cat.fits"),
        ("target list", "alerts/*/*/targets-*.csv"),
        ("sky-map plot", "alerts/*/*/skymap.png"),
        ("night-plan plot", "20*/plan.png"),
        ("raw frames", "20*"),
    ):
        found = sorted(data.glob(pattern))
        print(
            f"  {label:18s} {found[0] if found else '(none)'}"
            + (f" (+{len(found) - 1} more)" if len(found) > 1 else "")
        )
    print(f"  {'logs':18s} {folder / 'logs' / 'toros.log'}")
    print(
        f"demo: {len(result.calibrated)} calibrated frames of {result.light_frames} science frames, "
        f"{len(result.science_ready)} science-ready (fitted WCS, zero point, source catalog)"
        + ("" if result.ok else " — FAILED")
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
