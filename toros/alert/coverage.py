"""What a set of pointings covers of an event: the sky map's probability inside their fields (2-D) and the
ranked galaxies' share of the probability inside them (3-D).

The 2-D figure counts each HEALPix pixel of a fine grid (the map's own deepest order, at least order 10 —
3.4′ — and at most 13) once when its centre falls inside any field, weighted by the map's density there:
overlapping fields count once, and a field's edge is resolved to a fine pixel's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix, healpix_to_lonlat, level_to_nside, nside_to_pixel_area
from scipy.spatial import cKDTree

from toros.alert.footprints import Footprint, chord, unit_vectors
from toros.alert.skymap import SkyMap
from toros.floor.catalogs import ORDER

FINE_LEVELS = (10, 13)
# (footprint, centre RA, centre Dec) in degrees: one observed (or planned) field.
Field = tuple[Footprint, float, float]


def probability_2d(skymap: SkyMap, fields: Sequence[Field]) -> float:
    """The sky map's probability inside the union of the fields (0..1)."""
    if not fields:
        return 0.0
    level, ipix = skymap.level_ipix
    fine = int(np.clip(level.max(), *FINE_LEVELS))
    grid = HEALPix(nside=level_to_nside(fine), order="nested")
    pixel_deg = float(np.sqrt(nside_to_pixel_area(grid.nside).to_value(u.deg**2)))
    covered = []
    for footprint, ra, dec in fields:
        near = np.asarray(grid.cone_search_lonlat(ra * u.deg, dec * u.deg, (footprint.radius_deg + pixel_deg) * u.deg))
        lon, lat = healpix_to_lonlat(near, grid.nside, order="nested")
        covered.append(near[footprint.contains(lon.to_value(u.deg), lat.to_value(u.deg), ra, dec)])
    pixels = np.unique(np.concatenate(covered)).astype(np.int64)
    # Each fine pixel lies in exactly one pixel of the map (whose order is at most the fine one's): the last
    # map pixel starting at or before it, on the common order-29 scale.
    starts = ipix.astype(np.int64) << (2 * (ORDER - level.astype(np.int64)))
    order = np.argsort(starts)
    where = np.searchsorted(starts[order], pixels << (2 * (ORDER - fine)), side="right") - 1
    density = skymap.probdensity[order][where]
    total = float(np.sum(skymap.probability()))
    return float(np.sum(density) * grid.pixel_area.to_value(u.sr) / total)


def inside_any(ra_deg: np.ndarray, dec_deg: np.ndarray, fields: Sequence[Field]) -> np.ndarray:
    """Which places fall inside at least one field."""
    ra, dec = np.asarray(ra_deg, dtype=float), np.asarray(dec_deg, dtype=float)
    hit = np.zeros(len(ra), dtype=bool)
    if not fields or not len(ra):
        return hit
    tree = cKDTree(unit_vectors(ra, dec))
    for footprint, centre_ra, centre_dec in fields:
        centre = unit_vectors(np.array([centre_ra]), np.array([centre_dec]))[0]
        near = np.asarray(tree.query_ball_point(centre, chord(footprint.radius_deg)), dtype=int)
        if len(near):
            hit[near[footprint.contains(ra[near], dec[near], centre_ra, centre_dec)]] = True
    return hit


def probability_3d(ra_deg: np.ndarray, dec_deg: np.ndarray, share: np.ndarray, fields: Sequence[Field]) -> float:
    """The ranked galaxies' share of the probability inside the fields (``share`` sums to 1 over all ranked
    galaxies of the credible region)."""
    return float(np.sum(np.asarray(share)[inside_any(ra_deg, dec_deg, fields)]))
