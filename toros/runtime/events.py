"""Live fan-out of journaled events to Watch streams.

The journal publishes each event here only after it is committed, so whatever a stream reads from this
window is durable. The window holds the most recent events; a stream that has fallen further behind reads
from the database instead (see ``FrontDesk.Watch``), then catches up here without a gap or a duplicate.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque

from toros.generated import toros_pb2 as pb


class EventHub:
    def __init__(self, last_sequence: int = 0, window: int = 8192) -> None:
        self._events: deque[pb.Event] = deque(maxlen=window)
        self._sequences: deque[int] = deque(maxlen=window)
        self._changed = threading.Condition()
        self.last_sequence = last_sequence
        self.closed = False

    def publish(self, events: list[pb.Event]) -> None:
        """Adds committed events (in increasing sequence order) and wakes the streams waiting for them."""
        if not events:
            return
        with self._changed:
            for event in events:
                self._events.append(event)
                self._sequences.append(event.sequence)
            self.last_sequence = events[-1].sequence
            self._changed.notify_all()

    def after(self, sequence: int, limit: int = 1000) -> list[pb.Event] | None:
        """Events with a greater sequence, from memory; ``None`` when they are older than the window."""
        with self._changed:
            if sequence >= self.last_sequence:
                return []
            if not self._sequences or self._sequences[0] > sequence + 1:
                return None
            start = bisect.bisect_right(self._sequences, sequence)
            return [self._events[i] for i in range(start, min(start + limit, len(self._events)))]

    def wait(self, sequence: int, timeout: float) -> None:
        """Blocks until an event after ``sequence`` is published, the hub closes, or ``timeout`` passes."""
        with self._changed:
            self._changed.wait_for(lambda: self.last_sequence > sequence or self.closed, timeout)

    def wake(self) -> None:
        """Wakes every waiting stream so that it re-checks whether its client is still there."""
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        """Ends every following stream (daemon shutdown)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()
