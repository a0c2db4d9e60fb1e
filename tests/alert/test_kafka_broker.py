"""The alert intake against Apache Kafka's own broker (KRaft, one node, on loopback), through gcn-kafka's consumer
as the daemon runs it: a burst of notices journaled exactly once each across a kill -9 of the alert daemon; poison
messages refused with their offsets committed; the broker stopped and started again under a running listener.

The broker's jars come from Maven Central (``tests/kafka/pom.xml``), cached in ``~/.cache/toros/kafka``. GCN's
own listener takes SASL/OAUTHBEARER logins against GCN's identity provider, which cannot exist here: these tests
use a plaintext loopback listener, and ``test_listeners.py`` checks the credentials reach gcn-kafka's config."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from support import DATA, TESTS, avro_notice, launch, wait_for, write_config

from toros.demo import free_port
from toros.generated import toros_pb2 as pb

KAFKA_VERSION = "4.1.1"
JARS = Path.home() / ".cache" / "toros" / f"kafka-{KAFKA_VERSION}"
TOPIC = "igwn.gwalert"
# .ci/run installs Java and Maven and sets TOROS_REQUIRE_KAFKA: there, a broker that cannot start is a failure.
REQUIRED = os.environ.get("TOROS_REQUIRE_KAFKA") == "1"
AVAILABLE = bool(shutil.which("java") and (shutil.which("mvn") or JARS.is_dir()))
pytestmark = pytest.mark.skipif(not AVAILABLE and not REQUIRED, reason="Java and Maven are not installed")


class KafkaBroker:
    """One KRaft broker (broker and controller in one process) on free loopback ports, stopped and started again
    on the same ports and storage when a test asks."""

    def __init__(self) -> None:
        assert AVAILABLE, "Java and Maven are required (TOROS_REQUIRE_KAFKA=1) but not installed"
        if not any(JARS.glob("kafka_2.13-*.jar")):
            partial = JARS.with_suffix(".partial")
            subprocess.run(
                ["mvn", "-q", "-f", str(TESTS / "kafka" / "pom.xml"), "dependency:copy-dependencies",
                 f"-DoutputDirectory={partial}"],
                check=True, capture_output=True, timeout=600,
            )  # fmt: skip
            partial.rename(JARS)
        self.folder = Path(tempfile.mkdtemp(prefix="toros-kafka-"))
        self.port, controller = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.properties = self.folder / "server.properties"
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://{self.address},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://{self.address}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self.folder / 'data'}",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "num.partitions=2",
                    "auto.create.topics.enable=false",
                ]
            )  # fmt: skip
            + "\n"
        )
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._java("kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(self.properties))
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def _java(self, *arguments: str) -> None:
        subprocess.run(["java", "-cp", f"{JARS}/*", *arguments], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        log = open(self.folder / "broker.log", "ab")  # noqa: SIM115 (the broker's, closed with it)
        self.process = subprocess.Popen(
            ["java", "-Xmx512m", "-cp", f"{JARS}/*", "kafka.Kafka", str(self.properties)], stdout=log, stderr=log
        )
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.address})
        wait_for(lambda: _answers(admin), timeout=90, interval=0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
            self.process = None

    def create_topic(self, name: str, partitions: int = 2) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.address})
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(timeout=30)

    def produce(self, topic: str, payloads: list[bytes]) -> list[str]:
        """Sends the payloads; returns the listener's work order id of each (topic, partition, offset)."""
        from confluent_kafka import Producer

        keys: list[str] = []
        producer = Producer({"bootstrap.servers": self.address, "message.max.bytes": 2_000_000})

        def delivered(error: object, message: object) -> None:
            assert error is None, error
            keys.append(f"kafka-{message.topic()}-{message.partition()}-{message.offset()}")  # type: ignore[attr-defined]

        for payload in payloads:
            producer.produce(topic, payload, on_delivery=delivered)
            producer.poll(0)
        assert producer.flush(60) == 0
        return keys

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _answers(admin: object) -> bool:
    try:
        admin.list_topics(timeout=2)  # type: ignore[attr-defined]
        return True
    except Exception:  # not up yet
        return False


@pytest.fixture(scope="module")
def broker():
    server = KafkaBroker()
    yield server
    server.remove()


def retractions(count: int, prefix: str) -> list[bytes]:
    """Real sample retraction notices, their superevent ids rewritten: cheap to process, so the test measures
    the intake."""
    notice = json.loads((DATA / "MS181101ab-retraction.json").read_text())
    return [json.dumps({**notice, "superevent_id": f"{prefix}{index:05d}"}).encode() for index in range(count)]


def intake_config(folder: Path, broker: KafkaBroker, topic: str, group: str) -> Path:
    return write_config(
        folder, alert={"port": 0, "kafka": {"enabled": True, "bootstrap_servers": broker.address,
                                           "security_protocol": "plaintext", "topics": [topic], "group_id": group,
                                           "session_timeout_s": 6.0}},
    )  # fmt: skip


def journaled(folder: Path, prefix: str = "kafka-") -> dict[str, int]:
    """Work order id -> state (a WorkOrderState), read from the daemon's journal (SQLite, read-only while it
    runs)."""
    with sqlite3.connect(f"file:{folder / 'toros.db'}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute("SELECT id, state FROM work_orders WHERE id LIKE ?", (f"{prefix}%",)).fetchall()
    return {str(id): int(state) for id, state in rows}


def stopped(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


@pytest.mark.timeout(400)
def test_a_burst_is_journaled_exactly_once_across_a_kill_9_of_the_alert_daemon(broker, tmp_path):
    topic = "burst.gwalert"
    broker.create_topic(topic)
    config = intake_config(tmp_path, broker, topic, "toros-burst")
    keys = broker.produce(topic, retractions(1000, "S26burst"))
    assert len(set(keys)) == 1000
    process, _ = launch(config, tmp_path / "port", "alert")
    wait_for(lambda: len(journaled(tmp_path)) >= 250, timeout=120, interval=0.2)
    os.kill(process.pid, signal.SIGKILL)  # in the middle of the burst
    process.wait()
    partway = len(journaled(tmp_path))
    assert partway < 1000, "the kill came too late to test anything"
    process, _ = launch(config, tmp_path / "port", "alert")
    try:
        # The killed consumer's partitions come back after its session times out (alert.kafka.session_timeout_s).
        wait_for(lambda: len(journaled(tmp_path)) >= 1000, timeout=120, interval=0.5)
        time.sleep(2.0)  # anything redelivered after the restart has had its chance to be journaled twice
        found = journaled(tmp_path)
        assert set(found) == set(keys), "none lost, none extra"
        done = pb.WORK_ORDER_STATE_DONE
        wait_for(lambda: all(state == done for state in journaled(tmp_path).values()), timeout=240, interval=0.5)
    finally:
        stopped(process)


def test_poison_is_refused_and_committed_and_a_restarted_broker_is_found_again(broker, tmp_path):
    topic = "poison.gwalert"
    broker.create_topic(topic, partitions=1)
    config = intake_config(tmp_path, broker, topic, "toros-poison")
    avro = avro_notice(json.loads(retractions(1, "S26avro")[0]))  # as Hopskotch carries it
    poison = [b"\x00\xffnot a notice", b"[" * 100_000 + b"]" * 100_000, b"{" + b" " * 900_000 + b"}", avro[:-20]]
    poison_keys = broker.produce(topic, poison)
    good, good_avro = broker.produce(topic, [*retractions(1, "S26good"), avro])
    process, _ = launch(config, tmp_path / "port", "alert")
    try:
        wait_for(lambda: {good, good_avro} <= set(journaled(tmp_path)), timeout=120, interval=0.2)
        assert not set(poison_keys) & set(journaled(tmp_path)), "poison is refused, never a work order"
        with sqlite3.connect(f"file:{tmp_path / 'toros.db'}?mode=ro", uri=True) as db:
            refused = {row[0] for row in db.execute("SELECT work_order_id FROM events").fetchall()}
        assert set(poison_keys) <= refused, "each refusal is an event naming its offset"
        # The broker stops and comes back: the listener finds it again by itself, from its committed offset.
        broker.stop()
        time.sleep(5.0)
        broker.start()
        (after,) = broker.produce(topic, retractions(1, "S26after"))
        wait_for(lambda: after in journaled(tmp_path), timeout=120, interval=0.5)
        assert set(journaled(tmp_path)) == {good, good_avro, after}, "nothing consumed twice after the reconnection"
    finally:
        stopped(process)
