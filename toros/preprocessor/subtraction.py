"""Proper image subtraction (ZOGY: Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27) on ``scipy.fft``, in tiles.

Given a science image N and a reference R on the same pixel grid (the reference resampled with ``reproject``,
then shifted by the residual offset of their common stars), their PSFs P_n and P_r (measured on each image's
stars, or a Gaussian of the header's FWHM when there are too few), their flux scales F_n and F_r (from their
zero points) and their background noise σ_n and σ_r, ZOGY gives the difference image D (white noise, unit
variance on blank sky), its PSF P_D, and the matched-filter score S corrected for the source noise of both
images, S_corr: a point source that appears in N is a peak of S_corr whose height is its significance in σ.

Everything is computed tile by tile (``tile`` pixels plus an apron of ``apron`` pixels on each side, which is
cut off afterwards), so a 10560² frame needs the memory of a few tiles, not of the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from scipy import fft, ndimage

PSF_SIZE = 31  # pixels on a side of a PSF stamp (odd: the centre is a pixel)


@dataclass(frozen=True)
class Image:
    """One side of the subtraction: background-subtracted pixels, their PSF, flux scale and noise."""

    data: np.ndarray  # float, background subtracted; NaN where unusable
    psf: np.ndarray  # PSF_SIZE², sum 1, centred
    flux_scale: float  # F: counts in this image per unit of true flux
    sigma: float  # background noise, counts
    gain: float = 1.0  # e-/count, for the source noise


@dataclass(frozen=True)
class Difference:
    difference: np.ndarray  # D, unit variance on blank sky
    score: np.ndarray  # S_corr, in σ
    flux: np.ndarray  # a point source's flux in units of the reference's counts, at each pixel
    flux_error: np.ndarray


def gaussian_psf(fwhm_px: float, size: int = PSF_SIZE) -> np.ndarray:
    """A pixel-integrated circular Gaussian, normalised: the PSF of an image with too few stars."""
    from scipy.special import erf

    sigma = max(fwhm_px, 0.5) / 2.3548
    edges = np.arange(size + 1) - size / 2.0
    profile = np.diff(erf(edges / (math.sqrt(2) * sigma))) / 2.0
    psf = np.outer(profile, profile)
    return psf / psf.sum()


def psf_from_stars(data: np.ndarray, x: np.ndarray, y: np.ndarray, size: int = PSF_SIZE) -> np.ndarray | None:
    """The median of normalised stamps of isolated stars, re-centred to a pixel by Fourier shifts (None when
    fewer than 5 stamps fit in the image)."""
    half = size // 2
    height, width = data.shape
    stamps = []
    for cx, cy in zip(x, y, strict=True):
        ix, iy = int(round(cx)), int(round(cy))
        if ix - half < 0 or iy - half < 0 or ix + half >= width or iy + half >= height:
            continue
        stamp = np.array(data[iy - half : iy + half + 1, ix - half : ix + half + 1], dtype=np.float64)
        if not np.isfinite(stamp).all() or stamp.sum() <= 0:
            continue
        stamp = _shift(stamp, ix - cx, iy - cy)
        stamps.append(stamp / stamp.sum())
    if len(stamps) < 5:
        return None
    psf = np.median(stamps, axis=0)
    psf = np.clip(psf, 0, None)
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1]
    psf[np.hypot(xs, ys) > half] = 0.0  # a round support: no corners of noise
    return psf / psf.sum()


def _shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by (dx, dy) pixels (a Fourier phase ramp: exact for band-limited images)."""
    height, width = image.shape
    ky = fft.fftfreq(height)[:, None]
    kx = fft.fftfreq(width)[None, :]
    ramp = np.exp(-2j * np.pi * (kx * dx + ky * dy))
    return np.real(fft.ifft2(fft.fft2(image) * ramp))


def _padded_psf_hat(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The PSF's transform on a tile's grid, its centre moved to pixel (0, 0)."""
    padded = np.zeros(shape, dtype=np.float64)
    size = psf.shape[0]
    padded[:size, :size] = psf
    padded = np.roll(padded, (-(size // 2), -(size // 2)), axis=(0, 1))
    return fft.rfft2(padded)


def zogy_tile(
    new: np.ndarray,
    ref: np.ndarray,
    new_psf_hat: np.ndarray,
    ref_psf_hat: np.ndarray,
    new_image: Image,
    ref_image: Image,
    shift: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(D, S_corr, flux, flux error) of one tile; where either image is NaN both count as empty, and the caller
    blanks the results there and within a PSF radius."""
    shape = new.shape
    bad = ~np.isfinite(new) | ~np.isfinite(ref)  # either image blind there: both count as empty
    n = np.where(bad, 0.0, new)
    r = np.where(bad, 0.0, ref)
    f_n, f_r = new_image.flux_scale, ref_image.flux_scale
    s_n, s_r = new_image.sigma, ref_image.sigma
    n_hat = fft.rfft2(n)
    r_hat = fft.rfft2(r)
    if shift != (0.0, 0.0):
        ky = fft.fftfreq(shape[0])[:, None]
        kx = fft.rfftfreq(shape[1])[None, :]
        r_hat = r_hat * np.exp(-2j * np.pi * (kx * shift[0] + ky * shift[1]))
    p_n, p_r = new_psf_hat, ref_psf_hat
    abs_n2, abs_r2 = np.abs(p_n) ** 2, np.abs(p_r) ** 2
    denominator = s_n**2 * f_r**2 * abs_r2 + s_r**2 * f_n**2 * abs_n2
    denominator = np.maximum(denominator, 1e-300)
    root = np.sqrt(denominator)
    d_hat = (f_r * p_r * n_hat - f_n * p_n * r_hat) / root
    f_d = f_r * f_n / math.sqrt(s_n**2 * f_r**2 + s_r**2 * f_n**2)
    p_d_hat = f_r * f_n * p_r * p_n / (f_d * root)
    s_hat = f_d * d_hat * np.conj(p_d_hat)
    difference = fft.irfft2(d_hat, s=shape)
    score = fft.irfft2(s_hat, s=shape)
    # Source noise: the variance of S from each image's own counts (eq. 26-29 of the paper).
    k_r_hat = f_r * f_n**2 * np.conj(p_r) * abs_n2 / denominator
    k_n_hat = f_n * f_r**2 * np.conj(p_n) * abs_r2 / denominator
    k_r2 = fft.irfft2(k_r_hat, s=shape) ** 2
    k_n2 = fft.irfft2(k_n_hat, s=shape) ** 2
    variance_n = np.maximum(n, 0.0) / max(new_image.gain, 1e-6) + s_n**2
    variance_r = np.maximum(r, 0.0) / max(ref_image.gain, 1e-6) + s_r**2
    v_n = fft.irfft2(fft.rfft2(variance_n) * fft.rfft2(k_n2), s=shape)
    v_r = fft.irfft2(fft.rfft2(variance_r) * fft.rfft2(k_r2), s=shape)
    # S over its standard deviation from both images' noise, background and sources: S_corr (eq. 25).
    score_variance = np.maximum(v_n + v_r, 1e-12)
    score_corr = score / np.sqrt(score_variance)
    # Flux of a point source: S at its position over the S of a source of unit flux (F_D² Σ P_D²).
    p_d = fft.irfft2(p_d_hat, s=shape)
    unit = f_d**2 * float(np.sum(p_d**2))
    flux = score / unit
    flux_error = np.sqrt(score_variance) / unit
    return difference, score_corr, flux, flux_error


def subtract(
    new: Image, ref: Image, *, tile: int = 1024, apron: int = 64, shift: tuple[float, float] = (0.0, 0.0)
) -> Difference:
    """ZOGY of two images on the same grid, in tiles of ``tile`` pixels with ``apron`` pixels of overlap."""
    height, width = new.data.shape
    difference = np.full((height, width), np.nan, dtype=np.float32)
    score = np.full((height, width), np.nan, dtype=np.float32)
    flux = np.full((height, width), np.nan, dtype=np.float32)
    flux_error = np.full((height, width), np.nan, dtype=np.float32)
    hats: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            ya, xa = max(0, y0 - apron), max(0, x0 - apron)
            yb, xb = min(height, y1 + apron), min(width, x1 + apron)
            shape = (yb - ya, xb - xa)
            if shape not in hats:
                hats[shape] = (_padded_psf_hat(new.psf, shape), _padded_psf_hat(ref.psf, shape))
            new_tile, ref_tile = new.data[ya:yb, xa:xb], ref.data[ya:yb, xa:xb]
            d, s, f, e = zogy_tile(new_tile, ref_tile, *hats[shape], new, ref, shift)
            blind = ~np.isfinite(new_tile) | ~np.isfinite(ref_tile)
            if blind.any():  # results within a PSF radius of a blind pixel are not to be trusted
                blind = ndimage.maximum_filter(blind, size=PSF_SIZE)
                for array in (d, s, f, e):
                    array[blind] = np.nan
            inner = (slice(y0 - ya, y0 - ya + (y1 - y0)), slice(x0 - xa, x0 - xa + (x1 - x0)))
            difference[y0:y1, x0:x1] = d[inner]
            score[y0:y1, x0:x1] = s[inner]
            flux[y0:y1, x0:x1] = f[inner]
            flux_error[y0:y1, x0:x1] = e[inner]
    return Difference(difference, score, flux, flux_error)


def register(reference: np.ndarray, reference_wcs: WCS, science_wcs: WCS, shape: tuple[int, int]) -> np.ndarray:
    """The reference resampled onto the science image's pixel grid through both WCSs (``reproject``,
    bicubic); NaN where the reference does not cover the science image."""
    from reproject import reproject_interp

    resampled, footprint = reproject_interp(
        (reference, reference_wcs), science_wcs, shape_out=shape, order="bicubic", return_footprint=True
    )
    resampled[footprint < 0.5] = np.nan
    return np.asarray(resampled, dtype=np.float64)


def residual_shift(
    science_xy: tuple[np.ndarray, np.ndarray], reference_xy: tuple[np.ndarray, np.ndarray], radius: float = 2.0
) -> tuple[float, float, int]:
    """The median offset (dx, dy) that moves the registered reference's stars onto the science image's, from
    pairs closer than ``radius`` pixels, and how many pairs there were ((0, 0, n) with fewer than 5)."""
    from scipy.spatial import cKDTree

    if len(reference_xy[0]) == 0 or len(science_xy[0]) == 0:
        return 0.0, 0.0, 0
    tree = cKDTree(np.column_stack(reference_xy))
    distance, nearest = tree.query(np.column_stack(science_xy), distance_upper_bound=radius)
    pairs = np.isfinite(distance)
    if pairs.sum() < 5:
        return 0.0, 0.0, int(pairs.sum())
    dx = science_xy[0][pairs] - reference_xy[0][nearest[pairs]]
    dy = science_xy[1][pairs] - reference_xy[1][nearest[pairs]]
    return float(np.median(dx)), float(np.median(dy)), int(pairs.sum())


@dataclass(frozen=True)
class Detection:
    x: float  # 0-based column of the science image
    y: float
    score: float  # S_corr at the peak, σ (negative: the source faded or is in the reference only)
    flux: float  # reference counts
    flux_error: float


def detections(result: Difference, threshold: float = 5.0) -> list[Detection]:
    """Peaks of |S_corr| ≥ ``threshold``: one per connected region, at its extreme pixel, refined to a tenth of
    a pixel by a parabola through the neighbours; positive ones first, by score."""
    found: list[Detection] = []
    score = np.nan_to_num(result.score, nan=0.0)
    for sign in (1.0, -1.0):
        above = sign * score >= threshold
        labels, count = ndimage.label(above)
        if count == 0:
            continue
        peaks = ndimage.maximum_position(sign * score, labels, range(1, count + 1))
        for py, px in peaks:
            dx = _parabola(score[py, px - 1 : px + 2]) if 0 < px < score.shape[1] - 1 else 0.0
            dy = _parabola(score[py - 1 : py + 2, px]) if 0 < py < score.shape[0] - 1 else 0.0
            found.append(
                Detection(
                    px + dx, py + dy, float(score[py, px]), float(result.flux[py, px]), float(result.flux_error[py, px])
                )
            )
    found.sort(key=lambda d: (d.score < 0, -abs(d.score)))
    return found


def _parabola(values: np.ndarray) -> float:
    """The offset of a parabola's vertex through three samples, within half a pixel."""
    left, centre, right = (float(v) for v in values)
    curvature = left - 2 * centre + right
    if curvature == 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
