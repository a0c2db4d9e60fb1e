"""The PSF measured against the simulator's truth: Moffat fits give the true FWHM, β and flux; the model of a
frame's stars keeps their wings (all of the light) and follows a PSF that widens toward the corners; the
curve of growth corrects apertures to the total; ZOGY's flux of a source at a sub-pixel place is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import cKDTree

from toros.preprocessor.psf import (
    CurveOfGrowth,
    Moffat,
    PsfModel,
    UniformPsf,
    _moffat_of,
    _profile_derivatives,
    fit_moffat,
    moffat_psf,
)
from toros.preprocessor.subtraction import Image, subtract
from toros.simulation.psf import Optics, PsfShape, stamp


def stars_on(
    shape: tuple[int, int], optics: Optics, seeing_px: float, count: int, seed: int, noise: float = 10.0,
    field_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, PsfShape]:  # fmt: skip
    """Isolated stars of the optics' PSF on a background-subtracted image with Gaussian noise; ``field_deg``:
    the image's half-width on the sky (its PSF changes across it as the optics say)."""
    rng = np.random.default_rng(seed)
    height, width = shape
    placed: list[tuple[float, float]] = []
    while len(placed) < count:  # each at least 40 px from the others: isolated, as the stars a PSF is made of
        candidate = (float(rng.uniform(25, width - 25)), float(rng.uniform(25, height - 25)))
        if not placed or cKDTree(placed).query(candidate)[0] > 40:
            placed.append(candidate)
    x, y = np.array(placed).T
    flux = 10 ** rng.uniform(4.3, 5.5, len(x))
    to_deg = field_deg / (width / 2.0)
    truth = optics.shape_at(seeing_px, (x - width / 2) * to_deg, (y - height / 2) * to_deg)
    image = np.zeros(shape, np.float32)
    stamp(image, x, y, flux, truth, optics)
    image += rng.normal(0, noise, shape).astype(np.float32)
    return image, x, y, flux, truth


@pytest.mark.parametrize("beta", [2.5, 3.5, 4.5])
def test_a_moffat_fit_gives_the_true_width_shape_and_flux(beta):
    optics = Optics(beta=beta, corner_ellipticity=0.0)
    image, x, y, flux, _ = stars_on((400, 400), optics, 3.8, 12, seed=int(beta * 10))
    fits_ = [fit_moffat(image, a, b, 4.0, 10.0) for a, b in zip(x, y, strict=True)]
    assert all(f is not None for f in fits_)
    assert np.median([f.moffat.fwhm for f in fits_ if f]) == pytest.approx(3.8, rel=0.01)
    assert np.median([f.moffat.beta for f in fits_ if f]) == pytest.approx(beta, rel=0.05)
    assert np.median([f.flux / truth for f, truth in zip(fits_, flux, strict=True) if f]) == pytest.approx(1, abs=0.003)


@pytest.mark.parametrize("log_axis_ratio", [0.35, -0.4, 0.0])
def test_the_fit_s_analytic_derivatives_are_the_profile_s(log_axis_ratio):
    """fit_moffat's Jacobian against central differences of the profile itself, for each parameter."""
    p = np.array([0.0, 7.3, 8.1, math.log(2.7), log_axis_ratio, 0.6, math.log(2.2), 0.0])
    shape = (17, 19)
    stacked = _profile_derivatives(p, shape)
    assert np.allclose(stacked[0], _moffat_of(p).pixels(shape, p[1], p[2]), rtol=0, atol=1e-15)
    for index in range(1, 7):
        up, down = p.copy(), p.copy()
        up[index] += 1e-6
        down[index] -= 1e-6
        numeric = (_moffat_of(up).pixels(shape, up[1], up[2]) - _moffat_of(down).pixels(shape, down[1], down[2])) / 2e-6
        assert np.abs(stacked[index] - numeric).max() <= 1e-7 * max(np.abs(numeric).max(), 1e-3), index


@pytest.mark.parametrize("profile", ["moffat", "gaussian"])
def test_the_model_keeps_the_wings_all_the_light(profile):
    optics = Optics(profile=profile, beta=2.5, corner_ellipticity=0.0)
    image, x, y, _, _ = stars_on((600, 600), optics, 4.0, 45, seed=3)
    model = PsfModel.from_stars(image, x, y, 4.0, 31)
    assert model is not None
    psf = model.at(300, 300)
    truth = np.zeros((31, 31), np.float32)
    stamp(truth, np.array([15.0]), np.array([15.0]), np.array([1e9]), optics.shape_at(4.0, np.zeros(1), np.zeros(1)),
          optics)  # fmt: skip
    truth /= 1e9
    assert psf.enclosed == pytest.approx(float(truth.sum()), abs=0.002), "the light beyond the stamp"
    assert np.abs(psf.stamp - truth).max() < 0.01 * truth.max()
    assert np.sum(psf.stamp**2) == pytest.approx(np.sum(truth**2), rel=0.02), "as sharp as the truth"


def test_the_model_follows_a_psf_that_widens_toward_the_corners():
    optics = Optics(beta=3.0, corner_fwhm_growth=0.3, corner_ellipticity=0.15)
    image, x, y, _, truth = stars_on((1200, 1200), optics, 3.5, 200, seed=5, field_deg=0.7)
    model = PsfModel.from_stars(image, x, y, 3.5, 31)
    assert model is not None and model.degree == 2
    for px, py in ((600, 600), (80, 80), (1120, 1120), (80, 1120)):
        psf = model.at(px, py)  # its core is the model's at that place (the wings' Moffat, its cell's)
        half = psf.stamp.shape[0] // 2
        fit = fit_moffat(psf.stamp, half, half, 3.5, float(psf.stamp.max()) * 1e-3, math.inf)
        assert fit is not None
        fitted = fit.moffat
        to_deg = 0.7 / 600
        expected = optics.shape_at(3.5, np.array([(px - 600) * to_deg]), np.array([(py - 600) * to_deg]))
        assert fitted.fwhm == pytest.approx(float(expected.fwhm[0]), rel=0.03), (px, py)
    del truth


def test_the_curve_of_growth_makes_apertures_the_total():
    import sep

    optics = Optics(beta=2.5, corner_ellipticity=0.0)
    image, x, y, flux, _ = stars_on((800, 800), optics, 4.0, 60, seed=7)
    growth = CurveOfGrowth.measure(image, x, y, Moffat(4.0, 4.0, 0.0, 2.5), (1.0, 2.0))
    assert growth.stars >= 30
    for radius in (1.0, 2.0):
        measured, _, _ = sep.sum_circle(image, x, y, radius * 4.0, bkgann=(24.0, 36.0), subpix=5)
        total = measured * growth.at(radius, x, y)
        assert np.median(total / flux) == pytest.approx(1.0, abs=0.005), radius
        assert np.median(measured / flux) < 0.97, "an aperture alone misses the wings"


def test_zogy_measures_a_new_source_at_a_sub_pixel_place_exactly():
    """A source that is only in the new image, both PSFs known: S at its true place over a unit source's S is
    its flux; the tile's flux correction of its own PSF is 1."""
    rng = np.random.default_rng(11)
    optics = Optics(beta=3.0, corner_ellipticity=0.0)
    shape = (256, 256)
    new_psf, ref_psf = moffat_psf(4.0, 3.0, 31), moffat_psf(3.0, 3.0, 31)
    new = rng.normal(0, 5.0, shape).astype(np.float32)
    ref = rng.normal(0, 2.0, shape).astype(np.float32)
    fluxes = []
    for x, y in ((100.3, 120.7), (60.5, 60.5), (180.9, 200.1)):
        stamp(new, np.array([x]), np.array([y]), np.array([5e4]), optics.shape_at(4.0, np.zeros(1), np.zeros(1)),
              optics)  # fmt: skip
        fluxes.append((x, y))
    difference = subtract(
        Image(new, UniformPsf(new_psf), 1.0, 5.0, 1e6), Image(ref, UniformPsf(ref_psf), 1.0, 2.0, 1e6), tile=256
    )
    for x, y in fluxes:
        measured = difference.flux_at(x, y)
        assert measured is not None and measured == pytest.approx(5e4, rel=0.01)
    tile = difference.tile_at(100, 100)
    assert tile is not None and tile.flux_correction(tile.science_psf.stamp) == pytest.approx(1.0, abs=1e-6)
    wider = moffat_psf(4.4, 3.0, 31).stamp
    assert tile.flux_correction(wider) > 1.0, "a wider source than the tile's PSF: the tile's S misses some"
    assert math.isfinite(tile.unit)
