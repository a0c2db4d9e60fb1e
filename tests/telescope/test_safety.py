"""Safety and reopening on their own: an Observatory of simulated devices and an accelerated clock, no gRPC
server. Safety's checks are called directly, so each case is one step of what its thread does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from support import NIGHT_TIME, SMALL_CAMERA, wait_for

from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.config import DatabaseConfig
from toros.runtime.journal import Journal
from toros.telescope.observatory import Observatory
from toros.telescope.safety import SafetyCause
from toros.telescope.settings import TelescopeConfig

START = datetime.fromisoformat(NIGHT_TIME.replace("Z", "+00:00"))


@pytest.fixture
def observatory(tmp_path: Path) -> Iterator[callable]:
    made: list[tuple[Observatory, Journal]] = []

    def make(**telescope: object) -> Observatory:
        config = TelescopeConfig(port=0, camera=SMALL_CAMERA, dome={"shutter_s": 5.0}, **telescope)
        clock = Clock(start=START, rate=2000.0)
        journal = Journal(DatabaseConfig(path=tmp_path / f"journal-{len(made)}.db"), "telescope", clock)
        made.append((Observatory(config, tmp_path / "data", clock, journal), journal))
        return made[-1][0]

    yield make
    for _, journal in made:
        journal.close()


def never_stop() -> None:
    pass


def states(o: Observatory) -> dict[str, int]:
    o.publish_devices()
    return {d.name: d.state for d in o.device_states()}


def test_parked_and_closed_come_from_the_device_interfaces(observatory):
    o = observatory()
    assert states(o)["mount"] == pb.DEVICE_STATE_PARKED and states(o)["dome"] == pb.DEVICE_STATE_PARKED
    o.open(never_stop)
    assert o.is_open() and not o.mount.parked()
    assert states(o)["mount"] == pb.DEVICE_STATE_IDLE and states(o)["dome"] == pb.DEVICE_STATE_IDLE


def test_bad_weather_closes_and_good_weather_lets_it_reopen(observatory):
    bad = {"start": START.isoformat(), "end": (START + timedelta(minutes=30)).isoformat(), "reason": "rain"}
    o = observatory(weather={"bad_weather": [bad]})
    o.safety.check()
    assert (
        o.safety.unsafe is not None
        and o.safety.unsafe.cause is SafetyCause.WEATHER
        and o.safety.unsafe_reason == "weather: rain"
    )
    assert o.safety.reopen_allowed() == "weather is unsafe: rain"
    wait_for(lambda: o.clock.now() > START + timedelta(minutes=31), timeout=10)
    o.safety.check()
    assert o.safety.unsafe is None and o.safety.reopen_allowed() is None


def test_a_device_fault_outlasts_good_weather_until_the_device_answers_again(observatory):
    o = observatory()
    o.safety.fault(o.mount, "cable cut")
    assert o.safety.unsafe is not None and o.safety.unsafe.cause is SafetyCause.DEVICE_FAULT
    o.safety.check()  # the weather is fine: that clears weather only
    assert o.safety.unsafe_reason == "mount fault: cable cut"
    assert o.safety.reopen_allowed() == "mount is in FAULT: cable cut"
    assert states(o)["mount"] == pb.DEVICE_STATE_FAULT
    o.safety.clear_faults()  # an operator's close: the simulated mount answers again
    assert o.safety.unsafe is None and not o.safety.faults and o.safety.reopen_allowed() is None


def test_the_watchdog_closes_an_open_dome_nobody_is_using(observatory):
    o = observatory(safety={"watchdog_s": 60.0})
    o.open(never_stop)
    wait_for(lambda: o.clock.timestamp() - o.safety.last_heartbeat > 61, timeout=10)
    o.safety.check()
    assert o.safety.unsafe is not None and o.safety.unsafe.cause is SafetyCause.WATCHDOG
    assert o.safety.reopen_allowed().startswith("closed by safety: watchdog: nothing happened for")
    wait_for(lambda: o.dome.shutter() == "closed", timeout=10)
    o.safety.check()  # good weather does not clear what the watchdog did
    assert o.safety.unsafe is not None and o.safety.unsafe.cause is SafetyCause.WATCHDOG
    o.safety.clear_faults()
    assert o.safety.unsafe is None and o.safety.reopen_allowed() is None


def test_weather_that_clears_during_a_fault_leaves_the_dome_closed(observatory):
    bad = {"start": START.isoformat(), "end": (START + timedelta(minutes=30)).isoformat(), "reason": "high wind"}
    o = observatory(weather={"bad_weather": [bad]})
    o.safety.fault(o.dome, "no reply")
    o.safety.check()
    assert o.safety.unsafe is not None and o.safety.unsafe.cause is SafetyCause.WEATHER  # the latest closure
    wait_for(lambda: o.clock.now() > START + timedelta(minutes=31), timeout=10)
    o.safety.check()
    assert o.safety.unsafe is not None, "the weather is safe, but the dome is still in FAULT"
    assert o.safety.reopen_allowed() == "dome is in FAULT: no reply"
