"""The decoys' supernova light curves: their peak, decline and colour are the types' (within the model's few
tenths)."""

from __future__ import annotations

import math

import pytest

from toros.floor.supernovae import SupernovaType, supernova_mag

MODULUS_40 = 5 * math.log10(40e5)


def test_a_type_ia_peaks_at_its_absolute_magnitude_and_declines_as_one():
    peak = supernova_mag(SupernovaType.IA, "r", 0.0, 40.0)
    assert peak == pytest.approx(-19.3 + MODULUS_40, abs=1e-6)
    for days in (-3.0, 3.0):
        assert supernova_mag(SupernovaType.IA, "r", days, 40.0) > peak, "the peak is the brightest"
    assert 0.4 < supernova_mag(SupernovaType.IA, "r", 15.0, 40.0) - peak < 0.8  # 0.6 mag in 15 days
    assert supernova_mag(SupernovaType.IA, "r", -40.0, 40.0) is None, "not exploded yet"
    assert supernova_mag(SupernovaType.IA, "g", 30.0, 40.0) - supernova_mag(SupernovaType.IA, "r", 30.0, 40.0) > 0.9


def test_a_type_ii_plateaus_and_everything_scales_with_distance():
    peak = supernova_mag(SupernovaType.II, "r", 0.0, 40.0)
    assert peak == pytest.approx(-17.0 + MODULUS_40, abs=1e-6)
    assert 0.1 < supernova_mag(SupernovaType.II, "r", 30.0, 40.0) - peak < 0.4, "about 0.01 mag a day"
    assert supernova_mag(SupernovaType.II, "r", 5.0, 400.0) - supernova_mag(SupernovaType.II, "r", 5.0, 40.0) == (
        pytest.approx(5.0)
    )
    assert supernova_mag(SupernovaType.II, "u", 5.0, 40.0) is None
