"""The telescope's devices behind small interfaces, one per kind of device.

Each interface has a simulator (the default, driven by the module clock, in ``simulated.py``) and real
drivers: LX200 over a serial line, a serial dome protocol, ASCOM Alpaca over HTTP and INDI. The observatory only ever talks to these
interfaces, so a site can mix drivers freely (an Alpaca camera with an LX200 mount, say).

Methods that start a movement return at once; the caller polls (``slewing``, ``image_ready``…) in clock
time. A driver raises ``DeviceError`` when the device does not answer, answers nonsense after retries, or
reports a fault: the observatory then marks it FAULT and safety acts. ``CommandRefused`` is a working
device saying no (a target below the mount's horizon limit): the command is skipped, the device is fine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, NamedTuple

import numpy as np
from astropy.io import fits

from toros.telescope.devices.equinox import Equinox, icrs_to_mount, mount_to_icrs


class Shutter(StrEnum):
    """Where the dome's shutter is, as every dome protocol reports it."""

    OPEN = "open"
    CLOSED = "closed"
    OPENING = "opening"
    CLOSING = "closing"
    ERROR = "error"


class DeviceError(Exception):
    """A device failed: no answer after retries, a garbled reply, or an error the device reported."""


class CommandRefused(Exception):
    """A device that works refused one command (e.g. a slew below its horizon limit)."""


class Look(NamedTuple):
    """What a device was doing when looked at: busy (moving, exposing), in words, and whether it is at rest
    in its safe position (a parked mount, a closed shutter), as its interface reports it."""

    busy: bool
    message: str
    parked: bool = False


class Device(ABC):
    kind: ClassVar[str]
    driver: ClassVar[str]

    def connect(self) -> None:  # noqa: B027  (a hook: devices without a connection step need nothing here)
        """Opens the connection; called once before use."""

    def close(self) -> None:  # noqa: B027  (a hook, as connect)
        """Releases the connection."""

    @abstractmethod
    def describe(self) -> Look:
        """What it is doing, for the daemon's status."""


class Mount(Device):
    kind = "mount"
    speaks = Equinox.J2000  # the coordinates on the wire (``equinox.py``); a driver of a mount of date says so

    @abstractmethod
    def position(self) -> tuple[float, float]:
        """Where the mount points: ICRS (RA, Dec) in degrees, converted from what the mount reports."""

    @abstractmethod
    def slew_to(self, ra_deg: float, dec_deg: float) -> None:
        """Starts a slew to ICRS (RA, Dec) in degrees; tracking continues at the target."""

    def to_wire(self, ra_deg: float, dec_deg: float) -> tuple[float, float]:
        """ICRS to what the mount speaks, now (the mount lives in real time, whatever the daemon's clock)."""
        return icrs_to_mount(self.speaks, ra_deg, dec_deg, datetime.now(UTC))

    def from_wire(self, ra_deg: float, dec_deg: float) -> tuple[float, float]:
        return mount_to_icrs(self.speaks, ra_deg, dec_deg, datetime.now(UTC))

    @abstractmethod
    def slewing(self) -> bool: ...

    @abstractmethod
    def abort(self) -> None: ...

    @abstractmethod
    def park(self) -> None:
        """Starts the move to the park position; tracking stops there."""

    @abstractmethod
    def unpark(self) -> None: ...

    @abstractmethod
    def parked(self) -> bool: ...

    def describe(self) -> Look:
        if self.parked():
            return Look(False, "parked", parked=True)
        ra, dec = self.position()
        if self.slewing():
            return Look(True, f"slewing, at {ra:.2f} {dec:+.2f}")
        return Look(False, f"tracking at {ra:.2f} {dec:+.2f}")


class Dome(Device):
    kind = "dome"

    @abstractmethod
    def open_shutter(self) -> None: ...

    @abstractmethod
    def close_shutter(self) -> None: ...

    @abstractmethod
    def shutter(self) -> Shutter: ...

    @abstractmethod
    def slew_to(self, azimuth_deg: float) -> None: ...

    @abstractmethod
    def azimuth(self) -> float: ...

    @abstractmethod
    def slewing(self) -> bool: ...

    @abstractmethod
    def park(self) -> None:
        """Starts the rotation to the park azimuth."""

    @abstractmethod
    def abort(self) -> None: ...

    def describe(self) -> Look:
        shutter = self.shutter()
        moving = self.slewing() or shutter in (Shutter.OPENING, Shutter.CLOSING)
        message = f"shutter {shutter}, azimuth {self.azimuth():.1f}" + (", rotating" if self.slewing() else "")
        return Look(moving, message, parked=shutter is Shutter.CLOSED)


class Camera(Device):
    kind = "camera"
    #: Overscan columns on the right of each raw frame (0: none).
    overscan: int = 0

    @abstractmethod
    def start_exposure(self, seconds: float, light: bool) -> None:
        """Starts an exposure; ``light`` False keeps the shutter closed (bias, dark)."""

    @abstractmethod
    def image_ready(self) -> bool: ...

    @abstractmethod
    def exposing(self) -> bool:
        """An exposure or its readout is under way."""

    @abstractmethod
    def read_image(self) -> np.ndarray:
        """The last image: rows × columns, uint16, overscan included."""

    @abstractmethod
    def abort(self) -> None:
        """Ends the exposure and discards it."""

    def stop_exposure(self) -> None:
        """Ends the exposure now and reads out what it collected (the image becomes ready after the readout);
        CommandRefused by a camera that can only abort."""
        raise CommandRefused(f"the {self.driver} camera cannot stop an exposure early")

    def last_exposure_s(self) -> float | None:
        """How long the last image was actually exposed (an exposure stopped early), when the camera says."""
        return None

    def header_cards(self) -> list[fits.Card]:
        """The FITS cards the camera wrote into its last image (an INDI camera's header), to be kept beside
        the TOROS header contract; none for cameras that send bare pixels."""
        return []

    @abstractmethod
    def temperature(self) -> float:
        """CCD temperature, °C."""

    @abstractmethod
    def cool_to(self, celsius: float) -> None: ...

    @abstractmethod
    def gain(self) -> float:
        """e-/ADU."""

    @abstractmethod
    def read_noise(self) -> float:
        """e-."""

    def describe(self) -> Look:
        busy = self.exposing()
        return Look(busy, f"CCD {self.temperature():.1f} C" + (", exposing" if busy else ""))


class FilterWheel(Device):
    kind = "filter_wheel"

    @abstractmethod
    def names(self) -> list[str]: ...

    @abstractmethod
    def current(self) -> str | None:
        """The filter in the beam; None while the wheel turns."""

    @abstractmethod
    def select(self, name: str) -> None:
        """Starts turning to ``name``; CommandRefused when the wheel has no such filter."""

    def describe(self) -> Look:
        current = self.current()
        return Look(current is None, "turning" if current is None else f"filter {current}")


class FlatLamp(Device):
    """The flat-field lamp (a light panel or a lit dome screen): dome flats are taken with it on."""

    kind = "flat_lamp"

    @abstractmethod
    def switch_on(self) -> None:
        """Lights the lamp; ``lit`` says when it is ready."""

    @abstractmethod
    def switch_off(self) -> None: ...

    @abstractmethod
    def lit(self) -> bool:
        """The lamp is on and steady: a flat may be exposed."""

    def describe(self) -> Look:
        return Look(False, "lit" if self.lit() else "off")


class WeatherStation(Device):
    kind = "weather"

    @abstractmethod
    def safe(self) -> tuple[bool, str]:
        """Whether it is safe to open, and why not."""

    def describe(self) -> Look:
        safe, reason = self.safe()
        return Look(False, "safe" if safe else f"unsafe: {reason}")
