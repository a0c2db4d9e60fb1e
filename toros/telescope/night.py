"""The robotic night: each step of the night is a work order that the telescope submits to itself.

Prepare (cool the camera, bias and darks) in daylight; open when it is safe and the Sun is low enough;
evening sky flats; observe (the dispatcher takes over while it is dark); morning sky flats; park and close.
Steps have ids derived from the night (``night-2026-11-22-prepare``), so after a restart the runner finds
the step already accepted — resumed by the runtime, never done twice — and carries on. Safety may close at
any time; the runner reopens after the weather has been safe for ``safety.reopen_after_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum

from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.journal import Journal, WorkOrderRecord
from toros.telescope.astronomy import local_noon, night_of
from toros.telescope.loops import Repeating
from toros.telescope.observatory import Observatory
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)

STEP_POLL_S = 60.0
DONE = pb.WORK_ORDER_STATE_DONE


class NightState(StrEnum):
    """Where the robotic night stands (the words are those the status shows)."""

    STARTING = "starting"
    DAY = "day"
    PREPARING = "preparing"
    OPENING = "opening"
    EVENING_FLATS = "evening flats"
    MORNING_FLATS = "morning flats"
    OBSERVING = "observing"
    CLOSING = "closing"
    CLOSED = "closed for the night"
    KEPT_CLOSED = "closed"  # by safety, or waiting for it: the reason says which


class NightRunner:
    def __init__(
        self,
        observatory: Observatory,
        config: TelescopeConfig,
        clock: Clock,
        journal: Journal,
        submit: Callable[[pb.WorkOrder], tuple[WorkOrderRecord, bool]],
    ) -> None:
        self.observatory = observatory
        self.config = config
        self.clock = clock
        self.journal = journal
        self.submit = submit
        self.state: NightState = NightState.STARTING
        self.kept_closed_because = ""
        self._loop = Repeating("telescope-night", self.step, STEP_POLL_S, clock)  # safety does not depend on it

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _run_step(self, order: pb.WorkOrder) -> bool:
        """Submits a step (idempotent on its id) and waits for it; True when it is DONE."""
        record, _ = self.submit(order)
        while not record.final and not self._loop.wait(10.0):
            record = self.journal.get(order.id) or record
        if record.final and record.state != DONE:
            log.warning("night step %s ended %s: %s", order.id, pb.WorkOrderState.Name(record.state), record.message)
        return record.state == DONE

    def _done(self, id: str) -> bool:
        record = self.journal.get(id)
        return record is not None and record.final

    def describe(self) -> str:
        """The night's state in words (with the reason while safety keeps the dome closed)."""
        if self.state is NightState.KEPT_CLOSED:
            return f"{self.state}: {self.kept_closed_because}"
        return str(self.state)

    def step(self) -> None:
        now = self.clock.now()
        night = night_of(self.config.site, now)
        evening = now < local_noon(self.config.site, night) + timedelta(hours=12)
        sun = self.observatory.sun()
        low, high = self.config.calibrations.flat_sun_altitude_deg
        prefix = f"night-{night.isoformat()}"
        self.observatory.heartbeat()
        if sun > high:
            if evening and not self.observatory.is_open() and not self._done(f"{prefix}-prepare"):
                self.state = NightState.PREPARING
                self._run_own(f"{prefix}-prepare", night_operation=pb.NightOperation(step=pb.NIGHT_STEP_PREPARE))
            elif not evening and self.observatory.is_open():
                self.state = NightState.CLOSING
                self._run_own(f"{prefix}-close", night_operation=pb.NightOperation(step=pb.NIGHT_STEP_CLOSE))
            else:
                self.state = NightState.DAY
            return
        if not self._ensure_open(prefix):
            return
        if sun >= low:
            session = "evening" if evening else "morning"
            self.state = NightState.EVENING_FLATS if evening else NightState.MORNING_FLATS
            for name in self.config.calibrations.flat_filters:
                if self.config.calibrations.flat_count and not self._done(f"{prefix}-{session}-flats-{name}"):
                    self._run_own(
                        f"{prefix}-{session}-flats-{name}",
                        priority=80,
                        take_calibrations=pb.TakeCalibrations(
                            image_type=pb.IMAGE_TYPE_FLAT,
                            count=self.config.calibrations.flat_count,
                            filter=name,
                            flat_source=pb.FLAT_SOURCE_SKY,
                        ),
                    )
            if not evening and all(
                self._done(f"{prefix}-morning-flats-{n}") for n in self.config.calibrations.flat_filters
            ):
                self.state = NightState.CLOSING
                self._run_own(f"{prefix}-close", night_operation=pb.NightOperation(step=pb.NIGHT_STEP_CLOSE))
            return
        self.state = NightState.OBSERVING

    def _run_own(
        self,
        order_id: str,
        *,
        priority: int = 0,
        night_operation: pb.NightOperation | None = None,
        take_calibrations: pb.TakeCalibrations | None = None,
    ) -> bool:
        """Runs one of the night's own work orders (its id derived from the night, so a restart finds it
        again instead of making another; one of the two tasks); True when it ended DONE."""
        order = pb.WorkOrder(
            id=order_id,
            requester="robotic night",
            priority=priority,
            night_operation=night_operation,
            take_calibrations=take_calibrations,
        )
        return self._run_step(order)

    def _ensure_open(self, prefix: str) -> bool:
        """Opens the dome when allowed; False while it must stay closed (the reason goes to the status)."""
        if self.observatory.is_open() and not self.observatory.mount.parked():
            return True
        if self._done(f"{prefix}-close"):
            self.state = NightState.CLOSED
            return False
        reason = self.observatory.reopen_allowed()
        safe_since = self.observatory.safe_since
        if (
            reason is None
            and self.observatory.closed_by_safety_at is not None
            and (safe_since is None or self.clock.timestamp() - safe_since < self.config.safety.reopen_after_s)
        ):
            reason = f"waiting for {self.config.safety.reopen_after_s:.0f} s of safe weather"
        if reason:
            self.state, self.kept_closed_because = NightState.KEPT_CLOSED, reason
            return False
        attempt = 0
        while self._done(f"{prefix}-open-{attempt}"):
            attempt += 1
        self.state = NightState.OPENING
        opened = self._run_own(f"{prefix}-open-{attempt}", night_operation=pb.NightOperation(step=pb.NIGHT_STEP_OPEN))
        if opened:
            self.observatory.closed_by_safety_at = None
        return opened
