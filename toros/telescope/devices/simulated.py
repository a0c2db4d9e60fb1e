"""Simulators of every device, driven by the module clock so that a night can run in a minute.

Movements take time (slew rate, shutter travel, filter changes, readout); the camera produces raw frames from
the project's one frame generator (``toros.simulation.ccd``), lit by what the ``Sky`` says reaches the chip:
twilight or night sky through an open dome, stars when tracking, a lamp-lit screen for dome flats.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from toros.runtime.clock import Clock
from toros.simulation.ccd import SKY_ELECTRONS_PER_SECOND, Sensor, make_frame
from toros.site import Site
from toros.telescope.devices import (
    Camera,
    CommandRefused,
    Dome,
    FilterWheel,
    FlatLamp,
    Mount,
    Shutter,
    WeatherStation,
)
from toros.telescope.settings import BadWeather


@dataclass
class _Move:
    """A movement from one value to another, started at a clock time, lasting some clock seconds."""

    start_value: float
    end_value: float
    start_time: float
    duration: float

    def at(self, now: float) -> float:
        if self.duration <= 0 or now >= self.start_time + self.duration:
            return self.end_value
        fraction = max(0.0, (now - self.start_time) / self.duration)
        return self.start_value + (self.end_value - self.start_value) * fraction

    def moving(self, now: float) -> bool:
        return now < self.start_time + self.duration


def _angle_between(a: float, b: float) -> float:
    return abs((b - a + 180.0) % 360.0 - 180.0)


class SimulatedMount(Mount):
    driver = "simulator"
    PARK_DEC = -90.0  # the pole: a safe, well-defined park position for either hemisphere's demo

    def __init__(self, clock: Clock, slew_rate_deg_s: float = 4.0) -> None:
        self.clock = clock
        self.rate = slew_rate_deg_s
        self._ra = _Move(0.0, 0.0, 0.0, 0.0)
        self._dec = _Move(self.PARK_DEC, self.PARK_DEC, 0.0, 0.0)
        self._parked = True
        self._lock = threading.Lock()

    def position(self) -> tuple[float, float]:
        now = self.clock.timestamp()
        return self._ra.at(now) % 360.0, self._dec.at(now)

    def _move(self, ra: float, dec: float) -> None:
        now = self.clock.timestamp()
        with self._lock:
            ra_now, dec_now = self._ra.at(now), self._dec.at(now)
            target_ra = ra_now + ((ra - ra_now + 180.0) % 360.0 - 180.0)
            duration = max(_angle_between(ra_now, ra), abs(dec - dec_now)) / self.rate
            self._ra = _Move(ra_now, target_ra, now, duration)
            self._dec = _Move(dec_now, dec, now, duration)

    def slew_to(self, ra_deg: float, dec_deg: float) -> None:
        if self._parked:
            raise CommandRefused("the mount is parked: unpark it first")
        self._move(ra_deg, dec_deg)

    def slewing(self) -> bool:
        now = self.clock.timestamp()
        return self._ra.moving(now) or self._dec.moving(now)

    def abort(self) -> None:
        ra, dec = self.position()
        now = self.clock.timestamp()
        with self._lock:
            self._ra, self._dec = _Move(ra, ra, now, 0.0), _Move(dec, dec, now, 0.0)

    def park(self) -> None:
        self._move(self.position()[0], self.PARK_DEC)
        self._parked = True

    def unpark(self) -> None:
        self._parked = False

    def parked(self) -> bool:
        return self._parked and not self.slewing()


class SimulatedDome(Dome):
    driver = "simulator"

    def __init__(
        self, clock: Clock, rotation_deg_s: float = 5.0, shutter_s: float = 60.0, park_azimuth_deg: float = 180.0
    ) -> None:
        self.clock = clock
        self.rotation = rotation_deg_s
        self.shutter_s = shutter_s
        self.park_azimuth = park_azimuth_deg
        self._azimuth = _Move(park_azimuth_deg, park_azimuth_deg, 0.0, 0.0)
        self._opening = _Move(0.0, 0.0, 0.0, 0.0)  # 0 closed … 1 open
        self.jammed = False  # a drill: the shutter motor fails

    def _travel(self, to: float) -> None:
        now = self.clock.timestamp()
        where = self._opening.at(now)
        self._opening = _Move(where, to, now, abs(to - where) * self.shutter_s)

    def open_shutter(self) -> None:
        self._travel(1.0)

    def close_shutter(self) -> None:
        self._travel(0.0)

    def shutter(self) -> Shutter:
        if self.jammed:
            return Shutter.ERROR
        now = self.clock.timestamp()
        if self._opening.moving(now):
            return Shutter.OPENING if self._opening.end_value > self._opening.start_value else Shutter.CLOSING
        return Shutter.OPEN if self._opening.end_value >= 1.0 else Shutter.CLOSED

    def slew_to(self, azimuth_deg: float) -> None:
        now = self.clock.timestamp()
        here = self._azimuth.at(now) % 360.0
        delta = (azimuth_deg - here + 180.0) % 360.0 - 180.0
        self._azimuth = _Move(here, here + delta, now, abs(delta) / self.rotation)

    def azimuth(self) -> float:
        return self._azimuth.at(self.clock.timestamp()) % 360.0

    def slewing(self) -> bool:
        return self._azimuth.moving(self.clock.timestamp())

    def park(self) -> None:
        self.slew_to(self.park_azimuth)

    def abort(self) -> None:
        now = self.clock.timestamp()
        here = self._azimuth.at(now)
        self._azimuth = _Move(here, here, now, 0.0)


class SimulatedFilterWheel(FilterWheel):
    driver = "simulator"

    def __init__(self, clock: Clock, names: tuple[str, ...], change_s: float = 3.0) -> None:
        self.clock = clock
        self._names = list(names)
        self.change_s = change_s
        self._current = self._names[0]
        self._ready_at = 0.0

    def names(self) -> list[str]:
        return list(self._names)

    def current(self) -> str | None:
        return self._current if self.clock.timestamp() >= self._ready_at else None

    def select(self, name: str) -> None:
        if name not in self._names:
            raise CommandRefused(f"no filter {name!r} in the wheel (it holds {', '.join(self._names)})")
        if name != self._current:
            self._ready_at = self.clock.timestamp() + self.change_s
            self._current = name


class SimulatedFlatLamp(FlatLamp):
    """A lamp that lights at once; the simulated ``Sky`` sees it lit."""

    driver = "simulator"

    def __init__(self) -> None:
        self._lit = False

    def switch_on(self) -> None:
        self._lit = True

    def switch_off(self) -> None:
        self._lit = False

    def lit(self) -> bool:
        return self._lit


class SimulatedWeather(WeatherStation):
    driver = "simulator"

    def __init__(self, clock: Clock, bad_weather: tuple[BadWeather, ...] = ()) -> None:
        self.clock = clock
        self.bad_weather = bad_weather

    def safe(self) -> tuple[bool, str]:
        now = self.clock.now()
        for period in self.bad_weather:
            if period.start <= now < period.end:
                return False, period.reason
        return True, ""


@dataclass(frozen=True)
class Light:
    """What reaches the chip during an exposure, in electrons per second at the centre, and stars in view."""

    sky_rate: float
    stars: int
    field: int | None = None  # which star field: the same pointing shows the same stars


class Sky:
    """The simulated sky above the dome: twilight brightness from the Sun's altitude, stars when tracking."""

    # Twilight sky brightens by about 0.6 mag per degree of solar altitude above -18°.
    MAG_PER_DEGREE = 0.6
    SCREEN_ELECTRONS_PER_SECOND = 6000.0

    def __init__(
        self, clock: Clock, site: Site, dome: Dome, mount: Mount, filters: FilterWheel, lamp: FlatLamp | None
    ) -> None:
        from toros.telescope.astronomy import sun_altitude

        self.clock, self.site, self.dome, self.mount, self.filters = clock, site, dome, mount, filters
        self.lamp = lamp  # the dome-flat lamp, whatever drives it
        self._sun_altitude = sun_altitude

    def light(self) -> Light:
        filter = self.filters.current() or "clear"
        if self.lamp is not None and self.lamp.lit():
            return Light(self.SCREEN_ELECTRONS_PER_SECOND, 0)
        if self.dome.shutter() is not Shutter.OPEN:
            return Light(0.0, 0)
        night = SKY_ELECTRONS_PER_SECOND.get(filter, 25.0)
        sun = self._sun_altitude(self.site, self.clock.now())
        brightening = 10 ** (0.4 * self.MAG_PER_DEGREE * max(0.0, min(sun, 5.0) + 18.0))
        tracking = not self.mount.parked() and not self.mount.slewing()
        ra, dec = self.mount.position()
        field = int(round(ra * 60)) * 100_000 + int(round((dec + 90) * 60))  # the arcminute the mount points at
        return Light(night * brightening, 40 if tracking and sun < -12 else 0, field)


class SimulatedCamera(Camera):
    driver = "simulator"
    COOLING_TIME_CONSTANT_S = 120.0
    AMBIENT_C = 10.0

    def __init__(self, clock: Clock, sensor: Sensor, readout_s: float, light: Callable[[], Light]) -> None:
        self.clock = clock
        self.sensor = sensor
        self.overscan = sensor.overscan
        self.readout_s = readout_s
        self.light = light
        self._frames = 0
        self._exposure: tuple[float, float, bool, Light, datetime] | None = None
        self._cooling = (self.AMBIENT_C, self.AMBIENT_C, 0.0)  # from, to, since

    def start_exposure(self, seconds: float, light: bool) -> None:
        self._exposure = (
            self.clock.timestamp(),
            seconds,
            light,
            self.light() if light else Light(0.0, 0),
            self.clock.now(),
        )

    def exposing(self) -> bool:
        return self._exposure is not None and not self.image_ready()

    def image_ready(self) -> bool:
        if self._exposure is None:
            return False
        start, seconds, _, _, _ = self._exposure
        return self.clock.timestamp() >= start + seconds + self.readout_s

    def read_image(self) -> np.ndarray:
        if not self.image_ready():
            raise CommandRefused("no image is ready")
        _, seconds, light, scene, when = self._exposure  # type: ignore[misc]
        self._frames += 1
        kind = "light" if light else ("bias" if seconds == 0 else "dark")
        frame = make_frame(
            self.sensor,
            kind,
            exposure_time=seconds,
            seed=self._frames + int(when.timestamp()),
            sky_rate=scene.sky_rate,
            stars=scene.stars,
            cosmic_rays=int(seconds // 20),
            date_obs=when,
            field=scene.field,
        )
        return frame.data

    def abort(self) -> None:
        self._exposure = None

    def temperature(self) -> float:
        start, target, since = self._cooling
        elapsed = self.clock.timestamp() - since
        return target + (start - target) * math.exp(-elapsed / self.COOLING_TIME_CONSTANT_S)

    def cool_to(self, celsius: float) -> None:
        self._cooling = (self.temperature(), celsius, self.clock.timestamp())

    def gain(self) -> float:
        return self.sensor.gain

    def read_noise(self) -> float:
        return self.sensor.read_noise
