"""Night plans and dispatch: which target to observe when, under the site's constraints.

Constraints (altitude, airmass, the Sun below the twilight altitude, Moon separation, the local horizon) are
evaluated once for all targets on a time grid (``astronomy.sky_grid``); a target's block may start at a grid
time when every grid time it spans satisfies them (with a small safety margin). The plan places targets in
order of priority (alert targets before routine ones, then by score), a routine target in the free slot where
it stands highest, an alert's target in the earliest (the transient fades); a target that cannot be placed
is reported with the reason. Dispatch asks the same question for "now": the best target that can be
observed from now to the end of its block.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.time import Time

from toros.floor.astronomy import SkyGrid, minimum_altitude, night_times, sky_grid
from toros.floor.site import Constraints, Site
from toros.runtime.files import atomic_write
from toros.telescope.plan_picture import Observation, draw_night
from toros.telescope.settings import TelescopeConfig

# Constraints are met with this margin (degrees) so that an independent check (astroplan, astropy's full
# transform) between grid points never finds a block a hair outside a limit.
MARGIN_DEG = 0.05


def block_seconds(frames: int, exposure_s: float, settings: TelescopeConfig) -> float:
    """How long observing a target takes: slew and settle, then each frame's exposure and readout."""
    return settings.targets.overhead_s + frames * (exposure_s + settings.camera.readout_s)


NO_FREE_TIME = "no free time left in the night"


@dataclass(frozen=True)
class PlanTarget:
    key: str  # unique within a plan (work order id and index)
    name: str
    ra_deg: float
    dec_deg: float
    duration_s: float  # exposures plus overheads
    priority: int = 0  # higher first: alert targets 1, routine 0
    score: float = 0.0


@dataclass(frozen=True)
class Block:
    key: str
    name: str
    ra_deg: float
    dec_deg: float
    start: datetime
    end: datetime


@dataclass
class Plan:
    night: str
    start: datetime | None
    end: datetime | None
    blocks: list[Block] = field(default_factory=list)
    unobservable: dict[str, str] = field(default_factory=dict)  # key -> reason
    # Keys of targets that could be observed tonight but found no free time among the others' blocks: they
    # may still be observed when the others are done.
    crowded_out: set[str] = field(default_factory=set)
    made: datetime | None = None  # when a daemon re-planned (None: planned ahead, e.g. by `toros plan`)

    def to_json(self, names: dict[str, str] | None = None, observed: Sequence[Observation] = ()) -> str:
        def moment(value: datetime | None) -> str | None:
            return value.isoformat().replace("+00:00", "Z") if value else None

        return json.dumps(
            {
                "night": self.night,
                "made": moment(self.made),
                "start": moment(self.start),
                "end": moment(self.end),
                "blocks": [
                    {
                        "name": b.name,
                        "ra_deg": b.ra_deg,
                        "dec_deg": b.dec_deg,
                        "start": moment(b.start),
                        "end": moment(b.end),
                        "key": b.key,
                    }
                    for b in self.blocks
                ],
                "unobservable": [
                    {"key": key, "name": (names or {}).get(key, key), "reason": reason}
                    for key, reason in self.unobservable.items()
                ],
                "observed": [o.to_dict() for o in observed],
            },
            indent=2,
        )


@dataclass
class Visibility:
    """Per target and grid time: whether every constraint holds, and why not."""

    grid: SkyGrid
    ok: np.ndarray  # N × T
    low: np.ndarray  # N × T: below altitude, airmass or horizon limit
    moon: np.ndarray  # N × T: too close to the Moon
    dark: np.ndarray  # T: the Sun is low enough


def visibility(site: Site, constraints: Constraints, ra: np.ndarray, dec: np.ndarray, times: Time) -> Visibility:
    grid = sky_grid(site, ra, dec, times)
    low = grid.altitude < minimum_altitude(constraints, grid.azimuth) + MARGIN_DEG
    moon = grid.moon_separation < constraints.min_moon_separation_deg + MARGIN_DEG
    dark = grid.sun_altitude < constraints.twilight_sun_altitude_deg - MARGIN_DEG
    return Visibility(grid, ~low & ~moon & dark[None, :], low, moon, dark)


def _block_fits(ok: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """fits[n, i]: target n's block, ``steps[n]`` grid intervals long, may start at grid time i."""
    bad = np.concatenate([np.zeros((ok.shape[0], 1), dtype=np.int32), np.cumsum(~ok, axis=1, dtype=np.int32)], axis=1)
    count = ok.shape[1]
    start = np.arange(count)[None, :]
    stop = np.minimum(start + steps[:, None] + 1, count)  # exclusive index of the last grid time spanned
    inside = (start + steps[:, None]) < count
    return np.asarray(inside & (np.take_along_axis(bad, stop, axis=1) - bad[:, :count] == 0))


def _reason(v: Visibility, n: int, fits_any: bool, duration_s: float, window_s: float) -> str | None:
    """Why a target cannot be observed tonight at all; None when only the other targets' blocks are in the way."""
    if not v.dark.any():
        return "no dark time this night"
    if duration_s > window_s:
        return f"needs {duration_s / 3600:.1f} h, longer than the night ({window_s / 3600:.1f} h)"
    dark = v.dark
    if v.low[n][dark].all():
        return "never above the altitude, airmass or horizon limit while it is dark"
    if (v.low[n] | v.moon[n])[dark].all() and not v.low[n][dark].all():
        return "too close to the Moon whenever it is high enough"
    if not fits_any:
        return "not observable long enough for its exposures"
    return None


def make_plan(
    targets: list[PlanTarget], site: Site, constraints: Constraints, night: date, *, since: datetime | None = None
) -> tuple[Plan, Visibility | None]:
    """The night plan: blocks in time order and the targets that cannot be observed, with reasons.

    ``since`` (e.g. now, when re-planning during the night) keeps blocks from starting before it."""
    times_of_night = night_times(site, night, constraints.twilight_sun_altitude_deg)
    if not times_of_night.has_dark_time:
        return Plan(night.isoformat(), None, None, [], {t.key: "no dark time this night" for t in targets}), None
    start, end = times_of_night.dusk, times_of_night.dawn
    assert start is not None and end is not None, "a night with dark time has a dusk and a dawn"
    if since is not None and since > start:
        start = min(since, end)
    plan = Plan(night.isoformat(), start, end)
    if not targets:
        return plan, None
    step = constraints.time_step_s
    count = int(math.floor((end - start).total_seconds() / step)) + 1
    times = Time(start) + np.arange(count) * step * u.s
    ra = np.array([t.ra_deg for t in targets])
    dec = np.array([t.dec_deg for t in targets])
    v = visibility(site, constraints, ra, dec, times)
    durations = np.array([t.duration_s for t in targets])
    steps = np.ceil(durations / step).astype(np.int64)
    fits = _block_fits(v.ok, steps)
    free = np.ones(count, dtype=bool)
    free_prefix = np.zeros(count + 1, dtype=np.int32)
    order = sorted(range(len(targets)), key=lambda n: (-targets[n].priority, -targets[n].score, n))
    window_s = (end - start).total_seconds()
    blocks = []
    for n in order:
        np.cumsum(~free, out=free_prefix[1:])
        span = steps[n]
        starts = np.arange(count)
        # A block occupies the grid intervals [i, i + span): those must be free.
        last = np.minimum(starts + span, count)
        slot_free = (free_prefix[last] - free_prefix[starts] == 0) & (starts + span < count)
        candidates = np.flatnonzero(fits[n] & slot_free)
        if len(candidates) == 0:
            reason = _reason(v, n, bool(fits[n].any()), targets[n].duration_s, window_s)
            plan.unobservable[targets[n].key] = reason or NO_FREE_TIME
            if reason is None:
                plan.crowded_out.add(targets[n].key)
            continue
        if targets[n].priority > 0:
            best = int(candidates[0])  # an alert's target: as soon as possible, the transient fades
        else:
            middle = np.minimum(candidates + span // 2, count - 1)
            best = int(candidates[np.argmax(v.grid.altitude[n, middle])])
        free[best : best + span] = False
        t = targets[n]
        block_start = start + timedelta(seconds=best * step)
        blocks.append(
            Block(t.key, t.name, t.ra_deg, t.dec_deg, block_start, block_start + timedelta(seconds=t.duration_s))
        )
    plan.blocks = sorted(blocks, key=lambda b: b.start)
    return plan, v


def best_now(
    targets: list[PlanTarget], site: Site, constraints: Constraints, now: datetime
) -> tuple[int | None, dict[str, str]]:
    """The index of the best target to start now (highest priority, then score), and why the others can't."""
    if not targets:
        return None, {}
    step = constraints.time_step_s
    longest = max(t.duration_s for t in targets)
    count = int(math.ceil(longest / step)) + 1
    times = Time(now) + np.arange(count) * step * u.s
    ra = np.array([t.ra_deg for t in targets])
    dec = np.array([t.dec_deg for t in targets])
    v = visibility(site, constraints, ra, dec, times)
    steps = np.ceil(np.array([t.duration_s for t in targets]) / step).astype(np.int64)
    can = np.array([v.ok[n, : steps[n] + 1].all() for n in range(len(targets))])
    why = {}
    for n in np.flatnonzero(~can):
        if not v.dark[: steps[n] + 1].all():
            why[targets[n].key] = "not dark enough for the whole block"
        elif v.low[n, : steps[n] + 1].any():
            why[targets[n].key] = "below the altitude, airmass or horizon limit"
        else:
            why[targets[n].key] = "too close to the Moon"
    candidates = np.flatnonzero(can)
    if len(candidates) == 0:
        return None, why
    best = min(candidates, key=lambda n: (-targets[n].priority, -targets[n].score, n))
    return int(best), why


def write_plan(
    plan: Plan,
    targets: list[PlanTarget],
    json_path: Path,
    png_path: Path,
    config: TelescopeConfig,
    observed: Sequence[Observation] = (),
    now: datetime | None = None,
) -> None:
    """The plan as JSON, and the whole night as a picture (``plan_picture``)."""
    names = {t.key: t.name for t in targets}
    with atomic_write(json_path) as stream:
        stream.write(plan.to_json(names, observed).encode())
    draw_night(png_path, plan, targets, config.site, config.constraints, observed, now)
