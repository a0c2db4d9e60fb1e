"""Ranking host-galaxy candidates in a sky map.

Per galaxy (Singer et al. 2016, the distance ansatz): ``PROBDENSITY x DISTNORM x N(d; DISTMU, DISTSIGMA)``,
optionally times the B-band luminosity; a map without distances ranks by probability density alone.
Galaxies without a distance never outrank galaxies with one. Look-ups are ranges of the sorted order-29
index: each sky-map pixel of level L covers the order-29 pixels [ipix << 2(29-L), (ipix+1) << 2(29-L)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toros.alert.skymap import SkyMap
from toros.floor.catalogs import ORDER, GalaxyIndex


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
