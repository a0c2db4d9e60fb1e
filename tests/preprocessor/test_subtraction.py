"""Proper image subtraction (ZOGY) against the simulated sky's truth: the score is unit-variance noise on
blank sky, an AT2017gfo-like kilonova in a new frame is the strongest detection, at its true place and
brightness, after registration of a reference taken with another pointing and seeing; tiles change nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sep
from astropy.io import fits
from astropy.wcs import WCS

from toros.preprocessor.psf import PsfModel
from toros.preprocessor.subtraction import Image, detections, register, residual_shift, subtract
from toros.simulation.sky import Conditions, Kilonova, SimulatedSky, write_calibrated_frame

FIELD = (11.888, -25.288)
WHEN = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
SIZE = 1024


def measured(
    data: np.ndarray, magzp: float, reference_magzp: float, fwhm: float, gain: float = 1.5
) -> tuple[Image, np.ndarray]:
    """An image ready for ZOGY (background subtracted, PSF from its stars) and its stars' positions."""
    data = np.array(data, dtype=np.float32)
    usable = np.isfinite(data)
    background = sep.Background(np.where(usable, data, 0.0).astype(np.float32), mask=~usable)
    data = data - background.back()
    found = sep.extract(np.where(usable, data, 0.0).astype(np.float32), 5, err=background.globalrms, minarea=5)
    stars = found[(found["flag"] == 0) & (found["peak"] < 20000)]
    stars = stars[np.argsort(-stars["flux"])]
    x, y, _ = sep.winpos(np.where(usable, data, 0.0).astype(np.float32), stars["x"], stars["y"], 1.5)
    psf = PsfModel.from_stars(data, x[:40], y[:40], fwhm=fwhm, size=31)
    assert psf is not None
    scale = 10 ** (0.4 * (magzp - reference_magzp))
    return Image(data.astype(np.float64), psf, scale, float(background.globalrms), gain), np.column_stack([x, y])


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict:
    """A deep reference a month before (pointing 40" off, seeing 1.4") and a new frame (seeing 2.2") with a
    kilonova at 80 Mpc one day after the merger."""
    folder = tmp_path_factory.mktemp("pair")
    sky = SimulatedSky()
    kilonova = Kilonova(FIELD[0] + 0.008, FIELD[1] + 0.004, WHEN - timedelta(days=1), 80.0)
    with_kilonova = SimulatedSky(sky.stars, [], [kilonova])
    reference = write_calibrated_frame(
        folder / "ref.fits", sky, FIELD, SIZE, pointing_error_arcsec=(30.0, 25.0),
        conditions=Conditions("r", 300.0, 1.1, 1.4, WHEN - timedelta(days=30)), seed=1,
    )  # fmt: skip
    new = write_calibrated_frame(
        folder / "new.fits", with_kilonova, FIELD, SIZE, pointing_error_arcsec=(0.0, 0.0),
        conditions=Conditions("r", 60.0, 1.2, 2.2, WHEN), seed=2,
    )  # fmt: skip
    return {"folder": folder, "reference": reference, "new": new, "kilonova": kilonova}


def test_a_kilonova_is_found_at_its_place_and_brightness(pair):
    folder, truth_r, truth_n, kilonova = pair["folder"], pair["reference"], pair["new"], pair["kilonova"]
    new_data = fits.getdata(folder / "new.fits")
    ref_data = fits.getdata(folder / "ref.fits")
    # The true WCS of each frame (as a solved frame would have): the reference comes onto the new grid.
    registered = register(ref_data, truth_r.wcs, truth_n.wcs, new_data.shape)
    new, new_stars = measured(new_data, truth_n.magzp, truth_r.magzp, 2.2 / 0.47)
    ref, ref_stars = measured(registered, truth_r.magzp, truth_r.magzp, 1.4 / 0.47)
    (dx, dy), pairs, _ = residual_shift(new_stars, ref_stars)
    assert len(pairs) >= 5 and abs(dx) < 0.3 and abs(dy) < 0.3, "the WCSs already register the images"
    result = subtract(new, ref, shift=(dx, dy))
    found = detections(result)
    top = found[0]
    x, y = truth_n.wcs.world_to_pixel_values(kilonova.ra_deg, kilonova.dec_deg)
    assert math.hypot(top.x - float(x), top.y - float(y)) * 0.47 < 1.0, "within 1 arcsec"
    true_mag = kilonova.mag("r", WHEN)
    flux = result.flux_at(top.x, top.y)
    assert flux is not None and truth_r.magzp - 2.5 * math.log10(flux) == pytest.approx(true_mag, abs=2.5 / top.score)
    assert top.score > 10 and top.flux_error > 0
    # Blank sky: S_corr is unit-variance noise where neither image has a source.
    quiet = np.abs(new.data) < 3 * new.sigma
    quiet &= np.abs(np.nan_to_num(ref.data)) < 3 * ref.sigma
    from scipy import ndimage

    quiet = ndimage.binary_erosion(quiet, iterations=8) & np.isfinite(result.score)
    assert np.std(result.score[quiet]) == pytest.approx(1.0, abs=0.05)
    assert abs(np.mean(result.score[quiet])) < 0.05


def test_tiles_give_the_same_result_as_one_piece(pair):
    folder, truth_r, truth_n = pair["folder"], pair["reference"], pair["new"]
    new_data = fits.getdata(folder / "new.fits")
    registered = register(fits.getdata(folder / "ref.fits"), truth_r.wcs, truth_n.wcs, new_data.shape)
    new, _ = measured(new_data, truth_n.magzp, truth_r.magzp, 2.2 / 0.47)
    ref, _ = measured(registered, truth_r.magzp, truth_r.magzp, 1.4 / 0.47)
    whole = subtract(new, ref, tile=SIZE)
    tiled = subtract(new, ref, tile=256, apron=64)
    inner = (slice(40, SIZE - 40), slice(40, SIZE - 40))  # the frame's own edges are not a tile's business
    both = np.isfinite(whole.score[inner]) & np.isfinite(tiled.score[inner])
    assert np.abs(whole.score[inner][both] - tiled.score[inner][both]).max() < 0.05


def test_the_psf_of_too_few_stars_is_none():
    data = np.zeros((100, 100))
    assert PsfModel.from_stars(data, np.array([50.0]), np.array([50.0]), 3.0, 31) is None


def test_registration_leaves_nan_where_the_reference_does_not_reach(pair):
    truth_r = pair["reference"]
    shifted = WCS(truth_r.wcs.to_header())
    shifted.wcs.crpix = [truth_r.wcs.wcs.crpix[0] + 300, truth_r.wcs.wcs.crpix[1]]
    registered = register(np.ones((SIZE, SIZE)), truth_r.wcs, shifted, (SIZE, SIZE))
    assert np.isnan(registered[:, :250]).all() and np.isfinite(registered[:, 350:-10]).all()


def test_residual_shift_of_too_few_pairs_is_zero():
    shift, pairs, error = residual_shift(np.array([[1.0, 1.0]]), np.array([[1.2, 1.0]]))
    assert shift == (0.0, 0.0) and len(pairs) == 1 and error == (0.1, 0.1)


def test_detections_find_negative_peaks_too():
    from toros.preprocessor.subtraction import Difference

    score = np.zeros((50, 50), np.float32)
    score[10, 10], score[40, 30] = 8.0, -6.0
    found = detections(Difference(score, score, np.ones_like(score)))
    assert [(round(d.x), round(d.y), d.score) for d in found] == [(10, 10, 8.0), (30, 40, -6.0)]


def test_detections_are_the_local_extremes_a_maximum_filter_finds():
    """The peaks found among the pixels above the threshold are those of a frame-wide maximum filter (NaN and
    the frame's outside lower than any value), on a correlated noise field with blind patches and edges."""
    from scipy import ndimage

    from toros.preprocessor.subtraction import Difference

    rng = np.random.default_rng(3)
    score = ndimage.gaussian_filter(rng.normal(0, 1, (300, 400)), 1.5).astype(np.float32)
    score *= 3.0 / score.std()
    score[100:130, 200:260] = np.nan
    score[0, 50], score[299, 399], score[120, 199] = 40.0, -30.0, 25.0  # on the border, the corner, beside NaN
    found = detections(Difference(score, score, np.ones_like(score)), threshold=5.0, separation=2)
    expected = set()
    for sign in (1.0, -1.0):
        values = np.nan_to_num(sign * score, nan=-np.inf)
        local = values == ndimage.maximum_filter(values, size=5, mode="constant", cval=-np.inf)
        expected |= {(int(x), int(y)) for y, x in zip(*np.nonzero(local & (values >= 5.0)), strict=True)}
    assert len(expected) > 20
    assert {(round(d.x), round(d.y)) for d in found} == expected
    assert [abs(d.score) for d in found if d.score > 0] == sorted((d.score for d in found if d.score > 0), reverse=True)


@pytest.mark.parametrize("rotation_deg", [0.0, 0.3])
def test_registration_is_the_spline_through_both_wcs_at_every_pixel(rotation_deg):
    """The reference's cubic spline where the two WCSs put each science pixel (pointings 24" apart, the same
    or a turned orientation), within a few thousandths of a pixel of the map away from its edges and blind pixels;
    NaN wherever it does not reach."""
    from scipy import ndimage

    def wcs(ra: float, dec: float, rotation: float, shape: tuple[int, int]) -> WCS:
        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = [ra, dec]
        w.wcs.crpix = [shape[1] / 2, shape[0] / 2]
        angle = math.radians(rotation)
        scale = 0.47 / 3600
        w.wcs.cd = scale * np.array([[-math.cos(angle), math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        return w

    shape = (600, 700)
    rng = np.random.default_rng(11)
    reference = ndimage.gaussian_filter(rng.normal(0, 100, shape), 2.0).astype(np.float32)
    reference[300:304, 100:104] = np.nan
    science_wcs = wcs(150.0, -30.0, 0.0, shape)
    reference_wcs = wcs(150.0 + 20 / 3600 / math.cos(math.radians(30)), -30.0 + 13.7 / 3600, rotation_deg, shape)
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    x, y = reference_wcs.world_to_pixel_values(*science_wcs.pixel_to_world_values(columns, rows))
    filled = np.nan_to_num(reference)
    expected = ndimage.map_coordinates(filled.astype(np.float64), [y, x], order=3, mode="nearest")
    expected[(y < -0.5) | (y > shape[0] - 0.5) | (x < -0.5) | (x > shape[1] - 0.5)] = np.nan

    registered = register(reference.copy(), reference_wcs, science_wcs, shape, grid=64, block=(128, 256))
    assert np.isnan(registered[np.isnan(expected)]).all()
    # Away from the reference's edges (which ndimage extends its own way) and from its blind pixels.
    interior = (y > 3) & (y < shape[0] - 4) & (x > 3) & (x < shape[1] - 4)
    interior &= ~((np.abs(y - 301.5) < 6) & (np.abs(x - 101.5) < 6))
    assert interior.sum() > 0.8 * registered.size and np.isfinite(registered[interior]).all()
    # The map's error times the image's local gradient (and float32's rounding).
    gradient = np.hypot(*np.gradient(filled))
    error = np.abs(registered[interior] - expected[interior])
    assert np.all(error <= 0.002 * gradient[interior] + 0.004)


@pytest.mark.parametrize(("size", "shape"), [(31, (1152, 1090)), (15, (64, 64)), (8, (40, 33)), (33, (33, 33))])
def test_a_kernel_s_transform_on_a_tile_is_that_of_its_padded_rolled_copy(size, shape):
    """The kernels' transforms, computed from their own rows, equal rfft2 of the kernel zero-padded to the
    tile and rolled so that its centre is at pixel (0, 0) (odd and even sizes, a kernel as large as the grid)."""
    from scipy import fft

    from toros.preprocessor.subtraction import _embedded_hat, padded_psf_hat

    kernel = np.random.default_rng(size).random((size, size))
    padded = np.zeros(shape)
    padded[:size, :size] = kernel
    expected = fft.rfft2(np.roll(padded, (-(size // 2), -(size // 2)), axis=(0, 1)))
    np.testing.assert_allclose(padded_psf_hat(kernel, shape), expected, atol=1e-10)
    np.testing.assert_allclose(padded_psf_hat(kernel, shape, np.float32), expected, atol=1e-4 * size)
    assert padded_psf_hat(kernel, shape, np.float32).dtype == np.complex64
    np.testing.assert_allclose(_embedded_hat(fft.ifftshift(kernel), shape), expected, atol=1e-4 * size)
