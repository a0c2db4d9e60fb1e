"""The one clock of a module: real time, or simulated time that starts at a chosen instant and runs faster.

Every module takes the time from here, so a test or the demo can run a whole night in a minute.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """Wall-clock or accelerated time. ``rate`` simulated seconds pass per real second.

    A simulated clock may be ``held``: it stands at its start until ``release`` (a daemon releases it once it
    serves), so a slow start on a loaded machine costs the simulated night nothing. A ``shared_from`` clock reads
    ``start`` at that real instant instead: the daemons of a simulated network given the same instant read the
    same time whenever each of them starts (and neither holds nor resumes)."""

    def __init__(
        self,
        start: datetime | None = None,
        rate: float = 1.0,
        *,
        held: bool = False,
        shared_from: datetime | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("clock rate must be positive")
        self.rate = rate
        self.simulated = start is not None or rate != 1.0
        self.shared = shared_from is not None and self.simulated
        self._real_origin = shared_from.timestamp() if shared_from is not None and self.shared else time.time()
        self._origin = start.timestamp() if start is not None else self._real_origin
        self._held = held and self.simulated and not self.shared

    def resume_from(self, timestamp: float) -> None:
        """A simulated clock carries on from ``timestamp`` (the last moment a previous run recorded) instead of
        starting again at ``clock.start``: after a restart, a drill's night goes on rather than replaying."""
        if self.simulated and not self.shared and timestamp > self.timestamp():
            self._real_origin = time.time()
            self._origin = timestamp

    def release(self) -> None:
        """A held clock starts running from where it stands."""
        if self._held:
            self._real_origin = time.time()
            self._held = False

    def timestamp(self) -> float:
        """Seconds since the Unix epoch, in clock time."""
        if self._held:
            return self._origin
        return self._origin + (time.time() - self._real_origin) * self.rate

    def now(self) -> datetime:
        """The current clock time, timezone-aware UTC."""
        return datetime.fromtimestamp(self.timestamp(), tz=UTC)

    def real_seconds(self, clock_seconds: float) -> float:
        """How long ``clock_seconds`` of clock time take in real time."""
        return max(0.0, clock_seconds) / self.rate

    def sleep(self, clock_seconds: float, interrupt: threading.Event | None = None) -> bool:
        """Sleeps for clock time; returns True early if ``interrupt`` is set."""
        real = self.real_seconds(clock_seconds)
        if interrupt is None:
            time.sleep(real)
            return False
        return interrupt.wait(real)
