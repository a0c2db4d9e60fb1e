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
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum, StrEnum

from toros.floor.astronomy import local_noon, night_of
from toros.floor.requesters import ROBOTIC_NIGHT
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.journal import Journal, WorkOrderRecord
from toros.telescope.hold import OperatorHold
from toros.telescope.loops import Repeating
from toros.telescope.observatory import Observatory
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)

STEP_POLL_S = 60.0
LOOKS_PER_STEP = 3  # a step may go on at once after opening and after the morning flats, no further
FLATS_PRIORITY = 80  # twilight does not wait for routine targets
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
    ON_HOLD = "on hold"  # an operator closed: the robot takes no step until an operator resumes or opens


class SkyPhase(Enum):
    DAY = "day"  # the Sun above the sky-flat band
    TWILIGHT = "twilight"  # in the sky-flat band
    DARK = "dark"  # below it: the dispatcher observes


@dataclass(frozen=True)
class StepIds:
    """The ids of one night's own work orders, derived from the night so that a restart finds them again."""

    night: str

    @property
    def prepare(self) -> str:
        return f"night-{self.night}-prepare"

    @property
    def close(self) -> str:
        return f"night-{self.night}-close"

    def open(self, attempt: int) -> str:
        return f"night-{self.night}-open-{attempt}"

    def flats(self, session: str, filter: str) -> str:
        return f"night-{self.night}-{session}-flats-{filter}"


@dataclass(frozen=True)
class Situation:
    """What the night runner sees before each step."""

    phase: SkyPhase
    evening: bool  # before local midnight
    shutter_open: bool
    ready: bool  # shutter open and mount unparked
    prepared: bool  # tonight's prepare step has ended
    closed_for_the_night: bool  # tonight's close step has ended
    kept_closed_because: str | None  # while closed at night: why it may not open yet (None: it may)
    flats_to_take: tuple[str, ...]  # this twilight's flat filters whose work order has not ended
    ids: StepIds
    on_hold: bool = False  # an operator's hold


#: The night as a transition table: the first row whose condition holds gives the state, whatever the state
#: before (a restart, or safety closing in the middle, lands in the right row). Each state's work order is
#: run by ``NightRunner._act``.
TRANSITIONS: tuple[tuple[Callable[[Situation], bool], NightState], ...] = (
    (lambda s: s.on_hold, NightState.ON_HOLD),  # the operator has the last word
    # Bias and darks by day: in the afternoon, or the morning after for a night that began without them (a node
    # started after dusk), so that the night's frames, waiting for their masters, are calibrated then.
    (lambda s: s.phase is SkyPhase.DAY and not s.shutter_open and not s.prepared, NightState.PREPARING),
    (lambda s: s.phase is SkyPhase.DAY and not s.evening and s.shutter_open, NightState.CLOSING),
    (lambda s: s.phase is SkyPhase.DAY and not s.evening and s.closed_for_the_night, NightState.CLOSED),  # till noon
    (lambda s: s.phase is SkyPhase.DAY, NightState.DAY),
    (lambda s: not s.ready and s.closed_for_the_night, NightState.CLOSED),
    (lambda s: not s.ready and s.kept_closed_because is not None, NightState.KEPT_CLOSED),
    (lambda s: not s.ready, NightState.OPENING),
    (lambda s: s.phase is SkyPhase.TWILIGHT and s.evening, NightState.EVENING_FLATS),
    (lambda s: s.phase is SkyPhase.TWILIGHT and bool(s.flats_to_take), NightState.MORNING_FLATS),
    (lambda s: s.phase is SkyPhase.TWILIGHT, NightState.CLOSING),  # the morning flats are done
    (lambda s: True, NightState.OBSERVING),
)


def next_state(situation: Situation) -> NightState:
    return next(state for holds, state in TRANSITIONS if holds(situation))


class NightRunner:
    def __init__(
        self,
        observatory: Observatory,
        config: TelescopeConfig,
        clock: Clock,
        journal: Journal,
        submit: Callable[[pb.WorkOrder], tuple[WorkOrderRecord, bool]],
        hold: OperatorHold,
    ) -> None:
        self.observatory = observatory
        self.hold = hold
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

    def wake(self) -> None:
        """Looks again now (an operator ended the hold)."""
        self._loop.wake()

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
        if self.state is NightState.ON_HOLD and (hold := self.hold.current) is not None:
            return hold.describe()
        return str(self.state)

    def look(self) -> Situation:
        """What the next step depends on (device I/O: the shutter, the mount, and the weather while closed)."""
        now = self.clock.now()
        site, calibrations = self.config.site, self.config.calibrations
        night = night_of(site, now)
        if self.hold.active:  # nothing else is looked at: no device I/O while people are in charge
            return Situation(
                phase=SkyPhase.DAY,
                evening=False,
                shutter_open=False,
                ready=False,
                prepared=False,
                closed_for_the_night=False,
                kept_closed_because=None,
                flats_to_take=(),
                ids=StepIds(night.isoformat()),
                on_hold=True,
            )
        evening = now < local_noon(site, night) + timedelta(hours=12)
        sun = self.observatory.sun()
        low, high = calibrations.flat_sun_altitude_deg
        phase = SkyPhase.DAY if sun > high else SkyPhase.TWILIGHT if sun >= low else SkyPhase.DARK
        ids = StepIds(night.isoformat())
        shutter_open = self.observatory.is_open()
        ready = shutter_open and not self.observatory.mount.parked()
        session = "evening" if evening else "morning"
        flats = tuple(
            name
            for name in calibrations.flat_filters
            if calibrations.flat_count and not self._done(ids.flats(session, name))
        )
        return Situation(
            phase=phase,
            evening=evening,
            shutter_open=shutter_open,
            ready=ready,
            prepared=self._done(ids.prepare),
            closed_for_the_night=self._done(ids.close),
            kept_closed_because=None if ready or phase is SkyPhase.DAY else self._kept_closed_because(),
            flats_to_take=flats,
            ids=ids,
        )

    def step(self) -> None:
        """One look and what follows from it: the state from the table, then that state's work order."""
        self.observatory.safety.heartbeat()
        for _ in range(LOOKS_PER_STEP):
            situation = self.look()
            self.state = next_state(situation)
            if self.state is NightState.KEPT_CLOSED:
                self.kept_closed_because = situation.kept_closed_because or ""
            if not self._act(situation) or self._loop.stopping.is_set():
                return

    def _act(self, situation: Situation) -> bool:
        """Runs the current state's work orders; True when the night should look again at once (the dome
        has just opened or closed, the morning flats are done)."""
        ids = situation.ids
        calibrations = self.config.calibrations
        if self.state is NightState.PREPARING:
            self._run_own(ids.prepare, night_operation=pb.NightOperation(step=pb.NIGHT_STEP_PREPARE))
        elif self.state is NightState.CLOSING:  # closed: say so at once, not at the next step
            return self._run_own(ids.close, night_operation=pb.NightOperation(step=pb.NIGHT_STEP_CLOSE))
        elif self.state is NightState.OPENING:
            attempt = 0
            while self._done(ids.open(attempt)):
                attempt += 1
            if self._run_own(ids.open(attempt), night_operation=pb.NightOperation(step=pb.NIGHT_STEP_OPEN)):
                self.observatory.safety.closed_at = None
                return True
        elif self.state in (NightState.EVENING_FLATS, NightState.MORNING_FLATS):
            session = "evening" if situation.evening else "morning"
            for name in situation.flats_to_take:
                self._run_own(
                    ids.flats(session, name),
                    priority=FLATS_PRIORITY,
                    take_calibrations=pb.TakeCalibrations(
                        image_type=pb.IMAGE_TYPE_FLAT,
                        count=calibrations.flat_count,
                        filter=name,
                        flat_source=pb.FLAT_SOURCE_SKY,
                    ),
                )
            return self.state is NightState.MORNING_FLATS and bool(situation.flats_to_take)
        return False

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
            requester=ROBOTIC_NIGHT,
            priority=priority,
            night_operation=night_operation,
            take_calibrations=take_calibrations,
        )
        return self._run_step(order)

    def _kept_closed_because(self) -> str | None:
        """Why the dome must stay closed now: safety says so, or the weather has not been safe for long enough
        since safety last closed it."""
        safety = self.observatory.safety
        reason = safety.reopen_allowed()
        safe_since = safety.safe_since
        if (
            reason is None
            and safety.closed_at is not None
            and (safe_since is None or self.clock.timestamp() - safe_since < self.config.safety.reopen_after_s)
        ):
            reason = f"waiting for {self.config.safety.reopen_after_s:.0f} s of safe weather"
        return reason
