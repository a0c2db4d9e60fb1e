"""Supernova light curves for the simulated sky's decoys: a type Ia and a type II-P, rough but of the right
brightness, rise, decline and colour, so that a campaign's classification meets the impostors a real night has.

Each is a Bazin et al. (2009) curve in r — flux ∝ exp(−t/τ_fall) / (1 + exp(−t/τ_rise)) — peaking at the
type's absolute magnitude (type Ia M_r ≈ −19.3, 0.6 mag down 15 days after peak; type II-P M_r ≈ −17, a plateau
declining by about 0.01 mag a day; Richardson et al. 2014, Anderson et al. 2014), with a g − r colour that
reddens after peak as both types do (Ia: −0.1 at peak to +1.0 a month later; II: +0.25 at peak, +0.5 twenty days
later, to +1.0 at the plateau's end; de Jaeger et al. 2018). i and z are
taken as r − 0.2 and r − 0.3, "clear" as r − 0.1. Not a template fit: good to a few tenths of a magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class SupernovaType(StrEnum):
    IA = "Ia"
    II = "II"


@dataclass(frozen=True)
class _Curve:
    peak_absolute_r: float
    exploded_days: float  # before the r peak
    rise_days: float  # Bazin τ_rise
    fall_days: float  # Bazin τ_fall
    colour_at_peak: float  # g − r
    reddening_per_day: float
    reddest: float


CURVES = {
    SupernovaType.IA: _Curve(-19.3, 18.0, 2.5, 27.0, -0.1, 0.05, 1.0),
    SupernovaType.II: _Curve(-17.0, 12.0, 2.0, 150.0, 0.25, 0.012, 1.0),
}
BAND_OFFSETS = {"r": 0.0, "i": -0.2, "z": -0.3, "clear": -0.1}


def _bazin(days_from_explosion: float, curve: _Curve) -> float:
    return math.exp(-days_from_explosion / curve.fall_days) / (1.0 + math.exp(-days_from_explosion / curve.rise_days))


def supernova_mag(kind: SupernovaType, filter: str, days_from_peak: float, distance_mpc: float) -> float | None:
    """AB magnitude in ``filter`` of a supernova of ``kind`` at ``distance_mpc``, ``days_from_peak`` after its r
    peak; None before it exploded (18 days before the peak for a type Ia, 12 for a type II) or in a filter the
    model lacks."""
    curve = CURVES[kind]
    band = filter.strip().lower()
    if band not in ("g", *BAND_OFFSETS):
        return None
    # The explosion's offset from the peak: where the Bazin curve's derivative is zero.
    to_peak = curve.rise_days * math.log(curve.fall_days / curve.rise_days - 1.0)
    if days_from_peak < -curve.exploded_days:
        return None
    since_turn_on = days_from_peak + to_peak
    relative = _bazin(since_turn_on, curve) / _bazin(to_peak, curve)
    r = curve.peak_absolute_r - 2.5 * math.log10(relative) + 5.0 * math.log10(distance_mpc * 1e5)
    if band == "g":
        colour = curve.colour_at_peak + curve.reddening_per_day * max(days_from_peak, 0.0)
        return r + min(colour, curve.reddest)
    return r + BAND_OFFSETS[band]
