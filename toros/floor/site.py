"""Where an observatory is, when it may observe (its constraints), and which observing night a moment belongs
to: shared by the modules that observe (the telescope, the preprocessor that names nights, the alert robot that
judges visibility, the console that draws the horizon)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from astropy.utils import iers
from pydantic import Field

from toros.runtime.config import Section

# Nodes may be offline: Earth-orientation data come from the tables shipped in astropy-iers-data (updated
# with the package), never from a download in the middle of a night. Their UT1-UTC predictions stay good to
# milliseconds for months, far below what pointing and scheduling need, so their age is accepted.
iers.conf.auto_download = False
iers.conf.auto_max_age = None


class Site(Section):
    name: str
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=360)
    elevation: float = Field(default=0.0, ge=-500, le=9000)


MACON = Site(name="macon", latitude=-24.62, longitude=-67.32, elevation=4650)


def observing_night(when: datetime, longitude_deg: float) -> date:
    """The observing night containing ``when``: the site's local (mean solar) date at the noon before it."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    local = when.astimezone(UTC) + timedelta(hours=longitude_deg / 15.0)
    return (local - timedelta(hours=12)).date()


class Constraints(Section):
    """When a target may be observed."""

    min_altitude_deg: float = Field(default=30.0, ge=0, lt=90)
    max_airmass: float = Field(default=2.5, ge=1, le=40)
    twilight_sun_altitude_deg: float = Field(default=-12.0, ge=-18, le=0, description="night: the Sun below this")
    min_moon_separation_deg: float = Field(default=20.0, ge=0, le=180)
    horizon: tuple[tuple[float, float], ...] = Field(
        default=(), description="(azimuth, minimum altitude) points of the local horizon, degrees; interpolated"
    )
    time_step_s: float = Field(default=120.0, ge=10, le=1800, description="resolution of the night plan")
