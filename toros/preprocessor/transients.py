"""The transient search of one science-ready frame, as the preprocessor runs it: the best reference from the
library (for an alert's frame, taken before the event), ZOGY and vetting (``discovery.py``), the products beside
each other under ``storage.root/transients/<night>/<frame>/``, the vetted detections into the candidates
database, a ``transient_candidate`` event each, and the alert's reports brought up to date
(``storage.root/reports/<alert>/``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from google.protobuf.timestamp_pb2 import Timestamp

from toros.floor.catalogs import GalaxyIndex
from toros.floor.sky_geometry import separation_deg
from toros.generated import toros_pb2 as pb
from toros.preprocessor import reports, tasks, vetting
from toros.preprocessor.candidates import Candidate, CandidateStore, DetectionContext, Host, NewDetection, Search
from toros.preprocessor.compute import ComputeUnavailable, Engine, PathMap, Task
from toros.preprocessor.discovery import (
    DiscoveryFailed,
    DiscoveryResult,
    DiscoverySettings,
    StarCatalog,
    discover,
    forced_photometry,
    is_candidate,
    write_products,
)
from toros.preprocessor.references import BadReference, ReferenceLibrary, epoch_of, footprint_of
from toros.preprocessor.settings import DiscoveryConfig, ReportsConfig
from toros.runtime.files import atomic_write, path_inside, safe_name

log = logging.getLogger(__name__)

H0_KM_S_MPC = 67.7  # Planck 2018
C_KM_S = 299_792.458
KPC_PER_ARCSEC_PER_MPC = 1000.0 * math.pi / 648_000.0


@dataclass
class SearchOutcome:
    frame: Path
    message: str
    searched: bool
    events: list[pb.TransientCandidate] = field(default_factory=list)
    forced: list[pb.ForcedPhotometry] = field(default_factory=list)  # the alert's other candidates on the frame
    products: list[tuple[Path, str]] = field(default_factory=list)


NUCLEAR_ARCSEC = 3.0  # a detection further than this from its host's catalog centre is not on its nucleus


def in_context(
    flags: tuple[str, ...], catalog_star_arcsec: float, host: Host | None, star_arcsec: float
) -> tuple[str, ...]:
    """A detection's flags with what the catalogs say: light under it that the difference image's view called a
    nucleus (not point-like against the PSF: a star on a galaxy's disc looks so) is a catalog star where the
    reference catalog has one, and no nucleus far from its host galaxy's centre."""
    if "nuclear" not in flags:
        return flags
    others = tuple(f for f in flags if f != "nuclear")
    if catalog_star_arcsec <= star_arcsec:
        return (*others, "on_star")
    if host is not None and host.offset_arcsec > NUCLEAR_ARCSEC:
        return others
    return flags


def kpc_offset(offset_arcsec: float, distance_mpc: float) -> float:
    """A projected offset at a luminosity distance: the angular-diameter distance D_L/(1+z)², z from Hubble's
    law (good to a percent within 500 Mpc, where the host galaxies of GW alerts are)."""
    redshift = H0_KM_S_MPC * distance_mpc / C_KM_S
    return offset_arcsec * distance_mpc / (1.0 + redshift) ** 2 * KPC_PER_ARCSEC_PER_MPC


class TransientSearch:
    def __init__(
        self,
        settings: DiscoveryConfig,
        references: ReferenceLibrary,
        store: CandidateStore,
        storage_root: Path,
        *,
        galaxies: Callable[[], GalaxyIndex | None] = lambda: None,
        site: str = "",
        compute: Engine | None = None,
        stars: Callable[[], StarCatalog | None] = lambda: None,
        reporting: ReportsConfig | None = None,
    ) -> None:
        self.settings = settings
        self.reporting = reporting or ReportsConfig()
        self.stars = stars
        self.compute = compute  # where the difference imaging runs (None: here)
        self.references = references
        self.store = store
        self.root = storage_root
        self.galaxies = galaxies
        self.site = site

    def wanted(self, frame: Path) -> bool:
        """Whether a frame the preprocessor just made science-ready is searched by itself (config)."""
        if self.settings.every_frame:
            return True
        return self.settings.alert_frames and bool(str(fits.getheader(frame).get("ALERTID", "")).strip())

    def search(
        self, frame: Path, *, work_order_id: str, alert_id: str = "", event_time: float | None = None
    ) -> SearchOutcome:
        """One frame: always recorded (searched or why not), never raises for a frame that cannot be searched."""
        header = fits.getheader(frame)
        alert_id = alert_id or str(header.get("ALERTID", "")).strip()
        event_time = event_time or (epoch_of(header, "EVENTT") or None)
        date_obs = epoch_of(header)
        filter = str(header.get("FILTER", "")).strip() or "none"
        try:
            footprint = footprint_of(header, frame)
        except BadReference as exc:
            return SearchOutcome(frame, str(exc), False)
        search = Search(
            frame, alert_id, date_obs, filter, footprint.ra_deg, footprint.dec_deg, footprint.radius_deg,
            _number(header.get("LIMMAG")), _number(header.get("EXPTIME")), "", 0, "", work_order_id,
            magzp=_number(header.get("MAGZP")), catalog=str(header.get("REFCAT", "")).strip(), event_time=event_time,
            drill=bool(header.get("DRILL", False)),
        )  # fmt: skip
        if "MAGZP" not in header:
            return self._not_searched(search, "not science-ready (no MAGZP): the science step failed on it")
        before = min(event_time, date_obs) if event_time and date_obs else (date_obs or None)
        covering = [
            r
            for r in self.references.find(footprint.ra_deg, footprint.dec_deg, footprint.radius_deg, filter, before)
            if r.path != frame
            and separation_deg(np.array([r.ra_deg]), np.array([r.dec_deg]), footprint.ra_deg, footprint.dec_deg)[0]
            < r.radius_deg
        ]
        if not covering:
            others = {
                r.filter
                for r in self.references.find(footprint.ra_deg, footprint.dec_deg, footprint.radius_deg, None, before)
            }
            reason = f"no reference for this field in {filter}"
            if others:
                reason += f" (only in {', '.join(sorted(others))})"
            if event_time:
                reason += " taken before the event"
            return self._not_searched(search, reason)
        reference = covering[0]
        notes: list[str] = []
        try:
            result = self._difference(frame, reference.path, notes)
        except DiscoveryFailed as exc:
            return self._not_searched(search, f"subtraction against {reference.path.name} failed: {exc}")
        except ComputeUnavailable as exc:
            return self._not_searched(search, str(exc))
        search = dataclasses.replace(search, reference_epoch=reference.epoch or None, reference_limmag=reference.depth)
        outcome = self._keep(search, result, reference.path, alert_id)
        outcome.message = "; ".join([outcome.message, *notes])
        return outcome

    def _difference(self, frame: Path, reference: Path, notes: list[str]) -> DiscoveryResult:
        """Registration, ZOGY and the candidates' measurement: here, or on the compute engine's cluster (the
        images come back with the result, for the stamps and reports made here)."""
        settings = DiscoverySettings(
            self.settings.threshold, self.settings.tile, min_score=self.settings.min_score,
            min_snr=self.settings.min_snr,
        )  # fmt: skip
        stars = self.stars()
        if self.compute is None:
            return discover(frame, reference, settings, stars)

        def back(result: DiscoveryResult, paths: PathMap) -> DiscoveryResult:
            return dataclasses.replace(
                result,
                science=dataclasses.replace(result.science, path=paths.to_node(result.science.path)),
                reference=dataclasses.replace(result.reference, path=paths.to_node(result.reference.path)),
            )

        task = Task(
            f"difference imaging of {frame.name}",
            lambda: discover(frame, reference, settings, stars),
            tasks.difference,
            lambda paths: (paths.to_worker(frame), paths.to_worker(reference), settings, stars),
            back,
        )
        return self.compute.run(task, notes.append)

    def _not_searched(self, search: Search, reason: str) -> SearchOutcome:
        log.warning("%s: not searched for transients: %s", search.frame.name, reason)
        self.store.record(search.__class__(**{**search.__dict__, "message": reason}), [], self._prefix(search))
        return SearchOutcome(search.frame, reason, False)

    def _prefix(self, search: Search) -> str:
        """Candidate names: the year and the site (the sites of a network name their candidates apart)."""
        year = datetime.fromtimestamp(search.date_obs or 0, UTC).year
        site = "".join(c for c in (self.site or "").upper() if c.isalnum())
        return f"TOROS-{year}-{site}-" if site else f"TOROS-{year}-"

    def _folder(self, search: Search) -> Path:
        night = search.frame.parent.name
        stem = search.frame.name.removesuffix(".fits")
        return path_inside(self.root, "transients", safe_name(night, "night"), safe_name(stem, "frame"))

    def _keep(self, search: Search, result: DiscoveryResult, reference: Path, alert_id: str) -> SearchOutcome:
        folder = self._folder(search)
        diff, scorr, table = write_products(result, folder)
        outcome = SearchOutcome(search.frame, "", True)
        outcome.products += [(diff, "difference"), (scorr, "significance"), (table, "candidates_table")]
        vetted = [c for c in result.candidates if is_candidate(c, self.settings.min_score, self.settings.min_snr)]
        scale = result.science.pixel_scale_arcsec
        size = max(15, int(round(self.settings.cutout_arcsec / scale)) | 1)
        rows = {id(c): row for c, row in zip(result.candidates, result.features, strict=True)}
        found: list[NewDetection] = []
        cuts: list[reports.Stamps] = []
        titles: list[str] = []
        for index, c in enumerate(vetted):
            host = self._host(c.ra_deg, c.dec_deg)
            detection = NewDetection(
                c.x,
                c.y,
                c.ra_deg,
                c.dec_deg,
                c.mag,
                c.mag_err,
                c.snr,
                c.score,
                in_context(c.flags, c.catalog_star_arcsec, host, DiscoverySettings().star_flag_arcsec),
                host,
                features=tuple(float(v) for v in rows[id(c)]),
                context=DetectionContext(
                    _finite(c.position_error_arcsec),
                    c.reference_mag,
                    _finite(c.star_offset_arcsec / scale),
                    c.star_galaxy,
                    _finite(c.catalog_star_arcsec),
                ),  # fmt: skip
            )
            cut = reports.stamps(
                result.science.data, result.reference.data, result.difference.difference, result.science.wcs,
                c.x, c.y, size,
            )  # fmt: skip
            mag = f"{c.mag:.2f}" if c.mag is not None else "?"
            title = (
                f"{search.frame.name}  x {c.x:.1f} y {c.y:.1f}  {search.filter} {mag}  S/N {c.snr:.1f}  "
                f"score {c.score:.2f}"
            )
            detection.triplet = str(folder / f"detection-{index + 1:03d}.png")
            detection.record = str(folder / f"detection-{index + 1:03d}.json")
            found.append(detection)
            cuts.append(cut)
            titles.append(title)
        reports.write_triplets(
            [(Path(d.triplet), cut, title) for d, cut, title in zip(found, cuts, titles, strict=True)]
        )
        message = (
            f"{len(result.candidates)} detections, {len(vetted)} vetted (score >= {self.settings.min_score:.2f}, "
            f"S/N >= {self.settings.min_snr:g}) "
            f"against {reference.name}"
        )
        search = Search(**{**search.__dict__, "reference": str(reference), "detections": len(result.candidates),
                           "message": message})  # fmt: skip
        named = self.store.record(search, found, self._prefix(search))
        for detection, (name, count, first_seen) in zip(found, named, strict=True):
            reports.write_json(Path(detection.record), self._record(name, detection, search, result, reference))
            outcome.products += [(Path(detection.triplet), "triplet"), (Path(detection.record), "candidate_record")]
            outcome.events.append(self._event(name, count, first_seen, detection, search, alert_id))
        if alert_id:
            # The alert's candidates and searches, read once for its reports and this frame's packets.
            candidates, observed = self.store.candidates(alert_id), self.store.searches(alert_id)
            seen_here = {name for name, _, _ in named}
            outcome.forced = self._forced([c for c in candidates if c.name not in seen_here], search, result, alert_id)
            outcome.products += self._alert_reports(alert_id, candidates, observed)
            outcome.products += self._avro_packets(alert_id, search.frame, named, cuts, candidates, observed)
        outcome.message = message
        log.info("%s: %s", search.frame.name, message)
        return outcome

    def _forced(
        self, candidates: list[Candidate], search: Search, result: DiscoveryResult, alert_id: str
    ) -> list[pb.ForcedPhotometry]:
        """The alert's known candidates on this frame that it did not detect, measured at their positions."""
        date_obs = Timestamp()
        date_obs.FromDatetime(datetime.fromtimestamp(search.date_obs, UTC))
        measured = []
        for candidate in candidates:
            found = forced_photometry(result, candidate.ra_deg, candidate.dec_deg)
            if found is None:
                continue
            measured.append(
                pb.ForcedPhotometry(
                    name=candidate.name,
                    alert_id=alert_id,
                    filter=search.filter,
                    date_obs=date_obs,
                    frame_path=str(search.frame),
                    flux=found.flux,
                    flux_err=found.flux_err,
                    mag=found.mag,
                    mag_err=found.mag_err,
                    limmag=found.limmag,
                )  # fmt: skip
            )
        return measured

    def _host(self, ra_deg: float, dec_deg: float) -> Host | None:
        """The galaxy of the catalog nearest in projected distance within ``host_search_kpc`` (galaxies
        without a distance: within 30 arcsec)."""
        index = self.galaxies()
        if index is None:
            return None
        radius_deg = min(self.settings.host_search_kpc / kpc_offset(1.0, 10.0) / 3600.0, 0.2)
        rows = index.cone(ra_deg, dec_deg, radius_deg)
        best: Host | None = None
        for row in rows:
            offset = float(
                separation_deg(np.array([index.ra[row]]), np.array([index.dec[row]]), ra_deg, dec_deg)[0]
            ) * 3600.0  # fmt: skip
            distance = float(index.dist[row])
            name = index.name[row].decode(errors="replace").strip()
            if math.isfinite(distance) and distance > 0:
                kpc = kpc_offset(offset, distance)
                if kpc <= self.settings.host_search_kpc and (best is None or kpc < (best.offset_kpc or math.inf)):
                    best = Host(name, offset, kpc, distance)
            elif offset <= 30.0 and best is None:
                best = Host(name, offset, None, None)
        return best

    def _record(
        self, name: str, d: NewDetection, search: Search, result: DiscoveryResult, reference: Path
    ) -> dict[str, object]:
        return {
            "candidate": name,
            "alert_id": search.alert_id,
            "frame": str(search.frame),
            "reference": str(reference),
            "date_obs": datetime.fromtimestamp(search.date_obs, UTC).isoformat(),
            "filter": search.filter,
            "ra_deg": d.ra_deg,
            "dec_deg": d.dec_deg,
            "x": d.x,
            "y": d.y,
            "mag": d.mag,
            "mag_err": d.mag_err,
            "snr": d.snr,
            "score": d.score,
            "flags": list(d.flags),
            "host": d.host.__dict__ if d.host else None,
            "limmag": search.limmag,
            "registration_shift_px": list(result.shift_px),
            "triplet": d.triplet,
            # What the classifier scored: with a person's label, a training example (toros candidates --labels).
            "features": dict(zip(vetting.FEATURES, d.features, strict=True)),
        }

    def _event(
        self, name: str, count: int, first_seen: float, d: NewDetection, search: Search, alert_id: str
    ) -> pb.TransientCandidate:
        date_obs, first = Timestamp(), Timestamp()
        date_obs.FromDatetime(datetime.fromtimestamp(search.date_obs, UTC))
        first.FromDatetime(datetime.fromtimestamp(first_seen, UTC))
        return pb.TransientCandidate(
            name=name, ra_deg=d.ra_deg, dec_deg=d.dec_deg, mag=d.mag if d.mag is not None else math.nan,
            mag_err=d.mag_err if d.mag_err is not None else math.nan, filter=search.filter, snr=d.snr, score=d.score,
            flags=list(d.flags), frame_path=str(search.frame), x=d.x, y=d.y, date_obs=date_obs,
            host=d.host.name if d.host else "", host_offset_arcsec=d.host.offset_arcsec if d.host else 0.0,
            host_offset_kpc=(d.host.offset_kpc or 0.0) if d.host else 0.0, alert_id=alert_id, detections=count,
            triplet_path=d.triplet, record_path=d.record, first_seen=first,
        )  # fmt: skip

    def write_alert_reports(self, alert_id: str) -> list[tuple[Path, str]]:
        """The alert's circular draft, TNS report and candidates list, from everything searched for it so far:
        rewritten after every frame of the alert, and when a person gives a candidate its TNS name."""
        return self._alert_reports(alert_id, self.store.candidates(alert_id), self.store.searches(alert_id))

    def _alert_reports(
        self, alert_id: str, candidates: list[Candidate], observed: list[Search]
    ) -> list[tuple[Path, str]]:
        folder = path_inside(self.root, "reports", safe_name(alert_id, "alert"))
        circular = reports.gcn_circular(
            alert_id, observed, candidates, author=self.reporting.author, site=self.site or "the TOROS site",
            min_score=self.settings.min_score, min_snr=self.settings.min_snr,
        )  # fmt: skip
        gcn = folder / "gcn-circular-draft.txt"
        reports.write_json(folder / "candidates.json", {"alert_id": alert_id, "candidates": [
            _summary(c) for c in candidates]})  # fmt: skip
        with atomic_write(gcn) as stream:
            stream.write(circular.encode())
        report, missing = reports.tns_report(candidates, observed, self.reporting.tns)
        if missing and candidates:
            log.warning("%s: the TNS report needs %s before the TNS accepts it", alert_id, ", ".join(missing))
        tns = reports.write_json(folder / "tns-at-report.json", report)
        return [(gcn, "gcn_draft"), (tns, "tns_report"), (folder / "candidates.json", "candidates_list")]

    def _avro_packets(
        self, alert_id: str, frame: Path, named: list[tuple[str, int, float]], cuts: list[reports.Stamps],
        candidates: list[Candidate], observed: list[Search],
    ) -> list[tuple[Path, str]]:  # fmt: skip
        """An Avro packet per detection of this frame, with the candidate's history up to it."""
        folder = path_inside(self.root, "reports", safe_name(alert_id, "alert"))
        by_name = {c.name: c for c in candidates}
        products = []
        for (name, _, _), cut in zip(named, cuts, strict=True):
            candidate = by_name.get(name)
            latest = next((d for d in candidate.history if d.frame == str(frame)), None) if candidate else None
            if candidate is None or latest is None:
                continue
            packet = reports.avro_packet(
                candidate, latest, cut, observed, alert_id=alert_id, programid=self.reporting.programid,
                fids=self.reporting.fids,
            )  # fmt: skip
            path = reports.write_avro(folder / "avro" / f"{name}-{packet['candid']}.avro", [packet])
            products.append((path, "avro_packet"))
        return products


def _summary(c: Candidate) -> dict[str, object]:
    best = c.best
    return {
        "name": c.name,
        "ra_deg": c.ra_deg,
        "dec_deg": c.dec_deg,
        "first_seen": datetime.fromtimestamp(c.first_seen, UTC).isoformat(),
        "last_seen": datetime.fromtimestamp(c.last_seen, UTC).isoformat(),
        "detections": len(c.history),
        "best_mag": best.mag,
        "best_mag_err": best.mag_err,
        "filter": best.filter,
        "score": best.score,
        "host": c.host.__dict__ if c.host else None,
        "flags": sorted(c.flags),
        "light_curve": [
            {
                "date_obs": datetime.fromtimestamp(d.date_obs, UTC).isoformat(),
                "filter": d.filter,
                "mag": d.mag,
                "mag_err": d.mag_err,
                "snr": d.snr,
            }  # fmt: skip
            for d in c.history
        ],
        "triplet": best.triplet,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
