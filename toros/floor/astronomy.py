"""The astronomy the telescope needs, vectorised: the Sun, the Moon, the night, and where targets stand.

Targets are reduced once per night to apparent (TETE) place; their altitude and azimuth on a time grid then
follow from the local apparent sidereal time with plain numpy, which agrees with astropy's full AltAz
transform to well under an arcsecond (both without refraction, as astroplan's constraints) and is thousands
of times faster for a night of hundreds of targets.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import astropy.units as u
import numpy as np
from astropy.coordinates import TETE, AltAz, EarthLocation, SkyCoord, get_body, get_sun
from astropy.time import Time

from toros.floor.site import Constraints, Site, observing_night

GRID_MINUTES = 2.0
SIDEREAL_RAD_PER_S = 2 * np.pi * 1.00273790935 / 86400.0  # apparent sidereal time per UT1 second


def location_of(site: Site) -> EarthLocation:
    return EarthLocation.from_geodetic(site.longitude * u.deg, site.latitude * u.deg, site.elevation * u.m)


def night_of(site: Site, when: datetime) -> date:
    """The observing night containing ``when``: the site's local (mean solar) date at the noon before it."""
    return observing_night(when, site.longitude)


def local_noon(site: Site, night: date) -> datetime:
    """UTC time of local mean noon on the night's date."""
    return datetime.combine(night, time(12), tzinfo=UTC) - timedelta(hours=site.longitude / 15.0)


def sun_altitude(site: Site, when: datetime) -> float:
    """The Sun's altitude in degrees, without refraction."""
    return float(sun_altitudes(site, Time(when))[()])


def sun_altitudes(site: Site, times: Time) -> np.ndarray:
    """The Sun's altitude at each of ``times`` (degrees, without refraction)."""
    if times.isscalar or len(times) < 3:
        frame = AltAz(obstime=times, location=location_of(site))
        return np.asarray(get_sun(times).transform_to(frame).alt.to_value(u.deg))
    return ApparentSky(site, times).sun_altitude


@dataclass(frozen=True)
class NightTimes:
    """The events of one night, UTC; None when the Sun never crosses that altitude that night."""

    night: date
    sunset: datetime | None
    dusk: datetime | None  # the Sun goes below the twilight altitude
    dawn: datetime | None  # the Sun comes back above it
    sunrise: datetime | None

    @property
    def has_dark_time(self) -> bool:
        return self.dusk is not None and self.dawn is not None


@functools.lru_cache(maxsize=32)
def night_times(site: Site, night: date, twilight_deg: float) -> NightTimes:
    """Sunset, dusk, dawn and sunrise of a night, to a few seconds (interpolated on a 2-minute grid)."""
    start = local_noon(site, night)
    minutes = np.arange(0.0, 24 * 60 + GRID_MINUTES, GRID_MINUTES)
    times = Time(start) + minutes * u.min
    sun = sun_altitudes(site, times)

    def crossing(level: float, going_down: bool) -> datetime | None:
        below = sun < level
        edges = np.flatnonzero(below[1:] & ~below[:-1]) if going_down else np.flatnonzero(~below[1:] & below[:-1])
        if len(edges) == 0:
            return None
        i = edges[0] if going_down else edges[-1]
        fraction = (sun[i] - level) / (sun[i] - sun[i + 1])
        return start + timedelta(minutes=float(minutes[i] + fraction * GRID_MINUTES))

    return NightTimes(
        night,
        crossing(-0.833, True),
        crossing(twilight_deg, True),
        crossing(twilight_deg, False),
        crossing(-0.833, False),
    )


@dataclass
class SkyGrid:
    """Altitude, azimuth and Moon separation of N targets at T times (arrays N × T, degrees)."""

    times: Time
    altitude: np.ndarray
    azimuth: np.ndarray
    moon_separation: np.ndarray
    sun_altitude: np.ndarray  # T
    moon_altitude: np.ndarray  # T


class ApparentSky:
    """The sky of a site over a time grid, in the apparent (TETE) frame of date.

    Targets are reduced to apparent place once; the Sun and the topocentric Moon are computed every 15
    minutes and interpolated (their apparent places depart from a straight line by well under an arcsecond
    in 15 minutes); local apparent sidereal time advances linearly from the grid's start (to milliseconds
    over a night). Altitudes agree with astropy's full AltAz transform to about an arcsecond."""

    COARSE_S = 900.0

    def __init__(self, site: Site, times: Time) -> None:
        self.site, self.times = site, times
        self.location = location_of(site)
        span = (times[-1] - times[0]).to_value(u.s)
        steps = max(1, int(np.ceil(span / self.COARSE_S)))
        self.coarse = times[0] + (times[-1] - times[0]) * np.linspace(0.0, 1.0, steps + 1)
        self.frame = TETE(obstime=self.coarse, location=self.location)
        first = times[0].sidereal_time("apparent", longitude=self.location.lon).to_value(u.rad)
        self.last = (first + SIDEREAL_RAD_PER_S * (times - times[0]).to_value(u.s))[None, :]
        self.latitude = np.deg2rad(site.latitude)

    def _interpolate(self, values: np.ndarray) -> np.ndarray:
        x = (self.coarse - self.coarse[0]).to_value(u.s)
        t = (self.times - self.coarse[0]).to_value(u.s)
        return np.stack([np.interp(t, x, row) for row in np.atleast_2d(values)])

    def apparent(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ICRS positions -> apparent RA, Dec (radians) at the middle of the grid."""
        middle = self.times[len(self.times) // 2]
        targets = SkyCoord(
            np.asarray(ra_deg, dtype=float) * u.deg, np.asarray(dec_deg, dtype=float) * u.deg, frame="icrs"
        )
        place = targets.transform_to(TETE(obstime=middle))
        return place.ra.to_value(u.rad), place.dec.to_value(u.rad)

    @functools.cached_property
    def sun_altitude(self) -> np.ndarray:
        """The Sun's altitude at each grid time (degrees)."""
        sun = get_sun(self.coarse).transform_to(self.frame)
        ra = self._interpolate(np.unwrap(sun.ra.to_value(u.rad)))
        dec = self._interpolate(sun.dec.to_value(u.rad))
        return np.asarray(_altitude_azimuth(self.latitude, self.last, ra, dec)[0][0])

    @functools.cached_property
    def moon_directions(self) -> np.ndarray:
        """Unit vectors (3 × T) towards the Moon as seen from the site."""
        moon = get_body("moon", self.coarse, location=self.location).transform_to(self.frame)
        vectors = self._interpolate(_unit(moon.ra.to_value(u.rad), moon.dec.to_value(u.rad)))
        return np.asarray(vectors / np.linalg.norm(vectors, axis=0))

    def grid(self, ra_deg: np.ndarray, dec_deg: np.ndarray, columns: slice = slice(None)) -> SkyGrid:
        """Where each target stands at the grid times ``columns``; the Sun and the Moon are computed once per
        sky, however many target lists ask."""
        ra, dec = self.apparent(ra_deg, dec_deg)
        last = self.last[:, columns]
        altitude, azimuth = _altitude_azimuth(self.latitude, last, ra[:, None], dec[:, None])
        moon = self.moon_directions[:, columns]
        moon_separation = np.rad2deg(np.arccos(np.clip(_unit(ra, dec).T @ moon, -1.0, 1.0)))
        moon_ra, moon_dec = np.arctan2(moon[1], moon[0])[None, :], np.arcsin(np.clip(moon[2], -1.0, 1.0))[None, :]
        moon_altitude = _altitude_azimuth(self.latitude, last, moon_ra, moon_dec)[0][0]
        times = self.times[columns]
        return SkyGrid(times, altitude, azimuth, moon_separation, self.sun_altitude[columns], moon_altitude)


def _altitude_azimuth(
    latitude: float, last: np.ndarray, ra: np.ndarray, dec: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apparent RA/Dec (radians) at local apparent sidereal times ``last`` -> altitude, azimuth in degrees."""
    hour_angle = last - ra
    sin_alt = np.sin(latitude) * np.sin(dec) + np.cos(latitude) * np.cos(dec) * np.cos(hour_angle)
    azimuth = np.arctan2(
        -np.cos(dec) * np.sin(hour_angle),
        np.sin(dec) * np.cos(latitude) - np.cos(dec) * np.sin(latitude) * np.cos(hour_angle),
    )
    return np.rad2deg(np.arcsin(np.clip(sin_alt, -1.0, 1.0))), np.rad2deg(azimuth) % 360.0


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def sky_grid(site: Site, ra_deg: np.ndarray, dec_deg: np.ndarray, times: Time) -> SkyGrid:
    """Where each target stands at each time, for the constraints of a night plan."""
    return ApparentSky(site, times).grid(ra_deg, dec_deg)


@functools.lru_cache(maxsize=16)
def sky_of_night(site: Site, noon: datetime, step_s: float, hours: float = 48.0) -> ApparentSky:
    """A site's sky on a grid of ``step_s`` from a local noon over ``hours``, kept: every alert of a night
    plans on the same grid, and pays for the Sun and the Moon once."""
    return ApparentSky(site, Time(noon) + np.arange(int(hours * 3600 / step_s) + 1) * step_s * u.s)


def altaz_exact(site: Site, ra_deg: float, dec_deg: float, when: datetime) -> tuple[float, float]:
    """Altitude and azimuth of one position with astropy's full transform (for FITS headers and checks)."""
    frame = AltAz(obstime=Time(when), location=location_of(site))
    altaz = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs").transform_to(frame)
    return float(altaz.alt.to_value(u.deg)), float(altaz.az.to_value(u.deg))


FLAT_SPOT_ZENITH_DISTANCE_DEG = 13.0  # where the twilight sky is flattest (Chromey & Hasselbacher 1996, PASP 108, 944)
# Offsets of successive sky flats (east, north; arcminutes): the stars fall on other pixels each time, and the
# master's median rejects them.
FLAT_DITHERS_ARCMIN = ((0, 0), (2, 0), (0, 2), (-2, 0), (0, -2), (2, 2), (-2, -2), (2, -2), (-2, 2))


def flat_spot(site: Site, when: datetime, frame: int = 0) -> tuple[float, float]:
    """RA and Dec (degrees) of the ``frame``-th twilight flat: 13° from the zenith away from the Sun, where the
    twilight sky's gradient is smallest (not the zenith itself), dithered by a few arcminutes from one frame to
    the next. The spot stays near one altitude and azimuth through the sequence: the dome hardly turns."""
    moment = Time(when)
    frame_of = AltAz(obstime=moment, location=location_of(site))
    sun_azimuth = float(get_sun(moment).transform_to(frame_of).az.to_value(u.deg))
    spot = SkyCoord(
        alt=(90.0 - FLAT_SPOT_ZENITH_DISTANCE_DEG) * u.deg, az=((sun_azimuth + 180.0) % 360.0) * u.deg, frame=frame_of
    ).transform_to("icrs")
    east, north = FLAT_DITHERS_ARCMIN[frame % len(FLAT_DITHERS_ARCMIN)]
    dec = float(spot.dec.to_value(u.deg)) + north / 60.0
    ra = float(spot.ra.to_value(u.deg)) + east / 60.0 / math.cos(math.radians(dec))
    return ra % 360.0, dec


def minimum_altitude(constraints: Constraints, azimuth: np.ndarray) -> np.ndarray:
    """The lowest altitude allowed at each azimuth: the altitude limit, the airmass limit, the horizon."""
    floor = max(constraints.min_altitude_deg, math.degrees(math.asin(1.0 / constraints.max_airmass)))
    if not constraints.horizon:
        return np.full(azimuth.shape, floor)
    points = sorted(constraints.horizon)
    az = np.array([p[0] for p in points])
    alt = np.array([p[1] for p in points])
    horizon = np.interp(azimuth, az, alt, period=360.0)
    return np.asarray(np.maximum(floor, horizon))


def coming_night(site: Site, constraints: Constraints, moment: datetime) -> tuple[date, datetime]:
    """The night whose dark time has not ended at ``moment`` (tonight, or the next one in the morning), and
    its dawn: targets of an order not observed by then expire."""
    night = night_of(site, moment)
    for offset in (0, 1, 2):
        times = night_times(site, night + timedelta(days=offset), constraints.twilight_sun_altitude_deg)
        if times.dawn is not None and times.dawn > moment:
            return night + timedelta(days=offset), times.dawn
    return night + timedelta(days=1), moment + timedelta(days=1)
