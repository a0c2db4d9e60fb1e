"""A campaign night from a scenario file (``toros demo --scenario FILE``), set up before any daemon starts.

A scenario (YAML, ``Scenario``) names the simulated clock's start, the sites, the merger, the notice and what
the simulated sky holds (a kilonova beside one of the ranked galaxies and the decoys a real night has). Setting
it up does what a network would have done before the alert:

* one node per site (a telescope and its preprocessor; the first site's node also runs the alert robot, which
  plans for every site), sharing one simulated clock (``clock.shared_from``), one synthetic galaxy catalog and
  one simulated sky;
* the notice with its times moved to the merger;
* the event ranked and planned as the alert robot will (the same code, the same catalog), so that the
  transients are placed where the scenario says (``host: "rank:2"``: beside the second-ranked galaxy);
* routine monitoring: every site's library holds pre-event frames of the fields that hold the event's
  ``references.ranked`` best-ranked galaxies, in the first epoch's filter and the second look's, rendered by
  the simulated sky at ``references.epoch`` and made science-ready by the preprocessor's own science step;
  later visits (``references.visits``) are left for the preprocessor to search, as routine monitoring is, so
  that a source that varies shows up before the merger.

``truth.json`` beside the configs keeps what was placed where and what it should be classified as.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from toros.alert.coordination import Galaxies, Pointing, plan_first_epoch, pool_size
from toros.alert.notices import BadNotice, parse_notice
from toros.alert.ranking import rank
from toros.alert.skymap import read_skymap
from toros.config import Config, load_config
from toros.floor.catalogs import GalaxyIndex
from toros.floor.sky_geometry import separation_deg
from toros.runtime.config import Section, describe_error
from toros.simulation.galaxies import write_glade_plus
from toros.simulation.sky import Conditions, SimulatedSky, StarCatalog, write_calibrated_frame

SHIPPED = Path(__file__).resolve().parent / "data" / "scenarios" / "campaign.yaml"
MAX_SCENARIO_BYTES = 1024 * 1024
CATALOG = "galaxies-glade+.txt"
REFERENCE_CATALOG = "reference-stars.csv"
TRUTH = "truth.json"
REFERENCE_MARGIN_DEG = 0.1  # beyond a frame's half-diagonal: the mount's pointing error and then some
EXPECTED = {
    "kilonova": "kilonova-like",
    "supernova_ia": "supernova-like",
    "supernova_ii": "supernova-like",
    "asteroid": "moving",
    "variable": "variable",
}


class ScenarioError(Exception):
    """A scenario that cannot be run, in one line naming the file and the key."""


class ScenarioSite(Section):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=360)
    elevation: float = Field(default=0.0, ge=-500, le=9000)
    field_of_view_deg: float | tuple[float, float] | None = Field(
        default=None, description="the planner's field: at most what the simulated camera covers"
    )
    filters: tuple[str, ...] = ("r", "g")


class ReferenceVisits(Section):
    """Routine monitoring before the event: the first visit fills each site's reference library."""

    epoch: datetime
    ranked: int = Field(default=20, ge=1, le=200, description="fields of this many best-ranked galaxies")
    visits: int = Field(default=2, ge=1, le=10, description="later visits are searched against the first")
    cadence_days: float = Field(default=3.0, gt=0, le=365)
    exposure_s: float = Field(default=180.0, gt=0, le=3600)


class ScenarioTransient(Section):
    """What the simulated sky holds: beside a galaxy (``host`` or ``near``: a catalog name, or ``rank:N`` of
    the event's ranking), ``offset_arcsec`` towards ``position_angle_deg`` (east of north)."""

    kind: Literal["kilonova", "supernova_ia", "supernova_ii", "asteroid", "variable"]
    host: str | None = None
    near: str | None = None
    offset_arcsec: float = Field(default=0.0, ge=0, le=3600)
    position_angle_deg: float = Field(default=60.0, ge=0, lt=360)
    distance_mpc: float | None = Field(default=None, gt=0, le=10000, description="default: the host's")
    peak_time: datetime | None = Field(
        default=None, description="a supernova's r peak (default: 5 d before the merger)"
    )
    rate_arcsec_per_min: float = Field(default=0.5, ge=0, le=600)
    mag: float | None = Field(default=None, ge=5, le=30, description="an asteroid's r, a variable's mean")
    amplitude_mag: float = Field(default=0.5, ge=0, le=5)
    period_h: float = Field(default=5.0, gt=0, le=24 * 3650)

    @model_validator(mode="after")
    def _placed(self) -> ScenarioTransient:
        if (self.host is None) == (self.near is None):
            raise ValueError("give host (for a kilonova or a supernova) or near (for an asteroid or a variable)")
        if self.kind in ("asteroid", "variable") and self.mag is None:
            raise ValueError(f"{self.kind} needs mag")
        return self

    @property
    def galaxy(self) -> str:
        return self.host or self.near or ""


class SimulatedCamera(Section):
    frame: int = Field(default=2048, ge=256, le=10560, description="pixels on a side")
    pixel_scale_arcsec: float = Field(default=0.47, gt=0.05, le=10)
    exposure_s: float = Field(default=60.0, gt=0, le=3600, description="the alert's exposures")


class SecondLookPlan(Section):
    filter: str | None = Field(default="g", description="None: the first epoch's (a decline, not a colour)")
    delay_s: float = Field(default=1800.0, ge=0, le=86400)


class Scenario(Section):
    start: datetime
    sites: tuple[ScenarioSite, ...] = Field(min_length=1, max_length=8)
    merger: datetime
    references: ReferenceVisits
    notice: Path
    notice_delay_s: float = Field(default=30.0, ge=0, le=7 * 86400)
    transients: tuple[ScenarioTransient, ...] = ()
    clock_rate: float = Field(default=300.0, gt=0, le=10000)
    camera: SimulatedCamera = SimulatedCamera()
    galaxies: int = Field(default=20000, ge=100, le=2_000_000, description="the synthetic catalog's size")
    targets_per_site: int = Field(default=6, ge=1, le=100)
    second_look: SecondLookPlan = SecondLookPlan()
    timeout_s: float = Field(default=1500.0, gt=0, le=86400, description="real seconds for the whole night")

    @field_validator("start", "merger")
    @classmethod
    def _utc(cls, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _story(self) -> Scenario:
        if self.merger <= self.start:
            raise ValueError("merger must come after start")
        epoch = self.references.epoch
        if (epoch if epoch.tzinfo else epoch.replace(tzinfo=UTC)) >= self.merger:
            raise ValueError("references.epoch must come before the merger")
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("sites: two sites share a name")
        return self

    @property
    def notice_time(self) -> datetime:
        return self.merger + timedelta(seconds=self.notice_delay_s)

    @classmethod
    def load(cls, path: Path) -> Scenario:
        """Reads and checks a scenario file (the notice's path relative to it)."""
        try:
            if path.stat().st_size > MAX_SCENARIO_BYTES:
                raise ScenarioError(f"{path}: larger than {MAX_SCENARIO_BYTES // 1024} KiB: not a scenario")
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ScenarioError(f"{path}: not a readable YAML scenario: {' '.join(str(exc).split())}") from None
        if not isinstance(document, dict):
            raise ScenarioError(f"{path}: a scenario is a YAML mapping (start, sites, merger, references, notice…)")
        try:
            scenario = cls.model_validate(document)
        except ValidationError as exc:
            raise ScenarioError(describe_error(exc, path)) from None
        notice = scenario.notice if scenario.notice.is_absolute() else (path.parent / scenario.notice).resolve()
        if not notice.is_file():
            raise ScenarioError(f"{path}: notice: no such file {notice}")
        return scenario.model_copy(update={"notice": notice})


@dataclass(frozen=True)
class SiteNode:
    """One site's node: its config (telescope, preprocessor; the first site's also the alert robot)."""

    name: str
    config: Path
    modules: tuple[str, ...]
    routine: list[Path] = field(default_factory=list)  # pre-event frames left for its preprocessor to search


@dataclass(frozen=True)
class Placed:
    """A transient of the scenario where it was placed, and what the campaign should call it."""

    kind: str
    label: str  # e.g. "kilonova beside NGC 1 (rank 2)"
    ra_deg: float
    dec_deg: float
    expected: str
    spec: dict[str, Any]  # as the telescope's sky.transients takes it


@dataclass
class Prepared:
    scenario: Scenario
    folder: Path
    notice: Path  # the notice with its times moved to the merger
    alert_id: str
    sites: list[SiteNode]
    placed: list[Placed]
    plan: list[Pointing]  # the first epoch as predicted at the notice's time (every site)
    references: int = 0  # frames filed in the sites' libraries


def prepare(
    scenario: Scenario, folder: Path, *, ports: dict[str, dict[str, int]], say: Callable[[str], None] = print
) -> Prepared:
    """Everything before the daemons start, under ``folder`` (started afresh); ``ports``: per site, the port of
    each module it runs."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_glade_plus(folder / CATALOG, scenario.galaxies, seed=7, near_fraction=0.05)
    notice, alert_id = _moved_notice(scenario, folder)
    sites = [
        SiteNode(site.name, folder / site.name / "toros.yaml", ("alert", "telescope", "preprocessor") if n == 0
                 else ("telescope", "preprocessor"))
        for n, site in enumerate(scenario.sites)
    ]  # fmt: skip
    for n, site in enumerate(sites):
        _write_config(scenario, site, ports, transients=[], alert=n == 0)
    config = load_config(sites[0].config)
    pool, plan = _predict(config, notice)
    fields = _monitored(pool, plan, scenario.references.ranked)
    placed = [_place(entry, pool, plan, fields, scenario) for entry in scenario.transients]
    for n, site in enumerate(sites):
        _write_config(scenario, site, ports, transients=[p.spec for p in placed], alert=n == 0)
    # The site's catalog (a Gaia extract in real life) covers every field the robot may point at: the planned
    # fields and every galaxy a re-plan or a move may reach.
    radius = _frame_diagonal_deg(scenario.camera) / 2 + REFERENCE_MARGIN_DEG
    reach = np.flatnonzero(pool.rank <= 4 * scenario.targets_per_site * len(scenario.sites))
    centres = [(p.ra_deg, p.dec_deg) for p in plan] + [(float(pool.ra[n]), float(pool.dec[n])) for n in reach]
    stars = StarCatalog().write_reference_catalog(folder / REFERENCE_CATALOG, centres, radius)
    _add_catalog_stars(folder / REFERENCE_CATALOG, [p for p in placed if p.kind == "variable"])
    say(f"reference catalog: {stars} synthetic stars around {len(centres)} fields and galaxies ({REFERENCE_CATALOG})")
    prepared = Prepared(scenario, folder, notice, alert_id, sites, placed, plan)
    _monitor(prepared, fields, say)
    (folder / TRUTH).write_text(json.dumps([asdict(p) for p in placed], indent=1, default=str), encoding="utf-8")
    return prepared


# -- the notice and the plan --------------------------------------------------------------------------------


def _moved_notice(scenario: Scenario, folder: Path) -> tuple[Path, str]:
    """The notice with its event time at the merger and its creation ``notice_delay_s`` later (igwn.gwalert
    JSON, or Avro); its alert id."""
    payload = scenario.notice.read_bytes()
    try:
        alert = parse_notice(payload)
    except BadNotice as exc:
        raise ScenarioError(f"{scenario.notice}: {exc}") from None
    if alert.skymap is None:
        raise ScenarioError(f"{scenario.notice}: the notice carries no sky map: the scenario cannot rank its galaxies")
    try:
        document = json.loads(payload)
    except ValueError:
        raise ScenarioError(
            f"{scenario.notice}: only igwn.gwalert JSON notices (their sky map embedded) can be moved to the merger"
        ) from None
    document["event"]["time"] = scenario.merger.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    document["time_created"] = scenario.notice_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = folder / f"{alert.alert_id}-scenario.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path, alert.alert_id


def _predict(config: Config, notice: Path) -> tuple[Galaxies, list[Pointing]]:
    """The event's galaxies as the alert robot ranks them, and the first epoch it will plan at the notice's time."""
    alert = parse_notice(notice.read_bytes())
    assert alert.skymap is not None
    settings = config.alert
    assert settings.catalog is not None
    index = GalaxyIndex.open(settings.catalog)
    ranked = rank(
        index,
        read_skymap(alert.skymap.data),
        credible_level=settings.credible_level,
        luminosity_weighting=settings.luminosity_weighting,
    )
    pool = Galaxies.of(index, ranked, pool_size(settings, ranked))
    created = alert.created or alert.event_time
    assert created is not None
    plans = plan_first_epoch(pool, settings.observatories, settings, created)
    return pool, [p for plan in plans for p in plan.pointings]


def _galaxy(pool: Galaxies, reference: str) -> int:
    """The pool's row of ``rank:N`` or of a galaxy's name."""
    if reference.startswith("rank:"):
        try:
            wanted = int(reference.removeprefix("rank:"))
        except ValueError:
            raise ScenarioError(f"transients: {reference!r}: rank:N with N a whole number") from None
        ranked = np.flatnonzero(pool.rank == wanted)
        if len(ranked) == 0:
            raise ScenarioError(f"transients: {reference}: the event ranks {len(pool)} galaxies")
        return int(ranked[0])
    named = [n for n, name in enumerate(pool.name) if name.strip() == reference.strip()]
    if not named:
        raise ScenarioError(f"transients: {reference!r} is not among the event's ranked galaxies")
    return named[0]


def _offset(ra_deg: float, dec_deg: float, arcsec: float, angle_deg: float) -> tuple[float, float]:
    angle = math.radians(angle_deg)
    dec = dec_deg + arcsec * math.cos(angle) / 3600.0
    ra = ra_deg + arcsec * math.sin(angle) / 3600.0 / math.cos(math.radians(dec_deg))
    return ra % 360.0, dec


def visit_time(visits: ReferenceVisits, field: int, visit: int) -> datetime:
    """When routine monitoring took a field (0-based) at a visit (0: the one that made its reference)."""
    epoch = visits.epoch if visits.epoch.tzinfo else visits.epoch.replace(tzinfo=UTC)
    return epoch + timedelta(days=visit * visits.cadence_days, minutes=3 * field)


def _place(
    entry: ScenarioTransient, pool: Galaxies, plan: list[Pointing], fields: list[Pointing], scenario: Scenario
) -> Placed:
    row = _galaxy(pool, entry.galaxy)
    galaxy = pool.candidate(row)
    ra, dec = _offset(galaxy.ra_deg, galaxy.dec_deg, entry.offset_arcsec, entry.position_angle_deg)
    distance = entry.distance_mpc or galaxy.distance_mpc or 100.0
    where = f'{entry.offset_arcsec:g}" from {galaxy.name} (rank {galaxy.rank})'
    spec: dict[str, Any] = {"kind": entry.kind, "ra_deg": ra, "dec_deg": dec}
    if entry.kind == "kilonova":
        spec |= {"start": scenario.merger.isoformat(), "distance_mpc": distance}
        label = f"kilonova at {distance:.0f} Mpc, {where}"
    elif entry.kind in ("supernova_ia", "supernova_ii"):
        peak = entry.peak_time or scenario.merger - timedelta(days=5)
        peak = peak if peak.tzinfo else peak.replace(tzinfo=UTC)
        spec |= {"peak_time": peak.isoformat(), "distance_mpc": distance}
        kind = "type Ia" if entry.kind == "supernova_ia" else "type II"
        label = f"{kind} supernova at {distance:.0f} Mpc (peak {peak:%Y-%m-%d}), {where}"
        if galaxy.distance_mpc and abs(distance / galaxy.distance_mpc - 1.0) > 0.2:
            # Behind (or before) the galaxy it is seen on: judged at that galaxy's distance, one night's
            # photometry may not tell it from a kilonova there (docs/user/campaign.md).
            label += f" (the galaxy is at {galaxy.distance_mpc:.0f} Mpc)"
    elif entry.kind == "asteroid":
        # On its track, at the offset when its field is first observed.
        when = next((p.start for p in plan if galaxy.name in {g.name for g in p.galaxies}), scenario.notice_time)
        spec = {"kind": "asteroid", "ra_deg": ra, "dec_deg": dec, "epoch": when.isoformat(),
                "rate_arcsec_per_hour": entry.rate_arcsec_per_min * 60.0,
                "position_angle_deg": entry.position_angle_deg, "mag": entry.mag}  # fmt: skip
        label = f'asteroid of r = {entry.mag:g} at {entry.rate_arcsec_per_min:g}"/min, {where} at {when:%H:%M}'
    else:
        # Its phase: faintest when routine monitoring made its field's reference, so that later frames see it
        # brighter, as a search finds a variable (the scenario leaves the phase open).
        nearest = _nearest_field(fields, ra, dec)
        faintest = visit_time(scenario.references, nearest, 0) if nearest is not None else scenario.merger
        spec = {"kind": "variable", "ra_deg": ra, "dec_deg": dec, "mean_mag": entry.mag,
                "amplitude_mag": entry.amplitude_mag, "period_days": entry.period_h / 24.0,
                "epoch": (faintest - timedelta(hours=entry.period_h / 4.0)).isoformat()}  # fmt: skip
        label = f"variable star of r = {entry.mag:g} ± {entry.amplitude_mag:g}, {entry.period_h:g} h, {where}"
    return Placed(entry.kind, label, ra, dec, EXPECTED[entry.kind], spec)


def _nearest_field(fields: list[Pointing], ra_deg: float, dec_deg: float) -> int | None:
    if not fields:
        return None
    apart = separation_deg(np.array([f.ra_deg for f in fields]), np.array([f.dec_deg for f in fields]), ra_deg, dec_deg)
    return int(np.argmin(apart))


def _add_catalog_stars(path: Path, variables: list[Placed]) -> None:
    """Variable stars are stars: a Gaia-like catalog lists them, at their mean brightness."""
    if not variables:
        return
    with open(path, "a", encoding="utf-8") as stream:
        for star in variables:
            r = float(star.spec["mean_mag"])
            stream.write(
                f"{star.ra_deg:.7f},{star.dec_deg:.7f},{r + 0.5:.4f},{r:.4f},{r - 0.2:.4f},{r - 0.3:.4f},{r - 0.1:.4f}\n"
            )


# -- the nodes' configs -----------------------------------------------------------------------------------


def _frame_deg(camera: SimulatedCamera) -> float:
    return camera.frame * camera.pixel_scale_arcsec / 3600.0


def _frame_diagonal_deg(camera: SimulatedCamera) -> float:
    return _frame_deg(camera) * math.sqrt(2.0)


def field_of_view(site: ScenarioSite, camera: SimulatedCamera) -> float:
    """The planner's field: the site's, no larger than what the simulated camera covers."""
    covered = _frame_deg(camera)
    wanted = site.field_of_view_deg
    if wanted is None:
        return round(covered, 4)
    width = min(wanted) if isinstance(wanted, tuple) else wanted
    return round(min(width, covered), 4)


def _write_config(
    scenario: Scenario,
    site: SiteNode,
    ports: dict[str, dict[str, int]],
    *,
    transients: list[dict[str, Any]],
    alert: bool,
) -> None:
    camera = scenario.camera
    spec = next(s for s in scenario.sites if s.name == site.name)
    filters = sorted({"r", *([scenario.second_look.filter] if scenario.second_look.filter else [])})
    mine = ports[site.name]
    config: dict[str, Any] = {
        "logging": {"file": "logs/toros.log", "level": "INFO"},
        "database": {"path": "toros.db"},
        "storage": {"root": "data"},
        "clock": {"start": scenario.start.isoformat(), "rate": scenario.clock_rate},
    }
    if alert:
        config["alert"] = {
            "port": mine["alert"],
            "catalog": f"../{CATALOG}",
            "process_test_alerts": True,
            "targets_per_observatory": scenario.targets_per_site,
            "exposure": {"exposure_time_s": camera.exposure_s, "exposure_count": 2, "filter": "r"},
            "second_look": {"delay_s": scenario.second_look.delay_s, "filter": scenario.second_look.filter},
            # At ×300 a frame's rendering and searching take minutes of the clock: the simulated sites are slower
            # than planned by design, not fallen behind.
            "site_behind_s": 4 * 3600.0,
            "observatories": [
                {
                    "name": s.name,
                    "latitude": s.latitude,
                    "longitude": s.longitude,
                    "elevation": s.elevation,
                    "telescope": f"127.0.0.1:{ports[s.name]['telescope']}",
                    "preprocessor": f"127.0.0.1:{ports[s.name]['preprocessor']}",
                    "field_of_view_deg": field_of_view(s, camera),
                    "filters": list(s.filters),
                }
                for s in scenario.sites
            ],
        }
    config["telescope"] = {
        "port": mine["telescope"],
        "mode": "robotic",
        "site": {
            "name": spec.name,
            "latitude": spec.latitude,
            "longitude": spec.longitude,
            "elevation": spec.elevation,
        },  # fmt: skip
        "camera": {
            "width": camera.frame,
            "height": camera.frame,
            "overscan": max(8, camera.frame // 32),
            "readout_s": 5.0,
            "pixel_scale_arcsec": camera.pixel_scale_arcsec,
        },
        "sky": {"galaxy_catalog": f"../{CATALOG}", "transients": transients},
        "calibrations": {
            "bias_count": 5,
            "dark_count": 5,
            "dark_times_s": [camera.exposure_s],
            "flat_count": 5,
            "flat_filters": filters,
            "flat_sun_altitude_deg": [-12.0, 0.0],  # from sunset: two filters' flats on a loaded machine
            "flat_max_exposure_s": 180.0,
        },
        "safety": {"max_sun_altitude_deg": 0.0},
    }
    config["preprocessor"] = {
        "port": mine["preprocessor"],
        "follow": [{"name": site.name, "address": f"127.0.0.1:{mine['telescope']}"}],
        "science": {"reference_catalog": f"../{REFERENCE_CATALOG}"},
        "discovery": {"galaxy_catalog": f"../{CATALOG}"},
    }
    site.config.parent.mkdir(parents=True, exist_ok=True)
    site.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def share_clock(site: SiteNode, real_instant: datetime) -> None:
    """Every daemon of the network reads the same simulated time: the clock reads ``start`` at ``real_instant``."""
    document = yaml.safe_load(site.config.read_text(encoding="utf-8"))
    document["clock"]["shared_from"] = real_instant.isoformat()
    site.config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


# -- routine monitoring before the event ---------------------------------------------------------------------


def _monitored(pool: Galaxies, plan: list[Pointing], ranked: int) -> list[Pointing]:
    """The planned fields that hold one of the ``ranked`` best-ranked galaxies (each once)."""
    best = {pool.candidate(int(n)).name for n in np.flatnonzero(pool.rank <= ranked)}
    fields: list[Pointing] = []
    for pointing in plan:
        if {g.name for g in pointing.galaxies} & best and not any(
            separation_deg(np.array([f.ra_deg]), np.array([f.dec_deg]), pointing.ra_deg, pointing.dec_deg)[0] < 1e-4
            for f in fields
        ):
            fields.append(pointing)
    return fields


@dataclass(frozen=True)
class RoutineFrame:
    """One pre-event frame of a site: where, in which filter, when."""

    config: Path
    path: Path
    ra_deg: float
    dec_deg: float
    filter: str
    when: datetime
    exposure_s: float
    seed: int
    visit: int  # 0: the visit that fills the library


def _monitor(prepared: Prepared, fields: list[Pointing], say: Callable[[str], None]) -> None:
    """Every site's pre-event frames of ``fields``: rendered, made science-ready (two processes), the first
    visit's filed in its library, the later visits' kept for its preprocessor to search."""
    from toros.preprocessor.references import ReferenceLibrary

    scenario = prepared.scenario
    visits = scenario.references
    filters = ["r", *([scenario.second_look.filter] if scenario.second_look.filter not in (None, "r") else [])]
    jobs: list[RoutineFrame] = []
    for s, site in enumerate(prepared.sites):
        for f, pointing in enumerate(fields):
            for visit in range(visits.visits):
                when = visit_time(visits, f, visit)
                for band in filters if visit == 0 else ["r"]:
                    path = site.config.parent / "data" / "routine" / f"{when:%Y-%m-%d}" / (
                        f"field{f + 1:02d}-{band}-{when:%Y%m%dT%H%M%S}_cal.fits"
                    )  # fmt: skip
                    seed = 1000 * s + 10 * f + visit + 7 * filters.index(band)
                    jobs.append(RoutineFrame(site.config, path, pointing.ra_deg, pointing.dec_deg, band, when,
                                             visits.exposure_s, seed, visit))  # fmt: skip
    say(
        f"routine monitoring before the event: {len(jobs)} frames of {len(fields)} fields at {len(prepared.sites)} sites"
    )
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_routine_frame, jobs))
    for site in prepared.sites:
        config = load_config(site.config)
        library = ReferenceLibrary(
            config.database, Path(config.storage.root), config.preprocessor.references,
            config.preprocessor.calibration.max_frame_bytes,
        )  # fmt: skip
        try:
            for job, made in zip(jobs, results, strict=True):
                if job.config != site.config or not made:
                    continue
                if job.visit == 0:
                    library.import_file(job.path, job.when.timestamp())
                    prepared.references += 1
                else:
                    site.routine.append(job.path)
        finally:
            library.close()
    refused = len(results) - sum(results)
    if refused:
        say(f"{refused} pre-event frames could not be made science-ready (see above)")


@functools.lru_cache(maxsize=4)
def _site_sky(config: Path) -> SimulatedSky:
    from toros.telescope.devices.simulated import simulated_sky

    return simulated_sky(load_config(config).telescope.sky)


def _routine_frame(job: RoutineFrame) -> bool:
    """Renders one pre-event frame as the site's camera and sky would have taken it, and runs the science step
    on it; whether it came out science-ready."""
    from toros.preprocessor.science import ReferenceCatalog, ScienceFailed, ScienceStep

    config = load_config(job.config)
    sky = _site_sky(job.config)
    camera = config.telescope.camera
    low, high = config.telescope.sky.seeing_arcsec
    seeing = float(np.random.default_rng(job.seed).uniform(low, min(high, low + 0.6)))  # a good night's seeing
    job.path.parent.mkdir(parents=True, exist_ok=True)
    write_calibrated_frame(
        job.path, sky, (job.ra_deg, job.dec_deg), camera.width, pointing_error_arcsec=(8.0, -5.0),
        pixel_scale_arcsec=camera.pixel_scale_arcsec, conditions=Conditions(job.filter, job.exposure_s, 1.2, seeing, job.when),
        seed=job.seed,
    )  # fmt: skip
    science = config.preprocessor.science
    assert science.reference_catalog is not None
    try:
        ScienceStep(science, ReferenceCatalog.read(Path(science.reference_catalog))).run(job.path)
    except ScienceFailed as exc:
        print(f"{job.path}: not science-ready: {exc}", flush=True)
        return False
    return True
