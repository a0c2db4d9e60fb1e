"""Where the dome's slit must be for the telescope's optical axis: a German equatorial mount off the dome's centre.

Vectors are in the dome's frame: metres east, north and up of its centre. The mount's RA and Dec axes meet at
``mount_offset_m``; the optical axis runs parallel to the pointing at ``dec_axis_offset_m`` from that point
along the declination axis, which is perpendicular to the polar axis and to the pointing (on one side of the
pier or the other). The slit must be where that axis leaves the dome's sphere: the usual construction (e.g. the
ASCOM dome-control and INDI dome geometries), not the target's own azimuth, which is right only for a mount at
the centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class PierSide(StrEnum):
    """Where the optical axis lies when the telescope points at the meridian: east or west of the polar axis.
    ``auto`` is a German mount's usual rule: west of the pier for targets east of the meridian (counterweight
    down), east for targets west of it."""

    AUTO = "auto"
    EAST = "east"
    WEST = "west"


@dataclass(frozen=True)
class DomeGeometry:
    radius_m: float
    latitude_deg: float
    mount_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)  # east, north, up of the dome's centre
    dec_axis_offset_m: float = 0.0
    pier_side: PierSide = PierSide.AUTO

    def slit(self, azimuth_deg: float, altitude_deg: float) -> tuple[float, float]:
        """(azimuth, altitude) in degrees of the point where the optical axis leaves the dome, for a target at
        ``azimuth_deg`` (from north through east) and ``altitude_deg``."""
        az, alt = math.radians(azimuth_deg), math.radians(altitude_deg)
        pointing = np.array([math.cos(alt) * math.sin(az), math.cos(alt) * math.cos(az), math.sin(alt)])
        origin = np.array(self.mount_offset_m, dtype=float)
        if self.dec_axis_offset_m:
            origin = origin + self.dec_axis_offset_m * self._dec_axis(pointing, azimuth_deg)
        # |origin + t·pointing| = R, t > 0: the ray from inside the sphere meets it once.
        along = float(origin @ pointing)
        t = -along + math.sqrt(along**2 - (float(origin @ origin) - self.radius_m**2))
        east, north, up = origin + t * pointing
        altitude = math.degrees(math.asin(max(-1.0, min(1.0, up / self.radius_m))))
        return math.degrees(math.atan2(east, north)) % 360.0, altitude

    def _dec_axis(self, pointing: np.ndarray, azimuth_deg: float) -> np.ndarray:
        """The unit vector from the axes' intersection towards the optical axis (east of the meridian, azimuths
        between 0 and 180, is a negative hour angle)."""
        latitude = math.radians(self.latitude_deg)
        north_pole = np.array([0.0, math.cos(latitude), math.sin(latitude)])
        across = np.cross(north_pole, pointing)  # east of the polar axis at the meridian
        norm = float(np.linalg.norm(across))
        if norm < 1e-9:  # at the pole the declination axis may lie anywhere: the offset changes nothing there
            return np.zeros(3)
        side = self.pier_side
        if side is PierSide.AUTO:
            side = PierSide.WEST if 0.0 < azimuth_deg % 360.0 < 180.0 else PierSide.EAST
        return (across / norm) * (1.0 if side is PierSide.EAST else -1.0)


def tolerance_deg(radius_m: float, slit_width_m: float, aperture_m: float, slit_altitude_deg: float) -> float:
    """How far (azimuth, degrees) the dome may lag the slit position before its edge reaches the beam: the
    slit's free half-width beyond the beam's, over the dome's horizontal radius at that altitude."""
    free = max(0.0, (slit_width_m - aperture_m) / 2.0)
    horizontal = radius_m * math.cos(math.radians(slit_altitude_deg))
    if free >= horizontal:
        return 180.0  # near the zenith the slit spans every azimuth
    return math.degrees(math.asin(free / horizontal))


def azimuth_error_deg(a: float, b: float) -> float:
    """The smaller angle between two azimuths."""
    return abs((a - b + 180.0) % 360.0 - 180.0)
