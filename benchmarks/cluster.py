"""Cluster benchmark: a night's science step on the local engine against a Dask cluster of one and two workers.

A night of calibrated 2048² frames of the simulated sky (0.47"/px, the mount's pointing off by up to 25") is
reprocessed (`reprocess_night`, from the science step: WCS, zero point, catalog, the frame rewritten) by a
preprocessor daemon, three times on the same frames (restored before each run):

* **local**: `preprocessor.compute.engine: local` — the daemon measures one frame after another, as a night does;
* **dask ×1**: a `dask scheduler` and one single-threaded `dask worker` process on loopback;
* **dask ×2**: the same with two workers (the machine's two cores).

The engine's overhead per frame is (dask ×1 − local) / frames, against the local time per frame (target
≤ 10%). Every run must leave every frame science-ready with the same zero points (checked).

Usage: .venv/bin/python benchmarks/cluster.py [--frames 12] [--size 2048]
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


def reprocess(folder: Path, pristine: Path, compute: dict) -> tuple[float, float, dict[str, float], str]:
    """Seconds of the reprocess_night work order, the median seconds between two frames done after the first
    (the steady state: the first frame also pays the catalog's reading), each frame's MAGZP, and its message."""
    from toros.config import load_config
    from toros.generated import toros_pb2 as pb
    from toros.generated.toros_pb2_grpc import FrontDeskStub
    from toros.preprocessor.module import PreprocessorModule
    from toros.runtime.server import Daemon

    night = folder / "data" / "calibrated" / NIGHT
    shutil.rmtree(folder / "data", ignore_errors=True)
    (folder / "toros.db").unlink(missing_ok=True)
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
    daemon = Daemon(load_config(config_path), PreprocessorModule, "preprocessor")
    daemon.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            stub = FrontDeskStub(channel)
            start = time.perf_counter()
            stub.Submit(pb.WorkOrder(id="again", reprocess_night=pb.ReprocessNight(night=NIGHT)))
            while (status := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="again"))).state not in (3, 4, 5):
                time.sleep(0.05)
            seconds = time.perf_counter() - start
            request = pb.WatchRequest(
                work_order_id="again", kinds=[pb.EVENT_KIND_CALIBRATION_PROGRESS], replay_only=True
            )
            done = [
                e.time.ToDatetime().timestamp()
                for e in stub.Watch(request)
                if e.calibration_progress.stage == "science"
            ]
    finally:
        daemon.stop(grace=1.0)
    zero_points = {p.name: float(fits.getheader(p)["MAGZP"]) for p in sorted(night.glob("*_cal.fits"))}
    steady = float(np.median(np.diff(done))) if len(done) > 2 else seconds
    return seconds, steady, zero_points, status.message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=2048)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="toros-cluster-") as temporary:
        folder = Path(temporary)
        print(f"making {arguments.frames} calibrated {arguments.size}² frames…", flush=True)
        pristine = make_night(folder, arguments.frames, arguments.size)
        runs: dict[str, float] = {}
        steady: dict[str, float] = {}
        reference: dict[str, float] | None = None
        for name, workers in (("local", 0), ("dask ×1", 1), ("dask ×2", 2)):
            cluster = Cluster(workers, folder / "logs") if workers else None
            compute = {"engine": "dask", "scheduler": cluster.address} if cluster else {"engine": "local"}
            try:
                seconds, steady[name], zero_points, message = reprocess(
                    folder / name.replace(" ×", "-"), pristine, compute
                )
            finally:
                if cluster is not None:
                    cluster.stop()
            if not message.startswith(f"{NIGHT}: {arguments.frames} of {arguments.frames} frames science-ready"):
                raise SystemExit(f"{name}: {message}")
            if "computed locally" in message:
                raise SystemExit(f"{name}: the cluster was not used: {message}")
            reference = reference or zero_points
            if zero_points != reference:
                raise SystemExit(f"{name}: other zero points than the local engine's")
            runs[name] = seconds
            print(f"{name:8s} {seconds:7.1f} s  {steady[name]:6.2f} s per frame (steady)", flush=True)
        local = runs["local"] / arguments.frames
        overhead = (runs["dask ×1"] - runs["local"]) / arguments.frames
        steady_overhead = steady["dask ×1"] - steady["local"]
        print()
        print("| engine | night | per frame (whole night) | per frame (steady) | speed-up |")
        print("|---|---|---|---|---|")
        for name, seconds in runs.items():
            print(
                f"| {name} | {seconds:.1f} s | {seconds / arguments.frames:.2f} s | {steady[name]:.2f} s "
                f"| {runs['local'] / seconds:.2f}× |"
            )
        print(
            f"\nDask's overhead per frame, whole night (one worker against the node): {overhead:+.2f} s = "
            f"{100 * overhead / local:+.1f}% of a frame's {local:.2f} s of work; in the steady state "
            f"{steady_overhead:+.2f} s = {100 * steady_overhead / steady['local']:+.1f}% (target ≤ 10%); "
            "the same zero points on every engine"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
