"""Simulators of every device, driven by the module clock so that a night can run in a minute.

Movements take time (slew rate, shutter travel, filter changes, readout); the camera produces raw frames from
the project's one frame generator (``toros.simulation.ccd``), lit by what the ``Sky`` says reaches the chip:
twilight or night sky through an open dome, stars when tracking, a lamp-lit screen for dome flats.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from toros.floor.site import Site
from toros.floor.sky_geometry import tan_wcs
from toros.floor.supernovae import SupernovaType
from toros.runtime.clock import Clock
from toros.simulation.ccd import Sensor, make_frame
from toros.simulation.sky import (
    FILTERS,
    Asteroid,
    Conditions,
    Galaxies,
    Galaxy,
    Kilonova,
    Scene,
    SimulatedSky,
    StarCatalog,
    Supernova,
    Transient,
    VariableStar,
)
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
from toros.telescope.dome_geometry import azimuth_error_deg
from toros.telescope.settings import (
    BadWeather,
    CameraLink,
    DomeLink,
    KilonovaSpec,
    SimulatedSkySettings,
    SupernovaSpec,
    TransientSpec,
    VariableStarSpec,
)


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
            duration = max(azimuth_error_deg(ra_now, ra), abs(dec - dec_now)) / self.rate
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
        self._rotations: list[_Move] = [self._azimuth]  # recent ones: where the slit was during an exposure
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
        self._rotate(_Move(here, here + delta, now, abs(delta) / self.rotation))

    def _rotate(self, move: _Move) -> None:
        self._azimuth = move
        self._rotations = self._rotations[-200:] + [move]

    def azimuth_at(self, timestamp: float) -> float:
        """Where the dome stood at a clock time (within its recent rotations)."""
        move = next((m for m in reversed(self._rotations) if m.start_time <= timestamp), self._rotations[0])
        return move.at(timestamp) % 360.0

    def azimuth(self) -> float:
        return self._azimuth.at(self.clock.timestamp()) % 360.0

    def slewing(self) -> bool:
        return self._azimuth.moving(self.clock.timestamp())

    def park(self) -> None:
        self.slew_to(self.park_azimuth)

    def abort(self) -> None:
        now = self.clock.timestamp()
        here = self._azimuth.at(now)
        self._rotate(_Move(here, here, now, 0.0))


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
    """What reaches the chip during an exposure: sky (or screen) electrons per second per pixel at the centre,
    and either the simulated sky's sources (``scene``) or ``stars`` stars at random places (tests)."""

    sky_rate: float
    stars: int = 0
    scene: Scene | None = None
    # The fraction of the beam the dome let through between two clock times (None: all of it).
    transmission: Callable[[float, float], float] | None = None


def transient_of(spec: TransientSpec) -> Transient:
    """The simulated sky's transient a config entry describes."""
    if isinstance(spec, KilonovaSpec):
        return Kilonova(spec.ra_deg, spec.dec_deg, spec.start, spec.distance_mpc)
    if isinstance(spec, SupernovaSpec):
        kind = SupernovaType.IA if spec.kind == "supernova_ia" else SupernovaType.II
        return Supernova(spec.ra_deg, spec.dec_deg, spec.peak_time, spec.distance_mpc, kind)
    if isinstance(spec, VariableStarSpec):
        return VariableStar(spec.ra_deg, spec.dec_deg, spec.mean_mag, spec.amplitude_mag, spec.period_days, spec.epoch)
    return Asteroid(spec.ra_deg, spec.dec_deg, spec.epoch, spec.rate_arcsec_per_hour, spec.position_angle_deg, spec.mag)


def simulated_sky(settings: SimulatedSkySettings) -> SimulatedSky:
    """The simulated sky a config describes: its stars, the galaxies of a catalog, its transients."""
    galaxies: Galaxies | Sequence[Galaxy] = ()
    if settings.galaxy_catalog is not None:
        from toros.floor.catalogs import GalaxyIndex

        index = GalaxyIndex.open(settings.galaxy_catalog)
        galaxies = Galaxies(index.ra, index.dec, index.bmag, index.dist, index.name)
    transients = [transient_of(spec) for spec in settings.transients]
    return SimulatedSky(StarCatalog(settings.faintest_star_mag), galaxies, transients, optics=settings.psf.optics())


class Sky:
    """The simulated sky above the dome: the dark sky of each filter (``Photometry``), brightened by twilight
    and the Moon; the lamp-lit screen for dome flats; the sources where the telescope truly points (the
    reported pointing plus an error only this class knows) while it tracks in the dark."""

    # Twilight brightens the sky slowly below the Sun at -12° (0.3 mag per degree from -18°), then steeply
    # (1 mag per degree): about 2 mag over the dark sky at the end of nautical twilight, 11 mag at -3°.
    TWILIGHT_SLOW = (-18.0, -12.0, 0.3)
    TWILIGHT_STEEP = 1.0
    SCREEN_ELECTRONS_PER_SECOND = 6000.0
    DARK_ENOUGH_FOR_STARS_DEG = -12.0
    MOON_STEP_S = 600.0

    def __init__(
        self,
        clock: Clock,
        site: Site,
        equipment: tuple[Dome, Mount, FilterWheel, FlatLamp | None],
        camera: CameraLink,
        settings: SimulatedSkySettings,
        dome: DomeLink | None = None,
    ) -> None:
        self.clock, self.site = clock, site
        self.dome, self.mount, self.filters, self.lamp = equipment
        self.camera = camera
        self.settings = settings
        self.dome_link = dome
        self.sky = simulated_sky(settings)
        self._moon: tuple[int, float] = (-1, 1.0)  # (clock step, brightening)

    def pointing_error(self, ra_deg: float, dec_deg: float) -> tuple[float, float]:
        """(ΔRA·cos Dec, ΔDec) in degrees between where the mount says it points and where it does: the same
        for the same reported position, as a mount's pointing model error."""
        seed = [int(round(ra_deg * 3600)) % 1_296_000, int(round((dec_deg + 90) * 3600))]
        rng = np.random.default_rng(seed)
        east, north = rng.normal(0.0, self.settings.pointing_error_arcsec / 3600.0, 2)
        return float(east), float(north)

    @classmethod
    def twilight_mag(cls, sun_altitude_deg: float) -> float:
        """How many magnitudes twilight brightens the sky over the dark sky."""
        dark, knee, slope = cls.TWILIGHT_SLOW
        sun = min(sun_altitude_deg, 5.0)
        if sun <= dark:
            return 0.0
        if sun <= knee:
            return slope * (sun - dark)
        return slope * (knee - dark) + cls.TWILIGHT_STEEP * (sun - knee)

    def light(self, exposure_s: float = 0.0) -> Light:
        """What falls on the detector during an exposure starting now: the twilight sky as it is half way
        through (it changes by a magnitude per degree of the Sun), the rest as it is now."""
        from toros.floor.astronomy import altaz_exact, sun_altitude

        current = self.filters.current()
        filter = current if current in FILTERS else "clear"  # an unknown filter passes light as clear
        if self.lamp is not None and self.lamp.lit():
            return Light(self.SCREEN_ELECTRONS_PER_SECOND)
        if self.dome.shutter() is not Shutter.OPEN:
            return Light(0.0)
        now = self.clock.now()
        sun = sun_altitude(self.site, now + timedelta(seconds=exposure_s / 2))
        brightening = 10 ** (0.4 * self.twilight_mag(sun)) * self._moonlight(now)
        sky_rate = self.sky.photometry.sky_electrons(filter, self.camera.pixel_scale_arcsec, brightening)
        if self.mount.parked() or self.mount.slewing() or sun >= self.DARK_ENOUGH_FOR_STARS_DEG:
            return Light(sky_rate)
        ra, dec = self.mount.position()
        error_ra, error_dec = self.pointing_error(ra, dec)
        true_dec = max(-90.0, min(90.0, dec + error_dec))
        true_ra = (ra + error_ra / max(math.cos(math.radians(true_dec)), 1e-6)) % 360.0
        altitude, _ = altaz_exact(self.site, true_ra, true_dec, now)
        rng = np.random.default_rng(int(now.timestamp()))
        low, high = self.settings.seeing_arcsec
        conditions = Conditions(
            filter,
            0.0,
            1.0 / max(math.sin(math.radians(altitude)), 0.05),
            float(rng.uniform(low, high)),
            now,
        )
        camera = self.camera
        wcs = tan_wcs(true_ra, true_dec, camera.width, camera.height, camera.pixel_scale_arcsec)
        scene = Scene(self.sky, wcs, camera.pixel_scale_arcsec, conditions)
        return Light(sky_rate, scene=scene, transmission=lambda start, end: self.beam_through_slit(ra, dec, start, end))

    def beam_through_slit(self, ra_deg: float, dec_deg: float, start: float, end: float) -> float:
        """The mean fraction of the telescope's beam that passed the slit while it tracked (ra, dec) from
        ``start`` to ``end`` (clock timestamps): sampled along the exposure, the beam's sideways distance from
        the slit's centre against the slit's and the beam's half-widths."""
        link = self.dome_link
        azimuth_at = getattr(self.dome, "azimuth_at", None)
        if link is None or link.kind != "dome" or azimuth_at is None or end <= start:
            return 1.0
        from astropy.time import Time

        from toros.floor.astronomy import sky_grid
        from toros.telescope.dome_geometry import azimuth_error_deg

        geometry = link.slit_geometry(self.site.latitude)
        moments = np.linspace(start, end, 25)
        grid = sky_grid(self.site, np.array([ra_deg]), np.array([dec_deg]), Time(moments, format="unix"))
        passed = []
        for altitude, azimuth, moment in zip(grid.altitude[0], grid.azimuth[0], moments, strict=True):
            slit_azimuth, slit_altitude = geometry.slit(float(azimuth), float(altitude))
            lag = math.radians(azimuth_error_deg(azimuth_at(float(moment)), slit_azimuth))
            sideways = link.radius_m * math.cos(math.radians(slit_altitude)) * math.sin(lag)
            if lag > math.pi / 2:
                sideways = link.radius_m  # the slit is on the other side of the dome
            half_beam = link.geometry.aperture_m / 2
            passed.append(min(1.0, max(0.0, (link.slit_width_m / 2 + half_beam - sideways) / (2 * half_beam))))
        return float(np.mean(passed))

    def _moonlight(self, now: datetime) -> float:
        """How much the Moon brightens the sky: up to about 1.5 mag for a full Moon high up. Computed once per
        ``MOON_STEP_S`` of clock time (the Moon moves little; an accelerated clock must not wait for astropy)."""
        step = int(now.timestamp() // self.MOON_STEP_S)
        if self._moon[0] != step:
            self._moon = (step, self._moonlight_at(datetime.fromtimestamp(step * self.MOON_STEP_S, UTC)))
        return self._moon[1]

    def _moonlight_at(self, now: datetime) -> float:
        from astroplan import moon_illumination
        from astropy.coordinates import AltAz, get_body
        from astropy.time import Time

        from toros.floor.astronomy import location_of

        when = Time(now)
        location = location_of(self.site)
        altitude = get_body("moon", when, location=location).transform_to(AltAz(obstime=when, location=location)).alt
        height = max(0.0, math.sin(altitude.radian))
        return 1.0 + 3.0 * float(moon_illumination(when)) * height


class SimulatedCamera(Camera):
    driver = "simulator"
    COOLING_TIME_CONSTANT_S = 120.0
    AMBIENT_C = 10.0

    def __init__(self, clock: Clock, sensor: Sensor, readout_s: float, light: Callable[[float], Light]) -> None:
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
            self.light(seconds) if light else Light(0.0),
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
        assert self._exposure is not None, "image_ready says an exposure ended"
        start, seconds, light, seen, when = self._exposure
        self._frames += 1
        kind = "light" if light else ("bias" if seconds == 0 else "dark")
        frame = make_frame(
            self.sensor,
            kind,
            exposure_time=seconds,
            seed=self._frames + int(when.timestamp()),
            sky_rate=seen.sky_rate,
            stars=seen.stars,
            scene=seen.scene,
            cosmic_rays=int(seconds // 20),
            date_obs=when,
            transmission=seen.transmission(start, start + seconds) if seen.transmission else 1.0,
        )
        return frame.data

    def abort(self) -> None:
        self._exposure = None

    def stop_exposure(self) -> None:
        if self._exposure is None or self.image_ready():
            raise CommandRefused("no exposure to stop")
        start, seconds, light, seen, when = self._exposure
        elapsed = min(seconds, self.clock.timestamp() - start)
        if elapsed < seconds:  # the readout starts now
            self._exposure = (start, elapsed, light, seen, when)

    def last_exposure_s(self) -> float | None:
        return None if self._exposure is None else self._exposure[1]

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
