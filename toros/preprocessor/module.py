"""The preprocessor module as the runtime sees it: calibrate_night and calibrate_images work orders."""

from __future__ import annotations

import json
import logging
from datetime import UTC
from pathlib import Path
from typing import Any

from toros.floor.catalogs import BadCatalog, GalaxyIndex
from toros.floor.requesters import FOLLOWER
from toros.floor.site import Site
from toros.generated import toros_pb2 as pb
from toros.preprocessor import orders
from toros.preprocessor.candidates import CandidateStore, CandidateVerdict, Label
from toros.preprocessor.compute import Compute
from toros.preprocessor.discovery import StarCatalog
from toros.preprocessor.follower import TelescopeFollower
from toros.preprocessor.inventory import night_files
from toros.preprocessor.library import MasterLibrary
from toros.preprocessor.pipeline import NIGHT_NAME, NightCalibration
from toros.preprocessor.progress import NightResult, Progress
from toros.preprocessor.references import ReferenceLibrary
from toros.preprocessor.science import BadReferenceCatalog, ReferenceCatalog, ScienceStep
from toros.preprocessor.settings import PreprocessorConfig, WhenUnreachable
from toros.preprocessor.stages import Frame, StageName, StageRun, run_stages
from toros.preprocessor.transients import TransientSearch
from toros.preprocessor.waiting import WAITING_FOR_MASTERS, WaitingForMasters
from toros.runtime.files import atomic_write, confine, path_inside
from toros.runtime.module import Module, Services, Task
from toros.runtime.validation import Checker
from toros.runtime.workers import TaskContext, TaskFailed

log = logging.getLogger(__name__)


class WorkOrderReporter:
    """Calibration progress as calibration_progress events, progress_percent and products of a work order."""

    def __init__(self, context: TaskContext[Any]) -> None:
        self.context = context
        self._last: tuple[str, int, int, str] | None = None

    def stage(self, stage: str, done: int, total: int, path: str = "", **science: Any) -> None:
        if (stage, done, total, path) == self._last:
            return
        self._last = (stage, done, total, path)
        percent = 100.0 * done / total if total else 0.0
        self.context.emit(
            calibration_progress=pb.CalibrationProgress(
                stage=stage,
                frames_done=done,
                frames_total=total,
                percent=percent,
                path=path,
                science=pb.FrameScience(**science) if science else None,
            )
        )
        self.context.progress(percent, f"{stage}: {done} of {total} frames")

    def product(self, path: Path, kind: str, sha256: str | None = None, **fields: object) -> None:
        self.context.add_product(path, kind, sha256, fields)

    def candidate(self, candidate: pb.TransientCandidate) -> None:
        self.context.emit(transient_candidate=candidate)

    def forced(self, measurement: pb.ForcedPhotometry) -> None:
        self.context.emit(forced_photometry=measurement)

    def check(self) -> None:
        self.context.check()


class PreprocessorModule(Module):
    name = "preprocessor"

    def __init__(
        self, services: Services, settings: PreprocessorConfig, *, site: Site, galaxy_catalog: Path | None = None
    ) -> None:
        """``site``: where the frames are taken (the preprocessor's own, else its telescope's); ``galaxy_catalog``:
        what names candidates' hosts (its own, else the alert robot's)."""
        super().__init__(services)
        self.settings = settings
        self.site = site
        self.galaxy_catalog = galaxy_catalog
        self.library: MasterLibrary | None = None
        self.references: ReferenceLibrary | None = None
        self.candidates: CandidateStore | None = None
        self._galaxies: tuple[GalaxyIndex | None] | None = None  # opened on the first search that needs it
        self.followers: list[TelescopeFollower] = []
        self.compute = Compute(self.settings.compute, self.storage_root)
        self.waiting = WaitingForMasters(self.journal, services.submit)
        # (the reference catalog's mtime and size, the step made with it); a missing file is (None, None).
        self._science: tuple[tuple[int, int] | None, ScienceStep | None] = ((-1, -1), None)

    def tasks(self) -> dict[str, Task[Any]]:
        return {
            "calibrate_night": Task(orders.check_calibrate_night, self.calibrate_night),
            "calibrate_images": Task(orders.check_calibrate_images, self.calibrate_images),
            "find_transients": Task(orders.check_find_transients, self.find_transients),
            "label_candidate": Task(self.check_label_candidate, self.label_candidate),
            "reprocess_night": Task(orders.check_reprocess_night, self.reprocess_night),
        }

    def start(self) -> None:
        self.library = MasterLibrary(self.services.database)
        settings = self.settings
        if settings.references.enabled:
            self.references = ReferenceLibrary(self.services.database, self.storage_root, settings.references)
            self.candidates = CandidateStore(
                self.services.database, match_radius_arcsec=settings.discovery.match_radius_arcsec
            )
        self.followers = [
            TelescopeFollower(telescope, self.services, self.storage_root) for telescope in self.settings.follow
        ]
        for follower in self.followers:
            follower.start()
        if (problem := self.compute.check()) is not None:  # frames fall back or wait, as configured
            log.error("compute: %s; per-frame work will %s", problem, self._when_unreachable())

    def _when_unreachable(self) -> str:
        settings = self.settings.compute
        if settings.unreachable is WhenUnreachable.LOCAL:
            return "run on this node until the cluster answers"
        return f"wait up to {settings.wait_s:g} s for the cluster"

    def stop(self) -> None:
        self.compute.close()
        for follower in self.followers:
            follower.stop()
        if self.library is not None:
            self.library.close()
        if self.references is not None:
            self.references.close()
        if self.candidates is not None:
            self.candidates.close()

    def activity(self) -> str:
        """Whether science frames wait for the masters of their setup: a night's frames are not all calibrated
        until then."""
        return WAITING_FOR_MASTERS if self.waiting.frames() else ""

    def status_message(self) -> str:
        parts = []
        if self.followers:
            parts.append(
                "following " + ", ".join(f"{f.telescope.name} (after event {f.position})" for f in self.followers)
            )
        if waiting := sum(len(paths) for paths in self.waiting.frames().values()):
            parts.append(f"{waiting} frames wait for their masters")
        return "; ".join(parts)

    def _wait_for_earlier_images(self, context: TaskContext[Any]) -> None:
        """Images of a followed telescope are calibrated in the order they arrived: the first of a night
        builds its masters, the next ones use them."""

        def earlier() -> bool:
            return any(
                r.requester == context.record.requester and r.queue_sequence < context.record.queue_sequence
                for r in self.journal.unfinished()
            )

        while earlier():
            context.sleep(0.2 * self.clock.rate)

    def _galaxy_index(self) -> GalaxyIndex | None:
        """The galaxy catalog that names candidates' hosts (``preprocessor.discovery.galaxy_catalog``, else the
        alert robot's), opened once; without one, candidates have no host, and the log says why."""
        if self._galaxies is None:
            catalog = self.galaxy_catalog
            index = None
            if catalog is not None:
                try:
                    index = GalaxyIndex.open(catalog)
                except (OSError, BadCatalog) as exc:
                    log.warning("candidates get no host galaxy: catalog %s: %s", catalog, exc)
            self._galaxies = (index,)
        return self._galaxies[0]

    def _transients(self) -> TransientSearch | None:
        settings = self.settings
        if self.references is None or self.candidates is None:
            return None
        if not settings.discovery.active(settings.science.active):
            return None
        return TransientSearch(
            settings.discovery, self.references, self.candidates, self.storage_root, galaxies=self._galaxy_index,
            site=self.site.name, compute=self.compute, stars=self._known_stars, reporting=settings.reports,
        )  # fmt: skip

    def _known_stars(self) -> StarCatalog | None:
        """The reference catalog's stars: a source under a detection is a star only if one of them is there."""
        step = self._science_step()
        return StarCatalog(step.catalog.ra, step.catalog.dec) if step is not None else None

    def _calibrate(self, context: TaskContext[Any], files: list[Path], *, night: str | None = None) -> str:
        """Calibrates frames (and makes them science-ready, on the compute engine) for one work order."""
        assert self.library is not None, "started"
        notes: list[str] = []
        pipeline = NightCalibration(
            self.settings.calibration,
            self.library,
            self.storage_root,
            longitude_deg=self.site.longitude,
            work_order_id=context.id,
            now=self.clock.timestamp,
            science=self._science_step(),
            reference_catalog=self.settings.science.reference_catalog,
            references=self.references,
            transients=self._transients(),
            compute=self.compute,
            note=notes.append,
        )
        result = pipeline.run(
            files, WorkOrderReporter(context), night=night, clean_cosmic_rays=context.task.clean_cosmic_rays
        )
        result.notes += [f"{note} ({notes.count(note)} tasks)" for note in dict.fromkeys(notes)]
        self.waiting.add(result.waiting)
        for order in self.waiting.masters_built(result.master_setups, context.id):
            result.notes.append(f"the frames that waited for these masters are calibrated by {order}")
        return self._outcome(result)

    def _science_step(self) -> ScienceStep | None:
        """The science step with the reference catalog as it is now (read again when the file changes; a file
        that cannot be used leaves frames calibrated only, and says why in the log)."""
        settings = self.settings.science
        if not settings.active or settings.reference_catalog is None:
            return None
        path = settings.reference_catalog
        try:
            status = path.stat()
            version: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
        except OSError as exc:
            if self._science[0] is not None or self._science[1] is not None:  # said once, until it changes
                log.warning("science step off: reference catalog %s: %s", path, exc.strerror or exc)
            self._science = (None, None)
            return None
        if self._science[0] != version:
            try:
                self._science = (version, ScienceStep(settings, ReferenceCatalog.read(path)))
            except BadReferenceCatalog as exc:
                log.error("science step off: %s", exc)
                self._science = (version, None)
        return self._science[1]

    @staticmethod
    def _outcome(result: NightResult) -> str:
        if not result.calibrated and not result.masters and not result.waiting:
            raise TaskFailed(result.summary())
        return result.summary()

    def calibrate_night(self, context: TaskContext[pb.CalibrateNight]) -> str:
        directory = confine(context.task.directory, self.storage_root)
        if not directory.is_dir():
            raise TaskFailed(f"calibrate_night.directory: no such directory: {directory}")
        files = night_files(directory)
        if not files:
            raise TaskFailed(f"no FITS files in {directory}")
        return self._calibrate(context, files, night=directory.name if NIGHT_NAME.fullmatch(directory.name) else None)

    def calibrate_images(self, context: TaskContext[pb.CalibrateImages]) -> str:
        if context.record.requester.startswith(FOLLOWER):
            self._wait_for_earlier_images(context)
        files = [confine(path, self.storage_root) for path in context.task.paths]
        return self._calibrate(context, files)

    def reprocess_night(self, context: TaskContext[pb.ReprocessNight]) -> str:
        """A past night's calibrated frames again, as a slice of the stages: from the science step (fanned out over
        the compute engine) or from discovery, to discovery; every frame named in the outcome."""
        task = context.task
        folder = confine(str(Path("calibrated") / task.night), self.storage_root)
        frames = sorted(folder.glob("*_cal.fits")) if folder.is_dir() else []
        if not frames:
            raise TaskFailed(f"reprocess_night.night: no calibrated frame of {task.night} in {folder}")
        first = StageName.DISCOVERY if task.from_step == pb.REPROCESS_STEP_DISCOVERY else StageName.SCIENCE
        step = self._science_step()
        if first is StageName.SCIENCE and step is None:
            raise TaskFailed("reprocess_night: the science step is off (preprocessor.science.reference_catalog)")
        search = self._transients()
        engine_notes: list[str] = []
        result = NightResult()
        settings = self.settings
        run = StageRun(
            self.storage_root, task.night, context.id, settings.calibration, self.compute,
            Progress(WorkOrderReporter(context), total=len(frames)), result, self.clock.timestamp, step,
            settings.science.reference_catalog, transients=search, measure_again=True, note=engine_notes.append,
        )  # fmt: skip
        run_stages([Frame(frame) for frame in frames], run, first=first, last=StageName.DISCOVERY, check=context.check)
        notes = result.notes + [f"{note} ({engine_notes.count(note)} tasks)" for note in dict.fromkeys(engine_notes)]
        if search is None:
            notes.append("no discovery (it needs the science step, the reference library and discovery enabled)")
        measured = result.science_ready if first is StageName.SCIENCE else len(frames)
        summary = f"{task.night}: {measured} of {len(frames)} frames science-ready, {result.searched} searched"
        return summary + ("; " + "; ".join(notes) if notes else "")

    def check_label_candidate(self, task: pb.LabelCandidate, check: Checker) -> None:
        orders.check_label_candidate(task, check)
        if self.candidates is None:
            check.fail("name", "this preprocessor keeps no candidates (preprocessor.references.enabled is false)")
        elif not self.candidates.exists(task.name):
            check.fail("name", f"no candidate named {task.name!r}")

    def label_candidate(self, context: TaskContext[pb.LabelCandidate]) -> str:
        """Keeps a person's verdict, and rewrites reports/labels.json (every candidate's latest) for the console."""
        task = context.task
        store = self.candidates
        assert store is not None, "checked at submission"
        verdict = CandidateVerdict.REAL if task.label == pb.CANDIDATE_LABEL_REAL else CandidateVerdict.BOGUS
        requester = context.record.requester or "someone"
        store.add_label(
            Label(task.name, verdict, task.note, requester, context.id, self.clock.now().timestamp(), task.tns_name)
        )
        latest = {
            name: {"label": label.verdict.value, "by": label.requester, "note": label.note, "time": label.time}
            for name, label in store.labels().items()
        }
        path = path_inside(self.storage_root, "reports", "labels.json")
        with atomic_write(path, "w") as stream:
            json.dump(latest, stream, indent=1)
        context.add_product(path, "labels")
        search = self._transients() if task.tns_name else None
        alert_id = store.alert_of(task.name)
        context.emit(
            candidate_labelled=pb.CandidateLabelled(
                name=task.name, alert_id=alert_id, label=task.label, by=requester, note=task.note
            )
        )
        if search is not None and alert_id:
            for product, kind in search.write_alert_reports(alert_id):  # the circular names it now
                context.add_product(product, kind)
        named = f", reported as {task.tns_name}" if task.tns_name else ""
        return f"{task.name}: {verdict.value}{named} ({requester}{': ' + task.note if task.note else ''})"

    def find_transients(self, context: TaskContext[pb.FindTransients]) -> str:
        """Calibrated frames (or a night's) against their references; every frame is named in the outcome."""
        task = context.task
        search = self._transients()
        if search is None:
            raise TaskFailed(
                "transient discovery is off: it needs the science step (preprocessor.science.reference_catalog), "
                "the reference library (preprocessor.references.enabled) and preprocessor.discovery.enabled"
            )
        if task.paths:
            frames = [confine(path, self.storage_root) for path in task.paths]
        else:
            folder = confine(str(Path("calibrated") / task.night), self.storage_root)
            frames = sorted(folder.glob("*_cal.fits")) if folder.is_dir() else []
            if not frames:
                raise TaskFailed(f"find_transients.night: no calibrated frame of {task.night} in {folder}")
        event_time = task.event_time.ToDatetime(tzinfo=UTC).timestamp() if task.HasField("event_time") else None
        searched, vetted, reasons = 0, 0, []
        for number, frame in enumerate(frames, start=1):
            context.check()
            if not frame.is_file():
                reasons.append(f"{frame.name}: no such file")
                continue
            outcome = search.search(frame, work_order_id=context.id, alert_id=task.alert_id, event_time=event_time)
            for path, kind in outcome.products:
                context.add_product(path, kind)
            for event in outcome.events:
                context.emit(transient_candidate=event)
            for measurement in outcome.forced:
                context.emit(forced_photometry=measurement)
            searched += outcome.searched
            vetted += len(outcome.events)
            if not outcome.searched:
                reasons.append(f"{frame.name}: {outcome.message}")
            context.progress(100.0 * number / len(frames), f"{number} of {len(frames)} frames searched")
        summary = f"{searched} of {len(frames)} frames searched, {vetted} vetted detections"
        if reasons:
            summary += "; " + "; ".join(reasons[:5]) + (f" (+{len(reasons) - 5} more)" if len(reasons) > 5 else "")
        if searched == 0:
            raise TaskFailed(summary)
        return summary
