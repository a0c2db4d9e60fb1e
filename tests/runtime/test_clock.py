"""The clock: real or simulated time; a simulated clock held at its start until its daemon serves (a slow start
on a loaded machine costs the simulated night nothing), and carried on from the journal after a restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from toros.runtime.clock import Clock

START = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)


def test_a_held_clock_stands_at_its_start_until_released():
    clock = Clock(START, rate=1000.0, held=True)
    time.sleep(0.05)
    assert clock.timestamp() == START.timestamp(), "50 simulated seconds would have passed"
    clock.release()
    time.sleep(0.05)
    assert 40 <= clock.timestamp() - START.timestamp() <= 1000


def test_a_real_clock_is_never_held():
    clock = Clock(held=True)
    assert abs(clock.timestamp() - time.time()) < 1
    assert not clock.simulated


def test_a_simulated_clock_carries_on_from_the_journal():
    clock = Clock(START, rate=10.0, held=True)
    later = START.timestamp() + 3600
    clock.resume_from(later)
    assert clock.timestamp() >= later
    clock.resume_from(START.timestamp())  # never backwards
    assert clock.timestamp() >= later


def test_clocks_shared_from_one_real_instant_agree_whenever_they_start():
    origin = datetime.fromtimestamp(time.time() - 2.0, tz=UTC)  # the network's clock started 2 real s ago
    first = Clock(START, rate=100.0, held=True, shared_from=origin)
    time.sleep(0.05)
    second = Clock(START, rate=100.0, held=True, shared_from=origin)  # a daemon that started later
    first.release()
    first.resume_from(START.timestamp() + 86400)  # a shared clock neither holds nor resumes
    assert abs(first.timestamp() - second.timestamp()) < 1.0
    assert 190 <= second.timestamp() - START.timestamp() <= 260
