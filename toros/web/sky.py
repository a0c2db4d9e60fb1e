"""The alerts page's sky: an alert's sky view (written by the alert daemon when it relayed the targets), what
has become of each target since (from the node's telescope and preprocessor), and the Sun, the Moon and the
site's horizon at the node's clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import get_body
from astropy.time import Time

from toros.floor.astronomy import location_of, minimum_altitude
from toros.floor.site import Constraints, Site
from toros.generated import toros_pb2 as pb


class TargetState(StrEnum):
    """Where a relayed target is in its life, in the order it goes (the page colours them so)."""

    RANKED = "ranked"  # chosen for a site, not (yet) accepted by its telescope
    RELAYED = "relayed"  # accepted by the telescope, not in tonight's plan (yet)
    PLANNED = "planned"
    OBSERVING = "observing"
    OBSERVED = "observed"
    CALIBRATED = "calibrated"
    UNOBSERVABLE = "unobservable"


@dataclass
class Progress:
    """What the node's telescope and preprocessor say about one relayed target list."""

    order: pb.WorkOrderStatus | None  # None: not on this node's telescope
    now: datetime
    blocks: dict[str, tuple[str, str]] = field(default_factory=dict)  # plan key -> (start, end), ISO UTC
    unobservable: dict[str, str] = field(default_factory=dict)  # plan key -> reason
    frames: dict[str, list[int]] = field(default_factory=dict)  # target name -> its image_ready sequences
    calibrated: set[int] = field(default_factory=set)  # image_ready sequences calibrated by the preprocessor


_FINAL = {pb.WORK_ORDER_STATE_DONE, pb.WORK_ORDER_STATE_FAILED, pb.WORK_ORDER_STATE_CANCELLED}


def target_state(
    index: int, name: str, count: int, accepted: bool, progress: Progress | None
) -> tuple[TargetState, str]:
    """One target's state and a reason for people (shown on hover)."""
    if not accepted:
        return TargetState.RANKED, "not accepted by its telescope"
    if progress is None or progress.order is None:
        return TargetState.RELAYED, "relayed to a telescope of another node"
    key = f"{progress.order.id}#{index}"
    frames = progress.frames.get(name, [])
    calibrated = sum(sequence in progress.calibrated for sequence in frames)
    if frames and len(frames) >= count and calibrated >= len(frames):
        return TargetState.CALIBRATED, f"{len(frames)} frames, all calibrated"
    if len(frames) >= count:
        return TargetState.OBSERVED, f"{len(frames)} frames, {calibrated} calibrated"
    if frames:
        return TargetState.OBSERVING, f"{len(frames)} of {count} frames"
    if key in progress.unobservable:
        return TargetState.UNOBSERVABLE, progress.unobservable[key]
    if progress.order.state in _FINAL:
        state = pb.WorkOrderState.Name(progress.order.state).removeprefix("WORK_ORDER_STATE_").lower()
        return TargetState.UNOBSERVABLE, f"its work order is {state}: {progress.order.message}"
    if key in progress.blocks:
        start, end = progress.blocks[key]
        if start <= progress.now.isoformat().replace("+00:00", "Z") < end:
            return TargetState.OBSERVING, f"planned {start[11:16]}–{end[11:16]} UTC: now"
        return TargetState.PLANNED, f"planned {start[11:16]}–{end[11:16]} UTC"
    return TargetState.RELAYED, "accepted, waiting for a plan"


def with_states(view: dict[str, Any], progress: dict[str, Progress | None]) -> dict[str, Any]:
    """The sky view with a ``state`` and ``reason`` on every site's target (progress: by site name)."""
    count = int(view.get("exposure", {}).get("exposure_count", 1))
    for site in view.get("sites", []):
        for index, target in enumerate(site["targets"]):
            state, reason = target_state(index, target["name"], count, site["accepted"], progress.get(site["name"]))
            target.update(state=state.value, reason=reason)
    return view


def sky_now(site: Site, constraints: Constraints, when: datetime) -> dict[str, Any]:
    """The Sun, the Moon, the zenith and the lowest altitude allowed at each azimuth (the horizon a target
    must clear), as RA/Dec in degrees at ``when``."""
    moment = Time(when)
    location = location_of(site)
    bodies = {name: get_body(name, moment, location).icrs for name in ("sun", "moon")}
    latitude = np.deg2rad(site.latitude)
    azimuth = np.arange(0.0, 361.0, 3.0)
    altitude = np.deg2rad(minimum_altitude(constraints, azimuth))
    a = np.deg2rad(azimuth)
    sin_dec = np.sin(latitude) * np.sin(altitude) + np.cos(latitude) * np.cos(altitude) * np.cos(a)
    dec = np.arcsin(np.clip(sin_dec, -1, 1))
    hour_angle = np.arctan2(
        -np.sin(a) * np.cos(altitude),
        np.sin(altitude) * np.cos(latitude) - np.cos(altitude) * np.sin(latitude) * np.cos(a),
    )
    lst = moment.sidereal_time("apparent", longitude=site.longitude * u.deg).to_value(u.deg)
    ra = np.remainder(lst - np.rad2deg(hour_angle), 360.0)
    return {
        "time": when.isoformat(),
        "site": site.name,
        "sun": [round(float(bodies["sun"].ra.deg), 3), round(float(bodies["sun"].dec.deg), 3)],
        "moon": [round(float(bodies["moon"].ra.deg), 3), round(float(bodies["moon"].dec.deg), 3)],
        "zenith": [round(float(lst % 360.0), 3), site.latitude],
        "horizon": np.round(np.column_stack([ra, np.rad2deg(dec)]), 3).tolist(),
    }
