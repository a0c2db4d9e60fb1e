"""Following another daemon's events from where this daemon left off.

A Watch from the position kept in the journal (the last event handled), resumed after a restart or a broken
stream with a growing backoff. An event is handled again only if this daemon stopped before recording it:
handlers make a repeat a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.runtime.module import Services

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0

Handler = Callable[[FrontDeskStub, pb.Event], None]


class EventFollower:
    """One thread following ``kinds`` of events of the daemon at ``address``, handing each to ``handle``.

    ``retry_on``: exceptions of the handler that mean "not now" (the event is handled again after the backoff);
    any other exception is a bug and stops nothing but is logged with its trace, the event skipped."""

    def __init__(
        self,
        name: str,
        address: str,
        kinds: Sequence[pb.EventKind],
        handle: Handler,
        services: Services,
        position_key: str,
        *,
        retry_on: tuple[type[Exception], ...] = (),
    ) -> None:
        self.name, self.address, self.kinds = name, address, list(kinds)
        self.handle = handle
        self.services = services
        self.journal = services.journal
        self.position_key = position_key
        self.retry_on = retry_on
        self._stop = threading.Event()
        self._stream: Any = None  # the Watch call, cancelled to stop
        self._thread = threading.Thread(target=self._run, name=f"follow-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.cancel()
        self._thread.join(timeout=10)

    @property
    def position(self) -> int:
        return int(self.journal.get_value(self.position_key) or 0)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            channel = self.services.connect(self.address)
            try:
                stub = FrontDeskStub(channel)
                after = self.position
                stream = stub.Watch(pb.WatchRequest(after_sequence=after, kinds=self.kinds))
                self._stream = stream
                log.info("following %s at %s from event %d", self.name, self.address, after)
                for event in stream:
                    self._handle(stub, event)
                    self.journal.set_value(self.position_key, str(event.sequence))
                    backoff = 1.0
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    break
                log.warning(
                    "stream of %s at %s: %s; retrying in %.0f s", self.name, self.address, exc.code().name, backoff
                )
            except self.retry_on as exc:
                log.error("event of %s not handled yet: %s; retrying in %.0f s", self.name, exc, backoff)
            finally:
                channel.close()
            self._stop.wait(backoff)
            backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)

    def _handle(self, stub: FrontDeskStub, event: pb.Event) -> None:
        try:
            self.handle(stub, event)
        except self.retry_on:
            raise
        except Exception:  # one bad event must not stop the stream for good
            log.exception("event %d of %s skipped: its handler failed", event.sequence, self.name)
