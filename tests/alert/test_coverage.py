"""Coverage of an event by pointings, against an independent Monte Carlo estimate from the sky map."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy_healpix import healpix_to_lonlat, level_to_nside
from support import DATA, MULTIORDER

from toros.alert.coverage import inside_any, probability_2d, probability_3d
from toros.alert.footprints import Footprint
from toros.alert.skymap import read_skymap
from toros.floor.sky_geometry import tan_wcs

SAMPLES = 400_000  # the Monte Carlo's standard error is at most 0.08% (absolute)


def sample(skymap, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Places drawn from the map: a pixel by its probability, then a place inside it."""
    probability = skymap.probability()
    chosen = rng.choice(len(probability), size=count, p=probability / probability.sum())
    level, ipix = skymap.level_ipix
    lon, lat = healpix_to_lonlat(
        ipix[chosen], level_to_nside(level[chosen]), dx=rng.random(count), dy=rng.random(count), order="nested"
    )
    return lon.to_value(u.deg), lat.to_value(u.deg)


def inside_independently(ra: np.ndarray, dec: np.ndarray, fields) -> np.ndarray:
    """The same question asked of astropy: a TAN WCS per rectangle (1"/px), an angular separation per circle."""
    hit = np.zeros(len(ra), dtype=bool)
    places = SkyCoord(ra * u.deg, dec * u.deg)
    for footprint, centre_ra, centre_dec in fields:
        if footprint.circular:
            hit |= places.separation(SkyCoord(centre_ra * u.deg, centre_dec * u.deg)).deg <= footprint.width_deg / 2
            continue
        width, height = footprint.width_deg * 3600, footprint.height_deg * 3600
        wcs = tan_wcs(centre_ra, centre_dec, int(width), int(height), 1.0)
        x, y = wcs.world_to_pixel(places)
        in_front = places.separation(SkyCoord(centre_ra * u.deg, centre_dec * u.deg)).deg < 60
        hit |= in_front & (np.abs(x - (width - 1) / 2) <= width / 2) & (np.abs(y - (height - 1) / 2) <= height / 2)
    return hit


@pytest.mark.parametrize("name", [MULTIORDER.name, "M323277-bayestar.flat-nested.fits.gz"])
def test_probability_2d_agrees_with_a_monte_carlo_from_the_map(name):
    skymap = read_skymap((DATA / name).read_bytes())
    rng = np.random.default_rng(5)
    ra0, dec0 = skymap.most_probable()
    square, circle = Footprint.of((1.38, 1.38)), Footprint.of(1.0)
    # A tiling around the peak, some fields overlapping (they count once), and one field far away.
    fields = [
        (square if k % 3 else circle, ra0 + dx / np.cos(np.radians(dec0)), dec0 + dy)
        for k, (dx, dy) in enumerate(rng.uniform(-4.0, 4.0, size=(40, 2)))
    ] + [(square, (ra0 + 180.0) % 360.0, -dec0)]
    ours = probability_2d(skymap, fields)
    ra, dec = sample(skymap, SAMPLES, rng)
    truth = float(inside_independently(ra, dec, fields).mean())
    assert 0.05 < truth < 0.95
    assert ours == pytest.approx(truth, abs=0.005)
    assert probability_2d(skymap, fields[:1] * 3) == pytest.approx(probability_2d(skymap, fields[:1]))
    assert probability_2d(skymap, []) == 0.0


def test_probability_3d_counts_each_galaxy_once():
    rng = np.random.default_rng(6)
    ra, dec = rng.uniform(190, 200, 2000), rng.uniform(-22, -14, 2000)
    share = rng.random(2000)
    share /= share.sum()
    fields = [(Footprint.of((1.38, 1.38)), 194.0, -18.0), (Footprint.of((1.38, 1.38)), 194.5, -18.0)]
    expected = inside_independently(ra, dec, fields)
    assert np.array_equal(inside_any(ra, dec, fields), expected)
    assert probability_3d(ra, dec, share, fields) == pytest.approx(share[expected].sum())
    assert probability_3d(ra, dec, share, []) == 0.0
