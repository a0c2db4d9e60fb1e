"""What a set of pointings covers of an event: the sky map's probability inside their fields (2-D), the
ranked galaxies' share of the probability inside them (3-D), and how likely an AT2017gfo-like kilonova would
have been seen there given each field's depth (the detection efficiency a team quotes the next morning).

Sky-map figures count each HEALPix pixel of a fine grid (the map's own deepest order, at least order 10 —
3.4′ — and at most 13) once when its centre falls inside a field, weighted by the map's density there:
overlapping fields count once (for the efficiency, the deepest of them counts), and a field's edge is
resolved to a fine pixel's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix, healpix_to_lonlat, level_to_nside, lonlat_to_healpix, nside_to_pixel_area
from scipy.spatial import cKDTree

from toros.alert.footprints import Footprint, chord, unit_vectors
from toros.alert.skymap import SkyMap
from toros.floor.catalogs import NSIDE, ORDER

FINE_LEVELS = (10, 13)
DISTANCE_STEPS = 256  # the distance posterior of a pixel, integrated on this many steps out to DISTMU + 5 sigma
# (footprint, centre RA, centre Dec) in degrees: one observed (or planned) field.
Field = tuple[Footprint, float, float]


def probability_2d(skymap: SkyMap, fields: Sequence[Field]) -> float:
    """The sky map's probability inside the union of the fields (0..1)."""
    return sky_coverage(skymap, fields, [math.inf] * len(fields))[0]


def kilonova_efficiency(skymap: SkyMap, fields: Sequence[Field], reach_mpc: Sequence[float]) -> float | None:
    """The probability that a kilonova was inside a field and close enough to be seen: each field sees out to
    ``reach_mpc`` (where an AT2017gfo-like kilonova would have been at its limiting magnitude), a pixel covered
    twice by its deepest field; a pixel's distance posterior is the map's (Singer et al. 2016: r² N(r; DISTMU,
    DISTSIGMA)). None for a map without distances."""
    return sky_coverage(skymap, fields, reach_mpc)[1]


def sky_coverage(skymap: SkyMap, fields: Sequence[Field], reach_mpc: Sequence[float]) -> tuple[float, float | None]:
    """Both figures from one pass over the fields' pixels: (``probability_2d``, ``kilonova_efficiency``)."""
    cover = _Cover(skymap, fields, np.asarray(reach_mpc, dtype=float))
    if not len(cover.pixels):
        return 0.0, 0.0 if skymap.has_distance else None
    probability = float(np.sum(cover.probability))
    if skymap.distmu is None or skymap.distsigma is None:
        return probability, None
    mu, sigma = skymap.distmu[cover.map_pixel], skymap.distsigma[cover.map_pixel]
    return probability, float(np.sum(cover.probability * _closer_than(cover.reach, mu, sigma)))


def _closer_than(reach: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """P(r <= reach) under r² N(r; mu, sigma), r > 0, per pixel (0 where the posterior is not usable)."""
    usable = np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)
    mu, sigma = np.where(usable, mu, 1.0), np.where(usable, sigma, 1.0)
    top = np.maximum(mu + 5 * sigma, 1e-6)
    r = top[:, None] * (np.arange(1, DISTANCE_STEPS + 1) / DISTANCE_STEPS)[None, :]
    weight = r**2 * np.exp(-0.5 * ((r - mu[:, None]) / sigma[:, None]) ** 2)
    inside = np.sum(weight * (r <= reach[:, None]), axis=1)
    total = np.sum(weight, axis=1)
    return np.where(usable & (total > 0), inside / np.where(total > 0, total, 1.0), 0.0)


@dataclass
class _Cover:
    """The fine pixels inside any field: the map's pixel each lies in, its probability, the best reach."""

    pixels: np.ndarray
    map_pixel: np.ndarray
    probability: np.ndarray
    reach: np.ndarray

    def __init__(self, skymap: SkyMap, fields: Sequence[Field], reach: np.ndarray) -> None:
        level, ipix = skymap.level_ipix
        fine = int(np.clip(level.max(), *FINE_LEVELS))
        grid = HEALPix(nside=level_to_nside(fine), order="nested")
        pixel_deg = float(np.sqrt(nside_to_pixel_area(grid.nside).to_value(u.deg**2)))
        pixels, reaches = [], []
        for number, (footprint, ra, dec) in enumerate(fields):
            radius = (footprint.radius_deg + pixel_deg) * u.deg
            near = np.asarray(grid.cone_search_lonlat(ra * u.deg, dec * u.deg, radius), dtype=np.int64)
            lon, lat = healpix_to_lonlat(near, grid.nside, order="nested")
            inside = near[footprint.contains(lon.to_value(u.deg), lat.to_value(u.deg), ra, dec)]
            pixels.append(inside)
            reaches.append(np.full(len(inside), reach[number]))
        every = np.concatenate(pixels) if pixels else np.empty(0, np.int64)
        self.pixels, first = np.unique(every, return_inverse=True)
        self.reach = np.full(len(self.pixels), -np.inf)
        if len(every):
            np.maximum.at(self.reach, first, np.concatenate(reaches))
        self.map_pixel = map_pixels_of(skymap, self.pixels, fine)
        total = float(np.sum(skymap.probability()))
        self.probability = skymap.probdensity[self.map_pixel] * grid.pixel_area.to_value(u.sr) / total


def map_pixels_of(skymap: SkyMap, pixels: np.ndarray, level: int) -> np.ndarray:
    """The index of the map's pixel holding each nested pixel of ``level`` (at least the map's deepest): the
    last map pixel starting at or before it, on the common order-29 scale."""
    order, starts = skymap.starts_order29
    where = np.searchsorted(starts, np.asarray(pixels, dtype=np.int64) << (2 * (ORDER - level)), side="right")
    return np.asarray(order[where - 1])


def map_pixels_at(skymap: SkyMap, ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """The index of the map's pixel under each place."""
    finest = lonlat_to_healpix(
        np.asarray(ra_deg, dtype=float) % 360.0 * u.deg, np.asarray(dec_deg, dtype=float) * u.deg, NSIDE, order="nested"
    )
    return map_pixels_of(skymap, np.asarray(finest, dtype=np.int64), ORDER)


def inside_any(ra_deg: np.ndarray, dec_deg: np.ndarray, fields: Sequence[Field]) -> np.ndarray:
    """Which places fall inside at least one field."""
    return np.asarray(best_field(ra_deg, dec_deg, fields, np.zeros(len(fields))) >= 0)


def best_field(ra_deg: np.ndarray, dec_deg: np.ndarray, fields: Sequence[Field], value: np.ndarray) -> np.ndarray:
    """For each place, the index of the field of highest ``value`` it falls inside; -1 where none."""
    ra, dec = np.asarray(ra_deg, dtype=float), np.asarray(dec_deg, dtype=float)
    best = np.full(len(ra), -1, dtype=np.int64)
    if not fields or not len(ra):
        return best
    tree = cKDTree(unit_vectors(ra, dec))
    for number in np.argsort(value, kind="stable"):  # the best last: it overwrites the others
        footprint, centre_ra, centre_dec = fields[number]
        centre = unit_vectors(np.array([centre_ra]), np.array([centre_dec]))[0]
        near = np.asarray(tree.query_ball_point(centre, chord(footprint.radius_deg)), dtype=int)
        if len(near):
            best[near[footprint.contains(ra[near], dec[near], centre_ra, centre_dec)]] = number
    return best


def probability_3d(ra_deg: np.ndarray, dec_deg: np.ndarray, share: np.ndarray, fields: Sequence[Field]) -> float:
    """The ranked galaxies' share of the probability inside the fields (``share`` sums to 1 over all ranked
    galaxies of the credible region)."""
    return float(np.sum(np.asarray(share)[inside_any(ra_deg, dec_deg, fields)]))
