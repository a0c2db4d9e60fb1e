"""The alert intake against Apache Kafka's own broker (KRaft, one node, on loopback), through gcn-kafka's consumer
as the daemon runs it: a burst of notices journaled exactly once each across a kill -9 of the alert daemon; poison
messages refused with their offsets committed; the broker stopped and started again under a running listener.

The broker's jars come from Maven Central (``tests/kafka/pom.xml``), cached in ``~/.cache/toros/kafka``. GCN's
own listener takes SASL/OAUTHBEARER logins against GCN's identity provider, which cannot exist here: most tests
use a plaintext loopback listener, and ``test_listeners.py`` checks GCN's credentials reach gcn-kafka's config.
The broker's second listener is configured as SCiMMA's Hopskotch is (SASL SCRAM-SHA-512 over TLS): a login
with a user and password, a wrong password refused and told once, and a topic that does not exist told once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from kafka_broker import AVAILABLE, REQUIRED, SCRAM_PASSWORD, SCRAM_USER, KafkaBroker, retractions
from support import avro_notice, done, launch, submit, wait_for, write_config

from toros.alert.publishing import CampaignPublisher
from toros.alert.settings import CampaignPublishing
from toros.config import load_config
from toros.daemons import build_daemon
from toros.demo import free_port
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub

pytestmark = pytest.mark.skipif(not AVAILABLE and not REQUIRED, reason="Java and Maven are not installed")


@pytest.fixture(scope="module")
def broker():
    server = KafkaBroker()
    yield server
    server.remove()


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
    poison = [b"\x00\xffnot a notice", b"[" * 100_000 + b"]" * 100_000, b"{" + b" " * 900_000 + b"}", avro[:-20],
              b"{" + b"x" * 10_000_000]  # fmt: skip
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


def test_two_alert_daemons_of_one_group_share_the_partitions_and_handle_each_notice_once(broker, tmp_path):
    """Two nodes consuming for redundancy: the group splits the partitions between them; one joining in the
    middle of a burst takes its share from the other's committed offsets, and no notice is handled by both."""
    topic = "shared.gwalert"
    broker.create_topic(topic, partitions=2)
    folders = [tmp_path / "first", tmp_path / "second"]
    for folder in folders:
        folder.mkdir()
    configs = [intake_config(folder, broker, topic, "toros-shared") for folder in folders]
    first, _ = launch(configs[0], folders[0] / "port", "alert")
    second = None
    try:
        before = broker.produce(topic, retractions(300, "S26one"))
        wait_for(lambda: len(journaled(folders[0])) >= 100, timeout=120, interval=0.2)
        second, _ = launch(configs[1], folders[1] / "port", "alert")  # a rebalance in the middle of the burst
        # Notices keep coming, a few at a time, while the group rebalances; the rest once both consume.
        coming = retractions(300, "S26two")
        after: list[str] = []
        while coming and not journaled(folders[1]):
            after += broker.produce(topic, coming[:10])
            del coming[:10]
            time.sleep(0.5)
        after += broker.produce(topic, coming)

        def handled() -> tuple[set[str], set[str]]:
            return set(journaled(folders[0])), set(journaled(folders[1]))

        wait_for(lambda: len(set.union(*handled())) >= 600, timeout=180, interval=0.5)
        time.sleep(2.0)  # a redelivery has had its chance
        one, two = handled()
        assert one | two == set(before) | set(after), "none lost"
        assert not one & two, "none handled by both"
        assert len(two) > 0 and len(one) > 100, (len(one), len(two))
    finally:
        stopped(first)
        if second is not None:
            stopped(second)


def secure_config(folder: Path, broker: KafkaBroker, topics: list[str], password: str) -> Path:
    """The intake as a Hopskotch subscriber configures it: SCRAM-SHA-512 over TLS, the broker's CA."""
    return write_config(
        folder, alert={"port": 0, "kafka": {"enabled": True, "bootstrap_servers": broker.secure_address,
                                           "security_protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-512",
                                           "username": SCRAM_USER, "password": password,
                                           "ca_file": str(broker.ca_file), "topics": topics,
                                           "group_id": f"toros-{folder.name}", "session_timeout_s": 6.0}},
    )  # fmt: skip


def intake_events(folder: Path) -> list[str]:
    """The messages of the daemon's own alert_processed events (not a notice's): its intake problems."""
    with sqlite3.connect(f"file:{folder / 'toros.db'}?mode=ro", uri=True, timeout=30) as db:
        rows = db.execute("SELECT payload FROM events WHERE work_order_id = ''").fetchall()
    events = [pb.Event.FromString(row[0]) for row in rows]
    return [e.alert_processed.message for e in events if e.HasField("alert_processed")]


def test_a_hopskotch_style_login_over_tls_takes_avro_notices(broker, tmp_path):
    topic = "igwn.gwalert.secure"
    broker.create_topic(topic, partitions=1)
    (key,) = broker.produce(topic, [avro_notice(json.loads(retractions(1, "S26tls")[0]))])
    process, _ = launch(secure_config(tmp_path, broker, [topic], SCRAM_PASSWORD), tmp_path / "port", "alert")
    try:
        wait_for(lambda: key in journaled(tmp_path), timeout=120, interval=0.2)
        assert intake_events(tmp_path) == [], "no problem to tell"
    finally:
        stopped(process)
    log = (tmp_path / "logs" / "toros.log").read_text()
    assert "consuming igwn.gwalert.secure" in log and SCRAM_PASSWORD not in log, "the password never reaches it"


def test_a_refused_login_and_a_missing_topic_are_each_told_once_and_intake_goes_on(broker, tmp_path):
    topic = "igwn.gwalert.told"
    broker.create_topic(topic, partitions=1)
    refused, absent = tmp_path / "refused", tmp_path / "absent"
    refused.mkdir()
    absent.mkdir()
    wrong, _ = launch(secure_config(refused, broker, [topic], "not the password"), refused / "port", "alert")
    missing, port = launch(secure_config(absent, broker, ["no.such.topic", topic], SCRAM_PASSWORD),
                           absent / "port", "alert")  # fmt: skip
    try:
        wait_for(lambda: any("AUTHENTICATION" in m for m in intake_events(refused)), timeout=60, interval=0.5)
        wait_for(lambda: any("no.such.topic" in m for m in intake_events(absent)), timeout=60, interval=0.5)
        # The other topic of the same listener is consumed all the same.
        (key,) = broker.produce(topic, retractions(1, "S26told"))
        wait_for(lambda: key in journaled(absent), timeout=60, interval=0.2)
        time.sleep(5.0)  # several more seconds of the same problems: still one event each
        told = [m for m in intake_events(refused) if "AUTHENTICATION" in m]
        assert len(told) == 1, told
        assert len([m for m in intake_events(absent) if "no.such.topic" in m]) == 1, intake_events(absent)
        assert not journaled(refused), "nothing consumed without a login"
        assert wrong.poll() is None and missing.poll() is None, "both daemons serve on"
    finally:
        stopped(wrong)
        stopped(missing)


def campaign_config(folder: Path, catalog: Path, servers: str, topic: str) -> Path:
    macon = {
        "name": "macon",
        "latitude": -24.62,
        "longitude": -67.32,
        "elevation": 4650,
        "telescope": f"127.0.0.1:{free_port()}",
        "field_of_view_deg": 1.37,
    }  # nobody there: refused
    return write_config(
        folder,
        clock={"start": "2026-05-01T23:00:00Z", "rate": 1.0},
        alert={"port": 0, "catalog": str(catalog), "process_test_alerts": True, "targets_per_observatory": 3,
               "observatories": [macon], "relay_retry_s": 1,
               "campaign_kafka": {"enabled": True, "bootstrap_servers": servers, "security_protocol": "plaintext",
                                  "topic": topic}},
    )  # fmt: skip


def test_the_campaign_is_published_on_kafka_in_order(broker, tmp_path, glade_catalog, start_daemon):
    from confluent_kafka import Consumer

    topic = "toros.campaign.test"
    broker.create_topic(topic)
    (tmp_path / "live").mkdir()
    daemon = start_daemon(
        load_config(campaign_config(tmp_path / "live", glade_catalog, broker.address, topic)),
        lambda c: build_daemon("alert", c),
    )
    stub = FrontDeskStub(grpc.insecure_channel(f"127.0.0.1:{daemon.port}"))
    submit(stub, "MS181101ab-preliminary.json", "k1")
    assert done(stub, "k1").state == pb.WORK_ORDER_STATE_DONE
    consumer = Consumer({"bootstrap.servers": broker.address, "group.id": "partners", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        first = wait_for(lambda: (m := consumer.poll(1.0)) is not None and not m.error() and m, timeout=60)
        submit(stub, "MS181101ab-retraction.json", "k2")  # the campaign's next state comes after it, in order
        second = wait_for(lambda: (m := consumer.poll(1.0)) is not None and not m.error() and m, timeout=60)
    finally:
        consumer.close()
    published, then = json.loads(first.value()), json.loads(second.value())
    assert first.key() == second.key() == b"MS181101ab" and published["schema"] == "toros.campaign/1"
    assert published["event"] == "MS181101ab" and published["sites"][0]["state"] == "refused"
    assert not published["retracted"] and then["retracted"] and published["sent"] <= then["sent"]
    assert (first.partition(), first.offset() + 1) == (second.partition(), second.offset())
    kept = tmp_path / "live" / "data" / "campaigns" / "MS181101ab" / "campaign.json"
    wait_for(lambda: f"published on {topic}" in json.loads(kept.read_text())["published"], timeout=30)


def test_a_broker_that_cannot_be_reached_is_named_and_retried(broker):
    told: list[tuple[str, str]] = []
    settings = CampaignPublishing(
        enabled=True, bootstrap_servers=f"127.0.0.1:{free_port()}", security_protocol="plaintext"
    )
    publisher = CampaignPublisher(settings, lambda event, text: told.append((event, text)))
    publisher.start()
    try:
        publisher.publish("S1", {"event": "S1"})
        wait_for(lambda: any("not published yet" in text and text.endswith("retried") for _, text in told), timeout=60)
    finally:
        publisher.stop()
    assert {event for event, _ in told} == {"S1"}
