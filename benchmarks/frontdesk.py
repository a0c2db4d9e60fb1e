"""FrontDesk benchmark: durable Submit throughput and submit-to-Watch-event latency.

Runs a real daemon (SQLite journal, synchronous=FULL) in a separate process and measures, from other
processes on this machine:

* throughput: 8 concurrent client processes submitting work orders as fast as the daemon acknowledges them
  (each acknowledgement means the work order is committed to disk); workers execute them meanwhile;
* latency: with 50 Watch streams open, the time from calling Submit to each stream receiving the work
  order's QUEUED event (p50, p99 over all streams and submissions).

Targets (issue 2, on a 2-core machine): >= 2000 work orders/s, p99 <= 20 ms. For scale, the script also
measures the bare gRPC floor: GetStatus (no journal) from the same 8 clients. Usage:
    .venv/bin/python benchmarks/frontdesk.py [--orders 4000] [--streams 50] [--latency-orders 200]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import yaml

from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub

THROUGHPUT_TARGET = 2000.0
P99_TARGET_MS = 20.0


def serve(config_path: str, port_file: str) -> None:
    """The daemon under test: the runtime with a telescope module whose dome_control does nothing."""
    from toros.config import load_config
    from toros.runtime.module import Module, Task
    from toros.runtime.server import Daemon
    from toros.telescope import orders

    class BenchTelescope(Module):
        name = "telescope"

        def tasks(self) -> dict[str, Task[Any]]:
            return {"dome_control": Task(orders.check_dome_control, lambda context: "ok")}

    daemon = Daemon(load_config(config_path), BenchTelescope, "telescope")
    port = daemon.start()
    Path(port_file + ".tmp").write_text(str(port))
    os.replace(port_file + ".tmp", port_file)
    daemon.serve_until_signal()


def order(prefix: str, index: int) -> pb.WorkOrder:
    return pb.WorkOrder(
        id=f"{prefix}-{index}", requester="bench", dome_control=pb.DomeControl(action=pb.DOME_ACTION_OPEN)
    )


def call_many(address: str, call: str, prefix: str, count: int, start: multiprocessing.Event) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = FrontDeskStub(channel)
        stub.GetStatus(pb.GetStatusRequest())  # connect before the clock starts
        start.wait()
        if call == "Submit":
            for index in range(count):
                stub.Submit(order(prefix, index))
        else:
            for _ in range(count):
                stub.GetStatus(pb.GetStatusRequest())


def throughput(address: str, clients: int, total: int, call: str = "Submit") -> float:
    """Calls per second from ``clients`` processes making ``total`` calls between them."""
    start = multiprocessing.Event()
    per_client = total // clients
    processes = [
        multiprocessing.Process(target=call_many, args=(address, call, f"c{c}", per_client, start))
        for c in range(clients)
    ]
    for process in processes:
        process.start()
    time.sleep(1.0)
    began = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - began
    return per_client * clients / elapsed


def drain(address: str) -> None:
    """Waits until the workers have executed the backlog, so that latency is measured on an idle queue."""
    with grpc.insecure_channel(address) as channel:
        stub = FrontDeskStub(channel)
        while True:
            status = stub.GetStatus(pb.GetStatusRequest())
            if status.queue_depth == 0 and status.running == 0:
                return
            time.sleep(0.2)


def latency(address: str, streams: int, submissions: int) -> list[float]:
    arrivals: dict[str, list[float]] = {}
    lock = threading.Lock()
    with grpc.insecure_channel(address) as channel:
        stub = FrontDeskStub(channel)
        after = stub.GetStatus(pb.GetStatusRequest()).last_sequence
        open_streams = []
        ready = threading.Barrier(streams + 1)

        def follow(stream) -> None:
            ready.wait()
            try:
                for event in stream:
                    if event.work_order_update.state == pb.WORK_ORDER_STATE_QUEUED:
                        now = time.perf_counter()
                        with lock:
                            arrivals.setdefault(event.work_order_id, []).append(now)
            except grpc.RpcError:
                pass

        for _ in range(streams):
            stream = stub.Watch(pb.WatchRequest(after_sequence=after, kinds=[pb.EVENT_KIND_WORK_ORDER_UPDATE]))
            open_streams.append(stream)
            threading.Thread(target=follow, args=(stream,), daemon=True).start()
        ready.wait()
        time.sleep(0.5)
        sent: dict[str, float] = {}
        for index in range(submissions):
            work_order = order("lat", index)
            sent[work_order.id] = time.perf_counter()
            stub.Submit(work_order)
            time.sleep(0.02)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with lock:
                if all(len(arrivals.get(id, ())) == streams for id in sent):
                    break
            time.sleep(0.05)
        for stream in open_streams:
            stream.cancel()
    missing = sum(streams - len(arrivals.get(id, ())) for id in sent)
    if missing:
        raise SystemExit(f"{missing} events never arrived")
    return [(t - sent[id]) * 1e3 for id, times in arrivals.items() if id in sent for t in times]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=8000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--latency-orders", type=int, default=200)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    with tempfile.TemporaryDirectory(prefix="toros-bench-") as folder:
        config = Path(folder) / "bench.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "logging": {"file": None, "level": "WARNING"},
                    "database": {"path": "bench.db"},
                    "storage": {"root": "data"},
                    "telescope": {"port": 0, "max_streams": args.streams + 10, "workers": 2},
                }
            )
        )
        port_file = str(Path(folder) / "port")
        daemon = subprocess.Popen([sys.executable, __file__, "--serve", str(config), port_file])
        try:
            while not os.path.exists(port_file):
                time.sleep(0.05)
            address = f"127.0.0.1:{Path(port_file).read_text()}"
            floor = throughput(address, args.clients, args.orders, call="GetStatus")
            rate = throughput(address, args.clients, args.orders)
            drain(address)
            latencies = latency(address, args.streams, args.latency_orders)
        finally:
            daemon.terminate()
            daemon.wait(30)
    p50, p99 = statistics.median(latencies), percentile(latencies, 99)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, grpcio {grpc.__version__}")
    print(f"gRPC floor: GetStatus (no journal), {args.clients} clients: {floor:,.0f} calls/s")
    print(
        f"durable Submit throughput, {args.clients} clients, {args.orders} orders: {rate:,.0f} work orders/s "
        f"(target {THROUGHPUT_TARGET:,.0f}: ratio {rate / THROUGHPUT_TARGET:.2f})"
    )
    print(
        f"Submit -> Watch event latency, {args.streams} streams x {args.latency_orders} orders: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 {P99_TARGET_MS:.0f} ms: ratio {P99_TARGET_MS / p99:.2f})"
    )


if __name__ == "__main__":
    main()
