"""Alert intake from the network: the Kafka consumer loop (a fake consumer, as no broker runs here), pygcn's
real client against pygcn's own local VOEvent server, and the webhook notification."""

from __future__ import annotations

import hashlib
import json
import threading

import gcn.voeventclient
import grpc
import pytest
from support import DATA, FakeConsumer, done, wait_for

from toros.alert.listeners import KafkaListener
from toros.alert.settings import KafkaIntake
from toros.demo import free_port
from toros.generated import toros_pb2 as pb


def test_kafka_offsets_are_committed_after_journaling_and_redelivery_is_processed_once(observatory):
    _, alert = observatory
    daemon, stub = alert()
    log = [
        (DATA / "MS181101ab-preliminary.json").read_bytes(),
        b"{garbage",
        (DATA / "MS181101ab-retraction.json").read_bytes(),
    ]
    committed: list[int] = []
    consumers = []

    def factory():
        consumer = FakeConsumer(log, committed, daemon.journal, crash_on_commit=0 if not consumers else None)
        consumers.append(consumer)
        return consumer

    listener = KafkaListener(KafkaIntake(enabled=True), daemon.module.receive, factory)
    listener.start()
    try:
        wait_for(lambda: committed == [0, 1, 2], timeout=30)
    finally:
        listener.stop()
    assert len(consumers) == 2, "reconnected after the failure"
    first = done(stub, "kafka-igwn.gwalert-0-0").message
    retraction = done(stub, "kafka-igwn.gwalert-0-2").message
    # The two notices may be taken by the two workers at once: either the preliminary relays first and the
    # retraction cancels its list (or finds it already observed by the quick drill telescope), or the
    # retraction comes first and the preliminary relays nothing.
    relayed_then_cancelled = "5 targets accepted" in first and (
        retraction.endswith("1 of 1 target lists cancelled")
        or retraction.endswith(
            "0 of 1 target lists cancelled, 1 already finished (MS181101ab-kafka-igwn.gwalert-0-0-macon DONE)"
        )
    )
    retracted_first = "the event was retracted" in first and retraction.endswith("0 of 0 target lists cancelled")
    assert relayed_then_cancelled or retracted_first, (first, retraction)
    refused = [e for e in stub.Watch(pb.WatchRequest(work_order_id="kafka-igwn.gwalert-0-1", replay_only=True))]
    assert refused and refused[0].alert_processed.message.startswith("refused: process_alert.payload: not valid JSON")
    with pytest.raises(grpc.RpcError):
        stub.GetWorkOrder(pb.GetWorkOrderRequest(id="kafka-igwn.gwalert-0-1"))


def test_pygcn_client_against_pygcns_local_server(observatory, tmp_path):
    other = tmp_path / "swift.xml"
    other.write_text((DATA / "MS181101ab-2-Preliminary.xml").read_text().replace('value="150"', 'value="61"', 1))
    port = free_port()
    payloads = [str(DATA / "MS181101ab-2-Preliminary.xml"), str(other)]
    threading.Thread(
        target=gcn.voeventclient.serve, args=(payloads,), kwargs={"port": port, "retransmit_timeout": 0.2}, daemon=True
    ).start()
    _, alert = observatory
    closed = f"http://127.0.0.1:{free_port()}/"  # nothing listens there: the download fails, on loopback
    daemon, stub = alert(
        voevent={"enabled": True, "host": ["127.0.0.1"], "port": port},
        skymap={"retries": 0, "timeout_s": 2, "rewrite": {"https://emfollow.docs.ligo.org/userguide/_static/": closed}},
    )
    key = "voevent-" + hashlib.sha256((DATA / "MS181101ab-2-Preliminary.xml").read_bytes()).hexdigest()[:32]
    wait_for(lambda: daemon.journal.get(key), timeout=30)
    status = done(stub, key)
    assert status.state == pb.WORK_ORDER_STATE_FAILED and "sky map unavailable: cannot download" in status.message
    raw = daemon.storage_root / "alerts" / "raw" / f"{hashlib.sha256(other.read_bytes()).hexdigest()}.bin"
    wait_for(raw.exists)
    # The server repeats its notices: still one work order per notice.
    received = [
        e.work_order_id
        for e in stub.Watch(pb.WatchRequest(replay_only=True))
        if e.work_order_update.state == pb.WORK_ORDER_STATE_QUEUED
    ]
    assert received.count(key) == 1 and all(r == key for r in received)
    daemon.module.stop()


def test_webhook_notification_after_a_relay(observatory, webhook):
    url, posts = webhook
    _, alert = observatory
    _, stub = alert(notify={"webhook": url})
    stub.Submit(
        pb.WorkOrder(
            id="w1", process_alert=pb.ProcessAlert(payload=(DATA / "MS181101ab-preliminary.json").read_bytes())
        )
    )
    assert done(stub, "w1").state == pb.WORK_ORDER_STATE_DONE
    wait_for(lambda: posts)
    assert posts[0]["alert_id"] == "MS181101ab" and len(posts[0]["targets"]["macon"]) == 5


def test_email_notification_after_a_relay_and_a_dead_mail_server_does_not_stop_it(observatory):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    received = []

    class Inbox(Message):
        def handle_message(self, message):
            received.append(message)

    controller = Controller(Inbox(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        telescope, alert = observatory
        _, stub = alert(
            notify={"email_to": ["night@toros.example"], "smtp_host": "127.0.0.1", "smtp_port": controller.port}
        )
        stub.Submit(
            pb.WorkOrder(
                id="e1", process_alert=pb.ProcessAlert(payload=(DATA / "MS181101ab-preliminary.json").read_bytes())
            )
        )
        assert done(stub, "e1").state == pb.WORK_ORDER_STATE_DONE
        wait_for(lambda: received)
        assert received[0]["To"] == "night@toros.example" and "MS181101ab" in received[0]["Subject"]
        assert "macon: 5 targets accepted" in received[0].get_payload(decode=True).decode()
    finally:
        controller.stop()
    _, stub = alert(
        notify={"email_to": ["night@toros.example"], "smtp_host": "127.0.0.1", "smtp_port": free_port()},
        process_test_alerts=True,
    )
    notice = json.loads((DATA / "MS181101ab-preliminary.json").read_text())
    notice["superevent_id"] = "MS181101ac"
    stub.Submit(pb.WorkOrder(id="e2", process_alert=pb.ProcessAlert(payload=json.dumps(notice).encode())))
    status = done(stub, "e2")
    assert status.state == pb.WORK_ORDER_STATE_DONE and "5 targets accepted" in status.message
    assert telescope.journal.get("MS181101ac-e2-macon") is not None


def test_gcn_credentials_and_a_mirror_reach_gcn_kafkas_consumer_configuration(monkeypatch):
    """GCN's OAUTHBEARER login cannot be exercised here (its identity provider is GCN's): what the consumer is
    configured with is checked instead — the credentials from the config or the environment, GCN's endpoints,
    and a mirror broker named in the config."""
    listener = KafkaListener(KafkaIntake(enabled=True, client_id="abc", client_secret="xyz"), lambda *_: None)
    config = listener.consumer_config()
    assert config["sasl.mechanisms"] == "OAUTHBEARER" and config["security.protocol"] == "sasl_ssl"
    assert config["sasl.oauthbearer.client.id"] == "abc" and config["sasl.oauthbearer.client.secret"] == "xyz"
    assert config["bootstrap.servers"] == "kafka.gcn.nasa.gov" and config["enable.auto.commit"] is False
    assert config["sasl.oauthbearer.token.endpoint.url"] == "https://auth.gcn.nasa.gov/oauth2/token"
    monkeypatch.setenv("GCN_KAFKA_CLIENT_ID", "from-env")
    assert KafkaListener(KafkaIntake(enabled=True), lambda *_: None).consumer_config()[
        "sasl.oauthbearer.client.id"
    ] == ("from-env")
    mirror = KafkaIntake(enabled=True, bootstrap_servers="127.0.0.1:9092", security_protocol="plaintext")
    assert KafkaListener(mirror, lambda *_: None).consumer_config()["bootstrap.servers"] == "127.0.0.1:9092"
    with pytest.raises(ValueError, match="plaintext needs bootstrap_servers on loopback"):
        KafkaIntake(enabled=True, bootstrap_servers="kafka.example.org:9092", security_protocol="plaintext")


def test_a_password_login_is_configured_for_tls_only_and_never_mixed_with_gcns(monkeypatch):
    """Hopskotch's login (SCRAM-SHA-512, a user and password, over TLS): what the consumer gets; a password
    over plaintext or without a user is refused when the config is read; GCN's variables do not leak into it."""
    monkeypatch.setenv("GCN_KAFKA_CLIENT_ID", "from-env")
    hopskotch = KafkaIntake(
        enabled=True, bootstrap_servers="kafka.scimma.org:9092", sasl_mechanism="SCRAM-SHA-512", username="toros",
        password="hunter2-hopskotch", ca_file="/etc/ssl/certs/ca-certificates.crt",
    )  # fmt: skip
    config = KafkaListener(hopskotch, lambda *_: None).consumer_config()
    assert config["sasl.mechanisms"] == "SCRAM-SHA-512" and config["security.protocol"] == "sasl_ssl"
    assert config["sasl.username"] == "toros" and config["sasl.password"] == "hunter2-hopskotch"
    assert config["ssl.ca.location"] == "/etc/ssl/certs/ca-certificates.crt"
    assert not any(key.startswith("sasl.oauthbearer") for key in config), "GCN's login is not mixed in"
    assert "hunter2" not in repr(hopskotch), "the password is a secret in the settings"
    with pytest.raises(ValueError, match="only over sasl_ssl"):
        KafkaIntake(enabled=True, bootstrap_servers="127.0.0.1:9092", security_protocol="plaintext",
                    sasl_mechanism="PLAIN", username="toros", password="hunter2-hopskotch")  # fmt: skip
    with pytest.raises(ValueError, match="needs username and password"):
        KafkaIntake(enabled=True, sasl_mechanism="SCRAM-SHA-512", password="hunter2-hopskotch")


def test_broker_problems_are_told_once_per_kind_until_notices_come_through():
    told: list[str] = []
    listener = KafkaListener(KafkaIntake(enabled=True), lambda *_: None, report=told.append)

    class Problem:
        def __init__(self, kind: str) -> None:
            self.kind = kind

        def name(self) -> str:
            return self.kind

        def str(self) -> str:
            return f"{self.kind} happened"

    for _ in range(3):
        listener._problem(Problem("_AUTHENTICATION"))
        listener._problem(Problem("_ALL_BROKERS_DOWN"))
    assert told == ["Kafka intake: _AUTHENTICATION: _AUTHENTICATION happened",
                    "Kafka intake: _ALL_BROKERS_DOWN: _ALL_BROKERS_DOWN happened"]  # fmt: skip
    listener._recovered()
    listener._problem(Problem("_AUTHENTICATION"))
    assert len(told) == 3, "after a recovery the same problem is news again"
