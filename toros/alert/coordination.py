"""An alert's first epoch, planned for all observatories together.

Each ranked galaxy goes to the site that can observe it soonest; galaxies that share a site's field of view are
taken in one pointing; no galaxy is planned at two sites. The plan is greedy in time, as the greedy schedulers
of GOTO and gwemopt are: the site whose telescope is free first takes, among the fields it can observe for the
whole pointing (altitude, the Sun, the Moon), the one holding the most ranked probability not yet planned; a
site with nothing it can observe waits a slot; a site stops at the end of its first dark run or when it has
``alert.targets_per_observatory`` pointings.

Fields are made once per field of view from the pool of the best-ranked galaxies: one per galaxy, centred on
the middle of the galaxies it reaches, keeping each at least ``EDGE_MARGIN_DEG`` inside the edge. A site with
no ``field_of_view_deg`` points at one galaxy at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from scipy import sparse
from scipy.spatial import cKDTree

from toros.alert.footprints import Footprint, chord, unit_vectors
from toros.alert.ranking import Ranked
from toros.alert.settings import AlertConfig, Observatory
from toros.floor.astronomy import local_noon, night_of, sky_of_night
from toros.floor.catalogs import GalaxyIndex

SLOT_S = 300.0  # the plan's time resolution
HORIZON_H = 24.0  # the first dark run is looked for within this time from the alert
EDGE_MARGIN_DEG = 2.0 / 60.0  # a galaxy this far inside a field's edge at least: its disc and the pointing error
POOL_LIMIT = 4000  # the best-ranked galaxies the plan draws fields from
POOL_PER_POINTING = 20  # ... at least this many per pointing wanted (most are not observable from any site)


@dataclass(frozen=True)
class Candidate:
    """A ranked host-galaxy candidate: its rank in the credible region, where it is, its share of the ranked
    probability."""

    rank: int
    name: str
    ra_deg: float
    dec_deg: float
    distance_mpc: float | None
    score: float


@dataclass(frozen=True)
class Galaxies:
    """The pool: the best-ranked galaxies, best first, with their share of the ranked probability."""

    rank: np.ndarray  # 1-based rank in the credible region
    name: list[str]
    ra: np.ndarray
    dec: np.ndarray
    distance: np.ndarray  # Mpc, NaN when unknown
    share: np.ndarray  # score / the score of every ranked galaxy

    @classmethod
    def of(cls, index: GalaxyIndex, ranked: Ranked, size: int) -> Galaxies:
        rows = np.asarray(ranked.rows[:size])
        total = float(np.sum(ranked.score)) or 1.0
        return cls(
            rank=np.arange(1, len(rows) + 1),
            name=[index.name[row].decode(errors="replace").strip() for row in rows],
            ra=np.asarray(index.ra[rows], dtype=float),
            dec=np.asarray(index.dec[rows], dtype=float),
            distance=np.asarray(index.dist[rows], dtype=float),
            share=np.asarray(ranked.score[: len(rows)], dtype=float) / total,
        )

    def __len__(self) -> int:
        return len(self.ra)

    def subset(self, rows: list[int]) -> Galaxies:
        """Some of the pool (their ranks and shares kept)."""
        index = np.asarray(rows, dtype=np.int64)
        return Galaxies(
            self.rank[index],
            [self.name[i] for i in index],
            self.ra[index],
            self.dec[index],
            self.distance[index],
            self.share[index],
        )

    def candidate(self, i: int) -> Candidate:
        distance = float(self.distance[i])
        return Candidate(
            rank=int(self.rank[i]),
            name=self.name[i],
            ra_deg=float(self.ra[i]),
            dec_deg=float(self.dec[i]),
            distance_mpc=distance if math.isfinite(distance) and distance > 0 else None,
            score=float(self.share[i]),
        )


@dataclass(frozen=True)
class Pointing:
    """One planned pointing: where, when, and the galaxies it was chosen for (best first)."""

    site: str
    ra_deg: float
    dec_deg: float
    start: datetime
    duration_s: float
    galaxies: tuple[Candidate, ...]

    @property
    def name(self) -> str:
        """The best galaxy's name: what the frames' OBJECT keyword says."""
        return self.galaxies[0].name

    @property
    def probability(self) -> float:
        return sum(g.score for g in self.galaxies)


@dataclass
class SitePlan:
    observatory: Observatory
    pointings: list[Pointing] = field(default_factory=list)
    note: str = ""  # why it has fewer pointings than wanted, when it matters


@dataclass(frozen=True)
class Fields:
    """Candidate pointings for one field of view: centres, and which pool galaxies each holds (fields × pool)."""

    ra: np.ndarray
    dec: np.ndarray
    members: sparse.csr_matrix

    @classmethod
    def single(cls, pool: Galaxies) -> Fields:
        """One galaxy per pointing (no field of view known)."""
        n = len(pool)
        return cls(pool.ra, pool.dec, sparse.identity(n, dtype=np.float64, format="csr"))

    @classmethod
    def of(cls, pool: Galaxies, footprint: Footprint) -> Fields:
        """One field per galaxy, moved to the middle of the galaxies it reaches (kept on the galaxy when the
        move would hold less probability)."""
        n = len(pool)
        tree = cKDTree(unit_vectors(pool.ra, pool.dec))
        reach = chord(footprint.radius_deg)
        seeds, members = _pairs(tree.query_ball_point(unit_vectors(pool.ra, pool.dec), reach))
        inside = footprint.contains(
            pool.ra[members], pool.dec[members], pool.ra[seeds], pool.dec[seeds], EDGE_MARGIN_DEG
        ) | (seeds == members)  # a field smaller than twice the margin still holds its own galaxy
        seeds, members = seeds[inside], members[inside]
        # The middle of each field's galaxies: RA unwrapped about the seed's, so that fields across RA 0 work.
        starts = np.searchsorted(seeds, np.arange(n))
        east = (pool.ra[members] - pool.ra[seeds] + 180.0) % 360.0 - 180.0
        middle_ra = (pool.ra + (np.minimum.reduceat(east, starts) + np.maximum.reduceat(east, starts)) / 2) % 360.0
        north = pool.dec[members]
        middle_dec = (np.minimum.reduceat(north, starts) + np.maximum.reduceat(north, starts)) / 2
        moved_seeds, moved = _pairs(tree.query_ball_point(unit_vectors(middle_ra, middle_dec), reach))
        keep = footprint.contains(
            pool.ra[moved], pool.dec[moved], middle_ra[moved_seeds], middle_dec[moved_seeds], EDGE_MARGIN_DEG
        )
        moved_seeds, moved = moved_seeds[keep], moved[keep]
        held = np.bincount(seeds, weights=pool.share[members], minlength=n)
        held_moved = np.bincount(moved_seeds, weights=pool.share[moved], minlength=n)
        better = (held_moved >= held) & (np.bincount(moved_seeds, minlength=n) > 0)
        rows = np.concatenate([seeds[~better[seeds]], moved_seeds[better[moved_seeds]]])
        columns = np.concatenate([members[~better[seeds]], moved[better[moved_seeds]]])
        matrix = sparse.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(n, n))
        return cls(np.where(better, middle_ra, pool.ra), np.where(better, middle_dec, pool.dec), matrix)


def _pairs(neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A k-d tree's ball query (a list of neighbours per point) as two flat arrays: point, neighbour."""
    if not len(neighbours):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    counts = np.fromiter((len(found) for found in neighbours), dtype=np.int64, count=len(neighbours))
    flat = np.concatenate([np.asarray(found, dtype=np.int64) for found in neighbours])
    return np.repeat(np.arange(len(neighbours)), counts), flat


@dataclass
class _Site:
    """A site while planning: its dark run on the slot grid, what it can observe when, and its cursor."""

    plan: SitePlan
    start: datetime  # the first slot
    slots: int  # the dark run's length in slots
    duration_s: float  # one pointing
    fields: Fields
    ok_prefix: np.ndarray  # fields × (slots + 1): cumulative count of slots a field cannot be observed in
    cursor_s: float = 0.0  # from ``start``

    @property
    def free_at(self) -> datetime:
        return self.start + timedelta(seconds=self.cursor_s)

    def observable(self) -> np.ndarray | None:
        """Which fields it can observe for a whole pointing from the cursor; None when its night is over."""
        first = int(self.cursor_s // SLOT_S)
        last = int(math.ceil((self.cursor_s + self.duration_s) / SLOT_S))  # the slot at or after its end
        if last > self.slots:
            return None
        return np.asarray(self.ok_prefix[:, last + 1] - self.ok_prefix[:, first] == 0)


def pool_size(settings: AlertConfig, ranked: Ranked) -> int:
    wanted = settings.targets_per_observatory * max(1, len(settings.observatories)) * POOL_PER_POINTING
    return min(len(ranked), POOL_LIMIT, wanted)


def plan_first_epoch(
    pool: Galaxies, observatories: Sequence[Observatory], settings: AlertConfig, now: datetime
) -> list[SitePlan]:
    """Every site's pointings for the first epoch, best first at each site, no galaxy at two sites."""
    fields_by_view: dict[Footprint | None, Fields] = {}
    sites: list[_Site] = []
    plans = [SitePlan(observatory) for observatory in observatories]
    if len(pool) == 0:
        for plan in plans:
            plan.note = "no ranked galaxy"
        return plans
    for plan in plans:
        observatory = plan.observatory
        view = None if observatory.field_of_view_deg is None else Footprint.of(observatory.field_of_view_deg)
        if view not in fields_by_view:
            fields_by_view[view] = Fields.single(pool) if view is None else Fields.of(pool, view)
        site = _prepare(plan, fields_by_view[view], settings, now)
        if site is not None:
            sites.append(site)
    planned = np.zeros(len(pool), dtype=bool)
    wanted = settings.targets_per_observatory
    while sites:
        site = min(sites, key=lambda s: (s.free_at, plans.index(s.plan)))
        observable = site.observable()
        if observable is None or len(site.plan.pointings) >= wanted:
            sites.remove(site)
            continue
        value = site.fields.members @ np.where(planned, 0.0, pool.share)
        value[~observable] = 0.0
        best = int(np.argmax(value))
        if value[best] <= 0.0:
            site.cursor_s += SLOT_S
            continue
        members = site.fields.members.indices[site.fields.members.indptr[best] : site.fields.members.indptr[best + 1]]
        chosen = sorted((int(m) for m in members if not planned[m]), key=lambda m: -pool.share[m])
        planned[chosen] = True
        site.plan.pointings.append(
            Pointing(
                site.plan.observatory.name,
                float(site.fields.ra[best]),
                float(site.fields.dec[best]),
                site.free_at,
                site.duration_s,
                tuple(pool.candidate(m) for m in chosen),
            )
        )
        site.cursor_s += site.duration_s
    for plan in plans:
        if not plan.pointings and not plan.note:
            plan.note = "no ranked galaxy observable in its coming night"
    return plans


def _prepare(plan: SitePlan, fields: Fields, settings: AlertConfig, now: datetime) -> _Site | None:
    """The site's first dark run after ``now`` on the slot grid and its fields' visibility over it; None (and
    a note) when it has no dark time within ``HORIZON_H``. The grid starts at the local noon before ``now``:
    every alert of a night shares it, and its Sun and Moon."""
    observatory = plan.observatory
    noon = local_noon(observatory, night_of(observatory, now))
    sky = sky_of_night(observatory, noon, SLOT_S)
    here = int((now - noon).total_seconds() // SLOT_S)
    ahead = sky.sun_altitude[here : here + int(HORIZON_H * 3600 / SLOT_S) + 1]
    dark = ahead < settings.twilight_sun_altitude_deg
    if not dark.any():
        plan.note = f"no dark time in the {HORIZON_H:.0f} h after the alert"
        return None
    first = int(np.argmax(dark))
    after = np.flatnonzero(~dark[first:])
    last = first + (int(after[0]) if len(after) else len(dark) - first)
    grid = sky.grid(fields.ra, fields.dec, slice(here + first, here + last))
    ok = (
        (grid.altitude >= settings.min_altitude_deg)
        & (grid.moon_separation >= settings.min_moon_separation_deg)
        & (grid.sun_altitude < settings.twilight_sun_altitude_deg)[None, :]
    )
    prefix = np.zeros((len(fields.ra), ok.shape[1] + 1), dtype=np.int32)
    np.cumsum(~ok, axis=1, out=prefix[:, 1:])
    exposure = settings.exposure
    duration = observatory.overhead_s + exposure.exposure_count * exposure.exposure_time_s
    start = noon + timedelta(seconds=(here + first) * SLOT_S)
    return _Site(plan, start, ok.shape[1] - 1, duration, fields, prefix, max(0.0, (now - start).total_seconds()))
