"""Transient candidates in the database: every searched frame, every vetted detection, and the candidates that
group detections within ``match_radius_arcsec`` of each other across frames.

A candidate's history (first and last seen, light curve, number of detections) is read from its detections,
never kept as a counter, so that a frame searched again (a restart in the middle of a night) replaces its own
detections in one transaction and nothing is counted twice. Flags that need more than one frame are judged
when candidates are read: ``unconfirmed`` (seen once though its place was searched again), ``moving`` (two
unconfirmed candidates of the same night within a few arcminutes: an asteroid's track).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    CursorResult,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    select,
)

from toros.floor.sky_geometry import separation_deg
from toros.runtime.config import DatabaseConfig
from toros.runtime.database import add_missing_columns, make_engine

MOVING_WITHIN_ARCMIN = 5.0

metadata = MetaData()

searches = Table(
    "preprocessor_searches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("frame", Text, nullable=False, unique=True),
    Column("alert_id", String(128), nullable=False, index=True),
    Column("date_obs", Float, nullable=False),  # unix seconds
    Column("filter", String(32), nullable=False),
    Column("ra_deg", Float, nullable=False),
    Column("dec_deg", Float, nullable=False),
    Column("radius_deg", Float, nullable=False),
    Column("limmag", Float, nullable=True),
    Column("exposure_s", Float, nullable=True),
    Column("reference", Text, nullable=False),  # "" when there was none
    Column("detections", Integer, nullable=False),  # of |S_corr| >= threshold, before vetting
    Column("message", Text, nullable=False),
    Column("work_order_id", String(128), nullable=False),
    # Added after the first release (``add_missing_columns``): nullable.
    Column("magzp", Float, nullable=True),
    Column("catalog", Text, nullable=True),  # the photometric and astrometric reference catalog (REFCAT)
    Column("reference_epoch", Float, nullable=True),  # unix seconds
    Column("reference_limmag", Float, nullable=True),
    Column("event_time", Float, nullable=True),
    Column("drill", Boolean, nullable=True),
)
candidates = Table(
    "preprocessor_candidates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("alert_id", String(128), nullable=False, index=True),
    Column("ra_deg", Float, nullable=False),
    Column("dec_deg", Float, nullable=False, index=True),
    Column("host", Text, nullable=False),
    Column("host_offset_arcsec", Float, nullable=True),
    Column("host_offset_kpc", Float, nullable=True),
    Column("host_distance_mpc", Float, nullable=True),
)
detections = Table(
    "preprocessor_detections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("candidate_id", Integer, ForeignKey("preprocessor_candidates.id"), nullable=False, index=True),
    Column("search_id", Integer, ForeignKey("preprocessor_searches.id"), nullable=False, index=True),
    Column("date_obs", Float, nullable=False),
    Column("filter", String(32), nullable=False),
    Column("x", Float, nullable=False),
    Column("y", Float, nullable=False),
    Column("ra_deg", Float, nullable=False),
    Column("dec_deg", Float, nullable=False),
    Column("mag", Float, nullable=True),
    Column("mag_err", Float, nullable=True),
    Column("snr", Float, nullable=False),
    Column("score", Float, nullable=False),
    Column("flags", Text, nullable=False),
    Column("triplet", Text, nullable=False),
    Column("record", Text, nullable=False),
    Column("negative", Boolean, nullable=False, default=False),
    Column("position_error_arcsec", Float, nullable=True),
    Column("reference_mag", Float, nullable=True),
    Column("reference_distance_px", Float, nullable=True),
    Column("star_galaxy", Float, nullable=True),
    Column("catalog_star_arcsec", Float, nullable=True),
)


labels = Table(
    "preprocessor_labels",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("candidate", String(64), nullable=False, index=True),
    Column("label", String(16), nullable=False),  # a CandidateVerdict's value
    Column("note", Text, nullable=False),
    Column("requester", String(128), nullable=False),
    Column("work_order_id", String(128), nullable=False, unique=True),
    Column("time", Float, nullable=False),  # unix seconds
    Column("tns_name", String(64), nullable=True),
)


class CandidateVerdict(StrEnum):
    """A person's verdict on a candidate: the label the classifier learns from."""

    REAL = "real"
    BOGUS = "bogus"


@dataclass(frozen=True)
class Label:
    candidate: str
    verdict: CandidateVerdict
    note: str
    requester: str
    work_order_id: str
    time: float
    tns_name: str = ""  # the name the TNS gave it once reported (e.g. "AT 2026abc")


@dataclass(frozen=True)
class Search:
    """One frame searched: where, when, how deep, against what."""

    frame: Path
    alert_id: str
    date_obs: float
    filter: str
    ra_deg: float
    dec_deg: float
    radius_deg: float
    limmag: float | None
    exposure_s: float | None
    reference: str
    detections: int
    message: str
    work_order_id: str
    magzp: float | None = None
    catalog: str = ""
    reference_epoch: float | None = None
    reference_limmag: float | None = None
    event_time: float | None = None
    drill: bool = False


@dataclass(frozen=True)
class Host:
    name: str
    offset_arcsec: float
    offset_kpc: float | None
    distance_mpc: float | None


@dataclass
class NewDetection:
    """A vetted detection to store; ``triplet`` and ``record`` are filled once the candidate is named."""

    x: float
    y: float
    ra_deg: float
    dec_deg: float
    mag: float | None
    mag_err: float | None
    snr: float
    score: float
    flags: tuple[str, ...]
    host: Host | None
    triplet: str = ""
    record: str = ""
    features: tuple[float, ...] = ()  # vetting.FEATURES, as the classifier scored them
    context: DetectionContext | None = None


@dataclass(frozen=True)
class DetectionContext:
    """Where a detection lies, as brokers read it (ZTF's names in brackets): its position error, the nearest
    reference source's distance [distnr] and light [magnr], what lies under it [sgscore1], the nearest catalog
    star [distpsnr1]."""

    position_error_arcsec: float | None = None
    reference_mag: float | None = None
    reference_distance_px: float | None = None
    star_galaxy: float | None = None
    catalog_star_arcsec: float | None = None


@dataclass(frozen=True)
class Detection:
    frame: str
    date_obs: float
    filter: str
    x: float
    y: float
    mag: float | None
    mag_err: float | None
    snr: float
    score: float
    flags: tuple[str, ...]
    triplet: str
    record: str
    context: DetectionContext = DetectionContext()


@dataclass
class Candidate:
    name: str
    alert_id: str
    ra_deg: float
    dec_deg: float
    host: Host | None
    history: list[Detection] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    tns_name: str = ""

    @property
    def first_seen(self) -> float:
        return min(d.date_obs for d in self.history)

    @property
    def last_seen(self) -> float:
        return max(d.date_obs for d in self.history)

    @property
    def best(self) -> Detection:
        return max(self.history, key=lambda d: d.snr)


class CandidateStore:
    def __init__(self, database: DatabaseConfig, *, match_radius_arcsec: float = 1.0) -> None:
        self._engine = make_engine(database, writer=True)
        metadata.create_all(self._engine)
        add_missing_columns(self._engine, metadata)
        self.match_radius_deg = match_radius_arcsec / 3600.0

    def close(self) -> None:
        self._engine.dispose()

    def record(self, search: Search, found: list[NewDetection], name_prefix: str) -> list[tuple[str, int, float]]:
        """Stores a frame's search and its vetted detections, replacing an earlier search of the same frame;
        returns each detection's (candidate name, detections of that candidate so far, its first DATE-OBS)."""
        named: list[tuple[str, int, float]] = []
        with self._engine.begin() as conn:
            earlier = conn.execute(select(searches.c.id).where(searches.c.frame == str(search.frame))).scalar()
            if earlier is not None:
                conn.execute(delete(detections).where(detections.c.search_id == earlier))
                conn.execute(delete(searches).where(searches.c.id == earlier))
                orphans = select(detections.c.candidate_id).distinct()
                conn.execute(delete(candidates).where(candidates.c.id.not_in(orphans)))
            row = {key: value for key, value in search.__dict__.items()}
            row["frame"] = str(search.frame)
            search_id = _inserted_id(conn.execute(searches.insert().values(**row)))
            for detection in found:
                candidate_id, name = self._candidate_for(conn, detection, search.alert_id, name_prefix)
                conn.execute(
                    detections.insert().values(
                        candidate_id=candidate_id,
                        search_id=search_id,
                        date_obs=search.date_obs,
                        filter=search.filter,
                        x=detection.x,
                        y=detection.y,
                        ra_deg=detection.ra_deg,
                        dec_deg=detection.dec_deg,
                        mag=detection.mag,
                        mag_err=detection.mag_err,
                        snr=detection.snr,
                        score=detection.score,
                        flags=" ".join(detection.flags),
                        triplet=detection.triplet,
                        record=detection.record,
                        negative=False,
                        **_context_row(detection.context),
                    )  # fmt: skip
                )
                history = conn.execute(
                    select(detections.c.date_obs).where(detections.c.candidate_id == candidate_id)
                ).all()
                named.append((name, len(history), min(row.date_obs for row in history)))
        return named

    def name_near(self, ra_deg: float, dec_deg: float) -> str | None:
        """The candidate within the match radius of a place, if any (to name files before storing)."""
        with self._engine.connect() as conn:
            found = self._near(conn, ra_deg, dec_deg)
        return found[1] if found else None

    def _near(self, conn: Connection, ra_deg: float, dec_deg: float) -> tuple[int, str] | None:
        radius = self.match_radius_deg
        rows = conn.execute(
            select(candidates.c.id, candidates.c.name, candidates.c.ra_deg, candidates.c.dec_deg).where(
                candidates.c.dec_deg.between(dec_deg - radius, dec_deg + radius)
            )
        ).all()
        best = None
        for row in rows:
            distance = separation_deg(np.array([row.ra_deg]), np.array([row.dec_deg]), ra_deg, dec_deg)[0]
            if distance <= radius and (best is None or distance < best[0]):
                best = (distance, row.id, row.name)
        return (best[1], best[2]) if best else None

    def _candidate_for(self, conn: Connection, detection: NewDetection, alert_id: str, prefix: str) -> tuple[int, str]:
        if (found := self._near(conn, detection.ra_deg, detection.dec_deg)) is not None:
            return found
        host = detection.host
        inserted = _inserted_id(
            conn.execute(
                candidates.insert().values(
                    name=f"pending-{detection.ra_deg:.6f}{detection.dec_deg:+.6f}",
                    alert_id=alert_id,
                    ra_deg=detection.ra_deg,
                    dec_deg=detection.dec_deg,
                    host=host.name if host else "",
                    host_offset_arcsec=host.offset_arcsec if host else None,
                    host_offset_kpc=host.offset_kpc if host else None,
                    host_distance_mpc=host.distance_mpc if host else None,
                )  # fmt: skip
            )
        )
        name = f"{prefix}{inserted:04d}"
        conn.execute(candidates.update().where(candidates.c.id == inserted).values(name=name))
        return inserted, name

    def searches(self, alert_id: str | None = None) -> list[Search]:
        query = select(searches).order_by(searches.c.date_obs)
        if alert_id is not None:
            query = query.where(searches.c.alert_id == alert_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            Search(
                Path(r.frame),
                r.alert_id,
                r.date_obs,
                r.filter,
                r.ra_deg,
                r.dec_deg,
                r.radius_deg,
                r.limmag,
                r.exposure_s,
                r.reference,
                r.detections,
                r.message,
                r.work_order_id,
                r.magzp,
                r.catalog or "",
                r.reference_epoch,
                r.reference_limmag,
                r.event_time,
                bool(r.drill),
            )  # fmt: skip
            for r in rows
        ]

    def candidates(self, alert_id: str | None = None) -> list[Candidate]:
        """Every candidate (of one alert), with its history and the flags only several frames tell."""
        query = select(candidates).order_by(candidates.c.id)
        if alert_id is not None:
            query = query.where(candidates.c.alert_id == alert_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
            history = conn.execute(
                select(detections, searches.c.frame)
                .join(searches, searches.c.id == detections.c.search_id)
                .order_by(detections.c.date_obs)
            ).all()
        by_candidate: dict[int, list[Detection]] = {}
        for d in history:
            by_candidate.setdefault(d.candidate_id, []).append(
                Detection(
                    d.frame,
                    d.date_obs,
                    d.filter,
                    d.x,
                    d.y,
                    d.mag,
                    d.mag_err,
                    d.snr,
                    d.score,
                    tuple(d.flags.split()),
                    d.triplet,
                    d.record,
                    DetectionContext(
                        d.position_error_arcsec,
                        d.reference_mag,
                        d.reference_distance_px,
                        d.star_galaxy,
                        d.catalog_star_arcsec,
                    ),
                )  # fmt: skip
            )
        found = []
        named = {name: label.tns_name for name, label in self.labels(with_tns_name=True).items()}
        for r in rows:
            host = Host(r.host, r.host_offset_arcsec, r.host_offset_kpc, r.host_distance_mpc) if r.host else None
            candidate = Candidate(r.name, r.alert_id, r.ra_deg, r.dec_deg, host, by_candidate.get(r.id, []))
            candidate.tns_name = named.get(r.name, "")
            if candidate.history:
                for detection in candidate.history:
                    candidate.flags.update(detection.flags)
                found.append(candidate)
        self._judge(found, self.searches(alert_id))
        return found

    def exists(self, name: str) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(select(candidates.c.id).where(candidates.c.name == name)).first() is not None

    def alert_of(self, name: str) -> str:
        """The alert a candidate was found for ("" for none or an unknown name)."""
        with self._engine.connect() as conn:
            found = conn.execute(select(candidates.c.alert_id).where(candidates.c.name == name)).scalar()
        return str(found or "")

    def add_label(self, label: Label) -> None:
        """Keeps a verdict (once per work order: a work order run again after a restart adds nothing)."""
        with self._engine.begin() as conn:
            known = conn.execute(select(labels.c.id).where(labels.c.work_order_id == label.work_order_id)).first()
            if known is None:
                conn.execute(
                    labels.insert().values(
                        candidate=label.candidate,
                        label=label.verdict.value,
                        note=label.note,
                        requester=label.requester,
                        work_order_id=label.work_order_id,
                        time=label.time,
                        tns_name=label.tns_name or None,
                    )
                )

    def labels(self, *, with_tns_name: bool = False) -> dict[str, Label]:
        """The latest verdict on each labelled candidate (or the latest label that gave a TNS name)."""
        query = select(labels).order_by(labels.c.time, labels.c.id)
        if with_tns_name:
            query = query.where(labels.c.tns_name.is_not(None))
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return {
            r.candidate: Label(
                r.candidate, CandidateVerdict(r.label), r.note, r.requester, r.work_order_id, r.time, r.tns_name or ""
            )
            for r in rows
        }

    @staticmethod
    def _judge(found: list[Candidate], done: list[Search]) -> None:
        """``unconfirmed`` and ``moving``: what a single frame cannot say."""
        lonely = []  # seen once though another frame covered the place
        for candidate in found:
            frames = {d.frame for d in candidate.history}
            others = [
                s
                for s in done
                if str(s.frame) not in frames
                and separation_deg(np.array([s.ra_deg]), np.array([s.dec_deg]), candidate.ra_deg, candidate.dec_deg)[0]
                < s.radius_deg
            ]
            if len(candidate.history) == 1 and others:
                lonely.append(candidate)
                if any(s.date_obs > candidate.first_seen for s in others):
                    candidate.flags.add("unconfirmed")
        for a in lonely:
            for b in lonely:
                if a is b or math.isclose(a.first_seen, b.first_seen):
                    continue
                apart = separation_deg(np.array([a.ra_deg]), np.array([a.dec_deg]), b.ra_deg, b.dec_deg)[0]
                if apart * 60 <= MOVING_WITHIN_ARCMIN:
                    a.flags.add("moving")


def _context_row(context: DetectionContext | None) -> dict[str, float | None]:
    context = context or DetectionContext()
    return {
        "position_error_arcsec": context.position_error_arcsec,
        "reference_mag": context.reference_mag,
        "reference_distance_px": context.reference_distance_px,
        "star_galaxy": context.star_galaxy,
        "catalog_star_arcsec": context.catalog_star_arcsec,
    }


def _inserted_id(result: CursorResult[Any]) -> int:
    """The key an INSERT of one row gave it."""
    key = result.inserted_primary_key
    assert key is not None, "an insert of one row has a key"
    return int(key[0])
