"""The campaigns published as our own notices on Kafka (``alert.campaign_kafka``), for partners to listen to.

Each change of a campaign hands its JSON here; a background thread sends the latest of each event (key: the
superevent id) with gcn-kafka's producer, so a slow or absent broker never holds the campaign up. What goes
wrong is told through ``status(event, text)`` (the campaign shows it) and retried: librdkafka retries a
message until its delivery timeout, and a message that was not delivered by then is sent again later.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from toros.alert.listeners import kafka_login
from toros.alert.settings import CampaignPublishing

log = logging.getLogger(__name__)

SCHEMA = "toros.campaign/1"
DELIVERY_TIMEOUT_S = 30.0  # a message not delivered by then is failed by librdkafka, and sent again later
RETRY_S = 10.0

Status = Callable[[str, str], None]


class CampaignPublisher:
    def __init__(
        self, settings: CampaignPublishing, status: Status, producer_factory: Callable[[], Any] | None = None
    ) -> None:
        self.settings = settings
        self.status = status
        self._factory = producer_factory or self._gcn_producer
        self._pending: dict[str, bytes] = {}  # event -> its latest campaign, not yet handed to the producer
        self._in_flight: set[str] = set()  # events handed to the producer, not delivered yet
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="campaign-kafka", daemon=True)

    def _gcn_producer(self) -> Any:
        from gcn_kafka import Producer

        config, arguments = kafka_login(
            self.settings,
            {
                "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000),
                "error_cb": self._problem,
                "logger": logging.getLogger("toros.alert.kafka"),  # librdkafka's own lines, in the daemon's log
            },
        )
        return Producer(config=config, **arguments)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def publish(self, event: str, campaign: dict[str, Any]) -> None:
        """The campaign's latest state, to be sent (an earlier one not sent yet is replaced)."""
        message = {"schema": SCHEMA, "sent": datetime.now(UTC).isoformat().replace("+00:00", "Z")} | campaign
        with self._lock:
            self._pending[event] = json.dumps(message, separators=(",", ":")).encode()
        self._wake.set()

    def _problem(self, error: Any) -> None:
        """A broker's error (all brokers down, a refused login): told on every campaign waiting to be sent."""
        with self._lock:
            waiting = sorted(set(self._pending) | self._in_flight)
        for event in waiting:
            self.status(event, f"not published yet: {error.name()}: {error.str()}; retried")

    def _run(self) -> None:
        producer = None
        while not self._stop.is_set():
            self._wake.wait(RETRY_S)
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, {}
                self._in_flight |= set(batch)
            if not batch:
                continue
            try:
                producer = producer or self._factory()
                for event, value in batch.items():
                    producer.produce(
                        self.settings.topic,
                        value,
                        key=event.encode(),
                        on_delivery=lambda error, message, event=event, value=value: self._delivered(
                            event, value, error
                        ),
                    )
                while producer.flush(1.0) > 0 and not self._stop.is_set():
                    pass  # in slices: a daemon stopping does not wait for a broker that is not there
            except Exception as exc:  # a producer that cannot be made or used: named, and tried again
                log.error("campaign publishing on Kafka failed: %s; retrying in %.0f s", exc, RETRY_S)
                for event, value in batch.items():
                    self.status(event, f"not published yet: {exc}; retried")
                    self._again(event, value)
                producer = None

    def _delivered(self, event: str, value: bytes, error: Any) -> None:
        with self._lock:
            self._in_flight.discard(event)
        if error is None:
            self.status(event, f"published on {self.settings.topic}")
            return
        self.status(event, f"not published yet: {error.name()}: {error.str()}; retried")
        self._again(event, value)

    def _again(self, event: str, value: bytes) -> None:
        """A message not delivered goes back in line, unless a newer state of its campaign is there already."""
        with self._lock:
            self._in_flight.discard(event)
            self._pending.setdefault(event, value)
