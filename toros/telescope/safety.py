"""Safety: what closes the observatory (weather, a device fault, the watchdog, a full disk) and when it may reopen.

Safety does not wait for the instrument lock: it closes the shutter and parks the mount at once, whatever else is
going on, and everything that polls (exposures, slews) sees ``unsafe`` and stops. It does no device I/O but the
weather and the closing itself, so a hung driver elsewhere cannot stop it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from toros.runtime.clock import Clock
from toros.telescope.devices import CommandRefused, Device, DeviceError, Shutter
from toros.telescope.equipment import Equipment
from toros.telescope.settings import SafetyConfig

log = logging.getLogger(__name__)


class SafetyCause(Enum):
    """Why safety closed the observatory. Weather clears itself when the weather is safe again; the others
    need the cause mended (a device reconnected, room on the disk) or an operator's close."""

    WEATHER = "weather"
    DEVICE_FAULT = "device fault"
    WATCHDOG = "watchdog"
    STORAGE = "storage"


@dataclass(frozen=True)
class Unsafety:
    cause: SafetyCause
    reason: str  # in words, for the status and the logs


class Unsafe(Exception):
    """Safety closed the observatory while a sequence was running."""


class Safety:
    def __init__(
        self, equipment: Equipment, settings: SafetyConfig, clock: Clock, on_fault: Callable[[], None]
    ) -> None:
        self.equipment = equipment
        self.settings = settings
        self.clock = clock
        self._on_fault = on_fault  # publishes the device states
        self.faults: dict[str, str] = {}  # device kind → what failed
        self.unsafe: Unsafety | None = None  # why safety closed; None while safe
        self.closed_at: float | None = None  # when safety last closed (clock time), until the night reopens
        self.safe_since: float | None = clock.timestamp()  # since when the weather is safe; None while unsafe
        self.last_heartbeat = clock.timestamp()

    @property
    def unsafe_reason(self) -> str | None:
        """Why safety closed, in words (None while safe)."""
        return self.unsafe.reason if self.unsafe is not None else None

    def heartbeat(self) -> None:
        """The night is moving: the watchdog is reset."""
        self.last_heartbeat = self.clock.timestamp()

    def fault(self, device: Device, message: str) -> None:
        """Marks a device failed; the dome closes and the mount parks."""
        log.error("%s FAULT: %s", device.kind, message)
        self.faults[device.kind] = message
        self._on_fault()
        self.make_safe(SafetyCause.DEVICE_FAULT, f"{device.kind} fault: {message}")

    def weather_safe(self) -> tuple[bool, str]:
        try:
            return self.equipment.weather.safe()
        except DeviceError as exc:
            self.faults["weather"] = str(exc)
            return False, f"weather station not answering: {exc}"

    def check(self) -> None:
        """One look, every ``safety.poll_s``: unsafe weather or a stalled night with the dome open closes it."""
        safe, reason = self.weather_safe()
        now = self.clock.timestamp()
        if not safe:
            self.safe_since = None
            self.make_safe(SafetyCause.WEATHER, f"weather: {reason}")
            return
        if self.safe_since is None:
            self.safe_since = now
            log.info("weather is safe again")
        if self.unsafe is not None and self.unsafe.cause is SafetyCause.WEATHER and not self.faults:
            self.unsafe = None
        idle = now - self.last_heartbeat
        if not self.faults and self.equipment.dome.shutter() is Shutter.OPEN and idle > self.settings.watchdog_s:
            self.make_safe(SafetyCause.WATCHDOG, f"watchdog: nothing happened for {idle:.0f} s with the dome open")

    def make_safe(self, cause: SafetyCause, reason: str) -> None:
        """Closes the shutter and parks mount and dome, whatever else is going on; never raises."""
        if self.unsafe is None:
            log.warning("making the observatory safe: %s", reason)
        self.unsafe = Unsafety(cause, reason)
        self.closed_at = self.clock.timestamp()
        dome, mount, camera = self.equipment.dome, self.equipment.mount, self.equipment.camera

        def close_shutter() -> None:
            if dome.shutter() is not Shutter.CLOSED:
                dome.close_shutter()

        for what, action in (
            ("close the shutter", close_shutter),
            ("park the mount", mount.park),
            ("park the dome", dome.park),
            ("abort the exposure", camera.abort),
        ):
            try:
                action()
            except (DeviceError, CommandRefused) as exc:
                log.error("safety could not %s: %s", what, exc)

    def reopen_allowed(self) -> str | None:
        """Why the dome must stay closed now (None: it may open)."""
        safe, reason = self.weather_safe()
        if not safe:
            return f"weather is unsafe: {reason}"
        if self.faults:
            name, message = next(iter(self.faults.items()))
            return f"{name} is in FAULT: {message}"
        if self.unsafe is not None and self.unsafe.cause is not SafetyCause.WEATHER:
            return f"closed by safety: {self.unsafe.reason}"
        return None

    def opening(self) -> None:
        """The dome is about to open (``reopen_allowed`` said yes): safe again, the watchdog starts afresh."""
        self.unsafe = None
        self.heartbeat()

    def clear_faults(self) -> None:
        """An operator's explicit close resets faults that a reconnect can clear."""
        for device in self.equipment.devices:
            if device.kind in self.faults:
                try:
                    device.connect()
                    device.describe()
                except (DeviceError, CommandRefused):
                    continue
                del self.faults[device.kind]
        if not self.faults and self.unsafe is not None and self.unsafe.cause is not SafetyCause.WEATHER:
            self.unsafe = None
