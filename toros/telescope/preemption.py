"""Alert targets before everything: an exposure in progress gives way when an alert's target arrives.

The target book signals an alert's arrival; an exposure that may give way (a routine target's, calibration
frames') looks at the signal each time it polls the camera, and ``Preemption`` decides, from the config's
``telescope.preemption``, whether it stops now or finishes first (``finish_frame``, or little time left).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from toros.telescope.settings import AlertPreemption

log = logging.getLogger(__name__)


class GiveWay(Exception):
    """An exposure stopped for an alert's target (the frame is kept as aborted, or discarded, as configured)."""


class Preemption:
    def __init__(self, settings: AlertPreemption) -> None:
        self.settings = settings
        self._arrived = threading.Event()
        # Whether an alert's target can be observed now: the dispatcher's answer (set when it starts).
        self.alert_waiting: Callable[[], bool] = lambda: False

    def alert_arrived(self) -> None:
        self._arrived.set()

    def stop_now(self, what: str, remaining_s: float) -> bool:
        """Whether an exposure with ``remaining_s`` left stops now for an alert's target that has just
        arrived (each arrival is looked at once: a frame allowed to finish is not asked again)."""
        if not self._arrived.is_set():
            return False
        self._arrived.clear()
        if not self.alert_waiting():
            return False
        left = "" if math.isinf(remaining_s) else f" ({max(remaining_s, 0.0):.0f} s left)"
        if self.settings.routine_exposure == "finish_frame" or remaining_s < self.settings.finish_below_s:
            log.info("an alert's target is waiting: %s finishes first%s", what, left)
            return False
        log.info("an alert's target is waiting: %s stops%s", what, left)
        return True
