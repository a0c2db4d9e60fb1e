"""The coordinates a mount speaks, and the conversion at its boundary.

The rest of the telescope thinks in ICRS (the catalogs', the sky map's, the WCS's). Most mounts do not:
INDI's ``EQUATORIAL_EOD_COORD`` is of date by definition, the LX200 protocol is, and an ASCOM mount says which
in ``EquatorialSystem``. "Of date" here is the apparent place on the true equator and equinox of date (what
INDI clients and ASCOM's "topocentric" send): in 2026 it is about 20′ from ICRS, far more than a pointing
model's error, so a driver that spoke ICRS to such a mount would point, and write the WCS, that far off.

The conversion is the SOFA recipe (``erfa``): ICRS to CIRS with ``atci13``, then from the CIO-based RA to the
equinox-based one with the equation of the origins; back with ``atic13``. Geocentric: diurnal aberration and
parallax are below an arcsecond for stars.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

import erfa


class Equinox(StrEnum):
    J2000 = "j2000"  # ICRS to within the 20-mas frame bias: passed as they are
    JNOW = "jnow"  # apparent of date


def spoken(configured: Equinox | Literal["auto"], default: Equinox) -> Equinox:
    """What a mount speaks: ``telescope.mount.equinox`` unless it says ``auto``, then the driver's ``default``."""
    return configured if isinstance(configured, Equinox) else default


def _tt(when: datetime) -> tuple[float, float]:
    """The two-part Julian date in TT (leap seconds from erfa: no Earth-orientation table needed)."""
    t = when.astimezone(UTC)
    utc1, utc2 = erfa.dtf2d("UTC", t.year, t.month, t.day, t.hour, t.minute, t.second + t.microsecond / 1e6)
    tai1, tai2 = erfa.utctai(utc1, utc2)
    tt1, tt2 = erfa.taitt(tai1, tai2)
    return float(tt1), float(tt2)


def icrs_to_mount(equinox: Equinox, ra_deg: float, dec_deg: float, when: datetime) -> tuple[float, float]:
    """(RA, Dec) in degrees as the mount speaks them at ``when``."""
    if equinox is Equinox.J2000:
        return ra_deg % 360.0, dec_deg
    jd1, jd2 = _tt(when)
    ri, di, eo = erfa.atci13(math.radians(ra_deg), math.radians(dec_deg), 0.0, 0.0, 0.0, 0.0, jd1, jd2)
    return math.degrees(erfa.anp(ri - eo)), math.degrees(di)


def mount_to_icrs(equinox: Equinox, ra_deg: float, dec_deg: float, when: datetime) -> tuple[float, float]:
    """The ICRS (RA, Dec) in degrees of what the mount reports at ``when``."""
    if equinox is Equinox.J2000:
        return ra_deg % 360.0, dec_deg
    jd1, jd2 = _tt(when)
    ri = erfa.anp(math.radians(ra_deg) + erfa.eo06a(jd1, jd2))
    rc, dc, _ = erfa.atic13(ri, math.radians(dec_deg), jd1, jd2)
    return math.degrees(erfa.anp(rc)), math.degrees(dc)
