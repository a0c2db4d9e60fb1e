"""Scheduler benchmark: a night plan for 500 targets against astroplan's PriorityScheduler, same run.

Both get the same targets (random positions south of +30 deg), block durations (exposures, readout and
overhead), priorities, constraints (altitude >= 30 deg, airmass <= 2.5, the Sun below -12 deg, Moon
separation >= 20 deg), night (Macon, 2026-11-22) and time resolution. Every block of both plans is then
checked independently with astroplan's constraint objects at its start, its end and every minute between.

Target (issue 5): >= 50x faster than astroplan, with no block that breaks a constraint.
Usage: .venv/bin/python benchmarks/scheduler.py [--targets 500] [--resolution 120]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from datetime import date

import astropy.units as u
import numpy as np
from astroplan import (
    AirmassConstraint,
    AltitudeConstraint,
    AtNightConstraint,
    FixedTarget,
    MoonSeparationConstraint,
    Observer,
    ObservingBlock,
    PriorityScheduler,
    Schedule,
    Transitioner,
)
from astropy.coordinates import NonRotationTransformationWarning, SkyCoord
from astropy.time import Time

import toros.runtime.clock  # noqa: F401 - offline Earth-orientation tables, as the daemons use
from toros.floor.astronomy import location_of, night_times
from toros.floor.site import MACON, Constraints
from toros.telescope.scheduler import PlanTarget, make_plan

NIGHT = date(2026, 11, 22)


def astroplan_constraints(c: Constraints) -> list:
    return [
        AltitudeConstraint(min=c.min_altitude_deg * u.deg),
        AirmassConstraint(max=c.max_airmass),
        AtNightConstraint(max_solar_altitude=c.twilight_sun_altitude_deg * u.deg),
        MoonSeparationConstraint(min=c.min_moon_separation_deg * u.deg),
    ]


def violations(blocks: list[tuple[str, float, float, Time, Time]], observer: Observer, c: Constraints) -> list[str]:
    """(name, ra, dec, start, end) blocks that break a constraint at some minute."""
    bad = []
    for name, ra, dec, start, end in blocks:
        seconds = (end - start).to_value(u.s)
        times = start + np.append(np.arange(0.0, seconds, 60.0), seconds) * u.s
        target = FixedTarget(SkyCoord(ra * u.deg, dec * u.deg), name=name)
        for constraint in astroplan_constraints(c):
            if not np.all(constraint(observer, target, times=times)):
                bad.append(f"{name}: {type(constraint).__name__}")
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=500)
    parser.add_argument("--resolution", type=float, default=120.0, help="time grid of both schedulers, seconds")
    args = parser.parse_args()
    warnings.simplefilter("ignore", NonRotationTransformationWarning)  # astroplan's Moon constraint, every call

    rng = np.random.default_rng(2026)
    n = args.targets
    ra = rng.uniform(0.0, 360.0, n)
    dec = np.rad2deg(np.arcsin(rng.uniform(-1.0, 0.5, n)))
    frames = rng.choice([1, 2, 3], n) * (60.0 + 5.0) + 30.0  # frames of 60 s, 5 s readout, 30 s overhead
    # astroplan floors every block to a whole number of time steps (and fails on blocks that then abut: "block
    # already occupied"); both schedulers get blocks already rounded up to whole steps.
    durations = np.ceil(frames / args.resolution) * args.resolution
    rank = rng.permutation(n) + 1  # astroplan: 1 is the most important
    constraints = Constraints(time_step_s=args.resolution)
    times = night_times(MACON, NIGHT, constraints.twilight_sun_altitude_deg)
    observer = Observer(location=location_of(MACON))
    print(
        f"{n} targets, night {NIGHT} at Macon ({times.dusk:%H:%M}-{times.dawn:%H:%M} UTC), resolution {args.resolution:g} s, "
        f"{os.cpu_count()} CPUs"
    )

    night_times.cache_clear()  # the plan includes finding the night's twilight times
    ours = [
        PlanTarget(f"t{i}", f"t{i}", float(ra[i]), float(dec[i]), float(durations[i]), 0, float(n - rank[i]))
        for i in range(n)
    ]
    started = time.perf_counter()
    plan, _ = make_plan(ours, MACON, constraints, NIGHT)
    toros_seconds = time.perf_counter() - started

    blocks = [
        ObservingBlock(
            FixedTarget(SkyCoord(ra[i] * u.deg, dec[i] * u.deg), name=f"t{i}"), durations[i] * u.s, int(rank[i])
        )
        for i in range(n)
    ]
    scheduler = PriorityScheduler(
        constraints=astroplan_constraints(constraints),
        observer=observer,
        transitioner=Transitioner(slew_rate=None),
        time_resolution=args.resolution * u.s,
    )
    schedule = Schedule(Time(times.dusk), Time(times.dawn))
    started = time.perf_counter()
    scheduler(blocks, schedule)
    astroplan_seconds = time.perf_counter() - started
    scheduled = [b for b in schedule.observing_blocks]

    ours_blocks = [(b.name, b.ra_deg, b.dec_deg, Time(b.start), Time(b.end)) for b in plan.blocks]
    theirs_blocks = [(b.target.name, b.target.ra.deg, b.target.dec.deg, b.start_time, b.end_time) for b in scheduled]
    ours_bad = violations(ours_blocks, observer, constraints)
    theirs_bad = violations(theirs_blocks, observer, constraints)
    ours_hours = sum((b.end - b.start).total_seconds() for b in plan.blocks) / 3600
    theirs_hours = sum((b.end_time - b.start_time).to_value(u.h) for b in scheduled)

    print(
        f"toros     : {toros_seconds:8.3f} s, {len(plan.blocks):3d} blocks, {ours_hours:.2f} h planned, "
        f"{len(ours_bad)} blocks breaking a constraint"
    )
    print(
        f"astroplan : {astroplan_seconds:8.3f} s, {len(scheduled):3d} blocks, {theirs_hours:.2f} h planned, "
        f"{len(theirs_bad)} blocks breaking a constraint"
    )
    print(f"speed-up  : {astroplan_seconds / toros_seconds:.0f}x (target >= 50x, no block breaking a constraint)")
    for line in (ours_bad + [f"astroplan {b}" for b in theirs_bad])[:10]:
        print(f"  violation: {line}")


if __name__ == "__main__":
    main()
