"""An event's campaign, kept by the alert daemon: the sites working it, every pointing planned and taken (with
its depth), what they covered of the event and how deep, its candidates, and the timeline of the headline
delays. Rewritten after each change as ``storage.root/campaigns/<event>/campaign.json`` (atomically), with
beside it the sky map and the ranked galaxies the coverage is measured against, so that a restarted daemon
carries on where it was.

It learns from the sites' own events: each telescope's ``image_ready`` (a pointing's frames, its first shutter
open) and ``work_order_update`` (a relayed list cancelled or failed), each preprocessor's
``calibration_progress`` (a frame's measured ``LIMMAG``) and ``transient_candidate``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import statistics
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from toros.alert.campaign_reports import CIRCULAR_FILE, TREASUREMAP_FILE, circular_draft, treasuremap_pointings
from toros.alert.classification import IMPOSTORS, Classification, Detection, classify, on_track
from toros.alert.coordination import Galaxies, Pointing
from toros.alert.coverage import (
    Field,
    best_field,
    inside_any,
    map_pixels_at,
    sky_coverage,
)
from toros.alert.footprints import Footprint
from toros.alert.settings import Observatory
from toros.alert.skymap import SkyMap, read_skymap
from toros.floor.kilonova import kilonova_mag
from toros.generated import toros_pb2 as pb
from toros.runtime.files import atomic_write, path_inside

log = logging.getLogger(__name__)

CAMPAIGN_FILE = "campaign.json"
SKYMAP_FILE = "skymap.fits"
GALAXIES_FILE = "galaxies.npz"
GALAXIES_LISTED = 200  # observed galaxies listed with their limits, best first
CONSISTENT_SIGMAS = 2.0  # a host within this many DISTSIGMA of DISTMU along its line of sight is consistent
UNMATCHED_KEPT = 2000  # frame depths that arrived before their frames (and frames searched), kept for a while


class PointingState(StrEnum):
    PLANNED = "planned"
    OBSERVED = "observed"
    CANCELLED = "cancelled"
    FAILED = "failed"


LOOK_WAIT_S = 3600.0  # a due look waits this long at most for the rest of its pointing's frames to be searched
MIN_MOVE_ARCSEC = 1.0  # the preprocessor's match radius: closer detections are one candidate
MAX_RATE_ARCSEC_PER_MIN = 60.0  # faster than the fastest near-Earth objects worth pairing


class LookState(StrEnum):
    SCHEDULED = "scheduled"
    RELAYED = "relayed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    NOT_NEEDED = "not needed"  # an impostor by then (moving, a star, a variable): no telescope time for it


class Purpose(StrEnum):
    FIRST_EPOCH = "first epoch"
    SECOND_LOOK = "second look"


class MoveState(StrEnum):
    SCHEDULED = "scheduled"
    MOVED = "moved"  # planned and sent to other sites
    NOWHERE = "nowhere"  # no other site can take them


@dataclass(frozen=True)
class DueMove:
    """Galaxies a site did not observe, to plan at the others."""

    event: str
    drill: bool
    merger: str | None
    index: int  # in the campaign's moves
    site: str
    galaxies: list[str]


class SiteState(StrEnum):
    OBSERVING = "observing"  # its telescope accepted the pointings
    REFUSED = "refused"  # its telescope refused them or could not be reached
    IDLE = "nothing to observe"  # no pointing for it (the note says why)
    FINISHED = "finished"  # its work orders ended
    BEHIND = "behind"  # its next pointing is long overdue (down, closed, or slower than planned): moved away


def now_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class CampaignPointing:
    site: str
    work_order_id: str
    name: str
    ra_deg: float
    dec_deg: float
    filter: str
    start: str  # the planned start, then the first frame's DATE-OBS
    exposure_s: float  # each frame
    state: PointingState
    galaxies: list[str]
    frames: dict[str, float | None] = field(default_factory=dict)  # frame (file stem) -> its LIMMAG, once searched
    purpose: Purpose = Purpose.FIRST_EPOCH
    taken: dict[str, str] = field(default_factory=dict)  # frame (file stem) -> its DATE-OBS

    @property
    def limmag(self) -> float | None:
        """The pointing's depth: the median of its frames' 5-sigma limits (each frame is searched alone)."""
        depths = [d for d in self.frames.values() if d is not None]
        return round(statistics.median(depths), 3) if depths else None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "frames"} | {
            "state": self.state.value,
            "purpose": self.purpose.value,
            "limmag": self.limmag,
            "frames": self.frames,
        }


@dataclass
class CampaignCandidate:
    name: str
    ra_deg: float
    dec_deg: float
    host: str
    host_distance_mpc: float | None
    host_distance_consistent: bool | None
    distance_note: str
    score: float  # the best real/bogus score of its detections
    in_field: bool  # inside an observed field of the campaign
    detections: list[dict[str, Any]] = field(default_factory=list)
    classification: str = "unknown"
    kilonova_score: float | None = None
    evidence: list[str] = field(default_factory=list)  # why it is classified so
    flags: list[str] = field(default_factory=list)  # the preprocessor's flags on any of its detections
    first_seen: str | None = None  # its first detection in any search of its site (a routine one included)
    # Its light curve beyond its detections: forced photometry on the frames searched since it was found that
    # did not detect it, and the 5σ limits of the observed frames over it measured neither way.
    forced: list[dict[str, Any]] = field(default_factory=list)
    limits: list[dict[str, Any]] = field(default_factory=list)
    label: dict[str, str] | None = None  # a person's latest verdict: {"label": "real"|"bogus", "by", "note"}
    # {"due", "site", "state" (a LookState), "work_order_id", "note"}; None when second looks are off
    second_look: dict[str, str] | None = None


@dataclass(frozen=True)
class Overdue:
    """A site's list given up there: to cancel at the site (its galaxies are moved)."""

    event: str
    site: str
    work_order_id: str
    reason: str


@dataclass(frozen=True)
class DueLook:
    """A candidate's second look, due now."""

    event: str
    drill: bool
    merger: str | None
    candidate: str
    ra_deg: float
    dec_deg: float
    site: str


@dataclass
class Campaign:
    event: str
    drill: bool
    merger: str | None
    sites: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {"state", "note"}
    pointings: list[CampaignPointing] = field(default_factory=list)
    candidates: dict[str, CampaignCandidate] = field(default_factory=dict)
    timeline: dict[str, Any] = field(default_factory=dict)
    coverage: dict[str, Any] = field(default_factory=dict)
    galaxies: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    retracted: bool = False
    updated: str = ""
    published: str = ""
    withdrawn: list[str] = field(default_factory=list)  # lists this daemon cancelled itself (a new map)
    # A site's list that ended with pointings not taken (its operator cancelled it, it failed): their galaxies,
    # to plan at the other sites. {"from", "order", "galaxies", "reason", "state" (a MoveState), "to"}
    moves: list[dict[str, Any]] = field(
        default_factory=list
    )  # how publishing it on Kafka goes (alert.campaign_kafka), when it is published

    def to_json(self) -> dict[str, Any]:
        ranked = sorted(
            self.candidates.values(),
            key=lambda c: (-(c.kilonova_score or 0.0), c.host_distance_consistent is not True, -c.score, c.name),
        )
        return {
            "event": self.event,
            "drill": self.drill,
            "retracted": self.retracted,
            "updated": self.updated,
            "sites": [{"name": name} | state for name, state in self.sites.items()],
            "pointings": [p.to_json() for p in self.pointings],
            "coverage": self.coverage,
            "galaxies": self.galaxies,
            "candidates": [asdict(c) | {"rank": rank} for rank, c in enumerate(ranked, start=1)],
            "timeline": {"merger": self.merger} | self.timeline,
            "notes": self.notes,
            "published": self.published,
            "withdrawn": self.withdrawn,
            "moves": self.moves,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Campaign:
        pointings = [
            CampaignPointing(
                **{k: v for k, v in p.items() if k not in ("limmag", "state", "purpose")},
                state=PointingState(p["state"]),
                purpose=Purpose(p.get("purpose", Purpose.FIRST_EPOCH)),
            )
            for p in data["pointings"]
        ]
        candidates = {
            c["name"]: CampaignCandidate(**{k: v for k, v in c.items() if k != "rank"}) for c in data["candidates"]
        }
        timeline = {k: v for k, v in data["timeline"].items() if k != "merger"}
        return cls(
            data["event"],
            data["drill"],
            data["timeline"].get("merger"),
            {s["name"]: {k: v for k, v in s.items() if k != "name"} for s in data["sites"]},
            pointings,
            candidates,
            timeline,
            data["coverage"],
            data["galaxies"],
            data["notes"],
            data["retracted"],
            data["updated"],
            data.get("published", ""),
            data.get("withdrawn", []),
            data.get("moves", []),
        )


@dataclass
class EventSky:
    """What coverage is measured against: the sky map and the ranked galaxies (share of the probability)."""

    skymap: SkyMap
    name: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    distance: np.ndarray
    share: np.ndarray

    def save(self, folder: Path, skymap_bytes: bytes | bytearray) -> None:
        with atomic_write(folder / SKYMAP_FILE) as stream:
            stream.write(bytes(skymap_bytes))
        buffer = io.BytesIO()
        np.savez(buffer, name=self.name, ra=self.ra, dec=self.dec, distance=self.distance, share=self.share)
        with atomic_write(folder / GALAXIES_FILE) as stream:
            stream.write(buffer.getvalue())

    @classmethod
    def load(cls, folder: Path) -> EventSky:
        skymap = read_skymap((folder / SKYMAP_FILE).read_bytes())
        with np.load(folder / GALAXIES_FILE) as saved:
            return cls(skymap, *(saved[key] for key in ("name", "ra", "dec", "distance", "share")))

    def distance_posterior(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """DISTMU and DISTSIGMA of the map's pixels under the places; None for a 2-D map."""
        if self.skymap.distmu is None or self.skymap.distsigma is None:
            return None
        pixel = map_pixels_at(self.skymap, ra, dec)
        return self.skymap.distmu[pixel], self.skymap.distsigma[pixel]


def kilonova_reach_mpc(filter: str, days: float, limmag: float) -> float:
    """How far an AT2017gfo-like kilonova ``days`` after the merger is brighter than ``limmag``; 0 where the
    model has no light curve for the filter or before the merger."""
    at_40 = kilonova_mag(filter, days, 40.0)
    if at_40 is None:
        return 0.0
    return 40.0 * 10 ** ((limmag - at_40) / 5.0)


class Campaigns:
    """Every event's campaign on this node, updated from the relay and the sites' events (thread-safe)."""

    def __init__(
        self,
        root: Path,
        observatories: tuple[Observatory, ...],
        publish: Callable[[str, dict[str, Any]], None] | None = None,
        second_look_delay_s: float | None = None,
    ) -> None:
        self.root = root
        self.second_look_delay_s = second_look_delay_s  # None: candidates are not observed again
        self.publish = publish  # each new state of a campaign, to partners (alert.campaign_kafka)
        self.observatories = {o.name: o for o in observatories}
        self._lock = threading.Lock()
        self._campaigns: dict[str, Campaign] = {}
        self._skies: dict[str, EventSky] = {}
        self._orders: dict[str, str] = {}  # work order id -> event
        self._frames: dict[str, tuple[str, int]] = {}  # frame stem -> (event, pointing index)
        self._unmatched: dict[str, tuple[float, str]] = {}  # frame stem -> (LIMMAG, when), for frames yet unseen
        self._searched: dict[str, None] = {}  # frame stems the preprocessors are done with (a look waits for them)
        self._early: dict[str, list[tuple[str, pb.Event]]] = {}  # work order -> its events before the relay recorded it
        for path in sorted(root.glob(f"*/{CAMPAIGN_FILE}")) if root.is_dir() else []:
            try:
                campaign = Campaign.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("campaign %s not read: %s", path, exc)
                continue
            self._campaigns[campaign.event] = campaign
            self._index(campaign)

    def folder(self, event: str) -> Path:
        return path_inside(self.root, event)

    # -- from the relay ------------------------------------------------------------------------

    def relayed(
        self,
        event: str,
        *,
        drill: bool,
        merger: datetime | None,
        notice: datetime | None,
        now: datetime,
        sky: EventSky,
        skymap_bytes: bytes | bytearray,
        sites: list[tuple[Observatory, str, list[Pointing], bool, str]],
        filter: str,
        exposure_s: float,
    ) -> Campaign:
        """A notice's pointings relayed (site, work order id, pointings, accepted, note): the campaign takes
        the new sky map and ranking, and the pointings join the ones already there."""
        with self._lock:
            campaign = self._campaigns.get(event) or Campaign(event, drill, now_iso(merger) if merger else None)
            self._campaigns[event] = campaign
            folder = self.folder(event)
            sky.save(folder, skymap_bytes)
            self._skies[event] = sky
            campaign.timeline.setdefault("notice", now_iso(notice) if notice else None)
            campaign.timeline.setdefault("relayed", now_iso(now))
            for observatory, _, pointings, accepted, note in sites:
                state = SiteState.OBSERVING if accepted else SiteState.REFUSED if pointings else SiteState.IDLE
                campaign.sites[observatory.name] = {"state": state.value, "note": note}
            self._add_pointings(campaign, sites, filter, exposure_s)
            self._index(campaign)
            self._update(campaign, now)
            return campaign

    @staticmethod
    def _add_pointings(
        campaign: Campaign, sites: list[tuple[Observatory, str, list[Pointing], bool, str]], filter: str,
        exposure_s: float,
    ) -> None:  # fmt: skip
        for observatory, order_id, pointings, accepted, _ in sites:
            for p in pointings:
                campaign.pointings.append(
                    CampaignPointing(
                        observatory.name, order_id, p.name, round(p.ra_deg, 6), round(p.dec_deg, 6), filter,
                        now_iso(p.start), exposure_s, PointingState.PLANNED if accepted else PointingState.FAILED,
                        [g.name for g in p.galaxies],
                    )
                )  # fmt: skip

    def retracted(self, event: str, now: datetime) -> None:
        with self._lock:
            campaign = self._campaigns.get(event)
            if campaign is None:
                return
            campaign.retracted = True
            campaign.notes.append(f"{now_iso(now)}: retracted by LVK; every site's lists cancelled")
            for candidate in campaign.candidates.values():
                look = candidate.second_look
                if look is not None and look["state"] == LookState.SCHEDULED:
                    look.update(state=LookState.CANCELLED.value, note="the event was retracted")
            self._update(campaign, now)

    # -- from the sites ------------------------------------------------------------------------

    def telescope_event(self, site: str, event: pb.Event, now: datetime) -> None:
        with self._lock:
            if not self._telescope_change(site, event):
                return
            self._update(self._campaigns[self._orders[event.work_order_id]], now)

    def _telescope_change(self, site: str, event: pb.Event) -> bool:
        """A telescope's event applied to its campaign; whether it changed it. An event of a list the relay
        has not recorded yet (a telescope may answer before the relay returns) is kept until it is."""
        kind = event.WhichOneof("kind")
        ended = kind == "work_order_update" and event.work_order_update.state in (
            pb.WORK_ORDER_STATE_DONE, pb.WORK_ORDER_STATE_FAILED, pb.WORK_ORDER_STATE_CANCELLED,
        )  # fmt: skip
        frame = kind == "image_ready" and event.image_ready.image_type == pb.IMAGE_TYPE_LIGHT
        if not (ended or frame) or not event.work_order_id:
            return False
        name = self._orders.get(event.work_order_id)
        if name is None:
            self._early.setdefault(event.work_order_id, []).append((site, event))
            while len(self._early) > UNMATCHED_KEPT:
                self._early.pop(next(iter(self._early)))
            return False
        campaign = self._campaigns[name]
        if frame:
            self._frame_taken(campaign, site, event)
        else:
            self._order_ended(campaign, site, event)
        return True

    def preprocessor_event(self, site: str, event: pb.Event, now: datetime) -> None:
        with self._lock:
            kind = event.WhichOneof("kind")
            if kind == "calibration_progress" and event.calibration_progress.stage in ("science", "discovery"):
                self._searched[Path(event.calibration_progress.path).stem.removesuffix("_cal")] = None
                while len(self._searched) > UNMATCHED_KEPT:
                    self._searched.pop(next(iter(self._searched)))
            if kind == "calibration_progress" and event.calibration_progress.HasField("science"):
                progress = event.calibration_progress
                stem = Path(progress.path).stem.removesuffix("_cal")
                when = now_iso(event.time.ToDatetime(UTC))
                if stem not in self._frames:
                    self._unmatched[stem] = (progress.science.limmag, when)
                    while len(self._unmatched) > UNMATCHED_KEPT:
                        self._unmatched.pop(next(iter(self._unmatched)))
                    return
                name, index = self._frames[stem]
                campaign = self._campaigns[name]
                self._frame_depth(campaign, index, stem, progress.science.limmag, when)
            elif kind == "transient_candidate" and event.transient_candidate.alert_id in self._campaigns:
                campaign = self._campaigns[event.transient_candidate.alert_id]
                self._candidate(campaign, site, event)
            elif kind == "candidate_labelled" and event.candidate_labelled.alert_id in self._campaigns:
                labelled = event.candidate_labelled
                campaign = self._campaigns[labelled.alert_id]
                candidate = campaign.candidates.get(labelled.name)
                if candidate is None:
                    return
                verdict = "real" if labelled.label == pb.CANDIDATE_LABEL_REAL else "bogus"
                candidate.label = {"label": verdict, "by": labelled.by, "note": labelled.note}
            elif kind == "forced_photometry" and event.forced_photometry.alert_id in self._campaigns:
                campaign = self._campaigns[event.forced_photometry.alert_id]
                if not self._forced(campaign, event.forced_photometry):
                    return
            else:
                return
            self._update(campaign, now)

    def _frame_taken(self, campaign: Campaign, site: str, event: pb.Event) -> None:
        image = event.image_ready
        index = next(
            (
                i
                for i, p in enumerate(campaign.pointings)
                if p.work_order_id == event.work_order_id and p.name == image.object
            ),
            None,
        )
        if index is None:
            campaign.notes.append(f"{site}: a frame of {image.object!r} matches no pointing ({Path(image.path).name})")
            return
        pointing = campaign.pointings[index]
        stem = Path(image.path).stem
        taken = now_iso(image.date_obs.ToDatetime(UTC))
        if not pointing.frames:
            pointing.start = taken
        pointing.state = PointingState.OBSERVED
        pointing.filter = image.filter or pointing.filter
        pointing.exposure_s = image.exposure_time.ToTimedelta().total_seconds() or pointing.exposure_s
        pointing.frames.setdefault(stem, None)
        pointing.taken[stem] = taken
        self._frames[stem] = (campaign.event, index)
        if pointing.purpose is Purpose.SECOND_LOOK:
            _earliest(campaign.timeline, "second_look", taken)
        else:
            opened = campaign.timeline.setdefault("first_shutter_open_by_site", {})
            _earliest(opened, site, taken)
            campaign.timeline["first_shutter_open"] = min(opened.values())
        if stem in self._unmatched:
            limmag, when = self._unmatched.pop(stem)
            self._frame_depth(campaign, index, stem, limmag, when)

    def _frame_depth(self, campaign: Campaign, index: int, stem: str, limmag: float, when: str) -> None:
        campaign.pointings[index].frames[stem] = round(limmag, 3) if math.isfinite(limmag) and limmag > 0 else None
        _earliest(campaign.timeline, "first_frame_searched", when)

    def _order_ended(self, campaign: Campaign, site: str, event: pb.Event) -> None:
        """A list ended: its pointings not taken are cancelled or failed, and — unless this daemon withdrew it or
        the event was retracted — their galaxies are to be planned at the other sites, once."""
        update = event.work_order_update
        left: list[str] = []
        for pointing in campaign.pointings:
            if pointing.work_order_id == event.work_order_id and pointing.state is PointingState.PLANNED:
                cancelled = update.state == pb.WORK_ORDER_STATE_CANCELLED
                pointing.state = PointingState.CANCELLED if cancelled else PointingState.FAILED
                if pointing.purpose is Purpose.FIRST_EPOCH:
                    left += pointing.galaxies
        if site in campaign.sites:
            campaign.sites[site] = {"state": SiteState.FINISHED.value, "note": update.message}
        ours = event.work_order_id in campaign.withdrawn or campaign.retracted
        moved_before = {galaxy for move in campaign.moves for galaxy in move["galaxies"]}
        left = [galaxy for galaxy in left if galaxy not in moved_before]  # a galaxy moves once, never back and forth
        if left and not ours and all(m["order"] != event.work_order_id for m in campaign.moves):
            campaign.moves.append(
                {"from": site, "order": event.work_order_id, "galaxies": left, "reason": update.message,
                 "state": MoveState.SCHEDULED.value, "to": []}
            )  # fmt: skip

    def behind(self, now: datetime, slack_s: float) -> list[Overdue]:
        """Lists whose next pointing is more than ``slack_s`` past its planned start (a site down, closed without
        ending its list, or slower than planned): their pointings not taken are given up there and their galaxies
        moved to the other sites (once), when there is another site not behind itself; the lists to cancel."""
        overdue: list[Overdue] = []
        moment = now - timedelta(seconds=slack_s)
        with self._lock:
            for campaign in self._campaigns.values():
                if campaign.retracted:
                    continue
                moved = {m["order"] for m in campaign.moves}
                waiting: dict[str, list[CampaignPointing]] = {}
                for pointing in campaign.pointings:
                    if pointing.state is PointingState.PLANNED and pointing.purpose is Purpose.FIRST_EPOCH:
                        waiting.setdefault(pointing.work_order_id, []).append(pointing)
                for order, pointings in waiting.items():
                    due = min(datetime.fromisoformat(p.start) for p in pointings)
                    if order in moved or order in campaign.withdrawn or due > moment:
                        continue
                    site = pointings[0].site
                    others = [name for name in self.observatories if name != site
                              and campaign.sites.get(name, {}).get("state") != SiteState.BEHIND.value]  # fmt: skip
                    if not others:  # nowhere to move them: the site carries on, late
                        continue
                    reason = f"{site} fell behind: its next pointing was due at {due:%H:%M} UTC"
                    moved_before = {galaxy for move in campaign.moves for galaxy in move["galaxies"]}
                    left = [g for p in pointings for g in p.galaxies if g not in moved_before]
                    for pointing in pointings:
                        pointing.state = PointingState.CANCELLED
                    campaign.moves.append({"from": site, "order": order, "galaxies": left, "reason": reason,
                                           "state": MoveState.SCHEDULED.value, "to": []})  # fmt: skip
                    campaign.sites[site] = {"state": SiteState.BEHIND.value, "note": reason}
                    overdue.append(Overdue(campaign.event, site, order, reason))
                    self._update(campaign, now)
        return overdue

    def withdrawing(self, event: str, order_ids: list[str]) -> None:
        """Lists this daemon is about to cancel itself: their galaxies are planned anew, not moved."""
        with self._lock:
            campaign = self._campaigns.get(event)
            if campaign is not None:
                campaign.withdrawn = sorted(set(campaign.withdrawn) | set(order_ids))

    def due_moves(self) -> list[DueMove]:
        with self._lock:
            return [
                DueMove(c.event, c.drill, c.merger, n, m["from"], list(m["galaxies"]))
                for c in self._campaigns.values()
                if not c.retracted
                for n, m in enumerate(c.moves)
                if m["state"] == MoveState.SCHEDULED
            ]

    def galaxies_named(self, event: str, names: list[str]) -> Galaxies:
        """The event's ranked galaxies of these names, as a pool to plan from (best first)."""
        with self._lock:
            sky = self._sky(event)
        if sky is None:
            return Galaxies(np.empty(0, np.int64), [], np.empty(0), np.empty(0), np.empty(0), np.empty(0))
        rows = np.flatnonzero(np.isin(sky.name, names))
        return Galaxies(rows + 1, [str(n) for n in sky.name[rows]], sky.ra[rows], sky.dec[rows], sky.distance[rows],
                        sky.share[rows])  # fmt: skip

    def moved(
        self, move: DueMove, sites: list[tuple[Observatory, str, list[Pointing], bool, str]], filter: str,
        exposure_s: float, now: datetime,
    ) -> None:  # fmt: skip
        """Where a move's galaxies went (the lists sent, each accepted or not)."""
        with self._lock:
            campaign = self._campaigns[move.event]
            self._add_pointings(campaign, sites, filter, exposure_s)
            taken = [observatory.name for observatory, _, pointings, accepted, _ in sites if accepted and pointings]
            campaign.moves[move.index].update(state=(MoveState.MOVED if taken else MoveState.NOWHERE).value, to=taken)
            self._index(campaign)
            self._update(campaign, now)

    def _candidate(self, campaign: Campaign, site: str, event: pb.Event) -> None:
        found = event.transient_candidate
        candidate = campaign.candidates.get(found.name)
        if candidate is None:
            distance, consistent, note = self._host_distance(campaign.event, found)
            candidate = CampaignCandidate(
                found.name, found.ra_deg, found.dec_deg, found.host, distance, consistent, note, 0.0, False
            )
            campaign.candidates[found.name] = candidate
            found_in = self._frames.get(Path(found.frame_path).name.removesuffix(".fits").removesuffix("_cal"))
            in_a_look = found_in is not None and campaign.pointings[found_in[1]].purpose is Purpose.SECOND_LOOK
            if in_a_look:  # a look finds what is new there too; the next epoch confirms it, not a chain of looks
                candidate.second_look = {"due": "", "site": site, "state": LookState.NOT_NEEDED.value,
                                         "work_order_id": "", "note": "found in a second look's frames"}  # fmt: skip
            elif self.second_look_delay_s is not None and not campaign.retracted:
                due = found.date_obs.ToDatetime(UTC) + timedelta(seconds=self.second_look_delay_s)
                candidate.second_look = {
                    "due": now_iso(due), "site": site, "state": LookState.SCHEDULED.value, "work_order_id": "",
                    "note": "",
                }  # fmt: skip
            when = now_iso(event.time.ToDatetime(UTC))
            _earliest(campaign.timeline, "first_candidate", when)
            _earliest(campaign.timeline, "first_frame_searched", when)  # its frame was searched by then
        candidate.score = max(candidate.score, round(found.score, 4))
        candidate.flags = sorted(set(candidate.flags) | set(found.flags))
        if found.HasField("first_seen"):
            first = now_iso(found.first_seen.ToDatetime(UTC))
            candidate.first_seen = min(candidate.first_seen or first, first)
        detection = {
            "time": now_iso(found.date_obs.ToDatetime(UTC)),
            "filter": found.filter,
            "mag": round(found.mag, 3),
            "mag_err": round(found.mag_err, 3),
            "snr": round(found.snr, 1),
            "frame": Path(found.frame_path).name,
            "ra_deg": round(found.ra_deg, 7),
            "dec_deg": round(found.dec_deg, 7),
        }
        if detection not in candidate.detections:
            candidate.detections.append(detection)
            candidate.detections.sort(key=lambda d: d["time"])

    @staticmethod
    def _forced(campaign: Campaign, measured: pb.ForcedPhotometry) -> bool:
        """A candidate's forced photometry on a frame (once per frame); False for an unknown candidate."""
        candidate = campaign.candidates.get(measured.name)
        if candidate is None:
            return False
        frame = Path(measured.frame_path).name
        point = {
            "time": now_iso(measured.date_obs.ToDatetime(UTC)),
            "filter": measured.filter,
            "flux": measured.flux,
            "flux_err": measured.flux_err,
            "mag": round(measured.mag, 3) if math.isfinite(measured.mag) else None,
            "mag_err": round(measured.mag_err, 3) if math.isfinite(measured.mag_err) else None,
            "limmag": round(measured.limmag, 3) if math.isfinite(measured.limmag) else None,
            "frame": frame,
        }
        candidate.forced = sorted(
            [f for f in candidate.forced if f["frame"] != frame] + [point], key=lambda f: f["time"]
        )
        return True

    def _limits(self, campaign: Campaign, viewed: list[tuple[CampaignPointing, Field]]) -> None:
        """Each candidate's 5σ limits from the observed frames over it that neither detected nor measured it
        (frames searched before it was found, another site's)."""
        found = list(campaign.candidates.values())
        if not found:
            return
        ra, dec = np.array([c.ra_deg for c in found]), np.array([c.dec_deg for c in found])
        for candidate in found:
            candidate.limits = []
        for pointing, footprint in viewed:
            over = inside_any(ra, dec, [footprint])
            for candidate in (c for c, inside in zip(found, over, strict=True) if inside):
                measured = {str(d.get("frame", "")).removesuffix(".fits").removesuffix("_cal")
                            for d in [*candidate.detections, *candidate.forced]}  # fmt: skip
                candidate.limits += [
                    {
                        "time": pointing.taken.get(stem, pointing.start),
                        "filter": pointing.filter,
                        "limmag": depth,
                        "frame": stem,
                    }  # fmt: skip
                    for stem, depth in pointing.frames.items()
                    if depth is not None and stem not in measured
                ]
        for candidate in found:
            candidate.limits.sort(key=lambda limit: str(limit["time"]))

    def _host_distance(self, event: str, found: pb.TransientCandidate) -> tuple[float | None, bool | None, str]:
        """The host's catalog distance, and whether it lies within ``CONSISTENT_SIGMAS`` of the GW distance
        along the candidate's line of sight (with the reason when that cannot be said)."""
        sky = self._sky(event)
        if not found.host:
            return None, None, "no catalog galaxy near it"
        if sky is None:
            return None, None, "the event's sky map is not available"
        match = np.flatnonzero(sky.name == found.host)
        distance = float(sky.distance[match[0]]) if len(match) else math.nan
        if not (math.isfinite(distance) and distance > 0):
            return None, None, f"its host {found.host} has no distance in the catalog"
        posterior = sky.distance_posterior(np.array([found.ra_deg]), np.array([found.dec_deg]))
        if posterior is None:
            return distance, None, "the sky map has no distances (2-D)"
        mu, sigma = float(posterior[0][0]), float(posterior[1][0])
        if not (math.isfinite(mu) and sigma > 0):
            return distance, None, "no GW distance along its line of sight"
        consistent = abs(distance - mu) <= CONSISTENT_SIGMAS * sigma
        return distance, consistent, f"GW distance {mu:.0f} ± {sigma:.0f} Mpc there; host {distance:.0f} Mpc"

    # -- coverage and the file -----------------------------------------------------------------

    def _sky(self, event: str) -> EventSky | None:
        if event not in self._skies:
            try:
                self._skies[event] = EventSky.load(self.folder(event))
            except (OSError, ValueError) as exc:
                log.error("campaign %s: sky map and galaxies not readable: %s", event, exc)
                return None
        return self._skies[event]

    def published(self, event: str, text: str, now: datetime) -> None:
        """How publishing the campaign went (shown in it; not published again for that)."""
        with self._lock:
            campaign = self._campaigns.get(event)
            if campaign is None or campaign.published.endswith(text):
                return
            campaign.published = f"{now_iso(now)}: {text}"
            self._write(campaign, campaign.to_json())

    def _update(self, campaign: Campaign, now: datetime) -> None:
        campaign.updated = now_iso(now)
        sky = self._sky(campaign.event)
        if sky is not None:
            self._measure(campaign, sky)
        data = campaign.to_json()
        self._write(campaign, data)
        if self.publish is not None:
            self.publish(campaign.event, {k: v for k, v in data.items() if k != "published"})

    def _write(self, campaign: Campaign, data: dict[str, Any]) -> None:
        folder = self.folder(campaign.event)
        with atomic_write(folder / CAMPAIGN_FILE, "w") as stream:
            json.dump(data, stream, indent=1)
        with atomic_write(folder / TREASUREMAP_FILE, "w") as stream:
            json.dump(treasuremap_pointings(data, self.observatories), stream, indent=1)
        with atomic_write(folder / CIRCULAR_FILE, "w") as stream:
            stream.write(circular_draft(data))

    def _measure(self, campaign: Campaign, sky: EventSky) -> None:
        """Coverage, depth and the kilonova efficiency of the pointings taken so far."""
        merger = datetime.fromisoformat(campaign.merger) if campaign.merger else None
        taken = [p for p in campaign.pointings if p.state is PointingState.OBSERVED]
        viewed = self._viewed(taken)
        fields = [field for _, field in viewed]
        reach = []
        for pointing, _ in viewed:
            depth = pointing.limmag
            days = (datetime.fromisoformat(pointing.start) - merger).total_seconds() / 86400 if merger else None
            reach.append(kilonova_reach_mpc(pointing.filter, days, depth) if depth and days else 0.0)
        depth_of = np.array(reach)
        best = best_field(sky.ra, sky.dec, fields, depth_of)
        distance = sky.distance.copy()
        missing = ~(np.isfinite(distance) & (distance > 0))
        if missing.any() and (posterior := sky.distance_posterior(sky.ra[missing], sky.dec[missing])) is not None:
            distance[missing] = posterior[0]  # a galaxy without a distance is taken at the GW distance there
        inside = best >= 0
        deep = inside & (depth_of[np.maximum(best, 0)] >= distance) if len(fields) else inside
        covered, efficiency = sky_coverage(sky.skymap, fields, reach)  # one pass over the fields' pixels
        campaign.coverage = {
            "pointings_observed": len(taken),
            "probability_2d": round(covered, 5),
            "probability_3d_observed": round(float(np.sum(sky.share[inside])), 5),
            "probability_3d": round(float(np.sum(sky.share[deep])), 5),
            "kilonova_efficiency": _rounded(efficiency) if merger else None,
            "kilonova_model": "AT2017gfo (floor.kilonova)",
        }
        campaign.galaxies = self._observed_galaxies(sky, best, distance, [p for p, _ in viewed])
        self._limits(campaign, viewed)
        found = list(campaign.candidates.values())
        where = inside_any(np.array([c.ra_deg for c in found]), np.array([c.dec_deg for c in found]), fields)
        for candidate, inside_a_field in zip(found, where, strict=True):
            candidate.in_field = bool(inside_a_field)
            self._classify(candidate, sky, merger)
        self._same_movers(found)
        if any(c.classification != Classification.UNKNOWN for c in found):
            _earliest(campaign.timeline, "classification", campaign.updated)

    def _seen_in(self, candidate: CampaignCandidate) -> set[tuple[int, str]]:
        """(pointing index, frame stem) of each frame a candidate was detected in (frames of known pointings)."""
        stems = {str(d.get("frame", "")).removesuffix(".fits").removesuffix("_cal") for d in candidate.detections}
        return {(self._frames[stem][1], stem) for stem in stems if stem in self._frames}

    def _same_movers(self, found: list[CampaignCandidate]) -> None:
        """Movers that no one candidate shows: two candidates of one pointing, each in frames the other is
        missing from, apart by more than the match radius and less than ``MAX_RATE_ARCSEC_PER_MIN`` allows (an
        asteroid that left the match radius between two exposures); and a candidate on the extrapolated track of
        one seen moving (found anew where it had gone by the second look)."""
        seen = [self._seen_in(c) for c in found]
        for i, a in enumerate(found):
            for j in range(i + 1, len(found)):
                b = found[j]
                if not (seen[i] and seen[j]) or {p for p, _ in seen[i]} != {p for p, _ in seen[j]}:
                    continue
                if {f for _, f in seen[i]} & {f for _, f in seen[j]}:
                    continue
                apart, minutes = _apart(a, b)
                if MIN_MOVE_ARCSEC < apart <= MAX_RATE_ARCSEC_PER_MIN * minutes:
                    why = f'{a.name} and {b.name}: one source moving {apart / minutes:.2f}"/min ({apart:.1f}" in ' \
                          f"{minutes:.1f} min), each missing from the other's frames"  # fmt: skip
                    for mover in (a, b):
                        mover.classification, mover.kilonova_score, mover.evidence = (
                            Classification.MOVING.value,
                            0.0,
                            [why],
                        )
        movers = [c for c in found if c.classification == Classification.MOVING and len(c.detections) >= 2]
        movers += _tracks([c for c in found if c.classification == Classification.MOVING and len(c.detections) == 1])
        for candidate in found:
            if candidate.classification == Classification.MOVING:
                continue
            for mover in movers:
                if on_track(_detections(mover), _detections(candidate)):
                    candidate.classification = Classification.MOVING.value
                    candidate.kilonova_score = 0.0
                    candidate.evidence = [f"on the track of {mover.name}, seen moving ({mover.evidence[0]})"]
                    break

    @staticmethod
    def _classify(candidate: CampaignCandidate, sky: EventSky, merger: datetime | None) -> None:
        """Its classification and kilonova score, from its detections and its host's (or the GW) distance."""
        posterior = sky.distance_posterior(np.array([candidate.ra_deg]), np.array([candidate.dec_deg]))
        mu, sigma = (float(posterior[0][0]), float(posterior[1][0])) if posterior is not None else (math.nan, 0.0)
        usable = math.isfinite(mu) and sigma > 0
        distance, source, consistency = candidate.host_distance_mpc, f"its host {candidate.host}", None
        if distance is not None and usable:
            consistency = math.exp(-0.5 * ((distance - mu) / sigma) ** 2)
        elif distance is None and usable:
            distance, source = mu, "the GW distance along its line of sight"
        verdict = classify(
            _detections(candidate, forced=True),
            merger=merger,
            first_seen=datetime.fromisoformat(candidate.first_seen) if candidate.first_seen else None,
            flags=set(candidate.flags),
            distance_mpc=distance,
            distance_source=source,
            host_consistency=consistency,
            vetting_score=1.0 if candidate.label and candidate.label["label"] == "real" else candidate.score,
        )
        candidate.classification = verdict.classification.value
        candidate.kilonova_score = verdict.kilonova_score
        candidate.evidence = verdict.evidence
        if candidate.label is not None:  # a person's word counts: real takes the vetting's doubt away; bogus, all
            said = f"labelled {candidate.label['label']} by {candidate.label['by']}"
            candidate.evidence.insert(0, said + (f": {candidate.label['note']}" if candidate.label["note"] else ""))
            if candidate.label["label"] == "bogus":
                candidate.kilonova_score = 0.0

    @staticmethod
    def _observed_galaxies(
        sky: EventSky, best: np.ndarray, distance: np.ndarray, with_view: list[CampaignPointing]
    ) -> list[dict[str, Any]]:
        """The best-ranked galaxies inside observed fields (``best``: the index of the deepest field, in
        ``with_view``, each lies in), with the absolute magnitude a transient needed there to be seen (the
        field's LIMMAG less the galaxy's distance modulus)."""
        listed = []
        for row in np.flatnonzero(best >= 0)[:GALAXIES_LISTED]:
            pointing = with_view[int(best[row])]
            depth, d = pointing.limmag, float(distance[row])
            listed.append(
                {
                    "name": str(sky.name[row]),
                    "share": round(float(sky.share[row]), 6),
                    "site": pointing.site,
                    "distance_mpc": round(d, 1) if math.isfinite(d) else None,
                    "limmag": depth,
                    "absolute_mag_limit": round(depth - 5 * math.log10(d * 1e5), 2)
                    if depth and math.isfinite(d) and d > 0
                    else None,
                }
            )
        return listed

    # -- second looks ------------------------------------------------------------------------

    def due(self, now: datetime) -> list[DueLook]:
        """The candidates' second looks due at ``now`` and not sent yet."""
        moment = now_iso(now)
        with self._lock:
            for campaign in self._campaigns.values():
                spared = False
                for k in campaign.candidates.values():
                    look = k.second_look
                    bogus = k.label is not None and k.label["label"] == "bogus"
                    if look and look["state"] == LookState.SCHEDULED and (k.classification in IMPOSTORS or bogus):
                        why = k.evidence[0] if bogus else f"{k.classification}: {k.evidence[0]}"
                        look.update(state=LookState.NOT_NEEDED.value, note=why)
                        spared = True
                if spared:
                    self._write(campaign, campaign.to_json())
            return [
                DueLook(c.event, c.drill, c.merger, k.name, k.ra_deg, k.dec_deg, k.second_look["site"])
                for c in self._campaigns.values()
                if not c.retracted
                for k in c.candidates.values()
                if k.second_look
                and k.second_look["state"] == LookState.SCHEDULED
                and k.second_look["due"] <= moment
                and not self._searching(c, k, now)
            ]

    def _searching(self, campaign: Campaign, candidate: CampaignCandidate, now: datetime) -> bool:
        """Whether frames of the pointing a candidate was found in are still being searched (what they show may
        make it an impostor: a mover missing from the next frame), for at most ``LOOK_WAIT_S`` past its due."""
        due = datetime.fromisoformat(candidate.second_look["due"]) if candidate.second_look else now
        if (now - due).total_seconds() > LOOK_WAIT_S:
            return False
        pointings = {index for index, _ in self._seen_in(candidate)}
        return any(stem not in self._searched for i in pointings for stem in campaign.pointings[i].frames)

    def looked(
        self, look: DueLook, site: Observatory | None, order_id: str, filter: str, exposure_s: float, note: str,
        now: datetime,
    ) -> None:  # fmt: skip
        """A second look sent to ``site`` as work order ``order_id`` (None site: it could not be sent)."""
        with self._lock:
            campaign = self._campaigns[look.event]
            state = campaign.candidates[look.candidate].second_look
            assert state is not None, "a due look was scheduled"
            if site is None:
                state.update(state=LookState.FAILED.value, note=note)
            else:
                state.update(state=LookState.RELAYED.value, site=site.name, work_order_id=order_id, note=note)
                campaign.pointings.append(
                    CampaignPointing(
                        site.name, order_id, look.candidate, look.ra_deg, look.dec_deg, filter, now_iso(now),
                        exposure_s, PointingState.PLANNED, [], purpose=Purpose.SECOND_LOOK,
                    )
                )  # fmt: skip
                self._index(campaign)
            self._update(campaign, now)

    # -- reading -------------------------------------------------------------------------------

    def observed(self, event: str, pool: Galaxies) -> np.ndarray:
        """Which of ``pool`` the event's campaign has observed already: inside a field taken, or pointed at by
        a site without a field of view."""
        with self._lock:
            campaign = self._campaigns.get(event)
            if campaign is None:
                return np.zeros(len(pool), dtype=bool)
            taken = [p for p in campaign.pointings if p.state is PointingState.OBSERVED]
            fields = [field for _, field in self._viewed(taken)]
            named = {g for p in taken for g in p.galaxies}
        return inside_any(pool.ra, pool.dec, fields) | np.isin(np.asarray(pool.name, dtype=str), list(named))

    def _viewed(self, pointings: list[CampaignPointing]) -> list[tuple[CampaignPointing, Field]]:
        """The pointings at sites with a field of view, each with its footprint on the sky."""
        viewed = []
        for pointing in pointings:
            view = self.observatories.get(pointing.site)
            if view is not None and view.field_of_view_deg is not None:
                viewed.append((pointing, (Footprint.of(view.field_of_view_deg), pointing.ra_deg, pointing.dec_deg)))
        return viewed

    def get(self, event: str) -> Campaign | None:
        with self._lock:
            return self._campaigns.get(event)

    def _index(self, campaign: Campaign) -> None:
        for index, pointing in enumerate(campaign.pointings):
            self._orders[pointing.work_order_id] = campaign.event
            for stem in pointing.frames:
                self._frames[stem] = (campaign.event, index)
        for order in {p.work_order_id for p in campaign.pointings} & set(self._early):
            for site, event in self._early.pop(order):
                self._telescope_change(site, event)


def _earliest(timeline: dict[str, Any], key: str, when: str) -> None:
    """A timeline step at ``when`` unless it was already reached earlier (events come from several streams)."""
    if timeline.get(key) is None or when < timeline[key]:
        timeline[key] = when


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


TIMELINE = (
    ("merger", "merger"),
    ("notice", "notice"),
    ("relayed", "targets relayed"),
    ("first_shutter_open", "first shutter open"),
    ("first_frame_searched", "first frame searched"),
    ("first_candidate", "first candidate"),
    ("second_look", "second look"),
    ("classification", "classification"),
)


def _apart(a: CampaignCandidate, b: CampaignCandidate) -> tuple[float, float]:
    """How far apart two candidates' nearest-in-time detections are (arcsec), and how many minutes."""
    pairs = [(x, y) for x in a.detections for y in b.detections]
    x, y = min(
        pairs,
        key=lambda p: abs(
            (datetime.fromisoformat(p[0]["time"]) - datetime.fromisoformat(p[1]["time"])).total_seconds()
        ),
    )
    minutes = abs((datetime.fromisoformat(x["time"]) - datetime.fromisoformat(y["time"])).total_seconds()) / 60.0
    east = ((y["ra_deg"] - x["ra_deg"] + 180.0) % 360.0 - 180.0) * math.cos(math.radians(x["dec_deg"]))
    return math.hypot(east, y["dec_deg"] - x["dec_deg"]) * 3600.0, max(minutes, 1e-6)


def _tracks(singles: list[CampaignCandidate]) -> list[CampaignCandidate]:
    """Movers seen once each, joined pairwise into one candidate-like track (to extrapolate)."""
    joined = []
    for i, a in enumerate(singles):
        for b in singles[i + 1 :]:
            if a.evidence and a.evidence == b.evidence:
                track = CampaignCandidate(a.name, a.ra_deg, a.dec_deg, "", None, None, "", 0.0, False)
                track.detections, track.evidence = [*a.detections, *b.detections], a.evidence
                joined.append(track)
    return joined


def _detections(candidate: CampaignCandidate, *, forced: bool = False) -> list[Detection]:
    """Its detections (and, with ``forced``, its forced photometry of 3σ and more, at its position)."""
    points = [*candidate.detections, *(candidate.forced if forced else [])]
    return [
        Detection(
            datetime.fromisoformat(d["time"]), d["filter"], d["mag"], d["mag_err"],
            d.get("ra_deg", candidate.ra_deg), d.get("dec_deg", candidate.dec_deg),
        )
        for d in points
        if d.get("mag") is not None and d.get("mag_err") is not None
    ]  # fmt: skip


def describe(data: dict[str, Any]) -> str:
    """A campaign's JSON as an operator reads it: sites, pointings, coverage, candidates, the timeline."""
    lines = [f"{data['event']}{' (drill)' if data['drill'] else ''}{' RETRACTED' if data['retracted'] else ''}"
             f", updated {data['updated']}"]  # fmt: skip
    lines += [f"site {s['name']}: {s['state']}" + (f" ({s['note']})" if s.get("note") else "") for s in data["sites"]]
    states: dict[str, int] = {}
    for p in data["pointings"]:
        states[p["state"]] = states.get(p["state"], 0) + 1
    lines.append("pointings: " + (", ".join(f"{n} {state}" for state, n in states.items()) or "none"))
    for p in data["pointings"]:
        depth = f"LIMMAG {p['limmag']:.2f}" if p["limmag"] is not None else "depth -"
        lines.append(
            f"  {p['site']:8} {p['name'][:24]:24} {p['ra_deg']:9.4f} {p['dec_deg']:+9.4f} {p['filter']:3} "
            f"{p['start']}  {len(p['frames'])} frame{'s' if len(p['frames']) != 1 else ''}  {depth}  {p['state']}"
        )
    c = data["coverage"]
    if c:
        efficiency = c.get("kilonova_efficiency")
        lines.append(
            f"coverage: 2-D {100 * c['probability_2d']:.1f}%, 3-D {100 * c['probability_3d']:.1f}% deep enough for "
            f"an AT2017gfo-like kilonova ({100 * c['probability_3d_observed']:.1f}% observed), kilonova efficiency "
            + (f"{100 * efficiency:.1f}%" if efficiency is not None else "- (no distances or no merger time)")
        )
    lines.append(f"candidates: {len(data['candidates'])}")
    for k in data["candidates"]:
        last = k["detections"][-1] if k["detections"] else None
        seen = f"{last['filter']} {last['mag']:.2f}±{last['mag_err']:.2f} at {last['time']}" if last else "-"
        host = k["host"] or "no host"
        if k["host_distance_mpc"] is not None:
            verdict = {True: "consistent", False: "inconsistent", None: "unknown"}[k["host_distance_consistent"]]
            host += f" ({k['host_distance_mpc']:.0f} Mpc, {verdict} with the GW distance)"
        lines.append(
            f"  {k['rank']:>2} {k['name']} {k['ra_deg']:.5f} {k['dec_deg']:+.5f} {k['classification']}  host {host}"
            f"  {len(k['detections'])} detections, last {seen}"
            + (f"; forced photometry on {len(k['forced'])} frames" if k.get("forced") else "")
            + (f", {len(k['limits'])} limits" if k.get("limits") else "")
        )
    timeline = data["timeline"]
    merger = datetime.fromisoformat(timeline["merger"]) if timeline.get("merger") else None
    steps = []
    for key, label in TIMELINE:
        if not timeline.get(key):
            continue
        moment = datetime.fromisoformat(timeline[key])
        after = f" (+{_delay((moment - merger).total_seconds())})" if merger and key != "merger" else ""
        steps.append(f"{label} {timeline[key]}{after}")
    lines.append("timeline: " + (" → ".join(steps) or "-"))
    return "\n".join(lines)


def _delay(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
