"""The console's one ``Watch`` per daemon, fanned out to every browser.

A thread per daemon follows its event stream and, when the daemon goes away, waits and resumes after the last
sequence it saw (sequences are durable, so a restart loses nothing). Recent events are kept per daemon, so a
browser that reconnects with ``Last-Event-ID`` (the last sequence it saw of each daemon) is sent what it
missed, from memory or, when that reaches back too little, from the daemon's journal."""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from toros.client import frontdesk
from toros.config import Config
from toros.generated import toros_pb2 as pb
from toros.generated import toros_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

MODULES = ("alert", "telescope", "preprocessor")
RETRY_S = 1.0  # between attempts to reach a daemon that is down
DAEMON = "daemon"  # the kind of the hub's own notices: a daemon came up or went away (no sequence of its own)
STATUS_TIMEOUT_S = 2.0
FIRST_CONTACT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WebEvent:
    module: str
    sequence: int
    kind: str
    data: dict[str, Any]

    @functools.cached_property
    def json(self) -> str:
        """``data`` as JSON, made once however many browsers are sent the event."""
        return json.dumps(self.data)

    @classmethod
    def of(cls, module: str, event: pb.Event) -> WebEvent:
        kind = event.WhichOneof("kind") or ""
        data = MessageToDict(event, preserving_proto_field_name=True)
        data.update(module=module, sequence=event.sequence, work_order_id=event.work_order_id, kind=kind)
        return cls(module, event.sequence, kind, data)


Position = dict[str, int]  # the last sequence seen of each daemon


def format_position(position: Position) -> str:
    """An SSE id: ``alert:12,telescope:40,preprocessor:7``."""
    return ",".join(f"{module}:{position.get(module, 0)}" for module in MODULES)


def parse_position(text: str | None) -> Position | None:
    """A Last-Event-ID as ``format_position`` writes it; None when absent or malformed (the stream starts now)."""
    if not text:
        return None
    position: Position = {}
    for part in text.split(","):
        module, _, sequence = part.partition(":")
        if module not in MODULES or not sequence.isdigit():
            return None
        position[module] = int(sequence)
    return position


BEHIND_LIMIT = 10_000  # events queued for one browser before its stream is ended (it reconnects and catches up)
REPLAY_PAGE = 200  # events of a browser's catching up read at a time: what one stream ever holds of it
PAGES_KEPT = 64  # journal pages kept for the next browser that catches up from the same place


class Recent:
    """A daemon's latest events, in sequence order, found by sequence in log time."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._events: list[WebEvent] = []
        self._sequences: list[int] = []

    def append(self, event: WebEvent) -> None:
        self._events.append(event)
        self._sequences.append(event.sequence)
        if len(self._events) > 2 * self.keep:  # trimmed now and then, so an append costs O(1) on average
            del self._events[: -self.keep], self._sequences[: -self.keep]

    def page(self, after: int, last: int, limit: int) -> list[WebEvent] | None:
        """At most ``limit`` events after ``after`` up to ``last``; None when memory does not reach back to the
        one right after ``after``."""
        start = bisect.bisect_right(self._sequences, after)
        if start >= len(self._sequences) or self._sequences[start] != after + 1:
            return None
        stop = bisect.bisect_right(self._sequences, last, lo=start, hi=min(len(self._sequences), start + limit))
        return self._events[start:stop]


@dataclass(eq=False)
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[WebEvent | None] = field(default_factory=asyncio.Queue)  # None: the stream ends


class EventHub:
    def __init__(self, config: Config, keep: int = 10_000) -> None:
        self.config = config
        self._stubs = {module: frontdesk(config, module) for module in MODULES}
        self._recent: dict[str, Recent] = {module: Recent(keep) for module in MODULES}
        # Journal pages read for browsers catching up, shared: browsers that reconnect from one position (after a
        # console restart, all of them) read each page once between them.
        self._pages: OrderedDict[tuple[str, int, int], list[WebEvent]] = OrderedDict()
        self._last: Position = dict.fromkeys(MODULES, 0)
        self._started: dict[str, bool] = dict.fromkeys(MODULES, False)  # the live position is known
        self.reachable: dict[str, bool] = dict.fromkeys(MODULES, False)
        self.watches: dict[str, int] = dict.fromkeys(MODULES, 0)  # Watch calls opened, for the record
        self._subscribers: set[Subscriber] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._calls: dict[str, Any] = {}
        self._tried = {module: threading.Event() for module in MODULES}  # a first attempt to reach it ended
        self._threads = [
            threading.Thread(target=self._follow, args=(module,), name=f"web-watch-{module}", daemon=True)
            for module in MODULES
        ]

    def start(self) -> None:
        """Follows every daemon; returns once each has been tried (its position known, or it is down), so that a
        browser that connects at once misses nothing of a daemon that is up."""
        for thread in self._threads:
            thread.start()
        for tried in self._tried.values():
            tried.wait(FIRST_CONTACT_TIMEOUT_S + 1.0)

    def stop(self) -> None:
        self._stopping.set()
        for call in list(self._calls.values()):
            call.cancel()
        for thread in self._threads:
            thread.join(timeout=5)
        for _, channel in self._stubs.values():
            channel.close()

    def stub(self, module: str) -> pb_grpc.FrontDeskStub:
        return self._stubs[module][0]

    # -- following the daemons ------------------------------------------------------------------

    def _follow(self, module: str) -> None:
        stub = self.stub(module)
        while not self._stopping.is_set():
            try:
                # It answers: it is up. The first time, it is given long enough on a loaded machine: the position
                # it gives is where the console's "live" begins.
                first = not self._tried[module].is_set()
                timeout = FIRST_CONTACT_TIMEOUT_S if first else STATUS_TIMEOUT_S
                status = stub.GetStatus(pb.GetStatusRequest(), timeout=timeout)
                with self._lock:
                    if not self._started[module]:  # live from now: the daemon's history stays in its journal
                        self._last[module] = status.last_sequence
                        self._started[module] = True
                self._tried[module].set()
                call = stub.Watch(pb.WatchRequest(after_sequence=self._last[module]))
                self._calls[module] = call
                self.watches[module] += 1
                self._reached(module, None)
                for event in call:
                    self._publish(WebEvent.of(module, event))
            except grpc.RpcError as error:
                self._tried[module].set()
                if self._stopping.is_set():
                    return
                self._reached(module, f"{error.code().name}: {error.details()}")
            self._stopping.wait(RETRY_S)

    def _reached(self, module: str, error: str | None) -> None:
        """A daemon came up (``error`` None) or went away: every browser is told at once."""
        up = error is None
        if self.reachable[module] == up:
            return
        self.reachable[module] = up
        if up:
            log.info("%s daemon reachable; following its events after sequence %d", module, self._last[module])
        else:
            log.warning("%s daemon lost (%s); resuming after sequence %d", module, error, self._last[module])
        data = {"module": module, "sequence": self._last[module], "work_order_id": "", "kind": DAEMON}
        notice = WebEvent(module, 0, DAEMON, data | {"reachable": up, "error": error or ""})
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.loop.call_soon_threadsafe(self._deliver, subscriber, notice)

    def _publish(self, event: WebEvent) -> None:
        with self._lock:
            if event.sequence <= self._last[event.module]:
                return
            self._last[event.module] = event.sequence
            self._recent[event.module].append(event)
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber.loop.call_soon_threadsafe(self._deliver, subscriber, event)

    def _deliver(self, subscriber: Subscriber, event: WebEvent) -> None:
        if subscriber.queue.qsize() >= BEHIND_LIMIT:
            self.unsubscribe(subscriber)
            subscriber.queue.put_nowait(None)
        else:
            subscriber.queue.put_nowait(event)

    # -- browsers ----------------------------------------------------------------------------------

    def subscribe(self) -> tuple[Subscriber, Position]:
        """A new listener and the position it starts from (everything after it reaches its queue)."""
        subscriber = Subscriber(asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(subscriber)
            return subscriber, dict(self._last)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(subscriber)

    def page(self, module: str, after: int, last: int, limit: int = REPLAY_PAGE) -> list[WebEvent]:
        """At most ``limit`` events of one daemon after ``after`` up to ``last``: from memory, else read from its
        journal (a Watch that is closed once the page is full; call it off the event loop). An empty page: the
        daemon is down, the rest comes when it is back."""
        with self._lock:
            kept = self._recent[module].page(after, last, limit)
            if kept is None and (module, after, limit) in self._pages:
                kept = [e for e in self._pages[(module, after, limit)] if e.sequence <= last]
        if kept is not None:
            return kept
        events: list[WebEvent] = []
        call = self.stub(module).Watch(pb.WatchRequest(after_sequence=after, replay_only=True), timeout=30)
        try:
            for event in call:
                if event.sequence > last:
                    break
                events.append(WebEvent.of(module, event))
                if len(events) >= limit:
                    break
        except grpc.RpcError as error:  # the daemon is down: the rest comes when it is back
            log.warning("cannot replay %s events after %d: %s", module, after, error.code().name)
        finally:
            call.cancel()
        if len(events) == limit:  # a full page is the same for whoever asks next
            with self._lock:
                self._pages[(module, after, limit)] = events
                while len(self._pages) > PAGES_KEPT:
                    self._pages.popitem(last=False)
        return events

    def status(self, module: str) -> dict[str, Any]:
        """One daemon's status for the overview; ``reachable`` false with the reason when it does not answer."""
        try:
            status = self.stub(module).GetStatus(pb.GetStatusRequest(), timeout=STATUS_TIMEOUT_S)
        except grpc.RpcError as error:
            return {"module": module, "reachable": False, "error": f"{error.code().name}: {error.details()}"}
        return {"module": module, "reachable": True} | MessageToDict(status, preserving_proto_field_name=True)
