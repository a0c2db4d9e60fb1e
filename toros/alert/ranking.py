"""Ranking host-galaxy candidates in a sky map, and keeping those a site can observe in its coming night.

Per galaxy (Singer et al. 2016, the distance ansatz): ``PROBDENSITY x DISTNORM x N(d; DISTMU, DISTSIGMA)``,
optionally times the B-band luminosity; a map without distances ranks by probability density alone.
Galaxies without a distance never outrank galaxies with one. Look-ups are ranges of the sorted order-29
index: each sky-map pixel of level L covers the order-29 pixels [ipix << 2(29-L), (ipix+1) << 2(29-L)).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

import astropy.units as u
import numpy as np
from astropy.coordinates import AltAz, EarthLocation, get_sun
from astropy.time import Time

from toros.alert.skymap import SkyMap
from toros.floor.catalogs import ORDER, GalaxyIndex
from toros.floor.site import Site


@dataclass
class Ranked:
    """Candidates, best first: rows of the index, scores, and whether each has a distance."""

    rows: np.ndarray
    score: np.ndarray
    has_distance: np.ndarray
    credible: np.ndarray  # which sky-map pixels form the credible region searched

    def __len__(self) -> int:
        return len(self.rows)


def rank(index: GalaxyIndex, skymap: SkyMap, *, credible_level: float, luminosity_weighting: bool) -> Ranked:
    inside = skymap.credible_region(credible_level)
    level, ipix = skymap.level_ipix
    level, ipix = level[inside], ipix[inside].astype(np.int64)
    shift = 2 * (ORDER - level.astype(np.int64))
    starts = np.searchsorted(index.hpx, ipix << shift)
    stops = np.searchsorted(index.hpx, (ipix + 1) << shift)
    counts = stops - starts
    total = int(counts.sum())
    if total == 0:
        return Ranked(np.empty(0, np.int64), np.empty(0), np.empty(0, bool), inside)
    pixel = np.repeat(np.arange(len(counts)), counts)
    rows = np.arange(total) + np.repeat(starts - (np.cumsum(counts) - counts), counts)
    density = skymap.probdensity[inside][pixel]
    distance = np.asarray(index.dist[rows], dtype=np.float64)
    has_distance = np.isfinite(distance) & (distance > 0)
    score = density.copy()
    if skymap.has_distance:
        mu, sigma, norm = (getattr(skymap, c)[inside][pixel] for c in ("distmu", "distsigma", "distnorm"))
        valid = has_distance & np.isfinite(mu) & (sigma > 0)
        gauss = np.exp(-0.5 * ((distance - mu) / np.where(valid, sigma, 1.0)) ** 2) / (
            np.sqrt(2 * np.pi) * np.where(valid, sigma, 1.0)
        )
        score = np.where(valid, density * norm * gauss, density)
    else:
        has_distance = np.ones(total, dtype=bool)  # a 2-D map: probability alone, nobody is penalised
    if luminosity_weighting:
        bmag = np.asarray(index.bmag[rows], dtype=np.float64)
        absolute = bmag - 5 * np.log10(np.where(has_distance, distance, 1.0)) - 25
        luminosity = np.where(np.isfinite(absolute) & has_distance, 10 ** (-0.4 * (absolute + 20.0)), 1.0)
        score = score * luminosity
    order = np.lexsort((-score, ~has_distance))
    return Ranked(rows[order], score[order], has_distance[order], inside)


def observable(
    ra_deg: np.ndarray,
    dec_deg: np.ndarray,
    site: Site,
    start: datetime,
    *,
    min_altitude_deg: float,
    sun_altitude_deg: float,
    hours: float = 24.0,
    step_minutes: float = 10.0,
) -> np.ndarray:
    """Which targets rise above ``min_altitude_deg`` while the Sun is below ``sun_altitude_deg``, within
    ``hours`` from ``start`` (the site's coming night)."""
    # The grid starts on a whole step so that successive alerts share the cached dark-time grid.
    step = step_minutes * 60.0
    grid_start = datetime.fromtimestamp(start.timestamp() // step * step, tz=start.tzinfo)
    lst = _dark_sidereal_times(site, grid_start, sun_altitude_deg, hours, step_minutes)
    if len(lst) == 0:
        return np.zeros(len(ra_deg), dtype=bool)
    latitude = np.deg2rad(site.latitude)
    dec = np.deg2rad(np.asarray(dec_deg))[:, None]
    hour_angle = lst[None, :] - np.deg2rad(np.asarray(ra_deg))[:, None]
    sin_alt = np.sin(latitude) * np.sin(dec) + np.cos(latitude) * np.cos(dec) * np.cos(hour_angle)
    return np.asarray((np.rad2deg(np.arcsin(np.clip(sin_alt, -1, 1))) >= min_altitude_deg).any(axis=1))


@functools.lru_cache(maxsize=64)
def _dark_sidereal_times(
    site: Site, start: datetime, sun_altitude_deg: float, hours: float, step_minutes: float
) -> np.ndarray:
    """Local sidereal times (radians) of the grid points where the Sun is below ``sun_altitude_deg``."""
    location = EarthLocation.from_geodetic(site.longitude * u.deg, site.latitude * u.deg, site.elevation * u.m)
    times = Time(start) + np.arange(0.0, hours * 60.0 + step_minutes, step_minutes) * u.min
    sun = get_sun(times).transform_to(AltAz(obstime=times, location=location)).alt.to_value(u.deg)
    dark = times[sun < sun_altitude_deg]
    if len(dark) == 0:
        return np.empty(0)
    return np.asarray(dark.sidereal_time("apparent", longitude=location.lon).to_value(u.rad))
