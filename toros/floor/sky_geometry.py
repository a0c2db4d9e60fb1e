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


def separation_deg(
    ra: np.ndarray | float, dec: np.ndarray | float, ra0: np.ndarray | float, dec0: np.ndarray | float
) -> np.ndarray:
    """Angular distance (degrees) between (ra, dec) and (ra0, dec0), element by element with numpy's
    broadcasting (a list of positions against one, or two lists pairwise); the haversine form keeps
    sub-arcsecond distances exact."""
    ra, dec, ra0, dec0 = (np.radians(np.asarray(v, dtype=float)) for v in (ra, dec, ra0, dec0))
    haversine = np.sin((dec0 - dec) / 2) ** 2 + np.cos(dec) * np.cos(dec0) * np.sin((ra0 - ra) / 2) ** 2
    return np.asarray(np.degrees(2 * np.arcsin(np.sqrt(np.clip(haversine, 0.0, 1.0)))))
