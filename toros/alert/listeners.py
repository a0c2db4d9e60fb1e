"""Alert intake from the network: GCN Kafka (igwn.gwalert JSON; Hopskotch's Avro) and GCN Classic VOEvent
(pygcn).

Both hand every notice to ``receive(payload, key)``, which stores it raw and journals a process_alert work
order whose id is ``key``: a notice delivered twice (a Kafka redelivery after a restart, a VOEvent re-sent)
becomes the same work order and is processed once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from toros.alert.settings import KafkaIntake, KafkaLogin, VoeventIntake

log = logging.getLogger(__name__)

# GCN Classic notice types of LVK alerts: preliminary, initial, update, test, counterpart, early warning,
# retraction. Other types are archived and ignored.
LVK_NOTICE_TYPES = frozenset({150, 151, 152, 153, 154, 163, 164})
MAX_BACKOFF_SECONDS = 60.0

Receive = Callable[[bytes, str], None]


def kafka_login(settings: KafkaLogin, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(librdkafka settings, gcn-kafka's arguments) for a client of ``settings``' broker: GCN's OAUTHBEARER
    login with the credentials (config or environment), or a broker named in the config with its user."""

    def secret(value: Any, variable: str) -> str | None:
        return value.get_secret_value() if value is not None else os.environ.get(variable)

    config = config | {"security.protocol": settings.security_protocol}
    if settings.bootstrap_servers:
        config["bootstrap.servers"] = settings.bootstrap_servers
    if settings.ca_file is not None:
        config["ssl.ca.location"] = str(settings.ca_file)
    if settings.sasl_mechanism != "OAUTHBEARER":  # a user and password (Hopskotch, a mirror)
        assert settings.password is not None, "checked with the settings"
        config["sasl.mechanisms"] = settings.sasl_mechanism
        config["sasl.username"] = settings.username
        config["sasl.password"] = settings.password.get_secret_value()
        return config, {"domain": settings.domain}
    arguments = {
        "client_id": secret(settings.client_id, "GCN_KAFKA_CLIENT_ID"),
        "client_secret": secret(settings.client_secret, "GCN_KAFKA_CLIENT_SECRET"),
        "domain": settings.domain,
    }
    return config, arguments


class KafkaListener:
    """Consumes GCN Kafka topics; an offset is committed only after its notice is journaled.

    What goes wrong with the broker (a refused login, a topic that does not exist, the brokers down) is told
    once per kind through ``report`` (a log line and an event), until a notice comes through again: an
    operator sees each problem once, not once a second."""

    def __init__(
        self,
        settings: KafkaIntake,
        receive: Receive,
        consumer_factory: Callable[[], Any] | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.receive = receive
        self.report = report or (lambda text: log.warning("%s", text))
        self._reported: set[str] = set()
        self._factory = consumer_factory or self._gcn_consumer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-intake", daemon=True)

    def _problem(self, error: Any) -> None:
        """A broker's error (a KafkaError), told once per kind until intake recovers."""
        kind = error.name()
        if kind not in self._reported:
            self._reported.add(kind)
            self.report(f"Kafka intake: {kind}: {error.str()}")

    def _recovered(self) -> None:
        if self._reported:
            log.info("Kafka intake: notices come through again (after %s)", ", ".join(sorted(self._reported)))
            self._reported.clear()

    def _consumer_inputs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(librdkafka settings, gcn-kafka's arguments) of the consumer."""
        return kafka_login(
            self.settings,
            {
                "group.id": self.settings.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(self.settings.session_timeout_s * 1000),
            },
        )

    def consumer_config(self) -> dict[str, Any]:
        """The consumer's configuration as gcn-kafka completes it (what the broker sees)."""
        from gcn_kafka.core import get_config

        config, arguments = self._consumer_inputs()
        return dict(get_config("consumer", config, **arguments))

    def _gcn_consumer(self) -> Any:
        from gcn_kafka import Consumer

        config, arguments = self._consumer_inputs()
        config["error_cb"] = self._problem  # a refused login, all brokers down: errors of no one message
        return Consumer(config=config, **arguments)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = self._factory()
                consumer.subscribe(list(self.settings.topics))
                log.info(
                    "consuming %s from Kafka (%s)", ", ".join(self.settings.topics),
                    self.settings.bootstrap_servers or f"kafka.{self.settings.domain}",
                )  # fmt: skip
                while not self._stop.is_set():
                    # One message at a time: poll returns as soon as one is there (a batch consume waits for a
                    # full batch or its timeout, a second added to a lone notice's latency).
                    message = consumer.poll(timeout=1.0)
                    if message is None:
                        continue
                    if message.error():
                        self._problem(message.error())
                        continue
                    key = f"kafka-{message.topic()}-{message.partition()}-{message.offset()}"
                    self.receive(message.value(), key)
                    consumer.commit(message, asynchronous=False)
                    self._recovered()
                    backoff = 1.0
            except Exception as exc:  # a broken connection or a refused login: reconnect, never give up
                log.error("GCN Kafka consumer failed: %s; reconnecting in %.0f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)
            finally:
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # closing a broken consumer may fail too; it is dropped either way
                        log.debug("closing the Kafka consumer failed", exc_info=True)


class VoeventListener:
    """pygcn's VOEvent client in a thread; LVK notice types are received, others archived and ignored."""

    def __init__(self, settings: VoeventIntake, receive: Receive, archive: Callable[[bytes], object]) -> None:
        self.settings = settings
        self.receive = receive
        self.archive = archive
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="voevent-intake", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        # pygcn's listen() has no way out; the thread is a daemon and ignores notices from now on.
        self._stopped = True

    def _handle(self, payload: bytes, root: Any) -> None:
        import gcn.handlers

        if self._stopped:
            return
        try:
            notice_type = gcn.handlers.get_notice_type(root)
        except (AttributeError, KeyError, TypeError, ValueError):
            notice_type = None  # no readable Packet_Type: the notice parser says what is wrong with it
        if notice_type is not None and notice_type not in LVK_NOTICE_TYPES:
            self.archive(payload)
            log.info("VOEvent of notice type %s archived and ignored (not an LVK alert)", notice_type)
            return
        self.receive(payload, f"voevent-{hashlib.sha256(payload).hexdigest()[:32]}")

    def _run(self) -> None:
        import gcn.voeventclient

        hosts = self.settings.host if len(self.settings.host) > 1 else self.settings.host[0]
        gcn.voeventclient.listen(
            host=hosts,
            port=self.settings.port,
            ivorn=self.settings.ivorn,
            handler=self._handle,
            log=logging.getLogger("toros.alert.voevent"),
        )
