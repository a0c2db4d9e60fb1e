"""The telescope's point-spread function across the field, as the simulator draws it.

Real stars are not Gaussians: atmospheric seeing gives a Moffat profile (Moffat 1969; Trujillo et al. 2001
find β ≈ 4.765 for pure Kolmogorov turbulence, real telescopes 2.5–4.5 with their optics' scattered light), whose
wings hold several percent of the light beyond 2 FWHM. And a wide field is not uniform: a CDK24 with the STA1600
sees 1.4°, and toward the corners the images grow wider and elongated. ``Optics`` describes both; ``stamp``
adds pixel-integrated sources of that PSF into an image, each with the width, elongation and orientation of its
place in the field (the optical axis at the frame's centre unless told otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

# Two-point Gauss–Legendre nodes per pixel axis: exact for cubic variations within a pixel (a Moffat of 2 px
# FWHM integrates to 0.1%), four evaluations per pixel.
_NODES = np.array([-0.5 / math.sqrt(3.0), 0.5 / math.sqrt(3.0)])
CHUNK_EVALUATIONS = 4_000_000  # bounded memory whatever the crowding
MAX_RADIUS_PX = 80
LOST_ELECTRONS = 3.0  # light left beyond a faint source's stamp (at most 2% of it)


@dataclass(frozen=True)
class PsfShape:
    """The PSF at one place: its FWHM along the major and minor axes (pixels) and the major axis's angle
    (radians, counter-clockwise from +x)."""

    fwhm_major: np.ndarray
    fwhm_minor: np.ndarray
    angle: np.ndarray

    @property
    def fwhm(self) -> np.ndarray:
        """The geometric mean of the two axes: the FWHM of a round PSF of the same area."""
        return np.asarray(np.sqrt(self.fwhm_major * self.fwhm_minor))


@dataclass(frozen=True)
class Optics:
    """The PSF's profile and how it changes across the field.

    At the optical axis the PSF is round with the FWHM of the seeing; at the field's corner
    (``field_radius_deg`` from the axis) it is ``corner_fwhm_growth`` wider and ``corner_ellipticity``
    (1 − b/a) elongated along the radius, both growing as the square of the distance from the axis (third-order
    aberrations)."""

    profile: Literal["moffat", "gaussian"] = "moffat"
    beta: float = 3.0
    corner_fwhm_growth: float = 0.15
    corner_ellipticity: float = 0.10
    field_radius_deg: float = 0.99  # the corner of a 1.4° square field

    def __post_init__(self) -> None:
        if self.profile == "moffat" and not 1.5 <= self.beta <= 10.0:
            raise ValueError(f"Moffat beta {self.beta} outside 1.5-10")
        if not 0.0 <= self.corner_ellipticity < 0.9 or self.corner_fwhm_growth <= -0.9 or self.field_radius_deg <= 0:
            raise ValueError("corner_ellipticity must be in [0, 0.9), corner_fwhm_growth > -0.9, field_radius_deg > 0")

    def shape_at(self, seeing_px: float, dx_deg: np.ndarray, dy_deg: np.ndarray) -> PsfShape:
        """The PSF at offsets (degrees, along the image's x and y) from the optical axis."""
        dx, dy = np.asarray(dx_deg, dtype=float), np.asarray(dy_deg, dtype=float)
        rho2 = (dx**2 + dy**2) / self.field_radius_deg**2
        fwhm = seeing_px * (1.0 + self.corner_fwhm_growth * rho2)
        ellipticity = self.corner_ellipticity * rho2
        stretch = 1.0 / np.sqrt(1.0 - ellipticity)  # the area kept: major × minor = fwhm²
        return PsfShape(fwhm * stretch, fwhm / stretch, np.arctan2(dy, dx))

    def enclosed_radius(self, fwhm_major: np.ndarray, lost_fraction: np.ndarray) -> np.ndarray:
        """The radius (pixels, along the major axis) beyond which ``lost_fraction`` of the light lies."""
        if self.profile == "gaussian":
            sigma = fwhm_major / 2.3548
            return np.asarray(sigma * np.sqrt(-2.0 * np.log(lost_fraction)))
        alpha = fwhm_major / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))
        return np.asarray(alpha * np.sqrt(lost_fraction ** (1.0 / (1.0 - self.beta)) - 1.0))

    def scale(self, fwhm: np.ndarray) -> np.ndarray:
        """The profile's scale length for a FWHM: Moffat's α, a Gaussian's σ."""
        if self.profile == "gaussian":
            return np.asarray(fwhm) / 2.3548
        return np.asarray(fwhm) / (2.0 * math.sqrt(2.0 ** (1.0 / self.beta) - 1.0))

    def radial(self, q: np.ndarray) -> np.ndarray:
        """The profile at the squared radius ``q`` in scale lengths, times π (scale a)(scale b): per unit area."""
        if self.profile == "gaussian":
            return np.asarray(np.exp(np.asarray(-0.5, dtype=q.dtype) * q) / (2.0 * math.pi))
        return np.asarray((self.beta - 1.0) / math.pi * (1.0 + q) ** np.asarray(-self.beta, dtype=q.dtype))


def stamp(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    shape: PsfShape,
    optics: Optics,
) -> None:
    """Adds point sources of ``flux`` (summed over all pixels: within 0.05% for bright sources, 3 electrons or
    at most 2% for the faintest)
    centred at (x, y) (0-based pixels) into ``image``, each with its own PSF ``shape``; pixels outside the image
    are dropped. Each source gets a square stamp as wide as its light needs: a faint star's wings are below an
    electron a few FWHM out, a bright one's are not."""
    if len(x) == 0:
        return
    x, y, flux = (np.asarray(a, dtype=float) for a in (x, y, flux))
    major, minor, angle = (
        np.broadcast_to(np.asarray(a, dtype=float), x.shape) for a in (shape.fwhm_major, shape.fwhm_minor, shape.angle)
    )
    lost = np.clip(LOST_ELECTRONS / np.maximum(flux, 1e-9), 5e-4, 0.02)
    radius = np.clip(np.ceil(optics.enclosed_radius(major, lost)), 2, MAX_RADIUS_PX).astype(int)
    height, width = image.shape
    flat = image.reshape(-1)
    for half in np.unique(radius):
        chosen = np.flatnonzero(radius == half)
        offsets = np.arange(-half, half + 1)
        per_source = (2 * half + 1) ** 2 * len(_NODES) ** 2
        step = max(1, CHUNK_EVALUATIONS // per_source)
        for start in range(0, len(chosen), step):
            part = chosen[start : start + step]
            ix, iy = np.rint(x[part]).astype(np.int64), np.rint(y[part]).astype(np.int64)
            px = ix[:, None, None] + offsets[None, None, :]  # (n, 1, columns)
            py = iy[:, None, None] + offsets[None, :, None]  # (n, rows, 1)
            cos, sin = np.cos(angle[part])[:, None, None], np.sin(angle[part])[:, None, None]
            scale_a = optics.scale(major[part])[:, None, None]
            scale_b = optics.scale(minor[part])[:, None, None]
            # Each pixel's centre along the source's axes in scale lengths (float32: a stamp is at most 161 px
            # wide), then the integration nodes as shifts of those.
            fx, fy = px - x[part][:, None, None], py - y[part][:, None, None]
            u0 = ((fx * cos + fy * sin) / scale_a).astype(np.float32)
            v0 = ((fy * cos - fx * sin) / scale_b).astype(np.float32)
            total = np.zeros(np.broadcast_shapes(u0.shape, v0.shape), dtype=np.float32)
            for node_x in _NODES:
                for node_y in _NODES:
                    du = ((node_x * cos + node_y * sin) / scale_a).astype(np.float32)
                    dv = ((node_y * cos - node_x * sin) / scale_b).astype(np.float32)
                    total += optics.radial((u0 + du) ** 2 + (v0 + dv) ** 2)
            weight = flux[part] / (len(_NODES) ** 2 * scale_a[:, 0, 0] * scale_b[:, 0, 0])
            values = (total * weight[:, None, None]).astype(image.dtype)
            rows = np.broadcast_to(py, values.shape)
            columns = np.broadcast_to(px, values.shape)
            inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width)
            np.add.at(flat, rows[inside] * width + columns[inside], values[inside])


def kernel(optics: Optics, shape: PsfShape, half: int) -> np.ndarray:
    """The PSF of one place on a (2 half + 1)² grid, pixel-integrated, each pixel the fraction of the light
    falling in it (the wings beyond the grid are lost: make it wide enough)."""
    image = np.zeros((2 * half + 1, 2 * half + 1))
    single = PsfShape(
        *(np.atleast_1d(np.asarray(a, dtype=float))[:1] for a in (shape.fwhm_major, shape.fwhm_minor, shape.angle))
    )
    bright = 1e12  # as bright as stamps come: its stamp spans all but 0.05% of the light
    stamp(image, np.array([float(half)]), np.array([float(half)]), np.array([bright]), single, optics)
    return image / bright


def kernel_half(optics: Optics, shape: PsfShape, lost: float = 5e-4, largest: int = MAX_RADIUS_PX) -> int:
    """The half-width of a kernel grid beyond which ``lost`` of the PSF's light lies."""
    return int(
        min(largest, math.ceil(float(optics.enclosed_radius(np.atleast_1d(shape.fwhm_major)[:1], np.array([lost]))[0])))
    )
