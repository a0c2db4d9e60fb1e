"""What a star looks like on one image, measured from its own stars: the science step's FWHM and aperture
corrections, the difference imaging's PSF at every place of the frame.

Stars through the atmosphere are Moffat profiles (β 2.5–4.5), not Gaussians: several percent of their light lies
beyond 2 FWHM. So the PSF here is measured out to where the light is: a Moffat fitted to each star for its true
width (``fit_moffat``, the profile integrated over the pixels), and for the subtraction an empirical model as
PSFEx builds one (``PsfModel``: each pixel of the stamp a polynomial of the position, fitted to the stars, so
the PSF may widen and elongate toward the corners) whose core is the stars' own pixels and whose wings, where
single pixels are noise, are the Moffat fitted to that core — normalised to all of the light, including the
part beyond the stamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy import fft, optimize
from scipy.spatial import cKDTree

BETA_RANGE = (1.5, 10.0)  # a Moffat β outside this is not a seeing profile
# Three-point Gauss–Legendre nodes and weights on a pixel: a Moffat of 1.5 px FWHM integrates to 0.05%.
_NODES = np.array([-math.sqrt(0.15), 0.0, math.sqrt(0.15)])
_WEIGHTS = np.array([5.0, 8.0, 5.0]) / 18.0
_NODE_Y, _NODE_X = (a.reshape(-1, 1, 1) for a in np.meshgrid(_NODES, _NODES, indexing="ij"))
_NODE_WEIGHTS = np.outer(_WEIGHTS, _WEIGHTS).reshape(-1)
NORMALISATION_FWHMS = 3.0  # a star's stamp is normalised by its light within this radius
CORE_FWHMS = (1.5, 2.5)  # the empirical core, blended into the fitted wings between these radii
WINGS_GRID = 3  # a PSF model's wings are fitted once per cell of this grid over the image
MIN_STARS = 3  # a constant model's stack; more for a model that varies


@dataclass(frozen=True)
class Moffat:
    """An elliptical Moffat profile, normalised to a total of 1 over the plane."""

    fwhm_major: float  # pixels
    fwhm_minor: float
    angle: float  # radians, the major axis counter-clockwise from +x
    beta: float

    @property
    def fwhm(self) -> float:
        """The geometric mean of the axes: the FWHM of a round PSF of the same area."""
        return math.sqrt(self.fwhm_major * self.fwhm_minor)

    @property
    def ellipticity(self) -> float:
        return 1.0 - self.fwhm_minor / self.fwhm_major

    def _alphas(self) -> tuple[float, float]:
        width = 2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0)
        return self.fwhm_major / width, self.fwhm_minor / width

    def pixels(self, shape: tuple[int, int], x0: float, y0: float) -> np.ndarray:
        """The fraction of the light falling in each pixel of an image of ``shape``, the centre at (x0, y0)."""
        alpha_a, alpha_b = self._alphas()
        u, v = self._at_nodes(shape, x0, y0)
        values = np.tensordot(_NODE_WEIGHTS, (1.0 + u * u + v * v) ** (-self.beta), axes=1)
        return np.asarray(values * (self.beta - 1.0) / (math.pi * alpha_a * alpha_b))

    def _at_nodes(self, shape: tuple[int, int], x0: float, y0: float) -> tuple[np.ndarray, np.ndarray]:
        """(u, v): each pixel's quadrature nodes along the major and minor axes, in units of their α."""
        rows, columns = shape
        alpha_a, alpha_b = self._alphas()
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        dy = np.arange(rows)[None, :, None] - y0 + _NODE_Y
        dx = np.arange(columns)[None, None, :] - x0 + _NODE_X
        return (dx * cos + dy * sin) / alpha_a, (dy * cos - dx * sin) / alpha_b

    def outside_radius(self, radius: float) -> float:
        """The fraction of the light beyond a circle of ``radius`` pixels (the round profile of the same
        area: exact for round PSFs, within a tenth of itself for b/a > 0.7)."""
        alpha = math.sqrt(math.prod(self._alphas()))
        return float((1.0 + (radius / alpha) ** 2) ** (1.0 - self.beta))


@dataclass(frozen=True)
class StarFit:
    """One star fitted by a Moffat: its profile, total flux (the image's counts), centre and how well."""

    moffat: Moffat
    flux: float
    x: float
    y: float
    reduced_chi2: float


def fit_moffat(
    data: np.ndarray, x: float, y: float, fwhm_guess: float, sigma: float, gain: float = 1.0,
    beta_guess: float = 3.0,
) -> StarFit | None:  # fmt: skip
    """A pixel-integrated elliptical Moffat and a constant background fitted to the star near (x, y) of a
    background-subtracted image (NaN pixels ignored), weighted by the pixels' noise; None when the fit fails
    or ends at the edge of sense (a width under a pixel or over the stamp)."""
    half = int(min(max(math.ceil(3.0 * fwhm_guess), 6), 40))
    ix, iy = int(round(x)), int(round(y))
    y0, y1, x0, x1 = (
        max(0, iy - half),
        min(data.shape[0], iy + half + 1),
        max(0, ix - half),
        min(data.shape[1], ix + half + 1),
    )
    cut = np.asarray(data[y0:y1, x0:x1], dtype=np.float64)
    usable = np.isfinite(cut)
    if usable.sum() < 25:
        return None
    values = cut[usable]
    flux_guess = max(float(values.sum()), 10.0 * sigma)
    start = np.array([
        math.log(flux_guess), x - x0, y - y0, math.log(max(fwhm_guess, 1.0)), 0.0, 0.0, math.log(beta_guess - 1.0), 0.0,
    ])  # fmt: skip

    weights = 1.0 / np.sqrt(sigma**2 + np.maximum(cut, 0.0) / max(gain, 1e-6))
    weighted = weights[usable]

    def residuals(p: np.ndarray) -> np.ndarray:
        profile = _moffat_of(p).pixels(cut.shape, p[1], p[2])
        return np.asarray((math.exp(p[0]) * profile[usable] + p[7] - values) * weighted)

    def jacobian(p: np.ndarray) -> np.ndarray:
        by = np.ones((len(values), len(p)))  # the last column: the background's
        by[:, :-1] = math.exp(p[0]) * _profile_derivatives(p, cut.shape)[:, usable].T  # d/d log flux: the model
        return by * weighted[:, None]

    lower = [-np.inf, 0.0, 0.0, math.log(0.5), -1.5, -math.pi, math.log(0.3), -np.inf]
    upper = [np.inf, cut.shape[1] - 1.0, cut.shape[0] - 1.0, math.log(3.0 * half), 1.5, math.pi, math.log(20.0), np.inf]
    start = np.clip(start, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
    try:
        found = optimize.least_squares(
            residuals, start, jac=jacobian, bounds=(lower, upper), x_scale="jac", max_nfev=200
        )
    except (ValueError, FloatingPointError):
        return None
    if not found.success and found.status != 0:
        return None
    moffat = _moffat_of(found.x)
    if not (0.7 <= moffat.fwhm_minor and moffat.fwhm_major <= 2.0 * half):
        return None
    dof = max(int(usable.sum()) - len(start), 1)
    return StarFit(moffat, math.exp(found.x[0]), x0 + found.x[1], y0 + found.x[2], float(np.sum(found.fun**2) / dof))


def _profile_derivatives(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixel-integrated profile for ``fit_moffat``'s parameters, then its derivatives by the centre (x, y),
    log FWHM, log axis ratio, angle and log(β − 1), stacked: analytic, so that a fit costs one evaluation per
    step instead of nine (a numerical Jacobian took three quarters of a frame's science step)."""
    moffat = _moffat_of(p)
    beta = moffat.beta
    alpha_a, alpha_b = moffat._alphas()
    cos, sin = math.cos(moffat.angle), math.sin(moffat.angle)
    u, v = moffat._at_nodes(shape, p[1], p[2])
    r2 = u * u + v * v
    q = 1.0 + r2
    k = (beta - 1.0) / (math.pi * alpha_a * alpha_b)
    g = k * q ** (-beta)
    h = 2.0 * beta * g / q  # -dg/d(u²+v²) × 2
    halfway = 2.0 ** (1.0 / beta) - 1.0
    gamma = -(2.0 ** (1.0 / beta)) * math.log(2.0) / (beta * beta) / (2.0 * halfway)  # d ln(width)/dβ
    sign = 1.0 if p[4] >= 0 else -1.0
    at_nodes = np.stack([
        g,
        h * (u * cos / alpha_a - v * sin / alpha_b),  # x
        h * (u * sin / alpha_a + v * cos / alpha_b),  # y
        -2.0 * g + h * r2,  # log FWHM
        0.5 * sign * h * (u * u - v * v),  # log axis ratio
        -h * u * v * (alpha_b / alpha_a - alpha_a / alpha_b),  # angle
        g * (beta - 1.0) * (1.0 / (beta - 1.0) + 2.0 * gamma - np.log(q) - 2.0 * beta * gamma * r2 / q),  # log(β-1)
    ])  # fmt: skip
    return np.asarray(np.tensordot(at_nodes, _NODE_WEIGHTS, axes=([1], [0])))  # each pixel's mean over its nodes


def _moffat_of(p: np.ndarray) -> Moffat:
    """Parameters (…, log FWHM, log axis ratio, angle, log(β − 1), …) as a profile."""
    fwhm, stretch = math.exp(p[3]), math.exp(abs(p[4]) / 2.0)
    angle = float(p[5]) + (math.pi / 2.0 if p[4] < 0 else 0.0)
    return Moffat(fwhm * stretch, fwhm / stretch, angle, 1.0 + math.exp(p[6]))


@dataclass(frozen=True)
class Psf:
    """The PSF at one place: a centred odd stamp holding the fraction of the light that falls in each pixel
    (its sum, ``enclosed``, is under 1 by the wings beyond the stamp) and the Moffat of its wings."""

    stamp: np.ndarray
    enclosed: float
    wings: Moffat

    @property
    def unit(self) -> np.ndarray:
        """The stamp normalised to a sum of 1 (what ZOGY's algebra takes, with the flux scale × enclosed)."""
        return np.asarray(self.stamp / self.stamp.sum())


class PsfField(Protocol):
    """The PSF of an image at each place."""

    def at(self, x: float, y: float) -> Psf: ...

    def near(self, x: float, y: float, centre: tuple[float, float], there: Psf) -> np.ndarray:
        """The stamp at (x, y) given the PSF ``there`` at ``centre`` (its wings and normalisation kept, only
        the core changed): cheap, for a correction at each detection."""
        ...

    @property
    def uncertainty(self) -> float:
        """How far the model may be from the true PSF, relative (0: as good as exact)."""
        ...


@dataclass(frozen=True)
class UniformPsf:
    """One PSF for the whole image (a small image, or nothing to measure a change on)."""

    psf: Psf

    def at(self, x: float, y: float) -> Psf:
        return self.psf

    @property
    def uncertainty(self) -> float:
        return 0.0

    def near(self, x: float, y: float, centre: tuple[float, float], there: Psf) -> np.ndarray:
        return there.stamp


@dataclass(frozen=True)
class PsfModel:
    """A PSF that varies across the image: each pixel of the stamp a polynomial in the position (PSFEx's
    model), fitted to the image's isolated stars, each normalised by its light within ``NORMALISATION_FWHMS``."""

    terms: np.ndarray  # (polynomial terms, size, size)
    degree: int
    origin: tuple[float, float]
    scale: float
    fwhm: float  # pixels, of the stars it was fitted to
    stars: int
    core_noise: float = 0.0  # the stacked core's noise at its peak, relative to the peak
    _wings: dict[tuple[int, int], StarFit | None] = field(default_factory=dict, compare=False, repr=False)

    @property
    def size(self) -> int:
        return int(self.terms.shape[1])

    @property
    def uncertainty(self) -> float:
        """The stacked core's noise: a few faint stars leave it uncertain by percents."""
        return self.core_noise

    def core(self, x: float, y: float) -> np.ndarray:
        """The empirical stamp at (x, y), normalised as the stars were."""
        powers = _powers((x - self.origin[0]) / self.scale, (y - self.origin[1]) / self.scale, self.degree)
        return np.asarray(np.tensordot(powers, self.terms, axes=1))

    def at(self, x: float, y: float) -> Psf:
        """The PSF at (x, y) with its wings: the empirical core within 1.5 FWHM, blended into the Moffat fitted
        to it by 2.5 FWHM, all of it normalised to the light the Moffat says the whole plane holds. The Moffat
        is fitted once per cell of a ``WINGS_GRID``² grid over the image (the wings change slowly; a fit takes
        20 ms, and a frame asks for hundreds of places); the core is the model's at (x, y) itself."""
        cell = (self._cell(x, self.origin[0]), self._cell(y, self.origin[1]))
        if cell not in self._wings:
            centre = [
                (index + 0.5) / WINGS_GRID * (2.0 * o + 1.0) - 0.5 for index, o in zip(cell, self.origin, strict=True)
            ]
            self._wings[cell] = _wings_of(self.core(*centre), self.fwhm)
        return _completed(self.core(x, y), self.fwhm, self._wings[cell])

    @staticmethod
    def _cell(value: float, origin: float) -> int:
        return min(max(int((value + 0.5) / (2.0 * origin + 1.0) * WINGS_GRID), 0), WINGS_GRID - 1)

    def near(self, x: float, y: float, centre: tuple[float, float], there: Psf) -> np.ndarray:
        core, core_there = self.core(x, y), self.core(*centre)
        scale = float(there.stamp.sum() / max(core_there.sum(), 1e-12))  # the model's units into light's
        return np.asarray(there.stamp + scale * _core_weight(self.size, there.wings.fwhm) * (core - core_there))

    @classmethod
    def from_stars(
        cls, data: np.ndarray, x: np.ndarray, y: np.ndarray, fwhm: float, size: int, max_degree: int = 2
    ) -> PsfModel | None:
        """The model from stars at (x, y) (0-based, centroided) of a background-subtracted image; None when
        fewer than ``MIN_STARS`` give a usable stamp. The degree follows the stars: constant under 30, linear
        under 100, quadratic above."""
        stamps, xs, ys, weights = _stamps(data, x, y, fwhm, size)
        if len(stamps) < MIN_STARS:
            return None
        degree = min(max_degree, 0 if len(stamps) < 30 else 1 if len(stamps) < 100 else 2)
        origin = (float(data.shape[1] - 1) / 2.0, float(data.shape[0] - 1) / 2.0)
        scale = float(max(data.shape) / 2.0)
        design = np.array([
            _powers((a - origin[0]) / scale, (b - origin[1]) / scale, degree) for a, b in zip(xs, ys, strict=True)
        ])  # fmt: skip
        keep = np.ones(len(stamps), bool)
        solution = _fit_terms(design, stamps, weights, keep)
        # Each star re-centred on the model (a PSF fit of its position): a centroid off by a tenth of a pixel
        # widens the stack, and a matched filter wider than the truth overestimates every flux.
        for _ in range(2):
            models = (design @ solution).reshape(stamps.shape)
            stamps = np.array([_recentred(stamp, model) for stamp, model in zip(stamps, models, strict=True)])
            solution = _fit_terms(design, stamps, weights, keep)
        for _ in range(2):  # once more without the stars the model does not describe (a neighbour, a cosmic ray)
            misfit = np.sqrt(np.mean((design @ solution - stamps.reshape(len(stamps), -1)) ** 2, axis=1))
            misfit *= np.sqrt(weights)
            typical = np.median(misfit[keep])
            limit = typical + 4.0 * 1.4826 * np.median(np.abs(misfit[keep] - typical))
            if (misfit > limit).sum() == 0 or (misfit <= limit).sum() < MIN_STARS:
                break
            keep = misfit <= limit
            solution = _fit_terms(design, stamps, weights, keep)
        terms = solution.reshape(len(design[0]), size, size)
        return cls(
            terms, degree, origin, scale, fwhm, int(keep.sum()), _core_noise(design, stamps, weights, keep, solution)
        )


def _core_noise(
    design: np.ndarray, stamps: np.ndarray, weights: np.ndarray, keep: np.ndarray, solution: np.ndarray
) -> float:
    """The model's noise at its peak (the 3×3 pixels there), relative to the peak: the stars' scatter about the
    model, over what their weighted mean averages away. A few faint stars make a core uncertain by several
    percent, and a matched filter then leaves that much of a bright galaxy nucleus behind (measured: 2.6% of a
    14.7 mag nucleus with a core uncertain by 3.1%)."""
    count = int(keep.sum())
    if count < 2:
        return math.inf
    models = (design @ solution).reshape(stamps.shape)
    half = stamps.shape[1] // 2
    centre = (slice(None), slice(half - 1, half + 2), slice(half - 1, half + 2))
    residual = (stamps - models)[centre][keep]
    w = weights[keep][:, None, None]
    variance = np.sum(w**2 * residual**2, axis=0) / np.sum(w) ** 2 * count / (count - 1)
    peak = float(np.max(models[keep][:, half, half]))
    return float(np.sqrt(np.mean(variance)) / max(peak, 1e-12))


def _fit_terms(design: np.ndarray, stamps: np.ndarray, weights: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Each pixel's polynomial coefficients: least squares over the kept stars, weighted by their light."""
    root = np.sqrt(weights[keep])[:, None]
    flat = stamps.reshape(len(stamps), -1)
    return np.asarray(np.linalg.lstsq(design[keep] * root, flat[keep] * root, rcond=None)[0])


def _recentred(stamp: np.ndarray, model: np.ndarray) -> np.ndarray:
    """``stamp`` moved by the offset that best matches it to ``model`` (one Gauss–Newton step of a fit of
    the position, the amplitude free), within half a pixel."""
    gy, gx = np.gradient(model)
    amplitude = float(np.sum(stamp * model) / max(np.sum(model * model), 1e-300))
    residual = stamp / max(amplitude, 1e-12) - model
    matrix = np.array([[np.sum(gx * gx), np.sum(gx * gy)], [np.sum(gx * gy), np.sum(gy * gy)]])
    try:
        dx, dy = np.linalg.solve(matrix, [-np.sum(residual * gx), -np.sum(residual * gy)])
    except np.linalg.LinAlgError:
        return stamp
    return fourier_shift(stamp, float(np.clip(dx, -0.5, 0.5)), float(np.clip(dy, -0.5, 0.5)))


def _powers(u: float, v: float, degree: int) -> np.ndarray:
    return np.array([u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)])


def _stamps(
    data: np.ndarray, x: np.ndarray, y: np.ndarray, fwhm: float, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stamps of the stars re-centred on a pixel (Fourier shift), each normalised by its light within
    ``NORMALISATION_FWHMS`` FWHM; their positions and weights (their light: bright stars say more)."""
    half = size // 2
    height, width = data.shape
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    inner = np.hypot(xx, yy) <= min(NORMALISATION_FWHMS * fwhm, half)
    stamps, xs, ys, weights = [], [], [], []
    for cx, cy in zip(x, y, strict=True):
        ix, iy = int(round(cx)), int(round(cy))
        if ix - half < 0 or iy - half < 0 or ix + half >= width or iy + half >= height:
            continue
        cut = np.array(data[iy - half : iy + half + 1, ix - half : ix + half + 1], dtype=np.float64)
        if not np.isfinite(cut).all():
            continue
        cut = fourier_shift(cut, ix - cx, iy - cy)
        light = cut[inner].sum()
        if light <= 0:
            continue
        stamps.append(cut / light)
        xs.append(cx)
        ys.append(cy)
        weights.append(light)
    return np.array(stamps), np.array(xs), np.array(ys), np.array(weights)


def fourier_shift(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved by (dx, dy) pixels (a Fourier phase ramp: exact for band-limited images)."""
    height, width = image.shape
    ky = fft.fftfreq(height)[:, None]
    kx = fft.fftfreq(width)[None, :]
    return np.asarray(np.real(fft.ifft2(fft.fft2(image) * np.exp(-2j * np.pi * (kx * dx + ky * dy)))))


def _wings_of(core: np.ndarray, fwhm: float) -> StarFit | None:
    """The Moffat fitted to a centred empirical stamp, every pixel weighted alike."""
    half = core.shape[0] // 2
    return fit_moffat(core, half, half, fwhm, sigma=float(np.abs(core).max()) * 1e-3, gain=math.inf)


def with_wings(core: np.ndarray, fwhm: float) -> Psf:
    """A centred empirical stamp completed by the Moffat fitted to it: its own pixels within 1.5 FWHM (where
    they are precise), the Moffat's beyond 2.5 FWHM (where single pixels are noise), blended between; normalised
    so that the stamp and the Moffat's light beyond it make 1."""
    return _completed(core, fwhm, _wings_of(core, fwhm))


def _completed(core: np.ndarray, fwhm: float, fit: StarFit | None) -> Psf:
    """``with_wings`` given the Moffat (fitted to this stamp or to one of the same model nearby; None: the
    fit failed, and the stamp stands alone)."""
    size = core.shape[0]
    if fit is None:
        return Psf(core / core.sum(), 1.0, Moffat(fwhm, fwhm, 0.0, BETA_RANGE[1]))
    model = fit.flux * fit.moffat.pixels(core.shape, fit.x, fit.y)
    blend = _core_weight(size, fit.moffat.fwhm)
    stamp = blend * core + (1.0 - blend) * model
    beyond = fit.flux * max(0.0, 1.0 - float(fit.moffat.pixels(core.shape, fit.x, fit.y).sum()))
    total = float(stamp.sum()) + beyond
    return Psf(stamp / total, float(stamp.sum()) / total, fit.moffat)


def _core_weight(size: int, fwhm: float) -> np.ndarray:
    """1 within 1.5 FWHM of a stamp's centre, 0 beyond 2.5, a raised cosine between."""
    half = size // 2
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    inner, outer = CORE_FWHMS[0] * fwhm, CORE_FWHMS[1] * fwhm
    blend = np.clip((outer - np.hypot(xx, yy)) / max(outer - inner, 1e-6), 0.0, 1.0)
    return np.asarray(0.5 - 0.5 * np.cos(np.pi * blend))


def moffat_psf(fwhm: float, beta: float, size: int) -> Psf:
    """A round Moffat of a header's FWHM: the PSF of an image with nothing to measure it on."""
    moffat = Moffat(fwhm, fwhm, 0.0, beta)
    stamp = moffat.pixels((size, size), size // 2, size // 2)
    return Psf(stamp, float(stamp.sum()), moffat)


@dataclass(frozen=True)
class CurveOfGrowth:
    """How much of a star's light an aperture of r FWHM misses, across the frame: measured on the bright
    isolated stars out to ``big`` FWHM (the local sky from an annulus beyond), the fitted Moffat saying what lies
    beyond that. ``at`` gives the factor that makes an aperture's flux the star's total."""

    fwhm: float
    corrections: dict[float, np.ndarray]  # aperture radius (FWHM) → polynomial coefficients over the frame
    degree: int
    origin: tuple[float, float]
    scale: float
    stars: int

    def at(self, radius_fwhm: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        coefficients = self.corrections[min(self.corrections, key=lambda r: abs(r - radius_fwhm))]
        u, v = (np.asarray(x) - self.origin[0]) / self.scale, (np.asarray(y) - self.origin[1]) / self.scale
        return np.asarray(sum(c * u**i * v**j for c, (i, j) in zip(coefficients, _exponents(self.degree), strict=True)))

    @classmethod
    def measure(
        cls, data: np.ndarray, x: np.ndarray, y: np.ndarray, profile: Moffat, radii: tuple[float, ...],
        big: float = 5.0, annulus: tuple[float, float] = (6.0, 9.0),
    ) -> CurveOfGrowth:  # fmt: skip
        """From stars at (x, y) of a background-subtracted image (NaN-free), with the stars' Moffat ``profile``:
        each star's light within ``big`` FWHM over its light within each radius, times the Moffat's share
        beyond ``big``; a smooth surface over the frame (quadratic with 30 stars, linear with 10, else one
        value); the Moffat alone when no star is bright and isolated enough."""
        import sep

        fwhm = profile.fwhm
        origin = ((data.shape[1] - 1) / 2.0, (data.shape[0] - 1) / 2.0)
        scale = max(data.shape) / 2.0
        beyond = profile.outside_radius(big * fwhm)
        ann = (annulus[0] * fwhm, annulus[1] * fwhm)
        xy = np.column_stack([x, y])
        if len(xy) > 1:
            isolated = cKDTree(xy).query(xy, k=2)[0][:, 1] > annulus[1] * fwhm
        else:
            isolated = np.ones(len(xy), bool)
        total, total_err, flags = sep.sum_circle(data, x, y, big * fwhm, err=1.0, bkgann=ann, subpix=5)
        del total_err
        height, width = data.shape
        inside = (x > ann[1]) & (x < width - ann[1]) & (y > ann[1]) & (y < height - ann[1])
        noise = 1.4826 * float(
            np.median(np.abs(data[:: max(1, data.shape[0] // 500), :: max(1, data.shape[1] // 500)]))
        )
        bright = isolated & inside & (flags == 0) & (total > 200.0 * noise * big * fwhm)
        corrections: dict[float, np.ndarray] = {}
        chosen = np.flatnonzero(bright)
        degree = 2 if len(chosen) >= 30 else 1 if len(chosen) >= 10 else 0
        for radius in radii:
            if len(chosen) < 3:
                corrections[radius] = np.array([1.0 / max(1.0 - profile.outside_radius(radius * fwhm), 1e-3)])
                continue
            part, _, _ = sep.sum_circle(data, x[chosen], y[chosen], radius * fwhm, err=1.0, bkgann=ann, subpix=5)
            ratio = total[chosen] / part / (1.0 - beyond)
            u, v = (x[chosen] - origin[0]) / scale, (y[chosen] - origin[1]) / scale
            design = np.column_stack([u**i * v**j for i, j in _exponents(degree)])
            keep = np.isfinite(ratio) & (ratio > 0.5) & (ratio < 3.0)
            for _ in range(3):  # a neighbour's light in the big aperture: clipped
                solution = np.linalg.lstsq(design[keep], ratio[keep], rcond=None)[0]
                residual = ratio - design @ solution
                spread = 1.4826 * float(np.median(np.abs(residual[keep])))
                keep &= np.abs(residual) <= 3.0 * max(spread, 1e-4)
            corrections[radius] = solution
        return cls(fwhm, corrections, degree if len(chosen) >= 3 else 0, origin, scale, len(chosen))


def _exponents(degree: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i)]
