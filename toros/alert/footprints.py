"""A camera's field on the sky, and which places a pointing covers.

Fields are aligned with RA and Dec (north up), as TOROS's cameras are mounted; a place is inside a field when
its gnomonic (tangent-plane) projection about the field's centre falls inside the field's rectangle or circle,
as it does on the detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Footprint:
    """A field of view: ``width_deg`` × ``height_deg``, or a circle of diameter ``width_deg``."""

    width_deg: float
    height_deg: float
    circular: bool

    @classmethod
    def of(cls, size: float | tuple[float, float]) -> Footprint:
        """From an observatory's ``field_of_view_deg``: a diameter, or [width, height]."""
        if isinstance(size, tuple):
            return cls(float(size[0]), float(size[1]), circular=False)
        return cls(float(size), float(size), circular=True)

    @property
    def area_deg2(self) -> float:
        if self.circular:
            return math.pi * self.width_deg**2 / 4.0
        return self.width_deg * self.height_deg

    @property
    def radius_deg(self) -> float:
        """The radius of the smallest circle around the field (a bound for look-ups)."""
        if self.circular:
            return self.width_deg / 2.0
        return math.hypot(self.width_deg, self.height_deg) / 2.0

    def contains(
        self,
        ra_deg: np.ndarray,
        dec_deg: np.ndarray,
        centre_ra_deg: float,
        centre_dec_deg: float,
        margin_deg: float = 0.0,
    ) -> np.ndarray:
        """Which places fall inside the field centred on (``centre_ra_deg``, ``centre_dec_deg``), at least
        ``margin_deg`` from its edge."""
        x, y = tangent_plane(ra_deg, dec_deg, centre_ra_deg, centre_dec_deg)
        if self.circular:
            return np.asarray(np.hypot(x, y) <= self.width_deg / 2.0 - margin_deg)
        return np.asarray(
            (np.abs(x) <= self.width_deg / 2.0 - margin_deg) & (np.abs(y) <= self.height_deg / 2.0 - margin_deg)
        )


def tangent_plane(
    ra_deg: np.ndarray, dec_deg: np.ndarray, centre_ra_deg: np.ndarray | float, centre_dec_deg: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic projection (degrees east and north of the centre, or of each place's own centre); places 90
    degrees or more away from the centre land at infinity."""
    ra, dec = np.radians(np.asarray(ra_deg, dtype=float)), np.radians(np.asarray(dec_deg, dtype=float))
    ra0, dec0 = np.radians(np.asarray(centre_ra_deg, dtype=float)), np.radians(np.asarray(centre_dec_deg, dtype=float))
    cos_c = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(cos_c > 0, np.cos(dec) * np.sin(ra - ra0) / cos_c, np.inf)
        y = np.where(
            cos_c > 0, (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cos_c, np.inf
        )
    return np.degrees(x), np.degrees(y)


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """Places as unit vectors (N × 3), for look-ups by chord length in a k-d tree."""
    ra, dec = np.radians(np.asarray(ra_deg, dtype=float)), np.radians(np.asarray(dec_deg, dtype=float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def chord(angle_deg: float) -> float:
    """The straight-line distance between two unit vectors ``angle_deg`` apart."""
    return 2.0 * math.sin(math.radians(angle_deg) / 2.0)
