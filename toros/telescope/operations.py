"""Commands to devices, as every sequence of the telescope gives them: a device that fails is FAULT (and safety
acts) before the error goes on; a movement is polled in clock time until done, stopped by a cancellation, by
safety, or by its timeout (then the device is FAULT)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from toros.runtime.clock import Clock
from toros.telescope.devices import Device, DeviceError, FilterWheel
from toros.telescope.safety import Safety, Unsafe

log = logging.getLogger(__name__)

POLL_S = 2.0  # clock seconds between polls of a moving device
MOVE_TIMEOUT_S = 600.0  # clock seconds a slew, shutter or filter move may take before the device is declared failed

Result = TypeVar("Result")


class DeviceOperations:
    def __init__(self, safety: Safety, clock: Clock) -> None:
        self.safety = safety
        self.clock = clock

    def call(self, device: Device, action: Callable[[], Result]) -> Result:
        """Runs a device command; a DeviceError marks the device FAULT (and safety acts) before it propagates."""
        try:
            return action()
        except DeviceError as exc:
            self.safety.fault(device, str(exc))
            raise

    def wait(
        self,
        device: Device,
        done: Callable[[], bool],
        what: str,
        check: Callable[[], None],
        timeout_s: float = MOVE_TIMEOUT_S,
        safe_only: bool = False,
    ) -> None:
        """Polls ``done`` in clock time until true; ``check`` raises to stop (cancel, shutdown); ``safe_only``:
        Unsafe as soon as safety closes."""
        started = self.clock.timestamp()
        deadline = started + timeout_s
        while not self.call(device, done):
            check()
            if safe_only and (reason := self.safety.unsafe_reason):
                raise Unsafe(reason)
            if self.clock.timestamp() > deadline:
                self.safety.fault(device, f"{what} did not finish within {timeout_s:.0f} s")
                raise DeviceError(f"{device.kind}: {what} did not finish within {timeout_s:.0f} s")
            self.clock.sleep(POLL_S)
            self.safety.heartbeat()
        log.debug("%s: %s took %.1f s", device.kind, what, self.clock.timestamp() - started)

    def heartbeat(self) -> None:
        """The night is moving: safety's watchdog starts afresh."""
        self.safety.heartbeat()

    def select_filter(self, wheel: FilterWheel, name: str, check: Callable[[], None]) -> None:
        """Turns the wheel to ``name`` and waits for it (nothing for ""; nothing when it is there)."""
        if not name:
            return
        if wheel.current() != name:
            self.call(wheel, lambda: wheel.select(name))
        self.wait(wheel, lambda: wheel.current() == name, f"changing to filter {name}", check)
