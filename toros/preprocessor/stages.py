"""The preprocessor's work on each science frame, as one ordered list of stages run by one function (BANZAI's
model): calibrate → clean cosmic rays (when asked) → make science-ready → search for transients → offer to the
reference library. A new stage is one new entry of ``STAGES``; ``reprocess --from`` is a slice of it.

Stages of the first kind (``on_the_cluster``) are per-frame computations sent to an engine (``compute.py``:
here, a process pool or a Dask cluster; their functions live in ``tasks.py``), several frames at once when the
engine has the threads for it. The others run on the node, frame after frame in the night's order, because
what they record depends on the frames before: the candidates database, the events, the reference library.
A stage that cannot go on with a frame raises ``FrameStops``: the frame is named with the reason and the rest
of the night goes on.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from astropy.io import fits

from toros.preprocessor import tasks
from toros.preprocessor.calibration import (
    Buffers,
    CalibrationJob,
    FrameMasters,
    calibrated_header,
    write_calibrated,
)
from toros.preprocessor.compute import ComputeUnavailable, Engine, PathMap, Task
from toros.preprocessor.inventory import BadFrame, RawFrame
from toros.preprocessor.progress import NightResult, Progress
from toros.preprocessor.reduction import FrameReader
from toros.preprocessor.references import BadReference, ReferenceLibrary
from toros.preprocessor.science import ScienceFailed, ScienceResult, ScienceStep
from toros.preprocessor.settings import CalibrationConfig
from toros.preprocessor.transients import TransientSearch

log = logging.getLogger(__name__)


class StageName(StrEnum):
    """The stages, in their order; ``reprocess --from`` names one."""

    CALIBRATION = "calibration"
    COSMIC_RAYS = "cosmic_rays"
    SCIENCE = "science"
    DISCOVERY = "discovery"
    REFERENCES = "references"

    def not_after(self, other: StageName) -> bool:
        """This stage comes before ``other``, or is it."""
        order = list(StageName)
        return order.index(self) <= order.index(other)


class FrameStops(Exception):
    """A stage cannot go on with a frame: the frame is named with the reason; the night goes on."""


@dataclass
class Frame:
    """One science frame as it goes through the stages."""

    path: Path  # the calibrated frame: its product, once made
    raw: RawFrame | None = None  # None: a calibrated frame taken up again (reprocessing)
    masters: FrameMasters | None = None
    identity: str = ""  # the raw file's, recorded in the product (RAWID)
    made_before: bool = False  # calibrated before a restart: the product is complete (written atomically)
    sha256: str | None = None  # the calibrated product's, when this work order wrote it
    science: ScienceResult | None = None
    measured_now: bool = False  # the science step ran in this work order (its products are recorded)

    @property
    def name(self) -> str:
        return self.raw.name if self.raw is not None else self.path.name


@dataclass
class StageRun:
    """A work order's run of the stages: what the stages use, and what they report to."""

    storage_root: Path
    night: str
    work_order_id: str
    calibration: CalibrationConfig
    compute: Engine  # the configured engine: here, or the cluster
    progress: Progress
    result: NightResult
    now: Callable[[], float]
    science: ScienceStep | None = None
    reference_catalog: Path | None = None
    references: ReferenceLibrary | None = None
    transients: TransientSearch | None = None
    cosmic_rays: Engine | None = None  # a process pool, when cosmic rays are cleaned
    measure_again: bool = False  # the science step even on frames made science-ready before (reprocessing)
    note: Callable[[str], None] = lambda text: None  # what an engine did instead (computed here, waited)
    here: threading.Lock = field(default_factory=threading.Lock)  # one frame at a time in this process
    buffers: Buffers = field(default_factory=Buffers)

    def parallelism(self, stages: Sequence[Stage]) -> int:
        """Frames in flight at once: as many as the engines of the stages have threads."""
        engines = {id(engine): engine for stage in stages if (engine := stage.engine(self)) is not None}
        return max((engine.parallelism() for engine in engines.values()), default=1)


class Stage(ABC):
    name: ClassVar[StageName]
    on_the_cluster: ClassVar[bool] = False  # a per-frame computation on an engine; else on the node, in order

    def wanted(self, frame: Frame, run: StageRun) -> bool:
        """Whether this frame goes through this stage in this run."""
        return True

    def engine(self, run: StageRun) -> Engine | None:
        """Where the stage's computation runs (None: on the node itself)."""
        return run.compute if self.on_the_cluster else None

    @abstractmethod
    def run(self, frame: Frame, run: StageRun) -> None:
        """Does the stage's work on a frame; FrameStops when the frame cannot go on."""


class Calibrate(Stage):
    """Bias, scaled dark, flat: straight into the product, band by band."""

    name = StageName.CALIBRATION
    on_the_cluster = True

    def wanted(self, frame: Frame, run: StageRun) -> bool:
        return frame.raw is not None and not frame.made_before

    def run(self, frame: Frame, run: StageRun) -> None:
        raw, masters = frame.raw, frame.masters
        assert raw is not None and masters is not None, "a raw frame with its masters"
        try:
            with FrameReader(raw, run.calibration) as reader:
                if masters.bias.data.shape != reader.shape or masters.flat.data.shape != reader.shape:
                    raise BadFrame(f"trimmed size {reader.shape} differs from the masters' {masters.bias.data.shape}")
                header = calibrated_header(
                    reader.header, raw, masters, frame.identity, run.night, run.work_order_id,
                    run.calibration.gain is not None,
                )  # fmt: skip

            def here() -> str:
                with run.here, FrameReader(raw, run.calibration) as reader:
                    return write_calibrated(
                        reader, masters.corrections(), header, masters.masks(), frame.path, run.buffers
                    )

            def job(paths: PathMap) -> tuple[object, ...]:
                dark = masters.dark
                return (
                    CalibrationJob(
                        replace(raw, path=Path(paths.to_worker(raw.path))),
                        paths.to_worker(masters.bias.master.path),
                        paths.to_worker(dark.master.path) if dark else None,
                        masters.dark_scale,
                        paths.to_worker(masters.flat.master.path),
                        header,
                        paths.to_worker(frame.path),
                    ),  # fmt: skip
                    run.calibration,
                )

            task = Task(f"calibration of {raw.name}", here, tasks.calibrate_frame, job)
            frame.sha256 = run.compute.run(task, run.note)
        except (BadFrame, ComputeUnavailable) as exc:  # the cluster gone past compute.wait_s included: named
            raise FrameStops(str(exc)) from None


class CleanCosmicRays(Stage):
    """L.A.Cosmic, in worker processes of this node (it is slow, and holds the GIL)."""

    name = StageName.COSMIC_RAYS
    on_the_cluster = True

    def wanted(self, frame: Frame, run: StageRun) -> bool:
        return run.cosmic_rays is not None and frame.raw is not None and not frame.made_before

    def engine(self, run: StageRun) -> Engine | None:
        return run.cosmic_rays

    def run(self, frame: Frame, run: StageRun) -> None:
        raw = frame.raw
        assert raw is not None and run.cosmic_rays is not None
        gain = 1.0 if run.calibration.gain is not None else (raw.gain or 1.0)
        read_noise = float(fits.getheader(frame.path).get("RDNOISE", 6.5))
        saturation = raw.saturation or 65535.0
        args = (str(frame.path), gain, read_noise, saturation)
        task = Task(
            f"cosmic rays of {raw.name}",
            lambda: tasks.clean_cosmic_rays(*args),
            tasks.clean_cosmic_rays,
            lambda paths: args,
        )
        frame.sha256 = run.cosmic_rays.run(task, run.note)


class MakeScienceReady(Stage):
    """WCS, zero point, depth, source catalog. A frame it cannot solve stays calibrated, and the reason is noted;
    one made science-ready before a restart is not measured again (unless reprocessed)."""

    name = StageName.SCIENCE
    on_the_cluster = True

    def wanted(self, frame: Frame, run: StageRun) -> bool:
        return run.science is not None

    def run(self, frame: Frame, run: StageRun) -> None:
        step, catalog = run.science, run.reference_catalog
        assert step is not None and catalog is not None
        try:
            if not run.measure_again and (before := ScienceResult.from_frame(frame.path)) is not None:
                frame.science = before
                return
            settings = step.settings.model_dump_json()

            def here() -> ScienceResult:
                with run.here:
                    return step.run(frame.path)

            task = Task(
                f"science step of {frame.path.name}",
                here,
                tasks.measure_frame,
                lambda paths: (paths.to_worker(frame.path), settings, paths.to_worker(catalog)),
                lambda result, paths: replace(result, catalog_path=paths.to_node(result.catalog_path)),
            )
            frame.science = run.compute.run(task, run.note)
            frame.measured_now = True
        except ScienceFailed as exc:
            reason = str(exc)
        except Exception as exc:  # a frame the libraries choke on must not stop the night
            log.exception("science step on %s", frame.path)
            reason = f"{type(exc).__name__}: {exc}"
        else:
            return
        log.warning("%s: not science-ready: %s", frame.path, reason)
        run.result.notes.append(f"{frame.name}: not science-ready: {reason}")


class SearchTransients(Stage):
    """An alert's frame (or every frame, as configured) against its field's reference, before the frame may
    become that reference itself."""

    name = StageName.DISCOVERY

    def wanted(self, frame: Frame, run: StageRun) -> bool:
        """Frames made science-ready here, and calibrated frames taken up again (the search says why it cannot
        search one that is not science-ready)."""
        return run.transients is not None and (frame.science is not None or frame.raw is None)

    def run(self, frame: Frame, run: StageRun) -> None:
        search = run.transients
        assert search is not None
        try:
            if not search.wanted(frame.path):
                return
            outcome = search.search(frame.path, work_order_id=run.work_order_id)
        except Exception as exc:  # the search must never cost the night its calibration
            log.exception("transient search on %s", frame.path)
            run.result.notes.append(f"{frame.path.name}: transient search failed: {type(exc).__name__}: {exc}")
            return
        run.result.searched += outcome.searched
        for path, kind in outcome.products:
            run.progress.reporter.product(path, kind)
        for event in outcome.events:
            run.progress.reporter.candidate(event)
        for measurement in outcome.forced:
            run.progress.reporter.forced(measurement)
        run.result.notes.append(f"{frame.path.name}: {outcome.message}")


class OfferToTheReferences(Stage):
    """A science-ready frame may become the reference of its field and filter."""

    name = StageName.REFERENCES

    def wanted(self, frame: Frame, run: StageRun) -> bool:
        return run.references is not None and frame.science is not None

    def run(self, frame: Frame, run: StageRun) -> None:
        assert run.references is not None
        try:
            reference = run.references.consider(frame.path, run.work_order_id, run.now())
        except (BadReference, OSError) as exc:
            log.warning("%s: not considered as a reference: %s", frame.path, exc)
            return
        if reference is not None:
            run.progress.reporter.product(reference.path, "reference")
            run.result.notes.append(f"{frame.path.name} is the reference of its field in {reference.filter}")


STAGES: tuple[Stage, ...] = (
    Calibrate(),
    CleanCosmicRays(),
    MakeScienceReady(),
    SearchTransients(),
    OfferToTheReferences(),
)


def stages_between(first: StageName, last: StageName) -> tuple[Stage, ...]:
    """The stages from ``first`` to ``last``, both included."""
    names = [stage.name for stage in STAGES]
    return STAGES[names.index(first) : names.index(last) + 1]


def run_stages(
    frames: Sequence[Frame],
    run: StageRun,
    *,
    first: StageName = StageName.CALIBRATION,
    last: StageName = StageName.REFERENCES,
    check: Callable[[], None] = lambda: None,
) -> None:
    """Every frame through the stages from ``first`` to ``last``: the engines' stages of several frames at once
    (as many as the engines have threads), the node's stages frame after frame in the night's order. ``check``
    raises to stop (a cancellation, a shutdown)."""
    chosen = stages_between(first, last)
    remote = [stage for stage in chosen if stage.on_the_cluster]
    local = [stage for stage in chosen if not stage.on_the_cluster]
    assert chosen[: len(remote)] == tuple(remote), "the engines' stages come before the node's"
    for frame, stopped in _through(frames, remote, run, check):
        check()
        if stopped is not None:
            run.result.problems.append(f"{frame.name}: {stopped}")
            run.progress.advance("science", str(frame.raw.path if frame.raw else frame.path))
            continue
        _record(frame, run, first)
        for stage in local:
            if stage.wanted(frame, run):
                stage.run(frame, run)
        science = frame.science.proto_fields() if frame.science is not None else {}
        path = str(frame.path) if frame.science is not None or frame.raw is None else str(frame.raw.path)
        run.progress.advance("science" if first.not_after(StageName.SCIENCE) else "discovery", path, **science)


def _through(
    frames: Sequence[Frame], stages: list[Stage], run: StageRun, check: Callable[[], None]
) -> Iterator[tuple[Frame, str | None]]:
    """Each frame after the engines' stages, in the night's order, with why it stopped (None: it goes on)."""

    def one(frame: Frame) -> str | None:
        try:
            for stage in stages:
                if stage.wanted(frame, run):
                    stage.run(frame, run)
        except FrameStops as exc:
            return str(exc)
        return None

    threads = run.parallelism(stages)
    if threads <= 1:
        for frame in frames:
            check()
            yield frame, one(frame)
        return
    pool = ThreadPoolExecutor(threads, thread_name_prefix="stages")
    try:
        in_flight: deque[tuple[Frame, Future[str | None]]] = deque()
        pending = iter(frames)
        for frame in pending:
            in_flight.append((frame, pool.submit(one, frame)))
            if len(in_flight) >= threads:
                break
        while in_flight:
            frame, future = in_flight.popleft()
            if (following := next(pending, None)) is not None:
                in_flight.append((following, pool.submit(one, following)))
            check()
            yield frame, future.result()
    finally:
        pool.shutdown(cancel_futures=True)


def _record(frame: Frame, run: StageRun, first: StageName) -> None:
    """What the engines made of a frame, recorded as the work order's products (on the node, in order)."""
    reporter = run.progress.reporter
    science = frame.science
    if science is not None and (frame.raw is not None or frame.measured_now):
        reporter.product(science.catalog_path, "source_catalog", science.catalog_sha256)
        reporter.product(frame.path, "calibrated", science.frame_sha256, science=science.proto_fields())
    elif frame.raw is not None:
        reporter.product(frame.path, "calibrated", frame.sha256)
    if frame.raw is not None:
        run.result.calibrated.append(frame.path)
    if science is not None and first.not_after(StageName.SCIENCE):
        run.result.science_ready += 1
