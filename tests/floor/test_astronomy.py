"""The sky's geometry the robot points by: the flattest spot of the twilight sky for flats."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

from astropy import units as u
from astropy.coordinates import AltAz, SkyCoord, get_sun
from astropy.time import Time

from toros.floor.astronomy import FLAT_DITHERS_ARCMIN, altaz_exact, flat_spot, location_of
from toros.floor.site import MACON


def test_sky_flats_point_13_degrees_from_the_zenith_away_from_the_sun_and_dither():
    for when in (datetime(2026, 11, 22, 23, 40, tzinfo=UTC), datetime(2026, 11, 23, 9, 10, tzinfo=UTC)):
        frame = AltAz(obstime=Time(when), location=location_of(MACON))
        sun_azimuth = get_sun(Time(when)).transform_to(frame).az.to_value(u.deg)
        altitude, azimuth = altaz_exact(MACON, *flat_spot(MACON, when, 0), when)
        assert abs(altitude - 77.0) < 0.05
        assert abs((azimuth - sun_azimuth - 180.0 + 180.0) % 360.0 - 180.0) < 0.2
        spots = [flat_spot(MACON, when, index) for index in range(len(FLAT_DITHERS_ARCMIN))]
        for one, other in itertools.combinations(spots, 2):
            separation = SkyCoord(*one, unit="deg").separation(SkyCoord(*other, unit="deg")).to_value(u.arcmin)
            assert 1.9 < separation < 6.0, "each flat on other pixels, all near the flattest spot"
        assert flat_spot(MACON, when, len(FLAT_DITHERS_ARCMIN)) == spots[0], "the pattern repeats"


def test_the_flat_spot_hardly_moves_in_altitude_and_azimuth_through_a_sequence():
    """Over 20 minutes of evening flats the spot stays within a few degrees: the dome barely turns."""
    start = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    positions = [
        altaz_exact(MACON, *flat_spot(MACON, start + timedelta(minutes=m), m), start + timedelta(minutes=m))
        for m in range(0, 21, 2)
    ]
    altitudes = [a for a, _ in positions]
    azimuths = [math.radians(z) for _, z in positions]
    spread = math.degrees(max(abs(math.remainder(a - b, 2 * math.pi)) for a in azimuths for b in azimuths))
    assert max(altitudes) - min(altitudes) < 0.2 and spread < 5.0
