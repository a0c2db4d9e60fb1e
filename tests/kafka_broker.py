"""Apache Kafka's own broker (KRaft, broker and controller in one node, on loopback) for the tests and the
intake benchmark: its jars from Maven Central (``tests/kafka/pom.xml``), cached in ``~/.cache/toros``; a
plaintext listener and a second one configured as SCiMMA's Hopskotch is (SASL SCRAM-SHA-512 over TLS)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from pki import Authority
from support import DATA, TESTS, wait_for

from toros.demo import free_port

KAFKA_VERSION = "4.1.1"
JARS = Path.home() / ".cache" / "toros" / f"kafka-{KAFKA_VERSION}"
SCRAM_USER, SCRAM_PASSWORD = "toros-node", "a long enough test secret"
# .ci/run installs Java and Maven and sets TOROS_REQUIRE_KAFKA: there, a broker that cannot start is a failure.
REQUIRED = os.environ.get("TOROS_REQUIRE_KAFKA") == "1"
AVAILABLE = bool(shutil.which("java") and (shutil.which("mvn") or JARS.is_dir()))


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
        self.port, controller, secure = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        # A second listener as Hopskotch's: SCRAM-SHA-512 logins over TLS (a certificate for 127.0.0.1 from a
        # test CA), the user created with the storage.
        self.secure_address = f"127.0.0.1:{secure}"
        authority = Authority(self.folder / "pki")
        self.ca_file = authority.ca
        certificate, key = authority.issue("broker", ["127.0.0.1"])
        keystore = self.folder / "pki" / "broker.pem"
        keystore.write_text(key.read_text() + certificate.read_text())
        self.properties = self.folder / "server.properties"
        self.properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://{self.address},SASL_SSL://{self.secure_address},"
                    f"CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://{self.address},SASL_SSL://{self.secure_address}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
                    "sasl.enabled.mechanisms=SCRAM-SHA-512",
                    "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                    "listener.name.sasl_ssl.ssl.keystore.type=PEM",
                    f"listener.name.sasl_ssl.ssl.keystore.location={keystore}",
                    f"log.dirs={self.folder / 'data'}",
                    "offsets.topic.replication.factor=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "num.partitions=2",
                    "auto.create.topics.enable=false",
                    "message.max.bytes=16777216",  # room for a 10 MB poison message (Kafka's default: 1 MB)
                ]
            )  # fmt: skip
            + "\n"
        )
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._java(
            "kafka.tools.StorageTool", "format", f"--cluster-id={cluster}", "-c", str(self.properties),
            "--add-scram", f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]",
        )  # fmt: skip
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
        producer = Producer({"bootstrap.servers": self.address, "message.max.bytes": 16_777_216})

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


def retractions(count: int, prefix: str) -> list[bytes]:
    """Real sample retraction notices, their superevent ids rewritten: cheap to process, so the test measures
    the intake."""
    notice = json.loads((DATA / "MS181101ab-retraction.json").read_text())
    return [json.dumps({**notice, "superevent_id": f"{prefix}{index:05d}"}).encode() for index in range(count)]
