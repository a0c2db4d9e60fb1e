"""Kafka intake benchmark: notice → ``alert_processed`` latency through Apache Kafka's own broker, against the
same notices submitted straight to the daemon (``process_alert`` over gRPC, no broker) in the same run.

Starts one KRaft broker on loopback (``tests/kafka_broker.py``: Java and Maven, the jars cached) and the alert
daemon as a process consuming from it; then, one at a time, N retraction notices (the shared sample, ids
rewritten: their handling is cheap, so the figure is the intake's) through the broker, and N more through
gRPC. Latency: from the producer's delivery report (the broker has the notice) to the daemon's
``alert_processed`` event arriving on a Watch stream; for gRPC, from Submit.

Usage: .venv/bin/python benchmarks/kafka_intake.py [--notices 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from kafka_broker import KAFKA_VERSION, KafkaBroker, retractions  # noqa: E402 (the tests' broker)
from support import launch, write_config  # noqa: E402

from toros.generated import toros_pb2 as pb  # noqa: E402
from toros.generated import toros_pb2_grpc as pb_grpc  # noqa: E402


class Arrivals:
    """When each work order's alert_processed event reached this process (a Watch stream in a thread)."""

    def __init__(self, stub: pb_grpc.FrontDeskStub) -> None:
        self.seen: dict[str, float] = {}
        self.changed = threading.Condition()
        request = pb.WatchRequest(kinds=[pb.EVENT_KIND_ALERT_PROCESSED])
        self.call = stub.Watch(request)
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        try:
            for event in self.call:
                with self.changed:
                    self.seen.setdefault(event.work_order_id, time.perf_counter())
                    self.changed.notify_all()
        except grpc.RpcError:
            pass  # cancelled at the end

    def wait(self, key: str, timeout: float = 60.0) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: key in self.seen, timeout=timeout):
                raise SystemExit(f"no alert_processed event for {key} within {timeout:.0f} s")
            return self.seen[key]


def through_broker(broker: KafkaBroker, topic: str, arrivals: Arrivals, payloads: list[bytes]) -> list[float]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": broker.address, "linger.ms": 0})
    latencies = []
    for payload in payloads:
        delivered: list[tuple[float, str]] = []

        def report(error: object, message: object, delivered: list[tuple[float, str]] = delivered) -> None:
            assert error is None, error
            delivered.append(
                (time.perf_counter(), f"kafka-{message.topic()}-{message.partition()}-{message.offset()}")  # type: ignore[attr-defined]
            )

        producer.produce(topic, payload, on_delivery=report)
        producer.flush(30)
        sent, key = delivered[0]
        latencies.append(arrivals.wait(key) - sent)
    return latencies


def through_grpc(stub: pb_grpc.FrontDeskStub, arrivals: Arrivals, payloads: list[bytes]) -> list[float]:
    latencies = []
    for index, payload in enumerate(payloads):
        key = f"grpc-{index}"
        sent = time.perf_counter()
        stub.Submit(pb.WorkOrder(id=key, process_alert=pb.ProcessAlert(payload=payload, source="benchmark")))
        latencies.append(arrivals.wait(key) - sent)
    return latencies


def summary(label: str, values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p50 = statistics.median(ordered)
    p99 = statistics.quantiles(ordered, n=100, method="inclusive")[98]
    print(f"  {label:<28} p50 {p50 * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms")
    return p50, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notices", type=int, default=200)
    args = parser.parse_args()
    broker = KafkaBroker()
    folder = Path(tempfile.mkdtemp(prefix="toros-kafka-bench-"))
    topic = "igwn.gwalert"
    broker.create_topic(topic, partitions=1)
    config = write_config(
        folder, alert={"port": 0, "kafka": {"enabled": True, "bootstrap_servers": broker.address,
                                           "security_protocol": "plaintext", "topics": [topic],
                                           "group_id": "toros-bench"}},
        logging={"file": "logs/toros.log", "level": "INFO"},
    )  # fmt: skip
    process, port = launch(config, folder / "port", "alert")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.FrontDeskStub(channel)
            arrivals = Arrivals(stub)
            through_broker(broker, topic, arrivals, retractions(5, "S26warm"))  # the group joined, the topic known
            kafka = through_broker(broker, topic, arrivals, retractions(args.notices, "S26kafka"))
            direct = through_grpc(stub, arrivals, retractions(args.notices, "S26grpc"))
            arrivals.call.cancel()
    finally:
        process.terminate()
        process.wait(timeout=60)
        broker.remove()
    print(f"notice -> alert_processed, {args.notices} retraction notices one at a time (Kafka {KAFKA_VERSION})")
    k50, k99 = summary("through the broker", kafka)
    g50, g99 = summary("process_alert over gRPC", direct)
    print(f"  the broker's share: p50 {k50 / g50:.1f}x, p99 {k99 / g99:.1f}x the direct path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
