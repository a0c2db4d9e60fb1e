"""One side of a subtraction measured from its own pixels: a PSF that varies faster than a smooth model (and the
tiles) can follow is named, and the detections it touches are flagged; one that varies smoothly is not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.spatial import cKDTree

from toros.floor.sky_geometry import tan_wcs
from toros.preprocessor.sides import Side, measure_psf, read_side
from toros.simulation.psf import Optics, PsfShape, stamp

SIZE = 1000


def _measured(
    folder: Path, seed: int, widths: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]
) -> Side:
    """A frame of 90 isolated Moffat stars whose FWHM (pixels) ``widths`` gives from their places, measured."""
    rng = np.random.default_rng(seed)
    placed: list[tuple[float, float]] = []
    while len(placed) < 90:
        candidate = (float(rng.uniform(30, SIZE - 30)), float(rng.uniform(30, SIZE - 30)))
        if not placed or cKDTree(placed).query(candidate)[0] > 45:
            placed.append(candidate)
    x, y = np.array(placed).T
    fwhm = widths(x, y, rng)
    image = np.zeros((SIZE, SIZE), np.float32)
    stamp(image, x, y, 10 ** rng.uniform(4.5, 5.5, len(x)), PsfShape(fwhm, fwhm, np.zeros(len(x))), Optics(beta=3.0))
    image += rng.normal(100.0, 5.0, image.shape).astype(np.float32)
    header = tan_wcs(150.0, -30.0, SIZE, SIZE, 0.47).to_header()
    header["MAGZP"], header["GAIN"] = 27.0, 1.5
    path = folder / f"frame-{seed}.fits"
    fits.PrimaryHDU(image, header).writeto(path)
    side = read_side(path, "science")
    measure_psf(side)
    return side


def test_a_psf_that_varies_faster_than_the_model_is_named_and_flagged(tmp_path):
    side = _measured(tmp_path, 4, lambda x, y, rng: rng.uniform(3.0, 4.8, len(x)))  # ±20%, star to star
    assert side.psf_varies
    assert any("the PSF varies faster than a smooth model follows" in note for note in side.notes), side.notes


def test_a_psf_that_widens_smoothly_toward_the_corners_is_not_flagged(tmp_path):
    side = _measured(
        tmp_path, 5, lambda x, y, rng: 3.5 * (1 + 0.15 * np.hypot(x - SIZE / 2, y - SIZE / 2) / (SIZE / 2))
    )
    assert not side.psf_varies, side.notes
