"""The robotic night's state machine on its own: the transition table case by case, then a whole night of an
Observatory of simulated devices on a clock that moves only when told, with a stand-in for the runtime that
runs the night's open and close work orders on the devices at once. No gRPC server, no threads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import SMALL_CAMERA, SteppedClock

from toros.generated import toros_pb2 as pb
from toros.runtime.config import DatabaseConfig
from toros.runtime.journal import Journal, WorkOrderRecord
from toros.telescope.calibration_frames import SATURATION_ADU, TwilightSky
from toros.telescope.devices.simulated import Sky
from toros.telescope.hold import OperatorHold
from toros.telescope.night import NightRunner, NightState, Situation, SkyPhase, StepIds, next_state
from toros.telescope.observatory import Observatory
from toros.telescope.safety import SafetyCause
from toros.telescope.settings import TelescopeConfig

EVENING_DAY = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)  # Macon: the Sun at +25 deg
EVENING_TWILIGHT = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)  # -7 deg: in the sky-flat band
MIDNIGHT = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # -41 deg
MORNING_TWILIGHT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # -7.5 deg
MORNING_DAY = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)  # +11 deg

DARK_AND_CLOSED = Situation(
    phase=SkyPhase.DARK,
    evening=True,
    shutter_open=False,
    ready=False,
    prepared=True,
    closed_for_the_night=False,
    kept_closed_because=None,
    flats_to_take=(),
    ids=StepIds("2026-11-22"),
)


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({"phase": SkyPhase.DAY, "prepared": False}, NightState.PREPARING),
        ({"phase": SkyPhase.DAY}, NightState.DAY),
        ({"phase": SkyPhase.DAY, "prepared": False, "shutter_open": True}, NightState.DAY),
        ({"phase": SkyPhase.DAY, "evening": False, "shutter_open": True}, NightState.CLOSING),
        ({"phase": SkyPhase.DAY, "evening": False, "closed_for_the_night": True}, NightState.CLOSED),  # till noon
        ({"phase": SkyPhase.DAY, "evening": False}, NightState.DAY),  # started in the morning: nothing to close
        ({"phase": SkyPhase.DAY, "evening": False, "prepared": False}, NightState.PREPARING),  # the bias it lacks
        ({"phase": SkyPhase.DAY, "evening": False, "prepared": False, "shutter_open": True}, NightState.CLOSING),
        ({}, NightState.OPENING),
        ({"kept_closed_because": "weather is unsafe: rain"}, NightState.KEPT_CLOSED),
        ({"closed_for_the_night": True, "kept_closed_because": "rain"}, NightState.CLOSED),
        ({"shutter_open": True}, NightState.OPENING),  # open but the mount parked: open again
        ({"shutter_open": True, "ready": True}, NightState.OBSERVING),
        ({"phase": SkyPhase.TWILIGHT, "shutter_open": True, "ready": True}, NightState.EVENING_FLATS),
        (
            {
                "phase": SkyPhase.TWILIGHT,
                "evening": False,
                "shutter_open": True,
                "ready": True,
                "flats_to_take": ("r",),
            },
            NightState.MORNING_FLATS,
        ),
        ({"phase": SkyPhase.TWILIGHT, "evening": False, "shutter_open": True, "ready": True}, NightState.CLOSING),
        ({"phase": SkyPhase.TWILIGHT, "evening": False, "closed_for_the_night": True}, NightState.CLOSED),
        ({"on_hold": True}, NightState.ON_HOLD),  # an operator's hold comes before everything
        ({"on_hold": True, "phase": SkyPhase.DAY, "prepared": False}, NightState.ON_HOLD),
        ({"on_hold": True, "phase": SkyPhase.TWILIGHT, "shutter_open": True, "ready": True}, NightState.ON_HOLD),
    ],
)
def test_the_transition_table(changes, state):
    assert next_state(replace(DARK_AND_CLOSED, **changes)) is state


class Night:
    """A NightRunner whose work orders are run at once: open and close on the simulated devices, the rest
    marked DONE."""

    def __init__(self, tmp_path: Path, **telescope: object) -> None:
        config = TelescopeConfig(port=0, camera=SMALL_CAMERA, dome={"shutter_s": 5.0}, **telescope)
        self.clock = SteppedClock(EVENING_DAY)
        self.journal = Journal(DatabaseConfig(path=tmp_path / "journal.db"), "telescope", self.clock)
        self.observatory = Observatory(config, tmp_path / "data", self.clock, self.journal)
        self.hold = OperatorHold(self.journal, self.clock, config.hold)
        self.runner = NightRunner(self.observatory, config, self.clock, self.journal, self.submit, self.hold)
        self.orders: list[str] = []

    def submit(self, order: pb.WorkOrder) -> tuple[WorkOrderRecord, bool]:
        record, known = self.journal.submit(order, order.WhichOneof("task"), order.priority)
        if not known:
            self.orders.append(order.id)
            step = order.night_operation.step if order.HasField("night_operation") else None
            if step == pb.NIGHT_STEP_OPEN:
                self.observatory.open(lambda: None)
            elif step == pb.NIGHT_STEP_CLOSE:
                self.observatory.close(lambda: None)
            record = self.journal.transition(order.id, state=pb.WORK_ORDER_STATE_DONE) or record
        return record, known

    def at(self, moment: datetime) -> NightState:
        self.clock.set(moment)
        self.runner.step()
        return self.runner.state


@pytest.fixture
def night(tmp_path: Path) -> Iterator[Night]:
    made = Night(tmp_path, calibrations={"flat_filters": ["g", "r"]})
    yield made
    made.journal.close()


def test_a_whole_night_runs_through_the_table(night):
    assert night.at(EVENING_DAY) is NightState.PREPARING
    assert night.at(EVENING_DAY) is NightState.DAY  # prepared: nothing more by day
    assert night.at(EVENING_TWILIGHT) is NightState.EVENING_FLATS  # opened, then the flats at once
    assert night.observatory.is_open()
    assert night.at(MIDNIGHT) is NightState.OBSERVING
    assert night.at(MORNING_TWILIGHT) is NightState.CLOSED  # the morning flats, closed at once, and it says so
    assert night.at(MORNING_TWILIGHT) is NightState.CLOSED
    assert not night.observatory.is_open() and night.observatory.mount.parked()
    assert night.at(MORNING_DAY) is NightState.CLOSED  # and says so till noon
    assert night.orders == [
        "night-2026-11-22-prepare",
        "night-2026-11-22-open-0",
        "night-2026-11-22-evening-flats-g",
        "night-2026-11-22-evening-flats-r",
        "night-2026-11-22-morning-flats-g",
        "night-2026-11-22-morning-flats-r",
        "night-2026-11-22-close",
    ]


def test_a_robot_started_after_dusk_takes_its_bias_and_darks_in_the_morning(tmp_path):
    night = Night(tmp_path)
    try:
        assert night.at(MIDNIGHT) is NightState.OBSERVING  # no prepare by night: the dome opens, it observes
        assert night.at(MORNING_TWILIGHT) is NightState.CLOSED
        assert "night-2026-11-22-prepare" not in night.orders
        assert night.at(MORNING_DAY) is NightState.PREPARING  # closed, by day: the night's bias and darks now
        assert night.orders[-1] == "night-2026-11-22-prepare"
        assert night.at(MORNING_DAY + timedelta(minutes=30)) is NightState.CLOSED
    finally:
        night.journal.close()


def test_safety_closes_and_the_night_reopens_after_safe_weather(tmp_path):
    rain = {"start": "2026-11-23T03:06:00Z", "end": "2026-11-23T03:08:00Z", "reason": "rain"}
    night = Night(tmp_path, weather={"bad_weather": [rain]})
    night.at(EVENING_DAY)
    assert night.at(MIDNIGHT) is NightState.OBSERVING
    safety = night.observatory.safety
    # Closed by safety when the weather had been safe for long (since the start): the next step reopens.
    safety.make_safe(SafetyCause.WATCHDOG, "watchdog: nothing happened")
    safety.clear_faults()  # an operator's close clears the watchdog's closure
    night.clock.sleep(120)  # the shutter closes
    assert not night.observatory.is_open()
    assert night.at(MIDNIGHT.replace(minute=5)) is NightState.OBSERVING
    assert night.orders[-1] == "night-2026-11-22-open-1" and night.observatory.is_open()
    # Closed for weather that has just become safe again: the night waits for safety.reopen_after_s.
    night.clock.set(MIDNIGHT.replace(minute=7))
    safety.check()  # rain: closed
    assert safety.unsafe is not None and safety.unsafe.cause is SafetyCause.WEATHER
    night.clock.set(MIDNIGHT.replace(minute=9))
    safety.check()  # dry again: weather no longer blocks, safe since 03:09
    assert safety.unsafe is None
    assert night.at(MIDNIGHT.replace(minute=10)) is NightState.KEPT_CLOSED
    assert night.runner.describe() == "closed: waiting for 1800 s of safe weather"
    assert night.at(MIDNIGHT.replace(minute=45)) is NightState.OBSERVING
    assert night.orders[-1] == "night-2026-11-22-open-2"
    night.journal.close()


def test_an_operators_hold_stops_every_step_of_the_robot_until_it_ends(tmp_path):
    night = Night(tmp_path)
    try:
        assert night.at(MIDNIGHT) is NightState.OBSERVING and night.observatory.is_open()
        night.observatory.close(lambda: None)  # the operator's close, held
        night.hold.take("web:alice", "clouds", "wo-close")
        for minutes in (5, 30, 90):
            assert night.at(MIDNIGHT + timedelta(minutes=minutes)) is NightState.ON_HOLD
        assert night.runner.describe().startswith("on hold by web:alice since 2026-11-23 03:00 UTC: clouds")
        assert not night.observatory.is_open() and night.orders == ["night-2026-11-22-open-0"]
        assert night.at(MORNING_TWILIGHT) is NightState.ON_HOLD, "no morning flats nor close of its own either"
        night.hold.end("web:bob", "wo-resume")
        assert night.at(MORNING_TWILIGHT) is NightState.CLOSING  # reopened for its morning flats, then closing
        assert night.orders[1:] == [
            "night-2026-11-22-open-1",
            "night-2026-11-22-morning-flats-r",
            "night-2026-11-22-close",
        ]
        assert night.at(MORNING_TWILIGHT) is NightState.CLOSED
    finally:
        night.journal.close()


def test_unsafe_weather_keeps_the_dome_closed_with_the_reason(tmp_path):
    rain = {"start": "2026-11-23T02:00:00Z", "end": "2026-11-23T04:00:00Z", "reason": "rain"}
    night = Night(tmp_path, weather={"bad_weather": [rain]})
    try:
        assert night.at(MIDNIGHT) is NightState.KEPT_CLOSED
        assert night.runner.describe() == "closed: weather is unsafe: rain"
        assert night.orders == []
    finally:
        night.journal.close()


@pytest.mark.parametrize("morning", [False, True])
def test_sky_flat_exposures_follow_the_twilight_across_long_gaps(morning):
    """A busy machine leaves minutes between flats: the prediction from the Sun's motion (and, once two frames
    measure it, the sky's own slope) keeps each level in the judge's band where scaling from the last frame
    alone does not. The sky here is the simulator's twilight law, sampled half way through each exposure."""
    start = EVENING_TWILIGHT.replace(hour=23, minute=10) if not morning else MORNING_TWILIGHT.replace(minute=0)
    direction = 1.0 if morning else -1.0
    first_sun = -11.0 if morning else -3.5

    def sun_at(when: datetime) -> float:
        return first_sun + direction * 0.25 * (when - start).total_seconds() / 60.0  # a quarter degree a minute

    def level(begins: datetime, seconds: float) -> float:
        middle = begins + timedelta(seconds=seconds / 2)
        return min(seconds * 2.0 * 10 ** (0.4 * Sky.twilight_mag(sun_at(middle))), SATURATION_ADU)

    target, gap = 25000.0, timedelta(minutes=4)

    def series(next_exposure: Callable[[datetime, float, float], float]) -> list[float]:
        now, seconds, levels = start, (300.0 if morning else 1.0), []
        for _ in range(6):
            levels.append(level(now, seconds))
            twilight.record(now + timedelta(seconds=seconds / 2), seconds, levels[-1])
            now += timedelta(seconds=seconds) + gap
            seconds = min(max(next_exposure(now, seconds, levels[-1]), 0.1), 1000.0)
        return levels

    twilight = TwilightSky(sun_at)
    predicted = series(lambda now, seconds, level: twilight.exposure(now, target, 0.0))
    measured = twilight.mag_per_deg()
    naive = series(lambda now, seconds, level: seconds * target / level)  # scaled from the last frame alone
    assert all(0.5 * target <= value <= 1.5 * target for value in predicted[1:]), predicted
    assert not all(0.5 * target <= value <= 1.5 * target for value in naive[1:]), naive
    assert measured == pytest.approx(1.0, abs=0.05)
