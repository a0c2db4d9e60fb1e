"""AT2017gfo, GW170817's kilonova: the light curve the simulated sky draws and the campaign's depth is judged
against (would a kilonova like it have been seen in this frame?).

A smooth approximation of the compiled light curves of Villar et al. 2017 (ApJL 851, L21) and Drout et al. 2017
(Science 358, 1570), AB, corrected for Galactic extinction, at 40 Mpc; scaled to other distances by the distance
modulus. An unfiltered ("clear") frame is taken as r, 0.1 mag brighter.
"""

from __future__ import annotations

import math

import numpy as np

AT2017GFO_DISTANCE_MPC = 40.0
AT2017GFO_DAYS = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0])
AT2017GFO_MAGS = {
    "g": np.array([17.3, 17.9, 18.6, 19.2, 20.2, 20.9, 21.5, 22.4, 23.5]),
    "r": np.array([17.5, 17.6, 18.0, 18.4, 19.1, 19.6, 20.1, 20.9, 21.9]),
    "i": np.array([17.8, 17.7, 17.9, 18.1, 18.6, 19.0, 19.4, 19.9, 20.7]),
    "z": np.array([18.0, 17.8, 17.9, 18.0, 18.3, 18.6, 18.9, 19.3, 19.9]),
}
BANDS = tuple(AT2017GFO_MAGS)


def kilonova_band(filter: str) -> str | None:
    """The light curve's band for a frame's filter name; None when the model has none for it."""
    band = filter.strip().lower()
    if band in ("clear", "l", "lum", "luminance"):
        return "clear"
    return band if band in AT2017GFO_MAGS else None


def kilonova_mag(filter: str, days: float, distance_mpc: float) -> float | None:
    """AB magnitude of an AT2017gfo-like kilonova ``days`` after the merger at ``distance_mpc``, in ``filter``;
    None before the merger or in a filter the model lacks."""
    band = kilonova_band(filter)
    if days <= 0 or band is None:
        return None
    curve = AT2017GFO_MAGS["r" if band == "clear" else band]
    if days <= AT2017GFO_DAYS[0]:
        at_40 = float(curve[0])  # the early blue emission: held at its first measured brightness
    elif days >= AT2017GFO_DAYS[-1]:
        slope = (curve[-1] - curve[-2]) / (AT2017GFO_DAYS[-1] - AT2017GFO_DAYS[-2])
        at_40 = float(curve[-1] + slope * (days - AT2017GFO_DAYS[-1]))
    else:
        at_40 = float(np.interp(math.log10(days), np.log10(AT2017GFO_DAYS), curve))
    shift = 5.0 * math.log10(distance_mpc / AT2017GFO_DISTANCE_MPC)
    return at_40 + shift - (0.1 if band == "clear" else 0.0)
