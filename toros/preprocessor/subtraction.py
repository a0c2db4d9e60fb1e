"""Proper image subtraction (ZOGY: Zackay, Ofek & Gal-Yam 2016, ApJ 830, 27) on ``scipy.fft``, in tiles.

Given a science image N and a reference R on the same pixel grid (the reference resampled with ``reproject``,
then shifted by the residual offset of their common stars), their PSFs P_n and P_r (``psf.py``: measured on
each image's stars, for each tile, with their wings), their flux scales F_n and F_r (from their zero points)
and their background noise σ_n and σ_r, ZOGY gives the difference image D (white noise, unit
variance on blank sky), its PSF P_D, and the matched-filter score S corrected for the source noise of both
images, S_corr: a point source that appears in N is a peak of S_corr whose height is its significance in σ.

Everything is computed tile by tile (``tile`` pixels plus an apron of ``apron`` pixels on each side, which is
cut off afterwards), so a 10560² frame needs the memory of a few tiles, not of the frame.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from scipy import fft, ndimage

from toros.preprocessor.psf import Psf, PsfField

PSF_SIZE = 31  # pixels on a side of a PSF stamp (odd: the centre is a pixel)


@dataclass(frozen=True)
class Image:
    """One side of the subtraction: background-subtracted pixels, their PSF at each place, flux scale and
    noise."""

    data: np.ndarray  # float, background subtracted; NaN where unusable
    psf: PsfField  # the PSF of each tile (all of its light: a stamp and the fraction beyond)
    flux_scale: float  # F: counts in this image per unit of true flux
    sigma: float  # background noise, counts
    gain: float = 1.0  # e-/count, for the source noise


@dataclass(frozen=True)
class Tile:
    """One tile's box on the frame and what its kernels make of a point source (for the flux of a source whose
    PSF is not quite the tile's: the science PSF changes across a tile of a wide field)."""

    y0: int
    y1: int
    x0: int
    x1: int
    response: np.ndarray  # F_D conj(P_D) × the new image's factor, on a small grid
    unit: float  # S of a source of unit flux with the tile's own PSF
    science_psf: Psf  # the science image's PSF the tile was subtracted with
    score_hat: np.ndarray  # F_D conj(P_D): S = D filtered by it, on the small grid
    small: tuple[int, int]  # the small grid's shape

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1 - 1) / 2.0, (self.y0 + self.y1 - 1) / 2.0

    def flux_correction(self, science_psf: np.ndarray) -> float:
        """How much the tile's flux of a source whose science PSF is ``science_psf`` (a centred stamp holding
        the fraction of its light in each pixel) must be multiplied by: the tile's unit over that source's."""
        response = float(fft.irfft2(self.response * padded_psf_hat(science_psf, self.small), s=self.small)[0, 0])
        return self.unit / response if response > 0 else 1.0


@dataclass(frozen=True)
class Difference:
    difference: np.ndarray  # D, unit variance on blank sky
    score: np.ndarray  # S_corr, in σ
    flux_error: np.ndarray  # of a point source's flux at each pixel, in the science frame's counts
    tiles: tuple[Tile, ...] = ()  # where each tile's kernels apply, for measurements at a place

    def flux(self, y: int, x: int) -> float:
        """A point source's flux at a pixel: S_corr × its error (S over a unit source's S)."""
        return float(self.score[y, x]) * float(self.flux_error[y, x])

    def tile_at(self, x: float, y: float) -> Tile | None:
        for tile in self.tiles:
            if tile.x0 <= x < tile.x1 and tile.y0 <= y < tile.y1:
                return tile
        return None

    def flux_at(self, x: float, y: float) -> float | None:
        """A point source's flux at a sub-pixel place: S there (D filtered by the tile's kernel moved by the
        fraction of a pixel in Fourier space, exact for any PSF) over a unit source's S. None outside the
        tiles or where D is blind."""
        tile = self.tile_at(x, y)
        if tile is None:
            return None
        rows, columns = tile.small
        ix, iy = math.floor(x), math.floor(y)
        ky, kx = fft.fftfreq(rows)[:, None], fft.rfftfreq(columns)[None, :]
        kernel = fft.irfft2(tile.score_hat * np.exp(2j * np.pi * (kx * (x - ix) + ky * (y - iy))), s=(rows, columns))
        # S(x) = Σ_p K(x − p) D(p): p = (iy − m, ix − n) for the kernel's offsets m, n (wrapped on its grid).
        m = np.arange(-(rows // 2), rows - rows // 2)
        n = np.arange(-(columns // 2), columns - columns // 2)
        py, px = iy - m[:, None], ix - n[None, :]
        inside = (py >= 0) & (py < self.difference.shape[0]) & (px >= 0) & (px < self.difference.shape[1])
        values = np.where(inside, self.difference[np.clip(py, 0, None) % self.difference.shape[0],
                                                  np.clip(px, 0, None) % self.difference.shape[1]], 0.0)  # fmt: skip
        weights = kernel[m[:, None] % rows, n[None, :] % columns]
        near = np.abs(weights) > 1e-4 * np.abs(weights).max()
        if not np.isfinite(values[near]).all():
            return None
        return float(np.sum(np.nan_to_num(values) * weights)) / tile.unit


def padded_psf_hat(psf: np.ndarray, shape: tuple[int, int], dtype: type[np.floating] = np.float64) -> np.ndarray:
    """The PSF's transform on a tile's grid, its centre moved to pixel (0, 0), in ``dtype``'s precision
    (single precision halves a tile's transform, and its rounding, a ten-millionth of the peak, lies far below
    any frequency that carries a signal)."""
    size = psf.shape[0]
    return _wrapped_hat(np.asarray(psf, dtype=dtype), shape, (size // 2, size // 2))


def _embedded_hat(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The transform on a tile's grid of a kernel computed on a small grid (origin at pixel (0, 0), negative
    offsets wrapped), in single precision."""
    rows, columns = kernel.shape
    return _wrapped_hat(fft.fftshift(kernel).astype(np.float32), shape, (rows // 2, columns // 2))


def _wrapped_hat(kernel: np.ndarray, shape: tuple[int, int], centre: tuple[int, int]) -> np.ndarray:
    """``rfft2`` on a grid of ``shape`` of a small ``kernel`` whose pixel ``centre`` goes to (0, 0), the rest
    wrapped around the grid's edges (as ``np.roll`` of a zero-padded copy): the kernel's rows transformed alone,
    then the columns, so the grid's empty rows cost nothing (half of a tile's transform)."""
    rows, columns = kernel.shape
    height, width = shape
    padded_rows = np.zeros((rows, width), dtype=kernel.dtype)
    padded_rows[:, (np.arange(columns) - centre[1]) % width] = kernel
    along_rows = fft.rfft(padded_rows, axis=1)
    grid = np.zeros((height, width // 2 + 1), dtype=along_rows.dtype)
    grid[(np.arange(rows) - centre[0]) % height] = along_rows
    return np.asarray(fft.fft(grid, axis=0, overwrite_x=True))


@dataclass(frozen=True)
class _Factors:
    """ZOGY's Fourier factors of two PSFs on one grid (eq. 13–29 of the paper)."""

    new_factor: np.ndarray  # F_r P_r / sqrt(denominator): D_hat = new_factor N_hat - ref_factor R_hat
    ref_factor: np.ndarray
    score_factor: np.ndarray  # F_D conj(P_D_hat): S_hat = score_factor D_hat
    k_n_hat: np.ndarray  # the kernels whose squares weigh each image's variance into S's (eq. 26-29)
    k_r_hat: np.ndarray
    f_d: float

    @classmethod
    def of(cls, p_n: np.ndarray, p_r: np.ndarray, f_n: float, f_r: float, s_n: float, s_r: float) -> _Factors:
        """In the transforms' own precision, through real arrays where the factors allow (a tile's grid has
        two thirds of a million frequencies, and each tile of a varying PSF has its own)."""
        abs_n2 = np.square(p_n.real) + np.square(p_n.imag)
        abs_r2 = np.square(p_r.real) + np.square(p_r.imag)
        inverse_root = (s_n**2 * f_r**2) * abs_r2 + (s_r**2 * f_n**2) * abs_n2  # the denominator, then its root's
        np.maximum(inverse_root, np.finfo(inverse_root.dtype).tiny, out=inverse_root)  # inverse, in place
        np.sqrt(inverse_root, out=inverse_root)
        np.reciprocal(inverse_root, out=inverse_root)
        f_d = f_r * f_n / math.sqrt(s_n**2 * f_r**2 + s_r**2 * f_n**2)
        new_factor = p_r * inverse_root
        new_factor *= f_r
        ref_factor = p_n * inverse_root
        ref_factor *= f_n
        score_factor = np.conj(new_factor * p_n)  # F_D conj(P_D_hat) = F_r F_n conj(P_r P_n) / root
        score_factor *= f_n
        # K_n = F_n F_r² conj(P_n) |P_r|² / denominator and K_r likewise: each the other's factor's conjugate
        # times F² |P|² / root.
        abs_r2 *= inverse_root
        abs_r2 *= f_r**2
        k_n_hat = np.conj(ref_factor) * abs_r2
        abs_n2 *= inverse_root
        abs_n2 *= f_n**2
        k_r_hat = np.conj(new_factor) * abs_n2
        return cls(new_factor, ref_factor, score_factor, k_n_hat, k_r_hat, f_d)


@dataclass(frozen=True)
class Kernels:
    """What ZOGY needs of the two PSFs, flux scales and noises on one tile: computed for each tile (each has
    its PSFs), applied in single precision (the images' own noise is orders above float32's rounding)."""

    shape: tuple[int, int]
    new_factor: np.ndarray
    ref_factor: np.ndarray
    score_factor: np.ndarray
    k_n_hat: np.ndarray
    k_r_hat: np.ndarray
    k_n2_hat: np.ndarray
    k_r2_hat: np.ndarray
    unit: float  # S of a source of unit flux: F_D² Σ P_D²
    response: np.ndarray  # score_factor × new_factor / F_n_held on the small grid: S of a science PSF
    score_small: np.ndarray  # score_factor on the small grid
    small: tuple[int, int]

    @classmethod
    def of(
        cls, new: Image, ref: Image, new_psf: Psf, ref_psf: Psf, shape: tuple[int, int],
        shift: tuple[float, float] = (0.0, 0.0),
    ) -> Kernels:  # fmt: skip
        """``shift`` (pixels, x and y) moves the reference by a fraction of a pixel: it is in the reference's
        factors (its phase ramp), so a tile's transforms need not apply it."""
        # The PSFs' stamps hold their light but for the wings beyond: ZOGY takes them normalised, the flux
        # scales times the fraction held, so that fluxes come out as all of a source's light.
        f_n, f_r = new.flux_scale * new_psf.enclosed, ref.flux_scale * ref_psf.enclosed
        psf_n, psf_r = new_psf.unit, ref_psf.unit
        # The kernels whose squares S's variance needs, S's unit and its response to other PSFs come from a
        # small grid (they are a few PSFs wide): two transforms of the tile's size instead of six.
        side = fft.next_fast_len(4 * max(psf_n.shape[0], psf_r.shape[0]))
        small = shape if side >= min(shape) else (side, side)  # a cut-out is its own small grid
        little = _Factors.of(padded_psf_hat(psf_n, small), padded_psf_hat(psf_r, small), f_n, f_r, new.sigma, ref.sigma)
        p_d = fft.irfft2(np.conj(little.score_factor) / little.f_d, s=small)
        k_n, k_r = fft.irfft2(little.k_n_hat, s=small), fft.irfft2(little.k_r_hat, s=small)
        big = _Factors.of(
            padded_psf_hat(psf_n, shape, np.float32), padded_psf_hat(psf_r, shape, np.float32), f_n, f_r,
            new.sigma, ref.sigma,
        )  # fmt: skip
        ref_factor, k_r_hat = big.ref_factor, big.k_r_hat
        if shift != (0.0, 0.0):
            # e^(−2πi(kx·dx + ky·dy)): an outer product of the two axes' ramps, not an exponential per frequency
            ramp_y = np.exp(-2j * np.pi * fft.fftfreq(shape[0]) * shift[1]).astype(np.complex64)[:, None]
            ramp_x = np.exp(-2j * np.pi * fft.rfftfreq(shape[1]) * shift[0]).astype(np.complex64)[None, :]
            ramp = ramp_y * ramp_x
            ref_factor, k_r_hat = ref_factor * ramp, k_r_hat * ramp
        return cls(
            shape, big.new_factor, ref_factor, big.score_factor, big.k_n_hat, k_r_hat,
            _embedded_hat(k_n**2, shape), _embedded_hat(k_r**2, shape),
            little.f_d**2 * float(np.sum(p_d**2)),
            little.score_factor * little.new_factor * new.flux_scale, little.score_factor, small,
        )  # fmt: skip


def zogy_tile(
    new: np.ndarray,
    ref: np.ndarray,
    blind: np.ndarray,
    kernels: Kernels,
    new_image: Image,
    ref_image: Image,
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
    psf_uncertainty: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D, S_corr, flux error) of one tile; where either image is ``blind`` (NaN) both count as empty, and
    the caller blanks the results there and within a PSF radius. ``astrometric_sigma`` (pixels, x and y) is the
    registration's noise: near bright sources it adds the variance of S that a misalignment would make
    (eq. 30-33 of the paper), so a star's dipole is not a transient. ``psf_uncertainty`` (relative, new and
    reference) is each PSF model's own error: near bright sources it adds the variance of S that such an error
    makes, so a bright galaxy nucleus's residual is not a transient either, and a source on it has an honest
    flux error."""
    shape = new.shape
    n = np.where(blind, np.float32(0.0), new).astype(np.float32, copy=False)
    r = np.where(blind, np.float32(0.0), ref).astype(np.float32, copy=False)
    n_hat = fft.rfft2(n)
    r_hat = fft.rfft2(r)
    d_hat = kernels.new_factor * n_hat - kernels.ref_factor * r_hat
    difference = fft.irfft2(d_hat, s=shape)
    score = fft.irfft2(kernels.score_factor * d_hat, s=shape)
    # Source noise: the variance of S from each image's own counts, background and sources (eq. 26-29): its
    # sources' counts (the positive pixels) over its gain, and its background's variance, whose share is a
    # constant, σ² Σ K².
    counts_n = np.maximum(n, np.float32(0.0))
    counts_n /= np.float32(max(new_image.gain, 1e-6))
    counts_r = np.maximum(r, np.float32(0.0))
    counts_r /= np.float32(max(ref_image.gain, 1e-6))
    score_variance = fft.irfft2(
        fft.rfft2(counts_n) * kernels.k_n2_hat + fft.rfft2(counts_r) * kernels.k_r2_hat, s=shape
    )
    score_variance += (
        new_image.sigma**2 * kernels.k_n2_hat[0, 0].real + ref_image.sigma**2 * kernels.k_r2_hat[0, 0].real
    )
    if astrometric_sigma != (0.0, 0.0) or psf_uncertainty != (0.0, 0.0):
        s_n = fft.irfft2(kernels.k_n_hat * n_hat, s=shape)
        s_r = fft.irfft2(kernels.k_r_hat * r_hat, s=shape)
        for part, sigma in ((s_n, psf_uncertainty[0]), (s_r, psf_uncertainty[1])):
            for gradient, axis_sigma in zip(np.gradient(part), astrometric_sigma[::-1], strict=True):  # y, x
                score_variance += np.square(gradient, out=gradient) * np.float32(axis_sigma**2)
            score_variance += np.square(part, out=part) * np.float32(sigma**2)
    deviation = np.sqrt(np.maximum(score_variance, 1e-12))
    # S over its standard deviation: S_corr (eq. 25); a point source's flux: S over a unit source's S.
    return difference, score / deviation, deviation / kernels.unit


def subtract(
    new: Image,
    ref: Image,
    *,
    tile: int = 1024,
    apron: int = 64,
    shift: tuple[float, float] = (0.0, 0.0),
    astrometric_sigma: tuple[float, float] = (0.0, 0.0),
) -> Difference:
    """ZOGY of two images on the same grid, in tiles of ``tile`` pixels with ``apron`` pixels of overlap,
    each with the two images' PSFs at its centre, one tile per core at a time (numpy and the FFTs release the
    GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    height, width = new.data.shape
    outputs = tuple(np.full((height, width), np.nan, dtype=np.float32) for _ in range(3))
    boxes = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            ya, xa = max(0, y0 - apron), max(0, x0 - apron)
            yb, xb = min(height, y1 + apron), min(width, x1 + apron)
            boxes.append(((y0, y1, x0, x1), (ya, yb, xa, xb)))
    # The PSFs of every tile first, here: a model's wings are fitted in Python, which holds the GIL.
    centres = [((x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0) for (y0, y1, x0, x1), _ in boxes]
    psfs = [(new.psf.at(*centre), ref.psf.at(*centre)) for centre in centres]

    def one(index: int) -> Tile:
        (y0, y1, x0, x1), (ya, yb, xa, xb) = boxes[index]
        kernels = Kernels.of(new, ref, *psfs[index], (yb - ya, xb - xa), shift)
        new_tile, ref_tile = new.data[ya:yb, xa:xb], ref.data[ya:yb, xa:xb]
        blind = ~np.isfinite(new_tile) | ~np.isfinite(ref_tile)
        with fft.set_workers(1):
            results = zogy_tile(
                new_tile, ref_tile, blind, kernels, new, ref, astrometric_sigma,
                (new.psf.uncertainty, ref.psf.uncertainty),
            )  # fmt: skip
        inner = (slice(y0 - ya, y0 - ya + (y1 - y0)), slice(x0 - xa, x0 - xa + (x1 - x0)))
        # Results within a PSF radius of a blind pixel are not to be trusted.
        near_blind = ndimage.maximum_filter(blind, size=PSF_SIZE)[inner] if blind.any() else None
        for output, result in zip(outputs, results, strict=True):
            output[y0:y1, x0:x1] = result[inner]
            if near_blind is not None:
                output[y0:y1, x0:x1][near_blind] = np.nan
        return Tile(y0, y1, x0, x1, kernels.response, kernels.unit, psfs[index][0], kernels.score_small, kernels.small)

    with ThreadPoolExecutor(max_workers=min(len(boxes), os.cpu_count() or 1)) as pool:
        tiles = tuple(pool.map(one, range(len(boxes))))
    return Difference(outputs[0], outputs[1], outputs[2], tiles)


def register(
    reference: np.ndarray,
    reference_wcs: WCS,
    science_wcs: WCS,
    shape: tuple[int, int],
    *,
    grid: int = 128,
    block: tuple[int, int] = (512, 1024),
) -> np.ndarray:
    """The reference resampled onto the science image's pixel grid through both WCSs (cubic spline); NaN
    where the reference does not cover the science image or was blind. A float32 ``reference`` is spent: its
    pixels become the spline's coefficients (a copy was half a GiB and a second and a half of a TOROS frame).

    The WCSs are evaluated on a grid of ``grid`` pixels only (``reproject`` evaluates them at every pixel: 24 s
    of a 4096² frame's 25). In each block of the output an affine map fits the two projections to a hundredth
    of a pixel (two tangent planes a degree apart are far from one affine map, never over a block) and goes to
    ``ndimage.affine_transform``; a block that is less flat takes coordinates interpolated from the grid for
    ``map_coordinates`` (twice the work). Blocks run on every core. NaN pixels are filled before the spline
    (which would spread them over the whole image) and blanked after.
    """
    from concurrent.futures import ThreadPoolExecutor

    height, width = shape
    steps = (max(2, -(-height // grid) + 1), max(2, -(-width // grid) + 1))  # a uniform grid, both edges on it
    grid_rows, grid_columns = np.linspace(0, height - 1, steps[0]), np.linspace(0, width - 1, steps[1])
    gy, gx = np.meshgrid(grid_rows, grid_columns, indexing="ij")
    rx, ry = reference_wcs.world_to_pixel_values(*science_wcs.pixel_to_world_values(gx, gy))
    blind = ~np.isfinite(reference)
    coefficients = _spline_coefficients(reference, blind)
    out = np.empty(shape, dtype=np.float32)
    per_row, per_column = (steps[0] - 1) / max(height - 1, 1), (steps[1] - 1) / max(width - 1, 1)
    spacing = (1 / per_row if per_row else height, 1 / per_column if per_column else width)

    def one(box: tuple[int, int, int, int]) -> None:
        r0, r1, c0, c1 = box
        # The grid points over the block and one spacing around it: the affine map must hold at its edges.
        near_rows = np.flatnonzero((grid_rows >= r0 - spacing[0]) & (grid_rows <= r1 - 1 + spacing[0]))
        near_columns = np.flatnonzero((grid_columns >= c0 - spacing[1]) & (grid_columns <= c1 - 1 + spacing[1]))
        near = np.ix_(near_rows, near_columns)
        design = np.column_stack([gx[near].ravel() - c0, gy[near].ravel() - r0, np.ones(gx[near].size)])
        fit_x = np.linalg.lstsq(design, rx[near].ravel(), rcond=None)[0]
        fit_y = np.linalg.lstsq(design, ry[near].ravel(), rcond=None)[0]
        residual = max(np.abs(design @ fit_x - rx[near].ravel()).max(), np.abs(design @ fit_y - ry[near].ravel()).max())
        pixels = np.empty((r1 - r0, c1 - c0), dtype=np.float32)
        if residual < 0.01:
            # Rows are y: the matrix maps (row, column) in the block to (row, column) of the reference.
            matrix = np.array([[fit_y[1], fit_y[0]], [fit_x[1], fit_x[0]]])
            offset = np.array([fit_y[2], fit_x[2]])
            ndimage.affine_transform(
                coefficients, matrix, offset, output_shape=pixels.shape, output=pixels, order=3, mode="nearest",
                prefilter=False,
            )  # fmt: skip
            row, column = np.ogrid[0 : r1 - r0, 0 : c1 - c0]
            row_of = matrix[0, 0] * row + matrix[0, 1] * column + offset[0]
            column_of = matrix[1, 0] * row + matrix[1, 1] * column + offset[1]
        else:  # the grid's coordinates interpolated (bilinear, in C), then the cubic spline
            row, column = np.meshgrid(np.arange(r0, r1) * per_row, np.arange(c0, c1) * per_column, indexing="ij")
            column_of = ndimage.map_coordinates(rx, [row, column], order=1, mode="nearest")
            row_of = ndimage.map_coordinates(ry, [row, column], order=1, mode="nearest")
            ndimage.map_coordinates(
                coefficients, [row_of, column_of], output=pixels, order=3, mode="nearest", prefilter=False
            )
        inside = (row_of >= -0.5) & (row_of <= reference.shape[0] - 0.5)
        inside &= (column_of >= -0.5) & (column_of <= reference.shape[1] - 0.5)
        pixels[~inside] = np.nan
        out[r0:r1, c0:c1] = pixels

    boxes = [
        (r0, min(height, r0 + block[0]), c0, min(width, c0 + block[1]))
        for r0 in range(0, height, block[0])
        for c0 in range(0, width, block[1])
    ]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # ndimage releases the GIL
        for done in [pool.submit(one, box) for box in boxes]:
            done.result()
    if blind.any():
        by, bx = np.nonzero(blind)
        sx, sy = science_wcs.world_to_pixel_values(*reference_wcs.pixel_to_world_values(bx, by))
        for dy in (-1, 0, 1, 2):
            for dx in (-1, 0, 1, 2):  # the 4×4 pixels a cubic interpolation touches
                column, row = np.floor(sx).astype(int) + dx, np.floor(sy).astype(int) + dy
                keep = (row >= 0) & (row < height) & (column >= 0) & (column < width)
                out[row[keep], column[keep]] = np.nan
    return out


def _in_bands(work: Callable[[tuple[int, int]], None], rows: int) -> None:
    """``work`` on one band of rows per core, on every core (ndimage releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    cores = os.cpu_count() or 1
    step = -(-rows // cores)
    with ThreadPoolExecutor(max_workers=cores) as pool:
        for done in [pool.submit(work, (start, min(rows, start + step))) for start in range(0, rows, step)]:
            done.result()


def _spline_coefficients(image: np.ndarray, blind: np.ndarray) -> np.ndarray:
    """The cubic spline's coefficients in float32, in place of a float32 ``image`` (scipy's ``spline_filter``
    makes a float64 copy: 0.9 GB of a TOROS frame), one axis after the other, in bands on every core; blind
    pixels count as 0 (the caller blanks what they touch)."""
    coefficients = np.asarray(image, dtype=np.float32)
    coefficients[blind] = 0.0
    rows, columns = coefficients.shape

    def along_rows(band: tuple[int, int]) -> None:
        part = coefficients[band[0] : band[1]]
        ndimage.spline_filter1d(part, order=3, axis=1, mode="nearest", output=part)

    def along_columns(band: tuple[int, int]) -> None:
        part = coefficients[:, band[0] : band[1]]
        ndimage.spline_filter1d(part, order=3, axis=0, mode="nearest", output=part)

    _in_bands(along_rows, rows)
    _in_bands(along_columns, columns)
    return coefficients


def matched_stars(
    science_xy: np.ndarray, reference_xy: np.ndarray, shift: tuple[float, float], radius: float
) -> np.ndarray:
    """Index pairs (science, reference) of stars closer than ``radius`` pixels once the reference's are moved
    by ``shift``; both arguments are (n, 2) arrays of x, y."""
    from scipy.spatial import cKDTree

    if len(science_xy) == 0 or len(reference_xy) == 0:
        return np.empty((0, 2), dtype=int)
    distance, nearest = cKDTree(np.asarray(reference_xy) + shift).query(science_xy, distance_upper_bound=radius)
    found = np.isfinite(distance)
    return np.column_stack([np.flatnonzero(found), nearest[found]])


def residual_shift(
    science_xy: np.ndarray,
    reference_xy: np.ndarray,
    start: tuple[float, float] = (0.0, 0.0),
    radius: float = 2.0,
    min_pairs: int = 5,
    weights: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[tuple[float, float], np.ndarray, tuple[float, float]]:
    """The offset that moves the registered reference's stars onto the science image's, the pairs it rests on
    and its error per axis: pairs within ``radius`` of ``start``, then within 1.5 px of their median offset;
    the offsets within 3 robust deviations of the median averaged, weighted by the stars' fluxes in each
    image (``weights``: a bright star's centroid is good to a hundredth of a pixel, a faint one's to a tenth).
    ``start`` itself (and an error of 0.1 px) when fewer than ``min_pairs`` pairs say."""

    def estimate(pairs: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
        offsets = science_xy[pairs[:, 0]] - reference_xy[pairs[:, 1]]
        median = np.median(offsets, axis=0)
        spread = np.maximum(1.4826 * np.median(np.abs(offsets - median), axis=0), 1e-3)
        kept = np.all(np.abs(offsets - median) <= 3.0 * spread, axis=1)
        if weights is None:
            w = np.ones(len(pairs))
        else:
            flux_s = weights[0][pairs[:, 0]] / max(float(np.median(weights[0])), 1e-12)
            flux_r = weights[1][pairs[:, 1]] / max(float(np.median(weights[1])), 1e-12)
            w = 1.0 / (1.0 / np.maximum(flux_s, 1e-6) + 1.0 / np.maximum(flux_r, 1e-6))
        w = w * kept
        mean = (w[:, None] * offsets).sum(axis=0) / w.sum()
        # The error of a weighted mean from the scatter about it (n_eff = (Σw)² / Σw²).
        n_eff = w.sum() ** 2 / max(float((w**2).sum()), 1e-12)
        scatter = np.sqrt((w[:, None] * (offsets - mean) ** 2).sum(axis=0) / w.sum())
        error = scatter / math.sqrt(max(n_eff - 1.0, 1.0))
        return (float(mean[0]), float(mean[1])), (float(error[0]), float(error[1]))

    pairs = matched_stars(science_xy, reference_xy, start, radius)
    if len(pairs) < min_pairs:
        return start, pairs, (0.1, 0.1)
    shift, error = estimate(pairs)
    closer = matched_stars(science_xy, reference_xy, shift, min(radius, 1.5))
    if len(closer) >= min_pairs:
        pairs = closer
        shift, error = estimate(pairs)
    return shift, pairs, error


@dataclass(frozen=True)
class Detection:
    x: float  # 0-based column of the science image
    y: float
    score: float  # S_corr at the peak, σ (negative: the source faded or is in the reference only)
    flux: float  # reference counts
    flux_error: float


def detections(result: Difference, threshold: float = 5.0, separation: int = 2) -> list[Detection]:
    """Local extremes of S_corr with |S_corr| ≥ ``threshold`` (two sources closer than ``separation`` pixels
    are one), refined to a tenth of a pixel by a parabola through the neighbours' logarithms; positive ones
    first, by score. Local, not one per connected region: a faint source beside a brighter one keeps its peak."""
    found: list[Detection] = []
    score = result.score  # NaN compares False: no copy of a frame-sized array
    height, width = score.shape
    for sign in (1.0, -1.0):
        # A peak is a pixel above the threshold that no pixel within ``separation`` exceeds (NaN and the
        # frame's outside count as lower): checked on the few pixels above it, not by labelling the frame.
        ys, xs = np.nonzero(score >= threshold if sign > 0 else score <= -threshold)
        values = sign * score[ys, xs]
        peak = np.ones(len(ys), bool)
        for oy in range(-separation, separation + 1):
            for ox in range(-separation, separation + 1):
                if oy == ox == 0:
                    continue
                ny, nx = ys + oy, xs + ox
                within = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
                neighbour = np.full(len(ys), -np.inf, dtype=score.dtype)
                neighbour[within] = sign * score[ny[within], nx[within]]
                peak &= ~(neighbour > values)  # a NaN neighbour compares False
        for py, px in zip(ys[peak].tolist(), xs[peak].tolist(), strict=True):
            significance = float(score[py, px])
            # Where the source is: the peak of S itself (the matched filter), near S_corr's; S_corr's peak
            # leans away from a galaxy's nucleus, whose light makes S noisier there.
            py, px = _peak_of_s(result, sign, py, px)
            s_map = result.score[py - 1 : py + 2, px - 1 : px + 2] * result.flux_error[py - 1 : py + 2, px - 1 : px + 2]
            inside = 0 < px < score.shape[1] - 1 and 0 < py < score.shape[0] - 1 and s_map.shape == (3, 3)
            dx, gain_x = _parabola(s_map[1, :]) if inside else (0.0, 1.0)
            dy, gain_y = _parabola(s_map[:, 1]) if inside else (0.0, 1.0)
            # The flux at the source's centre, not at the pixel nearest to it (S falls off as the PSF does).
            flux = result.flux(py, px) * gain_x * gain_y
            found.append(Detection(px + dx, py + dy, significance, flux, float(result.flux_error[py, px])))
    found.sort(key=lambda d: (d.score < 0, -abs(d.score)))
    return found


def _peak_of_s(result: Difference, sign: float, py: int, px: int, reach: int = 2) -> tuple[int, int]:
    """The pixel of the largest S (the score times its flux error) within ``reach`` pixels of (py, px)."""
    y0, x0 = max(0, py - reach), max(0, px - reach)
    window = sign * result.score[y0 : py + reach + 1, x0 : px + reach + 1]
    window = window * result.flux_error[y0 : py + reach + 1, x0 : px + reach + 1]
    if not np.isfinite(window).any():
        return py, px
    wy, wx = np.unravel_index(np.nanargmax(window), window.shape)
    return y0 + int(wy), x0 + int(wx)


def _parabola(values: np.ndarray) -> tuple[float, float]:
    """The offset of the vertex through three samples (within half a pixel), and how much higher the vertex
    is than the middle sample: a parabola through their logarithms when all are positive (exact for a
    Gaussian peak), else through the values (and no gain)."""
    left, centre, right = (abs(float(v)) for v in values)
    if not all(math.isfinite(v) for v in (left, centre, right)):
        return 0.0, 1.0
    if min(left, centre, right) > 0:
        left, centre, right = math.log(left), math.log(centre), math.log(right)
        curvature = left - 2 * centre + right
        if curvature >= 0:
            return 0.0, 1.0
        offset = float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
        return offset, math.exp(min(-((left - right) ** 2) / (8 * curvature), 0.5))
    curvature = left - 2 * centre + right
    if curvature == 0:
        return 0.0, 1.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5)), 1.0
