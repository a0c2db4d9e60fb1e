"""Commands to devices (operations.py), on the simulated devices and a stepped clock: a device error marks the
device FAULT and safety closes; a movement that never ends is a fault at its timeout; a movement waited for "safe
only" stops as soon as safety closes; the filter wheel is turned and waited for."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from support import SMALL_CAMERA, SteppedClock

from toros.telescope.devices import DeviceError
from toros.telescope.equipment import build_equipment
from toros.telescope.operations import DeviceOperations
from toros.telescope.safety import Safety, SafetyCause, Unsafe
from toros.telescope.settings import TelescopeConfig

NIGHT = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


@pytest.fixture
def operations() -> DeviceOperations:
    config = TelescopeConfig(port=0, camera=SMALL_CAMERA, filter_wheel={"change_s": 30.0})
    clock = SteppedClock(NIGHT)
    equipment = build_equipment(config, clock)
    for device in equipment.devices:
        device.connect()
    return DeviceOperations(Safety(equipment, config.safety, clock, on_fault=lambda: None), clock)


def test_a_device_error_is_a_fault_and_safety_closes(operations):
    mount = operations.safety.equipment.mount

    def broken() -> None:
        raise DeviceError("mount: no reply to :GR#")

    with pytest.raises(DeviceError):
        operations.call(mount, broken)
    assert operations.safety.faults == {"mount": "mount: no reply to :GR#"}
    assert operations.safety.unsafe is not None and operations.safety.unsafe.cause is SafetyCause.DEVICE_FAULT


def test_a_movement_that_never_ends_is_a_fault_at_its_timeout(operations):
    dome = operations.safety.equipment.dome
    started = operations.clock.timestamp()
    with pytest.raises(DeviceError, match="dome: turning did not finish within 60 s"):
        operations.wait(dome, lambda: False, "turning", lambda: None, timeout_s=60.0)
    assert 60 <= operations.clock.timestamp() - started <= 64, "polled in clock time"
    assert "dome" in operations.safety.faults


def test_a_safe_only_wait_stops_when_safety_closes(operations):
    camera = operations.safety.equipment.camera
    looks = 0

    def done() -> bool:
        nonlocal looks
        looks += 1
        if looks == 3:
            operations.safety.make_safe(SafetyCause.WEATHER, "weather: rain")
        return False

    with pytest.raises(Unsafe, match="weather: rain"):
        operations.wait(camera, done, "the exposure", lambda: None, safe_only=True)


def test_the_filter_wheel_is_turned_and_waited_for(operations):
    wheel = operations.safety.equipment.wheel
    other = next(name for name in wheel.names() if name != wheel.current())
    started = operations.clock.timestamp()
    operations.select_filter(wheel, other, lambda: None)
    assert wheel.current() == other and operations.clock.timestamp() - started >= 30
    operations.select_filter(wheel, "", lambda: None)  # "" keeps the filter in the beam
    assert wheel.current() == other
