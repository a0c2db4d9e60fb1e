"""A task repeated on its own thread in clock time: the night, the dispatcher, safety, the device monitor."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from toros.runtime.clock import Clock

log = logging.getLogger(__name__)


class Repeating:
    """Calls ``step`` every ``interval_s`` clock seconds until stopped; at once again when ``step`` returns
    True (it did something and may have more to do). A step that raises is logged and the loop goes on."""

    def __init__(self, name: str, step: Callable[[], bool | None], interval_s: float, clock: Clock) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.clock = clock
        self.stopping = threading.Event()
        self._woken = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        """The next step now rather than at the end of the interval (something it waits for has come)."""
        self._woken.set()

    def wait(self, clock_seconds: float) -> bool:
        """Sleeps in clock time (or until woken); True when the loop is being stopped."""
        self._woken.wait(self.clock.real_seconds(clock_seconds))
        self._woken.clear()
        return self.stopping.is_set()

    def _run(self) -> None:
        while not self.stopping.is_set():
            again = False
            try:
                again = bool(self.step())
            except Exception as exc:  # the loop outlives any one failure
                if self.stopping.is_set():  # the daemon is going down under it (the journal closing…)
                    log.info("%s: step cut short by the stop: %s", self.name, exc)
                else:
                    log.exception("%s: step failed", self.name)
            if not again:
                self.wait(self.interval_s)
