"""Cluster benchmark: a night's per-frame work on the local engine against a Dask cluster of one and two workers.

Two nights of 2048² frames of the simulated sky (0.47"/px, the mount's pointing off by up to 25"), each run by a
preprocessor daemon three times on the same files (restored before each run):

* a raw night calibrated (`calibrate_night`: masters combined on the node, then each science frame calibrated
  and made science-ready through the engine: as many frames in flight as the cluster has worker threads, the
  products, discovery and references then recorded on the node in the night's order);
* a calibrated night reprocessed (`reprocess_night`, from the science step: WCS, zero point, catalog, the frame
  rewritten; as many frames in flight as the engine has threads);

on three engines:

* **local**: `preprocessor.compute.engine: local` — the daemon measures one frame after another, as a night does;
* **dask ×1**: a `dask scheduler` and one single-threaded `dask worker` process on loopback;
* **dask ×2**: the same with two workers (the machine's two cores).

The engine's overhead per frame is that of one worker against the node, over the whole night and in the steady
state (the median interval between two frames done; the first frame of a worker also reads the catalog and the
masters). Every run must leave every frame science-ready with the same zero points (checked).

Usage: .venv/bin/python benchmarks/cluster.py [--frames 12] [--size 2048] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import yaml
from astropy.io import fits

FIELD = (11.888, -25.288)
NIGHT = "2026-11-22"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_raw_night(folder: Path, frames: int, size: int) -> Path:
    """Raw frames: biases, darks, flats and ``frames`` lights of one field with the mount's pointing."""
    from toros.floor.sky_geometry import tan_wcs
    from toros.simulation.ccd import Sensor, make_frame, write_night
    from toros.simulation.sky import Conditions, Scene, SimulatedSky

    sky = SimulatedSky()
    night = folder / "pristine-raw"
    sensor = Sensor(width=size, height=size, overscan=16)
    write_night(night, sensor, lights=0, dark_time=60.0)
    when = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    for number in range(frames):
        true_wcs = tan_wcs(FIELD[0] + 0.004 * (number % 3), FIELD[1] - 0.003, size, size, 0.47)
        conditions = Conditions("r", 0.0, 1.1, 1.6 + 0.05 * number, when + timedelta(minutes=3 * number))
        frame = make_frame(sensor, "light", exposure_time=60.0, sky_rate=sky.photometry.sky_electrons("r", 0.47),
                           scene=Scene(sky, true_wcs, 0.47, conditions), date_obs=conditions.when, seed=number)  # fmt: skip
        frame.header.update(tan_wcs(*FIELD, size, size, 0.47).to_header())
        frame.write(str(night / f"light-{number:03d}.fits"))
    return night


def make_night(folder: Path, frames: int, size: int) -> Path:
    """Calibrated frames of one field (different pointings and seeds) and the reference catalog."""
    from toros.simulation.sky import SimulatedSky, write_calibrated_frame

    sky = SimulatedSky()
    night = folder / "pristine"
    night.mkdir(parents=True)
    for number in range(frames):
        error = (25.0 * ((number % 3) - 1), 20.0 * ((number % 2) - 0.5))
        write_calibrated_frame(
            night / f"frame-{number:03d}_cal.fits", sky, FIELD, size, pointing_error_arcsec=error, seed=number
        )
    sky.stars.write_reference_catalog(folder / "reference.csv", [FIELD], size * 0.47 / 3600 * 0.75 + 0.1)
    return night


class Cluster:
    """A scheduler and ``workers`` single-threaded worker processes on loopback."""

    def __init__(self, workers: int, logs: Path) -> None:
        from distributed import Client

        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        logs.mkdir(parents=True, exist_ok=True)
        out = (logs / "dask.log").open("ab")
        self.processes = [
            subprocess.Popen(
                [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        ]  # fmt: skip
        for number in range(workers):
            self.processes.append(
                subprocess.Popen(
                    [str(VENV_BIN / "dask"), "worker", self.address, "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--host", "127.0.0.1", "--name", f"worker-{number}"],
                    stdout=out, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with Client(self.address, timeout="5s", set_as_default=False) as client:
                    if len(client.scheduler_info(n_workers=-1)["workers"]) == workers:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the cluster did not start; see {logs / 'dask.log'}")

    def stop(self) -> None:
        """The workers first (a worker whose scheduler went first tries to reconnect), then the scheduler."""
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_night(
    folder: Path, pristine: Path, compute: dict, reprocessing: bool
) -> tuple[float, float, dict[str, float], str]:
    """Seconds of the work order (calibrate_night of the raw night, or reprocess_night of the calibrated one),
    the median seconds between two frames made science-ready after the first (the steady state), each frame's
    MAGZP, and the work order's message."""
    from toros.config import load_config
    from toros.daemons import build_daemon
    from toros.generated import toros_pb2 as pb
    from toros.generated.toros_pb2_grpc import FrontDeskStub

    shutil.rmtree(folder / "data", ignore_errors=True)
    (folder / "toros.db").unlink(missing_ok=True)
    night = folder / "data" / ("calibrated" if reprocessing else "raw") / NIGHT
    night.mkdir(parents=True)
    for frame in pristine.iterdir():
        shutil.copy2(frame, night / frame.name)
    document = {
        "logging": {"file": "logs/toros.log", "level": "WARNING"},
        "database": {"path": "toros.db"},
        "storage": {"root": "data"},
        "preprocessor": {
            "port": 0,
            "science": {"reference_catalog": str(folder.parent / "reference.csv")},
            "references": {"enabled": False},
            "compute": compute,
        },
    }
    config_path = folder / "toros.conf.yaml"
    config_path.write_text(yaml.safe_dump(document))
    daemon = build_daemon("preprocessor", load_config(config_path))
    daemon.start()
    order = (
        pb.WorkOrder(id="night", reprocess_night=pb.ReprocessNight(night=NIGHT))
        if reprocessing
        else pb.WorkOrder(id="night", calibrate_night=pb.CalibrateNight(directory=f"raw/{NIGHT}"))
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = FrontDeskStub(channel)
            start = time.perf_counter()
            stub.Submit(order)
            while (status := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="night"))).state not in (3, 4, 5):
                time.sleep(0.05)
            seconds = time.perf_counter() - start
            request = pb.WatchRequest(
                work_order_id="night", kinds=[pb.EVENT_KIND_CALIBRATION_PROGRESS], replay_only=True
            )
            done = [
                e.time.ToDatetime().timestamp()
                for e in stub.Watch(request)
                if e.calibration_progress.stage == "science"
            ]
    finally:
        daemon.stop(grace=1.0)
    products = folder / "data" / "calibrated" / NIGHT
    zero_points = {p.name: float(fits.getheader(p).get("MAGZP", "nan")) for p in sorted(products.glob("*_cal.fits"))}
    steady = float(np.median(np.diff(done))) if len(done) > 2 else seconds
    return seconds, steady, zero_points, status.message


def compare(kind: str, folder: Path, pristine: Path, frames: int, reprocessing: bool, repeat: int) -> None:
    """One night on the three engines (the median of ``repeat`` runs each); prints the figures and a table."""
    runs: dict[str, float] = {}
    steady: dict[str, float] = {}
    reference: dict[str, float] | None = None
    for name, workers in (("local", 0), ("dask ×1", 1), ("dask ×2", 2)):
        cluster = Cluster(workers, folder / "logs") if workers else None
        compute = {"engine": "dask", "scheduler": cluster.address} if cluster else {"engine": "local"}
        wholes, steadies = [], []
        try:
            for _ in range(repeat):  # the engines in turn would be fairer; the median of a few runs will do
                seconds, interval, zero_points, message = run_night(
                    folder / f"{kind}-{name.replace(' ×', '-')}", pristine, compute, reprocessing
                )
                if len(zero_points) != frames or "not science-ready" in message or "computed locally" in message:
                    raise SystemExit(f"{kind}, {name}: {message}")
                reference = reference or zero_points
                if zero_points != reference:
                    raise SystemExit(f"{kind}, {name}: other zero points than the local engine's")
                wholes.append(seconds)
                steadies.append(interval)
        finally:
            if cluster is not None:
                cluster.stop()
        runs[name], steady[name] = float(np.median(wholes)), float(np.median(steadies))
        print(f"{kind}, {name}: {runs[name]:.1f} s, {steady[name]:.2f} s per frame (steady); runs {wholes}", flush=True)
    local = runs["local"] / frames
    overhead = (runs["dask ×1"] - runs["local"]) / frames
    steady_overhead = steady["dask ×1"] - steady["local"]
    print(f"\n{kind} ({frames} frames):\n")
    print("| engine | night | per frame (whole night) | per frame (steady state) | speed-up |")
    print("|---|---|---|---|---|")
    for name, seconds in runs.items():
        print(
            f"| {name} | {seconds:.1f} s | {seconds / frames:.2f} s | {steady[name]:.2f} s "
            f"| {runs['local'] / seconds:.2f}× |"
        )
    print(
        f"\nDask's overhead per frame (one worker against the node): whole night {overhead:+.2f} s = "
        f"{100 * overhead / local:+.1f}% of a frame's {local:.2f} s; steady state {steady_overhead:+.2f} s = "
        f"{100 * steady_overhead / steady['local']:+.1f}% (target ≤ 10%); the same zero points on every engine\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3, help="runs per engine and night (their median is shown)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="toros-cluster-") as temporary:
        folder = Path(temporary)
        print(f"making {arguments.frames} raw and {arguments.frames} calibrated {arguments.size}² frames…", flush=True)
        raw = make_raw_night(folder, arguments.frames, arguments.size)
        calibrated = make_night(folder, arguments.frames, arguments.size)
        compare("calibrate_night", folder, raw, arguments.frames, reprocessing=False, repeat=arguments.repeat)
        compare("reprocess_night", folder, calibrated, arguments.frames, reprocessing=True, repeat=arguments.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
