"""What a candidate of a GW campaign probably is, with the evidence, and how much it looks like the kilonova.

Impostors are thrown out by context first — a source that moved between epochs (``moving``), a point source of
the reference catalog under it (``star``), a source seen before the merger (``variable``). A source at a
galaxy's centre is flagged ``nuclear`` (kept: AGN flares and TDEs live there, and so may a kilonova). Then its
brightness at the host's distance (the catalog's, or the GW distance along its line of sight when it has no
host) against an AT2017gfo-like kilonova at the same time since the merger, in the same filter, and against
supernovae (type Ia peak at M ≈ −19.3, type II plateaus at M ≈ −16.5 to −18; Richardson et al. 2014), its
evolution (a kilonova fades by about a magnitude a day in r after the first day, a supernova changes by a few
hundredths), its colour where two filters were taken within hours, and whether the host's distance is
consistent with the GW distance decide between ``kilonova-like``, ``supernova-like`` and ``unknown``.

``kilonova_score`` (0–1) ranks an event's candidates: the product of how well the brightness, the evolution and
the colour match the kilonova model (Gaussian in magnitudes), of the host distance's agreement with the GW
distance, and of the vetting score; zero for an impostor, halved for a nuclear source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from toros.floor.kilonova import kilonova_mag


class Classification(StrEnum):
    KILONOVA = "kilonova-like"
    SUPERNOVA = "supernova-like"
    STAR = "star"
    MOVING = "moving"
    VARIABLE = "variable"
    NUCLEAR = "nuclear"
    UNKNOWN = "unknown"


KILONOVA_MAG_SIGMA = 1.0  # kilonovae differ from AT2017gfo by about this much (Kasliwal et al. 2020)
RATE_SIGMA_MAG_PER_DAY = 0.3  # a light curve's rate, against the model's, within this (plus its own error)
COLOUR_SIGMA_MAG = 0.3
# Supernovae as the alternative: absolute magnitudes (type Ia within a month of peak; type II plateaus) and a
# colour near g - r = 0.2 (Richardson et al. 2014; Taddia et al. 2016); a slow evolution.
SUPERNOVAE = ((-19.0, 1.0), (-17.0, 0.8))  # (mean, sigma) of M
SUPERNOVA_COLOUR = (0.2, 0.4)
SUPERNOVA_RATE_SIGMA_MAG_PER_DAY = 0.1
MOVED_ARCSEC = 0.4  # detections further apart than this (and than their errors allow): a moving object
MOVED_SIGMAS = 5.0
ASTROMETRY_FLOOR_ARCSEC = (
    0.15  # a detection's position error beyond its own noise: frame to frame, WCS solutions differ
)
POSITION_PER_MAG_ERR = 0.8  # arcsec of position error per magnitude of error (σ ≈ FWHM / 2.355 S/N, FWHM ~2")
TRACK_TOLERANCE_ARCSEC = 3.0  # a detection this close to a moving candidate's extrapolated track is that mover
SAME_TIME_DAYS = 0.25  # detections in two filters within this are one colour


@dataclass(frozen=True)
class Detection:
    time: datetime
    filter: str
    mag: float
    mag_err: float
    ra_deg: float
    dec_deg: float


@dataclass
class Verdict:
    classification: Classification
    kilonova_score: float
    evidence: list[str] = field(default_factory=list)


IMPOSTORS = frozenset({Classification.MOVING, Classification.STAR, Classification.VARIABLE})


def classify(
    detections: list[Detection],
    *,
    merger: datetime | None,
    flags: set[str],
    distance_mpc: float | None,
    distance_source: str,
    host_consistency: float | None,
    vetting_score: float,
    first_seen: datetime | None = None,
) -> Verdict:
    """``distance_mpc``: the host's (or the GW distance along the line of sight, ``distance_source`` says
    which); ``host_consistency``: exp(-z²/2) of the host's distance against the GW posterior there (None: not
    known); ``first_seen``: its first detection in any search (a routine one before the event included)."""
    evidence: list[str] = []
    detections = sorted(detections, key=lambda d: d.time)
    if not detections:
        return Verdict(Classification.UNKNOWN, 0.0, ["no detection"])
    motion = _motion(detections)
    if "moving" in flags or motion is not None:
        return Verdict(Classification.MOVING, 0.0, [motion or "the preprocessor saw it move"])
    earliest = min([detections[0].time, *([first_seen] if first_seen else [])])
    if merger is not None and earliest < merger:
        host_distance = distance_mpc if host_consistency is not None else None  # a host's, not the GW distance
        return _older(detections[-1], earliest, flags, host_distance, distance_source)
    if "on_star" in flags:
        return Verdict(Classification.STAR, 0.0, ["a point source of the reference catalog under it"])
    nuclear = "nuclear" in flags
    if nuclear:
        evidence.append("at its host's centre (nuclear: an AGN or a TDE is as likely)")
    if merger is None or distance_mpc is None or not distance_mpc > 0:
        evidence.append("no merger time or no distance: brightness not compared")
        return Verdict(Classification.NUCLEAR if nuclear else Classification.UNKNOWN, 0.0, evidence)

    modulus = 5.0 * math.log10(distance_mpc * 1e5)
    latest = detections[-1]
    days = (latest.time - merger).total_seconds() / 86400.0
    absolute = latest.mag - modulus
    model = kilonova_mag(latest.filter, days, distance_mpc)
    evidence.append(f"M = {absolute:.1f} at {distance_mpc:.0f} Mpc ({distance_source}), {days:.2f} d after the merger")
    brightness = 0.0
    if model is not None:
        offset = latest.mag - model
        brightness = math.exp(-0.5 * (offset / math.hypot(KILONOVA_MAG_SIGMA, latest.mag_err)) ** 2)
        evidence.append(f"{offset:+.1f} mag from an AT2017gfo-like kilonova then")
    like_supernova = max(
        math.exp(-0.5 * ((absolute - mean) / sigma) ** 2) * KILONOVA_MAG_SIGMA / sigma for mean, sigma in SUPERNOVAE
    )
    rate = _rate(detections)
    evolution = 1.0
    if rate is not None:
        (measured, error, first, last, band) = rate
        expected = _model_rate(band, first, last, merger, distance_mpc)
        if expected is not None:
            sigma = math.hypot(RATE_SIGMA_MAG_PER_DAY, error)
            evolution = math.exp(-0.5 * ((measured - expected) / sigma) ** 2)
            evidence.append(f"{measured:+.2f} ± {error:.2f} mag/day in {band} (a kilonova: {expected:+.2f})")
        slow = math.hypot(SUPERNOVA_RATE_SIGMA_MAG_PER_DAY, error)
        like_supernova *= math.exp(-0.5 * (measured / slow) ** 2) * math.hypot(RATE_SIGMA_MAG_PER_DAY, error) / slow
    colour_match = 1.0
    colour = _colour(detections, merger, distance_mpc)
    if colour is not None:
        measured_colour, expected_colour, bands = colour
        colour_match = math.exp(-0.5 * ((measured_colour - expected_colour) / COLOUR_SIGMA_MAG) ** 2)
        evidence.append(f"{bands} = {measured_colour:+.2f} (a kilonova: {expected_colour:+.2f})")
        mean, sigma = SUPERNOVA_COLOUR
        like_supernova *= math.exp(-0.5 * ((measured_colour - mean) / sigma) ** 2) * COLOUR_SIGMA_MAG / sigma
    host = 0.5 if host_consistency is None else host_consistency
    if host_consistency is not None and host_consistency < math.exp(-0.5 * 2.0**2):
        evidence.append("its host's distance is outside the GW distance (beyond 2 sigma)")
    score = brightness * evolution * colour_match * host * max(0.0, min(1.0, vetting_score)) * (0.5 if nuclear else 1.0)

    # Which explains it better, a kilonova like AT2017gfo or a supernova (likelihoods in the same units)?
    like_kilonova = brightness * evolution * colour_match
    evidence.append(f"likelihood ratio kilonova : supernova = {like_kilonova / max(like_supernova, 1e-300):.2g}")
    if nuclear and like_kilonova < 0.3:
        classification = Classification.NUCLEAR
    elif like_kilonova > 0.3 and like_kilonova >= like_supernova and host >= math.exp(-0.5 * 2.0**2):
        classification = Classification.KILONOVA
    elif like_supernova > like_kilonova or host < math.exp(-0.5 * 2.0**2):
        classification = Classification.SUPERNOVA if like_supernova > 0.05 else Classification.UNKNOWN
    else:
        classification = Classification.UNKNOWN
    return Verdict(classification, round(score, 4), evidence)


def _older(
    latest: Detection, earliest: datetime, flags: set[str], distance_mpc: float | None, distance_source: str
) -> Verdict:
    """A source seen before the merger is not its counterpart: on a star of the catalog, a variable star; in a
    host galaxy of known distance (``distance_mpc``), a transient older than the event — a supernova when it is
    as bright as one there —; an active nucleus at a galaxy's centre; or else a variable of some kind."""
    seen = f"seen before the merger ({earliest:%Y-%m-%d %H:%M} UTC)"
    if "on_star" in flags:
        return Verdict(Classification.VARIABLE, 0.0, [seen + ", on a point source of the reference catalog"])
    if distance_mpc is not None and distance_mpc > 0:
        absolute = latest.mag - 5.0 * math.log10(distance_mpc * 1e5)
        if any(abs(absolute - mean) <= 2.0 * sigma for mean, sigma in SUPERNOVAE):
            return Verdict(Classification.SUPERNOVA, 0.0, [
                seen + f": older than the event, and at M = {absolute:.1f} ({distance_source}) as bright as a "
                "supernova"])  # fmt: skip
    if "nuclear" in flags:
        return Verdict(Classification.NUCLEAR, 0.0, [seen + ", at its host's centre: an active nucleus?"])
    return Verdict(Classification.VARIABLE, 0.0, [seen])


def _offset_arcsec(a: Detection, b: Detection) -> tuple[float, float]:
    """(east, north) of ``b`` from ``a``, arcsec."""
    east = (b.ra_deg - a.ra_deg + 180.0) % 360.0 - 180.0
    return east * math.cos(math.radians(a.dec_deg)) * 3600.0, (b.dec_deg - a.dec_deg) * 3600.0


def _position_error_arcsec(d: Detection) -> float:
    return math.hypot(ASTROMETRY_FLOOR_ARCSEC, POSITION_PER_MAG_ERR * (d.mag_err if math.isfinite(d.mag_err) else 0.3))


def _motion(detections: list[Detection]) -> str | None:
    """Why its detections show it moving (the largest offset from the first, beyond ``MOVED_ARCSEC`` and
    ``MOVED_SIGMAS`` of both positions' errors), or None."""
    first = detections[0]
    for d in detections[1:]:
        moved = math.hypot(*_offset_arcsec(first, d))
        error = math.hypot(_position_error_arcsec(first), _position_error_arcsec(d))
        if moved > max(MOVED_ARCSEC, MOVED_SIGMAS * error):
            minutes = (d.time - first.time).total_seconds() / 60.0
            rate = f', {moved / minutes:.2f}"/min' if minutes > 0 else ""
            return f'moved {moved:.2f}" (± {error:.2f}") in {minutes:.1f} min{rate}'
    return None


def on_track(mover: list[Detection], detections: list[Detection]) -> bool:
    """Whether every one of ``detections`` lies on the straight track a moving source's detections (``mover``,
    at least two at different times) extrapolate to, within ``TRACK_TOLERANCE_ARCSEC`` and a tenth of the way:
    the same asteroid, seen again as a new candidate."""
    mover = sorted(mover, key=lambda d: d.time)
    first, last = mover[0], mover[-1]
    span = (last.time - first.time).total_seconds()
    if span <= 0 or not detections:
        return False
    east, north = _offset_arcsec(first, last)
    for d in detections:
        fraction = (d.time - first.time).total_seconds() / span
        seen = _offset_arcsec(first, d)
        miss = math.hypot(seen[0] - fraction * east, seen[1] - fraction * north)
        if miss > TRACK_TOLERANCE_ARCSEC + 0.1 * math.hypot(fraction * east, fraction * north):
            return False
    return True


def _rate(detections: list[Detection]) -> tuple[float, float, datetime, datetime, str] | None:
    """The fastest-sampled filter's change (mag/day) between its first and last detection, with its error;
    None when no filter has two detections at least an hour apart."""
    best = None
    for band in {d.filter for d in detections}:
        points = [d for d in detections if d.filter == band]
        span = (points[-1].time - points[0].time).total_seconds() / 86400.0
        if len(points) < 2 or span < 1.0 / 24.0:
            continue
        rate = (points[-1].mag - points[0].mag) / span
        error = math.hypot(points[-1].mag_err, points[0].mag_err) / span
        if best is None or error < best[1]:
            best = (rate, error, points[0].time, points[-1].time, band)
    return best


def _model_rate(band: str, first: datetime, last: datetime, merger: datetime, distance_mpc: float) -> float | None:
    start = kilonova_mag(band, (first - merger).total_seconds() / 86400.0, distance_mpc)
    end = kilonova_mag(band, (last - merger).total_seconds() / 86400.0, distance_mpc)
    if start is None or end is None:
        return None
    return (end - start) / ((last - first).total_seconds() / 86400.0)


def _colour(detections: list[Detection], merger: datetime, distance_mpc: float) -> tuple[float, float, str] | None:
    """The colour of the last pair of detections in two filters taken within ``SAME_TIME_DAYS``, and the
    kilonova's then (bluer filter first)."""
    order = "ugrizy"
    for later in reversed(detections):
        for earlier in reversed(detections):
            if earlier.filter == later.filter or earlier.filter not in order or later.filter not in order:
                continue
            if abs((later.time - earlier.time).total_seconds()) / 86400.0 > SAME_TIME_DAYS:
                continue
            blue, red = sorted((earlier, later), key=lambda d: order.index(d.filter))
            days = (max(blue.time, red.time) - merger).total_seconds() / 86400.0
            model_blue, model_red = (
                kilonova_mag(blue.filter, days, distance_mpc),
                kilonova_mag(red.filter, days, distance_mpc),
            )
            if model_blue is None or model_red is None:
                continue
            return blue.mag - red.mag, model_blue - model_red, f"{blue.filter}-{red.filter}"
    return None
