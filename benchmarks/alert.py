"""Alert benchmark: galaxy-catalog ingest, index size, and alert-to-telescope latency against ligo.skymap.

1. Writes a synthetic GLADE+-format catalog (40 columns, ``null`` for missing) of N galaxies: uniform on the
   sky, plus a cluster of galaxies inside the shared multi-order map's credible region.
2. Ingests it (in a separate process, to measure its peak memory): time, peak memory, index size.
3. Starts the alert daemon (subprocess) with that catalog and one observatory whose telescope is a stub
   FrontDesk in this process, and measures, for several distinct alerts (the shared Kafka JSON preliminary
   with its embedded map, renamed), the time from Submit to the telescope receiving its observe_targets.
4. Times ``ligo.skymap.postprocess.crossmatch`` on the same map and galaxies (the user guide's recipe for
   ranking galaxies), in the same run.

Targets (issue 4): median latency <= 200 ms at 22.5 M galaxies, ingest <= 5 min, peak memory <= 4 GiB.
Usage: .venv/bin/python benchmarks/alert.py [--galaxies 22500000 | --quick] [--alerts 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import yaml

from toros.generated import toros_pb2 as pb
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.simulation.galaxies import write_glade_plus

SHARED = Path(__file__).resolve().parents[1] / "toros" / "data" / "alerts"
GIB = 1024**3


def ingest_in_child(catalog: Path) -> dict:
    code = f"""
import json, time
from pathlib import Path
from toros.floor.catalogs import GalaxyIndex
started = time.perf_counter()
index = GalaxyIndex.open(Path({str(catalog)!r}))
elapsed = time.perf_counter() - started
peak = int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) * 1024
size = sum(p.stat().st_size for p in GalaxyIndex.folder_for(Path({str(catalog)!r})).iterdir())
print(json.dumps({{"seconds": elapsed, "peak_bytes": peak, "index_bytes": size, "galaxies": len(index)}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


class StubTelescope(pb_grpc.FrontDeskServicer):
    """Records when each observe_targets work order arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.arrived = threading.Condition()

    def Submit(self, request: pb.WorkOrder, context: grpc.ServicerContext) -> pb.SubmitResponse:
        with self.arrived:
            self.arrivals[request.observe_targets.alert_id] = time.perf_counter()
            self.arrived.notify_all()
        return pb.SubmitResponse(id=request.id)


def latency(catalog: Path, folder: Path, alerts: int) -> tuple[list[float], int]:
    stub_telescope = StubTelescope()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_FrontDeskServicer_to_server(stub_telescope, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    config = folder / "alert.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "logging": {"file": None, "level": "INFO"},
                "database": {"path": "alert.db"},
                "storage": {"root": "data"},
                "clock": {"start": "2026-05-01T23:00:00Z"},
                "alert": {
                    "port": 0,
                    "catalog": str(catalog),
                    "targets_per_observatory": 30,
                    "observatories": [
                        {
                            "name": "macon",
                            "latitude": -24.62,
                            "longitude": -67.32,
                            "elevation": 4650,
                            "telescope": f"127.0.0.1:{port}",
                        }
                    ],
                },
            }
        )
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "toros.cli", "serve", "alert", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        address = None
        for line in daemon.stderr:
            if "listening on" in line:
                address = line.split("listening on ")[1].split()[0]
                break
        if address is None:
            raise SystemExit("the alert daemon did not start")
        threading.Thread(target=lambda: [None for _ in daemon.stderr], daemon=True).start()
        channel = grpc.insecure_channel(address)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
            time.sleep(0.1)
        alert_stub = pb_grpc.FrontDeskStub(channel)
        notice = json.loads((SHARED / "MS181101ab-preliminary.json").read_text())
        samples = []
        for number in range(alerts + 1):  # the first one warms up (ephemerides, imports) and is not counted
            notice["superevent_id"] = f"S261123{chr(97 + number // 26)}{chr(97 + number % 26)}"
            payload = json.dumps(notice).encode()
            started = time.perf_counter()
            receipt = alert_stub.Submit(pb.WorkOrder(process_alert=pb.ProcessAlert(payload=payload)))
            with stub_telescope.arrived:
                stub_telescope.arrived.wait_for(lambda: notice["superevent_id"] in stub_telescope.arrivals, timeout=120)
            if notice["superevent_id"] not in stub_telescope.arrivals:
                raise SystemExit(f"no targets reached the telescope for {notice['superevent_id']}")
            if number:
                samples.append((stub_telescope.arrivals[notice["superevent_id"]] - started) * 1e3)
            # Alerts come minutes apart: let this one finish (outputs, plot) before the next.
            while alert_stub.GetWorkOrder(pb.GetWorkOrderRequest(id=receipt.id)).state in (
                pb.WORK_ORDER_STATE_QUEUED,
                pb.WORK_ORDER_STATE_RUNNING,
            ):
                time.sleep(0.05)
        return samples, port
    finally:
        daemon.terminate()
        daemon.wait(30)
        server.stop(0)


def crossmatch_seconds(catalog: Path, repeats: int) -> float:
    import astropy.units as u
    from astropy.coordinates import SkyCoord
    from ligo.skymap.io import read_sky_map
    from ligo.skymap.postprocess.crossmatch import crossmatch

    from toros.floor.catalogs import GalaxyIndex

    index = GalaxyIndex.open(catalog)
    dist = np.asarray(index.dist, dtype=np.float64)
    coordinates = SkyCoord(
        np.asarray(index.ra) * u.deg, np.asarray(index.dec) * u.deg, np.where(np.isfinite(dist), dist, 1.0) * u.Mpc
    )
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        skymap = read_sky_map(str(SHARED / "MS181101ab-bayestar.multiorder.fits"), moc=True)
        result = crossmatch(skymap, coordinates)
        np.argsort(result.searched_prob_vol)[:30]
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--galaxies", type=int, default=22_500_000)
    parser.add_argument("--quick", action="store_true", help="2 M galaxies")
    parser.add_argument("--alerts", type=int, default=7)
    args = parser.parse_args()
    count = 2_000_000 if args.quick else args.galaxies
    print(
        f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.0f} GiB, Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="toros-alertbench-") as tmp:
        folder = Path(tmp)
        catalog = folder / "GLADE+.txt"
        started = time.perf_counter()
        write_glade_plus(catalog, count)
        print(
            f"synthetic GLADE+ catalog: {count:,} galaxies, {catalog.stat().st_size / GIB:.2f} GiB, written in {time.perf_counter() - started:.0f} s"
        )
        ingest = ingest_in_child(catalog)
        print(
            f"ingest: {ingest['seconds']:.0f} s (target 300 s), peak memory {ingest['peak_bytes'] / GIB:.2f} GiB (target 4 GiB), "
            f"index {ingest['index_bytes'] / GIB:.2f} GiB for {ingest['galaxies']:,} galaxies"
        )
        samples, _ = latency(catalog, folder, args.alerts)
        median = statistics.median(samples)
        print(
            f"Submit -> telescope receives targets, {len(samples)} alerts: median {median:.0f} ms "
            f"(min {min(samples):.0f}, max {max(samples):.0f}; target 200 ms)"
        )
        reference = crossmatch_seconds(catalog, repeats=3 if count <= 5_000_000 else 1)
        print(
            f"ligo.skymap crossmatch of the same map and catalog: {reference * 1e3:.0f} ms per alert; "
            f"the whole alert path is {reference * 1e3 / median:.1f}x faster"
        )


if __name__ == "__main__":
    main()
