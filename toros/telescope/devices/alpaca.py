"""ASCOM Alpaca drivers: mount, dome, camera, filter wheel, safety monitor and flat lamp (a CoverCalibrator)
on an Alpaca server (HTTP).

Alpaca is how Windows-hosted ASCOM drivers are reached over the network (ASCOM Remote, or devices with a
native Alpaca server). The protocol is spoken by ``alpyca``, the ASCOM Initiative's own client library; this
module maps it onto the device interfaces and turns Alpaca errors into clear messages naming the device,
the member and the error number: a driver error (0x500-0xFFF, "not connected"…) is a DeviceError, and the
device goes to FAULT; a refusal (0x40B invalid operation, 0x408 parked, 0x401 invalid value) is a
CommandRefused and the device stays in service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
import requests
from alpaca import exceptions as alpaca_errors
from alpaca.camera import Camera as AlpacaCameraClient
from alpaca.camera import raise_alpaca_if
from alpaca.covercalibrator import CalibratorStatus
from alpaca.covercalibrator import CoverCalibrator as AlpacaCoverCalibratorClient
from alpaca.dome import Dome as AlpacaDomeClient
from alpaca.filterwheel import FilterWheel as AlpacaFilterWheelClient
from alpaca.safetymonitor import SafetyMonitor as AlpacaSafetyClient
from alpaca.telescope import EquatorialCoordinateType
from alpaca.telescope import Telescope as AlpacaTelescopeClient

from toros.telescope.devices import (
    Camera,
    CommandRefused,
    DeviceError,
    Dome,
    FilterWheel,
    FlatLamp,
    Mount,
    Shutter,
    WeatherStation,
)
from toros.telescope.devices.equinox import Equinox
from toros.telescope.settings import CameraLink, DeviceLink, FlatLampLink, MountLink

T = TypeVar("T")
# A working device saying no; every other Alpaca error (0x500-0xFFF driver errors above all) is a fault.
_REFUSALS = (
    alpaca_errors.ParkedException,
    alpaca_errors.InvalidValueException,
    alpaca_errors.SlavedException,
    alpaca_errors.InvalidOperationException,
)
_EQUINOXES = {EquatorialCoordinateType.equTopocentric: Equinox.JNOW, EquatorialCoordinateType.equJ2000: Equinox.J2000}
_SHUTTER = {0: Shutter.OPEN, 1: Shutter.CLOSED, 2: Shutter.OPENING, 3: Shutter.CLOSING, 4: Shutter.ERROR}


def _number(exc: Exception) -> str:
    number = getattr(exc, "number", None)
    return f"Alpaca error 0x{number:X}" if isinstance(number, int) else "Alpaca error"


class _AlpacaDevice:
    kind: str

    def _setup(self, link: DeviceLink, client: Callable[[str, int, str], Any]) -> None:
        assert link.url is not None
        parts = urlsplit(link.url)
        self.url = link.url
        self.client = client(parts.netloc, link.device_number, parts.scheme or "http")

    def call(self, what: str, action: Callable[[], T]) -> T:
        """Runs one Alpaca request; failures become DeviceError/CommandRefused naming device and member."""
        try:
            return action()
        except _REFUSALS as exc:
            raise CommandRefused(
                f"{self.kind} ({self.url}): {what}: {_number(exc)}: {getattr(exc, 'message', exc)}"
            ) from None
        except (
            alpaca_errors.DriverException,
            alpaca_errors.NotConnectedException,
            alpaca_errors.NotImplementedException,
            alpaca_errors.ValueNotSetException,
            alpaca_errors.ActionNotImplementedException,
            alpaca_errors.OperationCancelledException,
        ) as exc:
            raise DeviceError(
                f"{self.kind} ({self.url}): {what}: {_number(exc)}: {getattr(exc, 'message', exc)}"
            ) from None
        except alpaca_errors.AlpacaRequestException as exc:
            raise DeviceError(f"{self.kind} ({self.url}): {what}: HTTP {exc.number}: {exc.message}") from None
        except requests.RequestException as exc:
            raise DeviceError(f"{self.kind} ({self.url}): {what}: no answer: {type(exc).__name__}") from None
        except (ValueError, KeyError) as exc:
            raise DeviceError(f"{self.kind} ({self.url}): {what}: malformed Alpaca reply: {exc}") from None

    def connect(self) -> None:
        def go() -> None:
            self.client.Connected = True

        self.call("Connected", go)

    def close(self) -> None:
        try:
            self.client.Connected = False
        except Exception:  # noqa: BLE001 - closing a connection that may already be gone
            pass


class AlpacaMount(_AlpacaDevice, Mount):
    driver = "alpaca"

    def __init__(self, link: MountLink) -> None:
        self._setup(link, AlpacaTelescopeClient)
        self.equinox = link.equinox

    def connect(self) -> None:
        """Connects, and learns from ``EquatorialSystem`` which coordinates the mount speaks (unless the
        config says): ASCOM's "topocentric" is of date."""
        super().connect()
        if isinstance(self.equinox, Equinox):
            self.speaks = self.equinox
            return
        system = self.call("EquatorialSystem", lambda: self.client.EquatorialSystem)
        if system not in _EQUINOXES:
            raise DeviceError(
                f"mount ({self.url}): EquatorialSystem {system.name}: only topocentric (of date) and J2000 are "
                "spoken here; set telescope.mount.equinox if the mount's coordinates are one of them"
            )
        self.speaks = _EQUINOXES[system]

    def position(self) -> tuple[float, float]:
        return self.from_wire(
            self.call("RightAscension", lambda: self.client.RightAscension * 15.0),
            self.call("Declination", lambda: self.client.Declination),
        )

    def slew_to(self, ra_deg: float, dec_deg: float) -> None:
        ra, dec = self.to_wire(ra_deg, dec_deg)

        def go() -> None:
            self.client.Tracking = True
            self.client.SlewToCoordinatesAsync(ra / 15.0, dec)

        self.call("SlewToCoordinatesAsync", go)

    def slewing(self) -> bool:
        return bool(self.call("Slewing", lambda: self.client.Slewing))

    def abort(self) -> None:
        self.call("AbortSlew", self.client.AbortSlew)

    def park(self) -> None:
        self.call("Park", self.client.Park)

    def unpark(self) -> None:
        self.call("Unpark", self.client.Unpark)

    def parked(self) -> bool:
        return bool(self.call("AtPark", lambda: self.client.AtPark))


class AlpacaDome(_AlpacaDevice, Dome):
    driver = "alpaca"

    def __init__(self, link: DeviceLink) -> None:
        self._setup(link, AlpacaDomeClient)

    def open_shutter(self) -> None:
        self.call("OpenShutter", self.client.OpenShutter)

    def close_shutter(self) -> None:
        self.call("CloseShutter", self.client.CloseShutter)

    def shutter(self) -> Shutter:
        return _SHUTTER.get(int(self.call("ShutterStatus", lambda: self.client.ShutterStatus)), Shutter.ERROR)

    def slew_to(self, azimuth_deg: float) -> None:
        self.call("SlewToAzimuth", lambda: self.client.SlewToAzimuth(azimuth_deg % 360.0))

    def azimuth(self) -> float:
        return float(self.call("Azimuth", lambda: self.client.Azimuth))

    def slewing(self) -> bool:
        return bool(self.call("Slewing", lambda: self.client.Slewing))

    def park(self) -> None:
        self.call("Park", self.client.Park)

    def abort(self) -> None:
        self.call("AbortSlew", self.client.AbortSlew)


class AlpacaCamera(_AlpacaDevice, Camera):
    driver = "alpaca"

    def __init__(self, link: CameraLink) -> None:
        self._setup(link, AlpacaCameraClient)
        self.overscan = link.overscan
        self._read_noise = link.read_noise_e
        self.image_timeout = link.image_timeout_s
        self._exposing = False

    def start_exposure(self, seconds: float, light: bool) -> None:
        self.call("StartExposure", lambda: self.client.StartExposure(seconds, light))
        self._exposing = True

    def image_ready(self) -> bool:
        return bool(self.call("ImageReady", lambda: self.client.ImageReady))

    def exposing(self) -> bool:
        return self._exposing and not self.image_ready()

    def read_image(self) -> np.ndarray:
        """The image, as ImageBytes (or JSON), which Alpaca sends as [x][y]: transposed to rows × columns.

        Downloaded here rather than through alpyca, whose image request has no timeout and holds alpyca's
        process-wide request lock: a hung download would otherwise freeze every Alpaca device, the dome too."""
        url = f"{self.client.base_url}/imagearray"
        params = {"ClientID": "1", "ClientTransactionID": "1"}

        def download() -> np.ndarray:
            response = requests.get(
                url, params=params, headers={"Accept": "application/imagebytes"}, timeout=(5.0, self.image_timeout)
            )
            if response.status_code != 200:
                raise alpaca_errors.AlpacaRequestException(response.status_code, response.text[:200])
            if "application/imagebytes" in response.headers.get("Content-Type", ""):
                return _from_image_bytes(response.content)
            body = response.json()
            raise_alpaca_if(body["ErrorNumber"], body["ErrorMessage"])
            return np.asarray(body["Value"])

        image = self.call("ImageArray", download).T
        self._exposing = False
        return np.asarray(np.clip(image, 0, 65535), dtype=np.uint16)

    def abort(self) -> None:
        self.call("AbortExposure", self.client.AbortExposure)
        self._exposing = False

    def stop_exposure(self) -> None:
        if not self.call("CanStopExposure", lambda: self.client.CanStopExposure):
            raise CommandRefused("this Alpaca camera cannot stop an exposure early (CanStopExposure is false)")
        self.call("StopExposure", self.client.StopExposure)

    def last_exposure_s(self) -> float | None:
        return float(self.call("LastExposureDuration", lambda: self.client.LastExposureDuration))

    def temperature(self) -> float:
        return float(self.call("CCDTemperature", lambda: self.client.CCDTemperature))

    def cool_to(self, celsius: float) -> None:
        def go() -> None:
            self.client.SetCCDTemperature = celsius
            self.client.CoolerOn = True

        self.call("SetCCDTemperature", go)

    def gain(self) -> float:
        return float(self.call("ElectronsPerADU", lambda: self.client.ElectronsPerADU))

    def read_noise(self) -> float:
        return self._read_noise


_TRANSMISSION_TYPES = {1: "<i2", 2: "<i4", 3: "<f8", 4: "<f4", 6: "u1", 8: "<u2"}


def _from_image_bytes(content: bytes) -> np.ndarray:
    """An Alpaca ImageBytes body (44-byte little-endian header, then the pixels) as an [x][y] array."""
    if len(content) < 44:
        raise ValueError(f"ImageBytes body of {len(content)} bytes is shorter than its header")
    header = np.frombuffer(content[:44], dtype="<i4")
    error, data_start, transmission, rank, width, height = (int(header[i]) for i in (1, 4, 6, 7, 8, 9))
    if error:
        raise_alpaca_if(error, content[data_start:].decode("utf-8", errors="replace"))
    if rank != 2 or transmission not in _TRANSMISSION_TYPES:
        raise ValueError(f"ImageBytes of rank {rank}, element type {transmission}: not a monochrome image")
    pixels = np.frombuffer(content, dtype=_TRANSMISSION_TYPES[transmission], offset=data_start)
    if pixels.size != width * height:
        raise ValueError(f"ImageBytes holds {pixels.size} pixels, not {width} x {height}")
    return pixels.reshape(width, height)


class AlpacaFilterWheel(_AlpacaDevice, FilterWheel):
    driver = "alpaca"

    def __init__(self, link: DeviceLink) -> None:
        self._setup(link, AlpacaFilterWheelClient)
        self._names: list[str] | None = None

    def names(self) -> list[str]:
        if self._names is None:
            self._names = list(self.call("Names", lambda: self.client.Names))
        return self._names

    def current(self) -> str | None:
        position = self.call("Position", lambda: self.client.Position)
        return None if position < 0 else self.names()[position]

    def select(self, name: str) -> None:
        names = self.names()
        if name not in names:
            raise CommandRefused(f"no filter {name!r} in the wheel (it holds {', '.join(names)})")

        def go() -> None:
            self.client.Position = names.index(name)

        self.call("Position", go)


class AlpacaSafetyMonitor(_AlpacaDevice, WeatherStation):
    driver = "alpaca"

    def __init__(self, link: DeviceLink) -> None:
        self._setup(link, AlpacaSafetyClient)

    def safe(self) -> tuple[bool, str]:
        safe = self.call("IsSafe", lambda: self.client.IsSafe)
        return bool(safe), "" if safe else "the safety monitor reports unsafe conditions"


class AlpacaFlatLamp(_AlpacaDevice, FlatLamp):
    """The calibrator of an ASCOM CoverCalibrator (a light panel); its cover, if any, is left alone."""

    driver = "alpaca"

    def __init__(self, link: FlatLampLink) -> None:
        self._setup(link, AlpacaCoverCalibratorClient)
        self.brightness = link.brightness

    def switch_on(self) -> None:
        def go() -> None:
            brightness = self.brightness if self.brightness is not None else self.client.MaxBrightness
            self.client.CalibratorOn(brightness)

        self.call("CalibratorOn", go)

    def switch_off(self) -> None:
        self.call("CalibratorOff", self.client.CalibratorOff)

    def lit(self) -> bool:
        state = self.call("CalibratorState", lambda: self.client.CalibratorState)
        if state == CalibratorStatus.Error:
            raise DeviceError(f"{self.kind} ({self.url}): the calibrator reports an error")
        return bool(state == CalibratorStatus.Ready)
