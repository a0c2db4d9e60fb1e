"""Geometry on the sky shared by the telescope, the preprocessor and the simulator: a tangent-plane WCS and
angular separations."""

from __future__ import annotations

import math

import numpy as np
from astropy.wcs import WCS


def tan_wcs(
    ra_deg: float, dec_deg: float, width: int, height: int, pixel_scale_arcsec: float, rotation_deg: float = 0.0
) -> WCS:
    """A TAN WCS centred on (RA, Dec): north up and east left at rotation 0, the image centre at CRPIX."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra_deg % 360.0, dec_deg]
    wcs.wcs.crpix = [(width + 1) / 2.0, (height + 1) / 2.0]
    scale = pixel_scale_arcsec / 3600.0
    angle = math.radians(rotation_deg)
    wcs.wcs.cd = [
        [-scale * math.cos(angle), scale * math.sin(angle)],
        [scale * math.sin(angle), scale * math.cos(angle)],
    ]
    wcs.wcs.radesys = "ICRS"
    return wcs


def separation_deg(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> np.ndarray:
    """Angular distance (degrees) of each (ra, dec) from (ra0, dec0)."""
    ra, dec, ra0, dec0 = np.radians(ra), np.radians(dec), math.radians(ra0), math.radians(dec0)
    cos = np.sin(dec) * math.sin(dec0) + np.cos(dec) * math.cos(dec0) * np.cos(ra - ra0)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
