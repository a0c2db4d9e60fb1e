"""Campaign benchmark (issue 27): an alert's first night planned for two sites together, against each site
working alone from its own ranked list, on the same events, galaxies and nights.

Sky maps: the two shared samples (MS181101ab, 31 deg²; M323277, 1,176 deg²) and generated maps of 100-1500
deg² (elongated Gaussians with distance layers, centred where the night sky is at the event's date). Galaxies:
a synthetic all-sky catalog, uniform in volume to 400 Mpc at 2e-3 Mpc^-3 with half of them in groups of
0.3 deg (written as CSV and indexed as the daemon indexes a catalog). Sites: Macon and Bosque Alegre, each
with TOROS's 1.38 deg square field (an assumption for Bosque Alegre), 3 × 60 s per pointing plus 60 s
overhead, the alert module's default constraints.

Plans compared for each event, each over the whole first night:
* alone: each site plans from its own ranked list, one galaxy per pointing (what was relayed before
  coordination), unaware of the other site;
* alone + fields: each site alone, but taking the galaxies that share its field in one pointing;
* together: ``plan_first_epoch`` for both sites (fields, no galaxy at two sites).
Figures: 3-D probability covered (the ranked galaxies' share inside the observed fields), 2-D probability
covered (the sky map inside them), galaxies targeted at both sites, and the planning time.

Classification (``toros/alert/classification.py``) on simulated candidates, at the catalog level (each
candidate's detections, flags, host distance and the event's GW distance; no images): per event one
AT2017gfo-like kilonova (its light curve shifted by N(0, 0.5) mag, the event at 40-200 Mpc, its host's catalog
distance within 10%), a type Ia supernova at a random phase (-15 to +40 d from peak, M_peak -19.3 +- 0.3) and a
type II on its plateau (M -17 +- 0.7), both in galaxies at 20-400 Mpc, with the light curves the simulated sky
draws (``floor.supernovae``), an asteroid, a variable (seen before
the merger, or a reference star under it) and a nuclear flare (M -18 +- 1, slow); detections 1-12 h after the
merger, a second look 30 min later in g for half the events (a colour) and in r for the others, errors from a
5-sigma limit of 21, only what is brighter than 21 detected. Figures: the confusion matrix, the kilonovae ranked
first by kilonova_score among their event's candidates, and the supernovae called kilonova-like. These hold on
this simulation only.

With ``--gwemopt PYTHON`` (a Python with gwemopt from PyPI, in a venv of its own: ``python3 -m venv /tmp/gw &&
/tmp/gw/bin/pip install gwemopt``), gwemopt plans the same first night for the same sites on the shared maps
(its sky tiling, greedy schedule; ``benchmarks/gwemopt_driver.py``), and both plans' coverage is measured the
same way.

Usage: .venv/bin/python benchmarks/campaign.py [--generated 8] [--seed 1] [--events 50] [--gwemopt PYTHON]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from astropy_healpix import HEALPix

from toros.alert.classification import Classification, Detection, Verdict, classify
from toros.alert.coordination import Galaxies, SitePlan, plan_first_epoch, pool_size
from toros.alert.coverage import Field, probability_2d, probability_3d
from toros.alert.footprints import Footprint, tangent_plane
from toros.alert.ranking import rank
from toros.alert.settings import AlertConfig, Observatory
from toros.alert.skymap import SkyMap, read_skymap
from toros.floor.catalogs import GalaxyIndex
from toros.floor.kilonova import kilonova_mag
from toros.floor.supernovae import SupernovaType, supernova_mag

SAMPLES = Path(__file__).resolve().parents[1] / "toros" / "data" / "alerts"
FIELD = (1.38, 1.38)
SITES = [
    {"name": "macon", "latitude": -24.62, "longitude": -67.32, "elevation": 4650},
    {"name": "eaba", "latitude": -31.598, "longitude": -64.546, "elevation": 1350},
]
DENSITY_MPC3 = 2e-3
MAX_DISTANCE_MPC = 400.0
GENERATED_NSIDE = 256


@dataclass
class Event:
    name: str
    skymap: SkyMap
    time: datetime
    path: Path | None = None  # the map's file (the shared samples), for gwemopt


GPS_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)
LEAP_SECONDS = 18  # GPS - UTC since 2017


def gwemopt_fields(python: str, event: Event, folder: Path) -> tuple[list[Field], float]:
    """gwemopt's first-night schedule for both sites (its sky tiling, greedy), as fields; and its run time."""
    import json
    import subprocess

    assert event.path is not None
    gps = (event.time - GPS_EPOCH).total_seconds() + LEAP_SECONDS
    work = folder / f"gwemopt-{event.name}"
    started = time.perf_counter()
    result = subprocess.run(
        [python, str(Path(__file__).with_name("gwemopt_driver.py")), str(event.path), f"{gps:.0f}", str(work)],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"gwemopt on {event.name}: {result.stderr.strip().splitlines()[-1:]}")
    footprint = Footprint.of(FIELD)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [(footprint, float(r["ra"]), float(r["dec"])) for r in rows], seconds


def write_catalog(path: Path, rng: np.random.Generator) -> None:
    """Galaxies uniform in volume, half of them in groups (0.3 deg, 2 Mpc across)."""
    count = int(DENSITY_MPC3 * 4 / 3 * math.pi * MAX_DISTANCE_MPC**3)
    field = count // 2
    ra = rng.uniform(0, 360, field)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, field)))
    dist = MAX_DISTANCE_MPC * rng.random(field) ** (1 / 3)
    groups = (count - field) // 8
    group_ra = rng.uniform(0, 360, groups)
    group_dec = np.degrees(np.arcsin(rng.uniform(-1, 1, groups)))
    group_dist = MAX_DISTANCE_MPC * rng.random(groups) ** (1 / 3)
    members = np.repeat(np.arange(groups), 8)
    ra = np.concatenate(
        [ra, (group_ra[members] + rng.normal(0, 0.3, len(members)) / np.cos(np.radians(group_dec[members]))) % 360]
    )
    dec = np.concatenate([dec, np.clip(group_dec[members] + rng.normal(0, 0.3, len(members)), -90, 90)])
    dist = np.concatenate([dist, np.maximum(group_dist[members] + rng.normal(0, 1.0, len(members)), 1.0)])
    with open(path, "w") as stream:
        stream.write("name,ra,dec,dist,b\n")
        for i in range(len(ra)):
            stream.write(f"G{i},{ra[i]:.6f},{dec[i]:.6f},{dist[i]:.2f},15.0\n")


def night_time_for(ra_deg: float, rng: np.random.Generator) -> datetime:
    """A time in the year when RA ``ra_deg`` is up at night, at a random hour (alerts come at any time)."""
    day = (80 + (ra_deg - 180.0) * 365.25 / 360.0) % 365.0
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=float(day), hours=float(rng.uniform(0, 24)))


def generated_map(area_deg2: float, rng: np.random.Generator) -> tuple[SkyMap, float]:
    """An elongated Gaussian of ``area_deg2`` (90%) with distance layers; and its centre's RA."""
    ra0, dec0 = rng.uniform(0, 360), float(np.degrees(np.arcsin(rng.uniform(-0.95, 0.3))))
    ratio = rng.uniform(1.0, 5.0)
    minor = math.sqrt(area_deg2 / (-2 * math.log(0.1) * math.pi * ratio))
    major, angle = ratio * minor, rng.uniform(0, math.pi)
    grid = HEALPix(nside=GENERATED_NSIDE, order="nested")
    lon, lat = grid.healpix_to_lonlat(np.arange(grid.npix))
    x, y = tangent_plane(lon.deg, lat.deg, ra0, dec0)
    behind = ~np.isfinite(x)  # the far hemisphere holds no probability
    x, y = np.where(behind, 0.0, x), np.where(behind, 0.0, y)
    u_ = x * math.cos(angle) + y * math.sin(angle)
    v_ = -x * math.sin(angle) + y * math.cos(angle)
    density = np.where(behind, 0.0, np.exp(-0.5 * ((u_ / major) ** 2 + (v_ / minor) ** 2)))
    density /= density.sum() * grid.pixel_area.to_value("sr")
    distance = rng.uniform(40, 250)
    sigma = 0.3 * distance
    level = int(math.log2(GENERATED_NSIDE))
    skymap = SkyMap(
        uniq=4 * 4**level + np.arange(grid.npix),
        probdensity=density,
        distmu=np.full(grid.npix, distance),
        distsigma=np.full(grid.npix, sigma),
        distnorm=np.full(grid.npix, 1.0 / (distance**2 + sigma**2)),
    )
    return skymap, ra0


def events(count: int, rng: np.random.Generator) -> list[Event]:
    found = []
    for name, ra in (("MS181101ab-bayestar.multiorder.fits", 194.3), ("M323277-bayestar.flat-nested.fits.gz", 161.9)):
        path = SAMPLES / name
        found.append(Event(name.split("-")[0], read_skymap(path.read_bytes()), night_time_for(ra, rng), path))
    for area in np.linspace(100, 1500, count):
        skymap, ra = generated_map(float(area), rng)
        found.append(Event(f"generated {area:.0f} deg²", skymap, night_time_for(ra, rng)))
    return found


def fields_of(plans: list[SitePlan]) -> list[Field]:
    footprint = Footprint.of(FIELD)
    return [(footprint, p.ra_deg, p.dec_deg) for plan in plans for p in plan.pointings]


def targeted_twice(plans: list[SitePlan]) -> int:
    seen: dict[str, set[str]] = {}
    for plan in plans:
        for pointing in plan.pointings:
            for galaxy in pointing.galaxies:
                seen.setdefault(galaxy.name, set()).add(plan.observatory.name)
    return sum(len(sites) > 1 for sites in seen.values())


def config(fields: bool) -> AlertConfig:
    return AlertConfig(
        observatories=[
            Observatory(**site, telescope="127.0.0.1:1", field_of_view_deg=FIELD if fields else None) for site in SITES
        ],
        targets_per_observatory=10000,
        exposure={"exposure_time_s": 60.0, "exposure_count": 3, "filter": "r"},
    )


LIMIT_MAG = 21.0


def observed(mag: float, rng: np.random.Generator) -> tuple[float, float] | None:
    """A detection of a source of ``mag``: (measured mag, error), None when fainter than the limit."""
    if mag > LIMIT_MAG:
        return None
    error = 0.02 + 0.2 * 10 ** (0.4 * (mag - LIMIT_MAG))
    return float(mag + rng.normal(0, error)), float(error)


def simulated_event(number: int, rng: np.random.Generator) -> list[tuple[str, Verdict]]:
    """One event's candidates, each with the verdict of the classifier: (true kind, verdict)."""
    merger = datetime(2026, 5, 1, tzinfo=UTC) + timedelta(days=number)
    truth_distance = float(rng.uniform(40, 200))
    mu = truth_distance * (1 + rng.normal(0, 0.15))
    sigma = 0.3 * mu
    first = merger + timedelta(hours=float(rng.uniform(1, 12)))
    second = first + timedelta(minutes=30)
    second_band = "g" if number % 2 else "r"
    ra, dec = 150.0, -20.0
    found: list[tuple[str, Verdict]] = []

    def judge(kind: str, mags: list[tuple[datetime, str, float]], flags: set[str], host_d: float | None,
              moving: float = 0.0, before: bool = False) -> None:  # fmt: skip
        detections = []
        for n, (when, band, mag) in enumerate(mags):
            seen = observed(mag, rng)
            if seen is None:
                continue
            at = when - timedelta(days=2) if before and n == 0 else when
            drift = moving * (at - first).total_seconds() / 3600.0 / 3600.0
            detections.append(Detection(at, band, seen[0], seen[1], ra + drift, dec))
        if not detections:
            return
        consistency = math.exp(-0.5 * ((host_d - mu) / sigma) ** 2) if host_d is not None else None
        distance, source = (host_d, "host") if host_d is not None else (mu, "GW")
        verdict = classify(
            detections, merger=merger, flags=flags, distance_mpc=distance, distance_source=source,
            host_consistency=consistency, vetting_score=float(rng.uniform(0.7, 1.0)),
        )  # fmt: skip
        found.append((kind, verdict))

    def kilonova(when: datetime, band: str, shift: float) -> float:
        value = kilonova_mag(band, (when - merger).total_seconds() / 86400.0, truth_distance)
        assert value is not None
        return value + shift

    shift = float(rng.normal(0, 0.5))
    judge("kilonova", [(first, "r", kilonova(first, "r", shift)), (second, second_band, kilonova(second, second_band, shift))],
          set(), truth_distance * (1 + rng.normal(0, 0.1)))  # fmt: skip
    for kind, sn_type, spread, phases in (("supernova_ia", SupernovaType.IA, 0.3, (-15, 40)),
                                          ("supernova_ii", SupernovaType.II, 0.7, (0, 60))):  # fmt: skip
        distance = float(rng.uniform(20, 400))
        phase = float(rng.uniform(*phases))
        shift = float(rng.normal(0, spread))  # this supernova's peak against the type's
        mags = [
            supernova_mag(sn_type, band, days, distance) for band, days in (("r", phase), (second_band, phase + 1 / 48))
        ]
        assert mags[0] is not None and mags[1] is not None, "both have exploded by then"
        judge(kind, [(first, "r", mags[0] + shift), (second, second_band, mags[1] + shift)], set(), distance)
    judge("asteroid", [(first, "r", 19.0), (second, second_band, 19.0)], set(), None, moving=30.0)
    if number % 2:
        judge("variable", [(first, "r", 18.0), (second, second_band, 18.2)], set(), None, before=True)
    else:
        judge("variable", [(first, "r", 18.0), (second, second_band, 18.3)], {"on_star"}, None)
    flare_d = float(rng.uniform(20, 400))
    flare = float(rng.normal(-18, 1)) + 5 * math.log10(flare_d * 1e5)
    judge("nuclear", [(first, "r", flare), (second, second_band, flare + (0.2 if second_band == "g" else 0.0))],
          {"nuclear"}, flare_d)  # fmt: skip
    return found


def classification_suite(events: int, rng: np.random.Generator) -> None:
    kinds = ["kilonova", "supernova_ia", "supernova_ii", "asteroid", "variable", "nuclear"]
    labels = [c.value for c in Classification]
    matrix = {kind: dict.fromkeys(labels, 0) for kind in kinds}
    first, with_kilonova, total = 0, 0, 0
    for number in range(events):
        found = simulated_event(number, rng)
        total += len(found)
        for kind, verdict in found:
            matrix[kind][verdict.classification.value] += 1
        scores = [(v.kilonova_score, kind) for kind, v in found]
        if any(kind == "kilonova" for _, kind in scores):
            with_kilonova += 1
            best = max(scores, key=lambda pair: pair[0])
            first += best[1] == "kilonova" and best[0] > 0
    print(f"classification: {total} simulated candidates in {events} events (catalog level)")
    print(f"{'true kind':14}" + "".join(f"{label:>16}" for label in labels))
    for kind in kinds:
        print(f"{kind:14}" + "".join(f"{matrix[kind][label]:16}" for label in labels))
    supernovae = sum(sum(matrix[k].values()) for k in ("supernova_ia", "supernova_ii"))
    called = sum(matrix[k]["kilonova-like"] for k in ("supernova_ia", "supernova_ii"))
    print(
        f"kilonovae ranked first in their event: {first}/{with_kilonova} ({100 * first / max(with_kilonova, 1):.1f}%, "
        f"target >= 90%); supernovae called kilonova-like: {called}/{supernovae} "
        f"({100 * called / max(supernovae, 1):.1f}%, target <= 5%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=8, help="generated maps, 100 to 1500 deg²")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=50, help="simulated events for the classification")
    parser.add_argument(
        "--gwemopt", metavar="PYTHON", help="a Python with gwemopt installed: its plan on the shared maps, compared"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    classification_suite(args.events, np.random.default_rng(args.seed + 1))
    with tempfile.TemporaryDirectory() as folder:
        catalog = Path(folder) / "galaxies.csv"
        write_catalog(catalog, rng)
        index = GalaxyIndex.open(catalog)
        print(f"catalog: {len(index):,} galaxies (uniform in volume to {MAX_DISTANCE_MPC:.0f} Mpc, half in groups)")
        header = (
            f"{'event':22} {'90% deg²':>8} {'galaxies':>8} {'pointings':>9} "
            f"{'3-D alone':>9} {'+fields':>8} {'together':>8} {'ratio':>6} {'2-D alone':>9} {'together':>8} "
            f"{'twice alone':>11} {'together':>8} {'plan s':>6}"
        )
        print(header)
        ratios, ratios_fields, seconds = [], [], []
        for event in events(args.generated, rng):
            ranked = rank(index, event.skymap, credible_level=0.9, luminosity_weighting=False)
            if not len(ranked):
                continue
            total = float(np.sum(ranked.score))
            ra, dec = np.asarray(index.ra[ranked.rows]), np.asarray(index.dec[ranked.rows])
            share = ranked.score / total
            single, with_fields = config(False), config(True)
            pool = Galaxies.of(index, ranked, pool_size(with_fields, ranked))
            alone = [plan_first_epoch(pool, [site], single, event.time)[0] for site in single.observatories]
            alone_fields = [
                plan_first_epoch(pool, [site], with_fields, event.time)[0] for site in with_fields.observatories
            ]
            started = time.perf_counter()
            together = plan_first_epoch(pool, with_fields.observatories, with_fields, event.time)
            seconds.append(time.perf_counter() - started)
            p3 = [probability_3d(ra, dec, share, fields_of(plans)) for plans in (alone, alone_fields, together)]
            p2 = [probability_2d(event.skymap, fields_of(plans)) for plans in (alone, together)]
            area = float(event.skymap.pixel_area()[event.skymap.credible_region(0.9)].sum() * (180 / math.pi) ** 2)
            pointings = sum(len(plan.pointings) for plan in together)
            ratio = p3[2] / p3[0] if p3[0] > 0 else float("nan")
            if p3[0] > 0:
                ratios.append(ratio)
                ratios_fields.append(p3[2] / p3[1])
            if args.gwemopt and event.path is not None:
                theirs, took = gwemopt_fields(args.gwemopt, event, Path(folder))
                print(
                    f"  gwemopt (sky tiling, greedy) on {event.name}: {len(theirs)} pointings, 3-D "
                    f"{probability_3d(ra, dec, share, theirs):.3f}, 2-D {probability_2d(event.skymap, theirs):.3f} "
                    f"in {took:.0f} s; ours together: {pointings} pointings, 3-D {p3[2]:.3f}, 2-D {p2[1]:.3f} "
                    f"in {seconds[-1]:.2f} s",
                    flush=True,
                )
            print(
                f"{event.name:22} {area:8.0f} {len(ranked):8,} {pointings:9} "
                f"{p3[0]:9.3f} {p3[1]:8.3f} {p3[2]:8.3f} {ratio:6.2f} {p2[0]:9.3f} {p2[1]:8.3f} "
                f"{targeted_twice(alone):11} {targeted_twice(together):8} {seconds[-1]:6.2f}",
                flush=True,
            )
        print(
            f"3-D probability covered, together / alone: median {statistics.median(ratios):.2f}, "
            f"min {min(ratios):.2f}, max {max(ratios):.2f} over {len(ratios)} events "
            f"(together / alone with fields: median {statistics.median(ratios_fields):.2f}); "
            f"planning {statistics.median(seconds):.2f} s median, {max(seconds):.2f} s max"
        )
        if min(ratios) < 1.0:
            sys.exit("coordination covered less than the sites alone on some event")


if __name__ == "__main__":
    main()
