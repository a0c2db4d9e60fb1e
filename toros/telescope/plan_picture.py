"""The night plan as a picture: the whole night from sunset to sunrise, what was observed (from the journal),
what is planned and what still waits, a line for now, the twilight limits and the Moon.

``night_figure`` builds the figure (the tests read its lines and legend), ``draw_night`` writes it as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import astropy.units as u
import numpy as np
from astropy.time import Time

from toros.floor.astronomy import night_times, sky_grid
from toros.floor.site import Constraints, Site
from toros.runtime.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from toros.telescope.scheduler import Plan, PlanTarget

STEP_MINUTES = 5.0
MARGIN = timedelta(minutes=30)  # of daylight shown before sunset and after sunrise
LABELLED_BLOCKS = 40
DRAWN_BLOCKS = 200
LISTED_WAITING = 8


@dataclass(frozen=True)
class Observation:
    """A target observed for a while: a block of the night as it really happened."""

    name: str
    ra_deg: float
    dec_deg: float
    start: datetime
    end: datetime
    frames: int

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "ra_deg": self.ra_deg,
            "dec_deg": self.dec_deg,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "frames": self.frames,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observation:
        return cls(
            str(data["name"]),
            float(data["ra_deg"]),
            float(data["dec_deg"]),
            datetime.fromisoformat(str(data["start"])),
            datetime.fromisoformat(str(data["end"])),
            int(data["frames"]),
        )


def _night_span(site: Site, night: date, constraints: Constraints) -> tuple[datetime, datetime]:
    times = night_times(site, night, constraints.twilight_sun_altitude_deg)
    noon = datetime.combine(night, time(12), UTC) - timedelta(hours=site.longitude / 15.0)
    start = times.sunset - MARGIN if times.sunset else noon
    end = times.sunrise + MARGIN if times.sunrise else noon + timedelta(days=1)
    return start, end


def night_figure(
    plan: Plan,
    targets: list[PlanTarget],
    site: Site,
    constraints: Constraints,
    observed: Sequence[Observation] = (),
    now: datetime | None = None,
) -> Figure:
    """The figure of the whole night (see the module's docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    night = date.fromisoformat(plan.night)
    start, end = _night_span(site, night, constraints)
    count = int((end - start).total_seconds() // (STEP_MINUTES * 60)) + 1
    times = Time(start) + np.arange(count) * STEP_MINUTES * u.min
    hours = (times.unix - times.unix[0]) / 3600.0
    by_key = {t.key: t for t in targets}
    waiting = [t for t in targets if t.key in plan.crowded_out]
    blocks = plan.blocks[:DRAWN_BLOCKS]
    positions = [(o.ra_deg, o.dec_deg) for o in observed] + [(b.ra_deg, b.dec_deg) for b in blocks]
    grid = sky_grid(
        site,
        np.array([p[0] for p in positions] or [0.0]),
        np.array([p[1] for p in positions] or [0.0]),
        times,
    )

    def at(moment: datetime) -> float:
        return float(moment.timestamp() - times.unix[0]) / 3600.0

    figure = Figure(figsize=(12, 6.5), dpi=100)
    axes = figure.add_subplot()
    made = f", made {plan.made:%H:%M} UTC" if plan.made else ""
    axes.set_title(
        f"Night {plan.night}{made}: {len(observed)} observed, {len(plan.blocks)} planned, "
        f"{len(waiting)} waiting, {len(plan.unobservable) - len(waiting)} not observable"
    )
    axes.set_ylabel("altitude [deg]")
    axes.set_xlabel("UTC")
    axes.set_ylim(0, 90)
    axes.set_xlim(0, hours[-1])

    # Twilight: shaded where the Sun is above the constraint's twilight altitude; its limits as lines.
    twilight = grid.sun_altitude >= constraints.twilight_sun_altitude_deg
    axes.fill_between(hours, 0, 90, where=twilight, color="0.85", linewidth=0, label="twilight and day")
    times_of_night = night_times(site, night, constraints.twilight_sun_altitude_deg)
    for moment, name in ((times_of_night.dusk, "dusk"), (times_of_night.dawn, "dawn")):
        if moment is not None:
            axes.axvline(at(moment), color="0.4", linestyle="--", linewidth=1)
            axes.annotate(f"{name} {moment:%H:%M}", (at(moment), 88), fontsize=7, rotation=90, va="top", ha="right")
    axes.axhline(constraints.min_altitude_deg, color="0.5", linestyle=":", linewidth=1)

    moon_up = grid.moon_altitude > 0
    if moon_up.any():
        from astroplan import moon_illumination

        lit = float(moon_illumination(times[count // 2]))
        axes.plot(hours, np.where(moon_up, grid.moon_altitude, np.nan), color="goldenrod", linestyle="-.",
                  linewidth=1.5, label=f"Moon ({lit:.0%} lit)")  # fmt: skip

    tab10 = matplotlib.colormaps["tab10"]
    colors = [tab10(i) for i in range(10) if i not in (2, 3)]  # green: observed; red: now

    def along(first: datetime, last: datetime) -> np.ndarray:
        return np.asarray((times.unix >= first.timestamp() - 60 * STEP_MINUTES) & (times.unix <= last.timestamp() + 1))

    for n, observation in enumerate(observed):
        inside = along(observation.start, observation.end)
        axes.plot(hours, grid.altitude[n], color="seagreen", alpha=0.25, linewidth=0.8)
        axes.plot(hours[inside], grid.altitude[n][inside], color="seagreen", linewidth=4,
                  label="observed" if n == 0 else None)  # fmt: skip
        _label(axes, hours, grid.altitude[n], inside, f"{observation.name} ({observation.frames})")
    for k, block in enumerate(blocks):
        n = len(observed) + k
        color = colors[k % len(colors)]
        inside = along(block.start, block.end)
        axes.plot(hours, grid.altitude[n], color=color, alpha=0.3, linewidth=0.8)
        axes.plot(hours[inside], grid.altitude[n][inside], color=color, linewidth=3,
                  label="planned" if k == 0 else None)  # fmt: skip
        if k < LABELLED_BLOCKS:
            _label(axes, hours, grid.altitude[n], inside, by_key[block.key].name if block.key in by_key else block.name)
    if now is not None and 0 <= at(now) <= hours[-1]:
        axes.axvline(at(now), color="crimson", linewidth=1.5, label=f"now {now:%H:%M}")
    if waiting:
        names = ", ".join(t.name for t in waiting[:LISTED_WAITING]) + (" …" if len(waiting) > LISTED_WAITING else "")
        axes.text(0.01, 0.02, f"waiting for free time: {names}", transform=axes.transAxes, fontsize=7)

    first_hour = (60 - start.minute) % 60 / 60.0 - start.second / 3600.0
    ticks = np.arange(first_hour, hours[-1] + 1e-9, 1.0)
    axes.set_xticks(ticks, [(start + timedelta(hours=float(h))).strftime("%H:%M") for h in ticks], fontsize=7)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=6, fontsize=8, frameon=False)
    figure.tight_layout()
    return figure


def _label(axes: Axes, hours: np.ndarray, altitude: np.ndarray, inside: np.ndarray, text: str) -> None:
    middle = np.flatnonzero(inside)
    if len(middle):
        m = middle[len(middle) // 2]
        axes.annotate(text[:20], (hours[m], altitude[m]), fontsize=6)


def draw_night(
    path: Path,
    plan: Plan,
    targets: list[PlanTarget],
    site: Site,
    constraints: Constraints,
    observed: Sequence[Observation] = (),
    now: datetime | None = None,
) -> None:
    """Writes the night's figure atomically as PNG."""
    figure = night_figure(plan, targets, site, constraints, observed, now)
    with atomic_write(path) as stream:
        figure.savefig(stream, format="png")
