"""Night plans: every block meets every constraint (checked independently with astroplan), priorities,
reasons for unobservable targets, the horizon, dispatch "now", and `toros plan`."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta

import astropy.units as u
import numpy as np
import pytest
from astroplan import (
    AirmassConstraint,
    AltitudeConstraint,
    AtNightConstraint,
    FixedTarget,
    MoonSeparationConstraint,
    Observer,
    moon_illumination,
)
from astropy.coordinates import SkyCoord, get_body
from astropy.time import Time
from support import toros_cli

from toros.floor.astronomy import location_of, night_times
from toros.floor.site import MACON, Constraints
from toros.telescope.scheduler import PlanTarget, best_now, make_plan

# astroplan's own MoonSeparationConstraint warns about the direction of its separation; it is the reference here.
pytestmark = pytest.mark.filterwarnings("ignore::astropy.coordinates.NonRotationTransformationWarning")

NIGHT = date(2026, 11, 22)
CONSTRAINTS = Constraints()


def random_targets(count: int, seed: int = 3, duration_s: float = 600.0) -> list[PlanTarget]:
    rng = np.random.default_rng(seed)
    ra = rng.uniform(0, 360, count)
    dec = np.rad2deg(np.arcsin(rng.uniform(-1, 0.5, count)))
    return [
        PlanTarget(
            f"t{i}", f"target {i}", float(ra[i]), float(dec[i]), duration_s, int(i % 7 == 0), float(rng.uniform(0, 1))
        )
        for i in range(count)
    ]


def astroplan_violations(blocks, constraints: Constraints) -> list[str]:
    """Checks blocks at their start, end and every minute between with astroplan's own constraints."""
    observer = Observer(location=location_of(MACON))
    checks = [
        AltitudeConstraint(min=constraints.min_altitude_deg * u.deg),
        AirmassConstraint(max=constraints.max_airmass),
        AtNightConstraint(max_solar_altitude=constraints.twilight_sun_altitude_deg * u.deg),
        MoonSeparationConstraint(min=constraints.min_moon_separation_deg * u.deg),
    ]
    bad = []
    for block in blocks:
        seconds = (block.end - block.start).total_seconds()
        times = Time(block.start) + np.append(np.arange(0, seconds, 60.0), seconds) * u.s
        target = FixedTarget(SkyCoord(block.ra_deg * u.deg, block.dec_deg * u.deg))
        for constraint in checks:
            ok = constraint(observer, target, times=times)
            if not np.all(ok):
                bad.append(f"{block.name}: {type(constraint).__name__}")
    return bad


def test_night_times_agree_with_astroplan():
    times = night_times(MACON, NIGHT, -12.0)
    observer = Observer(location=location_of(MACON))
    noon = Time(datetime(2026, 11, 22, 16, 30, tzinfo=UTC))
    dusk = observer.twilight_evening_nautical(noon, which="next").to_datetime(UTC)
    dawn = observer.twilight_morning_nautical(noon, which="next").to_datetime(UTC)
    assert abs((times.dusk - dusk).total_seconds()) < 30
    assert abs((times.dawn - dawn).total_seconds()) < 30
    assert times.sunset < times.dusk < times.dawn < times.sunrise


def test_every_block_meets_every_constraint_and_none_overlap():
    targets = random_targets(150)
    plan, _ = make_plan(targets, MACON, CONSTRAINTS, NIGHT)
    assert len(plan.blocks) > 20
    assert astroplan_violations(plan.blocks, CONSTRAINTS) == []
    for before, after in itertools.pairwise(plan.blocks):
        assert before.end <= after.start
    assert all(plan.start <= b.start and b.end <= plan.end for b in plan.blocks)
    assert len(plan.blocks) + len(plan.unobservable) == len(targets)


def test_alert_targets_come_before_routine_ones_when_the_night_is_full():
    window = night_times(MACON, NIGHT, CONSTRAINTS.twilight_sun_altitude_deg)
    most_of_the_night = 0.6 * (window.dawn - window.dusk).total_seconds()
    routine = PlanTarget("routine", "routine", 30.0, -40.0, most_of_the_night, priority=0, score=1000.0)
    alert = PlanTarget("alert", "alert", 31.0, -41.0, most_of_the_night, priority=1, score=0.01)
    plan, _ = make_plan([routine, alert], MACON, CONSTRAINTS, NIGHT)
    assert [b.key for b in plan.blocks] == ["alert"]
    assert plan.unobservable == {"routine": "no free time left in the night"}
    many, _ = make_plan(random_targets(200, duration_s=1800.0), MACON, CONSTRAINTS, NIGHT)
    assert "no free time left in the night" in many.unobservable.values()
    assert astroplan_violations(many.blocks, CONSTRAINTS) == []


def test_unobservable_targets_are_reported_with_the_reason():
    moon = get_body("moon", Time(datetime(2026, 11, 23, 3, 0, tzinfo=UTC)))  # geocentric direction
    targets = [
        PlanTarget("polaris", "Polaris", 37.95, 89.26, 300.0),
        PlanTarget("moon", "near the Moon", float(moon.ra.deg), float(moon.dec.deg) + 1.0, 300.0),
        PlanTarget("long", "too long", 11.888, -25.288, 20 * 3600.0),
        PlanTarget("ok", "NGC 253", 11.888, -25.288, 300.0),
    ]
    plan, _ = make_plan(targets, MACON, CONSTRAINTS, NIGHT)
    assert plan.unobservable["polaris"] == "never above the altitude, airmass or horizon limit while it is dark"
    assert plan.unobservable["moon"] == "too close to the Moon whenever it is high enough"
    assert plan.unobservable["long"].startswith("needs 20.0 h, longer than the night")
    assert [b.key for b in plan.blocks] == ["ok"]


def test_the_local_horizon_is_a_constraint():
    target = PlanTarget("ngc253", "NGC 253", 11.888, -25.288, 600.0)
    open_sky, _ = make_plan([target], MACON, CONSTRAINTS, NIGHT)
    assert open_sky.blocks
    wall = Constraints(horizon=((0.0, 89.9), (359.0, 89.9)))  # a mountain all around (NGC 253 culminates at 89.3)
    blocked, _ = make_plan([target], MACON, wall, NIGHT)
    assert not blocked.blocks and "horizon" in blocked.unobservable["ngc253"]


def test_best_now_prefers_an_observable_alert_target():
    when = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    routine = PlanTarget("routine", "routine", 11.888, -25.288, 600.0, priority=0, score=100.0)
    alert = PlanTarget("alert", "alert", 30.0, -35.0, 600.0, priority=1, score=0.1)
    never = PlanTarget("never", "never", 37.95, 89.26, 600.0, priority=1, score=9.0)
    index, why = best_now([routine, alert, never], MACON, CONSTRAINTS, when)
    assert index == 1
    assert why == {"never": "below the altitude, airmass or horizon limit"}
    index, why = best_now([routine], MACON, CONSTRAINTS, datetime(2026, 11, 22, 20, 0, tzinfo=UTC))
    assert index is None and why["routine"] == "not dark enough for the whole block"


def test_replanning_during_the_night_starts_no_block_in_the_past():
    since = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)
    plan, _ = make_plan(random_targets(60), MACON, CONSTRAINTS, NIGHT, since=since)
    assert plan.blocks and all(b.start >= since for b in plan.blocks)


def test_toros_plan_writes_the_plan_and_its_chart(tmp_path):
    csv = tmp_path / "targets.csv"
    csv.write_text(
        "name,ra_deg,dec_deg,exposure_count,priority\nNGC 253,11.888,-25.288,3,1\nPolaris,37.95,89.26,1,0\nLMC,80.9,-69.75,2,0\n"
    )
    out = tmp_path / "out" / "plan.json"
    result = toros_cli("plan", "--targets", str(csv), "--night", "2026-11-22", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "2 of 3 targets planned" in result.stdout
    assert "not observable: Polaris (line 3): never above the altitude" in result.stdout
    plan = json.loads(out.read_text())
    assert [b["name"] for b in plan["blocks"]] == ["NGC 253", "LMC"]
    assert set(plan["blocks"][0]) >= {"name", "ra_deg", "dec_deg", "start", "end"}
    assert plan["unobservable"][0]["name"] == "Polaris"
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    start = datetime.fromisoformat(plan["blocks"][0]["start"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(plan["blocks"][0]["end"].replace("Z", "+00:00"))
    assert end - start == timedelta(seconds=30 + 3 * (60 + 5))


@pytest.mark.parametrize(
    "content, message",
    [
        ("name,ra_deg,dec_deg\nx,10,95\n", "line 2.dec_deg: must be in [-90, 90], got 95"),
        ("name,ra\nx,10\n", "missing column(s) ra_deg, dec_deg"),
        ("name,ra_deg,dec_deg\nx,ten,5\n", "line 2: could not convert string to float: 'ten'"),
        ("", "no targets"),
    ],
)
def test_toros_plan_rejects_a_bad_target_file_in_one_line(tmp_path, content, message):
    csv = tmp_path / "targets.csv"
    csv.write_text(content)
    result = toros_cli("plan", "--targets", str(csv), "--night", "2026-11-22", "--out", str(tmp_path / "p.json"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_plan_picture_tells_the_whole_night():
    from toros.telescope.plan_picture import Observation, night_figure

    now = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    targets = random_targets(60, duration_s=3600.0)  # more than the night holds: some wait for free time
    plan, _ = make_plan(targets, MACON, CONSTRAINTS, NIGHT, since=now)
    plan.made = now
    observed = [Observation("NGC 253", 11.888, -25.288, now - timedelta(hours=2), now - timedelta(hours=1.5), 6)]
    figure = night_figure(plan, targets, MACON, CONSTRAINTS, observed, now)
    axes = figure.axes[0]
    labels = axes.get_legend_handles_labels()[1]
    times = night_times(MACON, NIGHT, CONSTRAINTS.twilight_sun_altitude_deg)
    middle = times.sunset + (times.sunrise - times.sunset) / 2
    lit = moon_illumination(Time(middle))  # near full: 2026-11-24
    assert labels == ["twilight and day", f"Moon ({lit:.0%} lit)", "observed", "planned", "now 03:00"]
    assert axes.get_title().startswith(f"Night 2026-11-22, made 03:00 UTC: 1 observed, {len(plan.blocks)} planned")
    texts = [t.get_text() for t in axes.texts]
    assert f"dusk {times.dusk:%H:%M}" in texts and f"dawn {times.dawn:%H:%M}" in texts and "NGC 253 (6)" in texts
    assert any(t.startswith("waiting for free time: target ") for t in texts) and plan.crowded_out
    # The whole night is shown (sunset to sunrise, half an hour either side); the observed block is drawn
    # from 1:00 to 1:30 UTC on NGC 253's altitude curve, the now line at 3:00.
    start, end = axes.get_xlim()
    assert end - start == pytest.approx((times.sunrise - times.sunset).total_seconds() / 3600 + 1, abs=5 / 60)
    hours_since = lambda moment: (moment - times.sunset).total_seconds() / 3600 + 0.5  # noqa: E731
    observed_line = next(line for line in axes.get_lines() if line.get_label() == "observed")
    x, y = observed_line.get_xdata(), observed_line.get_ydata()
    assert x[0] == pytest.approx(hours_since(now - timedelta(hours=2)), abs=10 / 60)
    assert x[-1] == pytest.approx(hours_since(now - timedelta(hours=1.5)), abs=5 / 60)
    ngc253 = SkyCoord(11.888 * u.deg, -25.288 * u.deg)
    observer = Observer(location=location_of(MACON))
    assert y[-1] == pytest.approx(observer.altaz(Time(now - timedelta(hours=1.5)), ngc253).alt.deg, abs=1.0)
    now_line = next(line for line in axes.get_lines() if line.get_label() == "now 03:00")
    assert now_line.get_xdata()[0] == pytest.approx(hours_since(now), abs=1e-6)
