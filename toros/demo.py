"""`make demo`: the three daemons of one node on loopback, with embedded defaults; a simulated night
calibrated by the preprocessor; then a clean stop.

Everything goes under ./demo/ (ignored by git): the node's config, its SQLite journal, its storage and logs.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toros import MODULES
from toros.simulation.ccd import Sensor, write_night

DEMO = Path("demo")
NIGHT = "2026-11-22"  # the simulated frames start at 2026-11-23 00:00 UTC: the night of the 22nd at Macón


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config() -> Path:
    """A node config with free loopback ports and everything under demo/ (started afresh each run)."""
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    config = {
        "logging": {"file": "logs/toros.log", "level": "INFO"},
        "database": {"path": "toros.db"},
        "storage": {"root": "data"},
        "clock": {"rate": 60.0},
        "alert": {"port": free_port(), "catalog": None},
        "telescope": {"port": free_port(), "mode": "manual"},
        "preprocessor": {"port": free_port()},
    }
    config["alert"]["observatories"] = [
        {"name": "macon", "latitude": -24.62, "longitude": -67.32, "elevation": 4650,
         "telescope": f"127.0.0.1:{config['telescope']['port']}"}
    ]
    config["preprocessor"]["http"] = f"http://127.0.0.1:{config['preprocessor']['port']}"
    path = DEMO / "toros.demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def wait_serving(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"demo: a daemon on port {port} did not start; see {DEMO / 'logs' / 'toros.log'}")


def main() -> int:
    config = write_config()
    ports = yaml.safe_load(config.read_text())
    toros = [sys.executable, "-m", "toros.cli"]
    print(f"demo: starting alert, telescope and preprocessor on loopback (config {config})", flush=True)
    daemons = {
        module: subprocess.Popen([*toros, "serve", module, "--config", str(config)], stderr=subprocess.DEVNULL)
        for module in MODULES
    }
    try:
        for module in MODULES:
            wait_serving(ports[module]["port"])
            print(f"demo: {module} is serving on 127.0.0.1:{ports[module]['port']}", flush=True)
        status = subprocess.run([*toros, "status", "--config", str(config)])
        night = DEMO / "data" / "raw" / NIGHT
        print(f"demo: the camera simulator writes a night of raw frames to {night}", flush=True)
        write_night(night, Sensor(width=1024, height=1024, overscan=32), biases=5, darks=5, flats=5, lights=5)
        print("demo: the preprocessor calibrates it (a calibrate_night work order):", flush=True)
        calibration = subprocess.run(
            [*toros, "submit", "preprocessor", "calibrate_night", "--directory", f"raw/{NIGHT}", "--id", f"demo-{NIGHT}",
             "--wait", "--config", str(config)]
        )
        shown = subprocess.run(
            [*toros, "work-order", "preprocessor", f"demo-{NIGHT}", "--config", str(config)], capture_output=True, text=True
        )
        print(shown.stdout, end="")
    finally:
        for process in daemons.values():
            process.send_signal(signal.SIGTERM)
        codes = {module: process.wait(timeout=60) for module, process in daemons.items()}
    print("demo: daemons stopped (exit codes: " + ", ".join(f"{m} {c}" for m, c in codes.items()) + ")")
    print(f"demo: calibrated frames in {DEMO / 'data' / 'calibrated' / NIGHT}, masters in {DEMO / 'data' / 'masters'}")
    print(f"demo: logs in {DEMO / 'logs' / 'toros.log'}, journal in {DEMO / 'toros.db'}")
    return 0 if status.returncode == calibration.returncode == 0 and not any(codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
