"""Calibrating a night: inventory, then per setup the masters (bias, darks per exposure time, flats per
filter, each from this night's frames or borrowed from the library), then every science frame.

Bad files never stop the night: each is named in the result with the reason and the rest goes on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

import bottleneck
import numpy as np
from astropy.io import fits
from astropy.stats import mad_std

from toros.fitsfiles import FitsImageStream, write_fits
from toros.generated import toros_pb2 as pb
from toros.preprocessor.combine import THREADS, combine_bands
from toros.preprocessor.compute import Compute, ComputeUnavailable
from toros.preprocessor.inventory import (
    BadFrame,
    Inventory,
    RawFrame,
    Setup,
    stem,
    take_inventory,
)
from toros.preprocessor.library import Master, MasterLibrary
from toros.preprocessor.reduction import Corrections, FrameReader
from toros.preprocessor.references import BadReference, ReferenceLibrary
from toros.preprocessor.science import MeasuresFrames, ScienceFailed, ScienceResult
from toros.preprocessor.settings import CalibrationConfig
from toros.preprocessor.transients import TransientSearch
from toros.runtime.files import path_inside
from toros.site import observing_night

T = TypeVar("T")
log = logging.getLogger(__name__)

# Bits of the calibrated frames' MASK extension.
MASK_HOT = 1
MASK_BAD_FLAT = 2
MASK_SATURATED = 4
MASK_COSMIC_RAY = 8
# Rows of a science frame calibrated at a time: 11 MB of float32 for a TOROS frame.
SCIENCE_BAND_ROWS = 256
MAX_NONFINITE_FRACTION = 0.5  # a master with more pixels than this not finite is refused
NIGHT_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")


class Reporter(Protocol):
    """Where a calibration reports to (the work order's context)."""

    def stage(self, stage: str, done: int, total: int, path: str = "", **science: object) -> None:
        """``science``: the proto's FrameScience fields, when ``path`` was just made science-ready."""

    def product(self, path: Path, kind: str, sha256: str | None = None, **fields: object) -> None:
        """``fields``: more fields of the Product message (``science``)."""

    def candidate(self, candidate: pb.TransientCandidate) -> None:
        """A vetted transient candidate, as an event."""

    def check(self) -> None: ...


@dataclass
class LoadedMaster:
    master: Master
    data: np.ndarray
    mask: np.ndarray | None
    borrowed: bool


@dataclass(frozen=True)
class WaitingFrame:
    """A science frame whose masters do not exist yet: it waits for them (not a failure: a node restarted after
    dusk takes its bias and darks in the morning, and the night's frames are calibrated then)."""

    path: Path
    setup: str
    reason: str


@dataclass
class NightResult:
    calibrated: list[Path] = field(default_factory=list)
    masters: list[Path] = field(default_factory=list)
    master_setups: set[str] = field(default_factory=set)  # the setups whose masters were built
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    waiting: list[WaitingFrame] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{len(self.calibrated)} frames calibrated, {len(self.masters)} masters built"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        if self.waiting:
            text += f"; {len(self.waiting)} wait for their masters: " + "; ".join(
                f"{w.path.name}: {w.reason}" for w in self.waiting
            )
        if self.problems:
            text += f"; {len(self.problems)} skipped: " + "; ".join(self.problems)
        return text


@dataclass
class SetupNight:
    """One setup of one night while it is calibrated: where it reports, what it has found, and the masters
    built or borrowed so far (darks by exposure time, flats by filter)."""

    setup: Setup
    night: str
    reporter: Reporter
    result: NightResult
    clean_cosmic_rays: bool
    bias: LoadedMaster | None = None
    darks: dict[float, LoadedMaster] = field(default_factory=dict)
    flats: dict[str, LoadedMaster] = field(default_factory=dict)


def night_of(date_obs: str, longitude_deg: float, now: float) -> str:
    """The observing night (YYYY-MM-DD) of an exposure that started at ``date_obs`` (the night of ``now``, in
    clock seconds, for a frame without a readable DATE-OBS)."""
    try:
        when = datetime.fromisoformat(date_obs.replace("Z", "+00:00"))
    except ValueError:
        when = datetime.fromtimestamp(now, UTC)
    return observing_night(when, longitude_deg).isoformat()


def _lacosmic(data: np.ndarray, gain: float, readnoise: float, saturation: float) -> tuple[np.ndarray, np.ndarray]:
    """L.A.Cosmic through ccdproc (astroscrappy); runs in a worker process."""
    from ccdproc import cosmicray_lacosmic

    cleaned, crmask = cosmicray_lacosmic(data, gain=gain, readnoise=readnoise, satlevel=saturation, gain_apply=False)
    return np.asarray(cleaned, dtype=np.float32), np.asarray(crmask, dtype=bool)


@dataclass(frozen=True)
class _ScienceFrame:
    """A science frame about to be calibrated: its masters, its raw identity and where its product goes."""

    frame: RawFrame
    bias: LoadedMaster
    flat: LoadedMaster
    raw_identity: str  # raw path in the storage root:size:mtime_ns, kept in the product's RAWID
    output: Path


@dataclass(frozen=True)
class _Cleaning:
    """A calibrated frame whose cosmic rays a worker process is cleaning."""

    job: Future[tuple[np.ndarray, np.ndarray]]
    mask: np.ndarray
    header: fits.Header
    output: Path
    frame: RawFrame


class NightCalibration:
    """Calibrates the frames of a night (or a handful of them as they stream in) for one work order."""

    def __init__(
        self,
        settings: CalibrationConfig,
        library: MasterLibrary,
        storage_root: Path,
        *,
        longitude_deg: float,
        work_order_id: str,
        now: Callable[[], float],
        science: MeasuresFrames | None = None,
        references: ReferenceLibrary | None = None,
        transients: TransientSearch | None = None,
        compute: Compute | None = None,
        note: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.settings = settings
        self.science = science
        self.references = references
        self.transients = transients
        self.library = library
        self.storage_root = storage_root
        self.longitude = longitude_deg
        self.work_order_id = work_order_id
        self.now = now
        self._buffers = Buffers()
        self._here = threading.Lock()  # the buffers: one frame at a time here (the cluster's fallback included)
        self.compute = compute
        self.note = note  # hears what the compute engine did instead (computed here, waited), for the work order
        self._done = 0  # frames done (used, skipped or calibrated) of the ones the inventory found
        self._total = 0

    def run(
        self, paths: list[Path], reporter: Reporter, *, night: str | None = None, clean_cosmic_rays: bool = False
    ) -> NightResult:
        result = NightResult()
        reporter.stage("inventory", 0, len(paths))
        inventory = take_inventory(paths, self.settings, self.storage_root)
        result.problems += inventory.problems
        if not inventory.frames:
            result.problems.append("no usable FITS frames")
            return result
        self._done, self._total = 0, len(inventory.frames)
        for setup in inventory.setups():
            first = (inventory.of("light", setup) or [f for f in inventory.frames if f.setup == setup])[0]
            setup_night = night or night_of(first.date_obs, self.longitude, self.now())
            self._calibrate_setup(inventory, SetupNight(setup, setup_night, reporter, result, clean_cosmic_rays))
        return result

    # -- masters ---------------------------------------------------------------------------------

    def _advance(self, reporter: Reporter, stage: str, path: str = "") -> None:
        self._done += 1
        reporter.stage(stage, self._done, self._total, path)

    def _readers(self, frames: list[RawFrame], result: NightResult) -> list[FrameReader]:
        readers: list[FrameReader] = []
        for frame in frames:
            try:
                readers.append(FrameReader(frame, self.settings))
            except BadFrame as exc:
                result.problems.append(f"{frame.name}: {exc}")
        if readers:
            shape = max({r.shape for r in readers}, key=lambda s: sum(r.shape == s for r in readers))
            for reader in [r for r in readers if r.shape != shape]:
                result.problems.append(
                    f"{reader.frame.name}: trimmed size {reader.shape} differs from the night's {shape}"
                )
                reader.close()
                readers.remove(reader)
        return readers

    def _combine(
        self,
        kind: str,
        frames: list[RawFrame],
        corrections: Callable[[RawFrame], Corrections],
        work: SetupNight,
        *,
        scale_by_median: bool = False,
    ) -> tuple[np.ndarray, list[RawFrame]] | None:
        result = work.result
        readers = self._readers(frames, result)
        minimum = getattr(self.settings, f"min_{kind}")
        if len(readers) < minimum:
            for reader in readers:
                reader.close()
            if frames:
                result.problems.append(f"master {kind}: {len(readers)} usable frames, at least {minimum} needed")
            self._done += len(frames)
            return None
        try:
            shape = readers[0].shape
            fixes = [corrections(r.frame) for r in readers]
            held = sum({id(a): a.nbytes for f in fixes for a in (f.bias, f.dark, f.flat) if a is not None}.values())
            budget = self.settings.memory_limit_bytes - held - shape[0] * shape[1] * 4

            def corrected(i: int, start: int, stop: int) -> np.ndarray:
                return fixes[i].apply(readers[i].band(start, stop), start, stop)

            read_band = corrected
            scales = None
            if scale_by_median:  # each flat normalised by its median before combining, frames read in parallel
                frame_bytes = 4 * shape[0] * shape[1]
                keep = len(readers) * frame_bytes * 3 <= budget  # frames that fit: corrected once, kept for the combine

                def measure(i: int) -> tuple[float, np.ndarray | None]:
                    frame = corrected(i, 0, shape[0])
                    with np.errstate(divide="ignore", invalid="ignore"):
                        return float(np.float64(1.0) / bottleneck.nanmedian(frame)), frame if keep else None

                workers = max(1, min(THREADS, self.settings.memory_limit_bytes // (8 * shape[0] * shape[1])))
                with ThreadPoolExecutor(workers) as pool:
                    measured = list(pool.map(measure, range(len(readers))))
                # A frame whose median is zero, negative or not a number cannot be normalised: named, left out.
                usable = [i for i, (scale, _) in enumerate(measured) if math.isfinite(scale) and scale > 0]
                for i in sorted(set(range(len(readers))) - set(usable)):
                    result.problems.append(
                        f"{readers[i].frame.name}: median {1.0 / measured[i][0]:.4g}: not a usable {kind} frame"
                    )
                    readers[i].close()
                if len(usable) < minimum:
                    result.problems.append(f"master {kind}: {len(usable)} usable frames, at least {minimum} needed")
                    return None
                readers[:] = [readers[i] for i in usable]
                fixes = [fixes[i] for i in usable]
                measured = [measured[i] for i in usable]
                scales = [scale for scale, _ in measured]
                if keep:
                    kept = [frame for _, frame in measured if frame is not None]  # all of them, as keep

                    def from_memory(i: int, start: int, stop: int) -> np.ndarray:
                        return kept[i][start:stop]

                    read_band = from_memory
                    budget -= len(readers) * frame_bytes
            combined = combine_bands(
                len(readers),
                shape,
                read_band,
                method=self.settings.combine,
                sigma_low=self.settings.sigma_low,
                sigma_high=self.settings.sigma_high,
                budget_bytes=max(budget, 1),
                scales=scales,
                on_band=lambda stop, height: work.reporter.stage(
                    f"master_{kind}", self._done + len(readers) * stop // height, self._total
                ),
            )
        finally:
            for reader in readers:
                reader.close()
            self._done += len(frames)  # used or skipped, each frame is done
        if not self._usable_master(kind, combined, result):
            return None
        return combined, [r.frame for r in readers]

    @staticmethod
    def _usable_master(kind: str, data: np.ndarray, result: NightResult) -> bool:
        """A master with more than MAX_NONFINITE_FRACTION of its pixels not finite (frames of NaN) is refused."""
        fraction = 1.0 - np.count_nonzero(np.isfinite(data)) / data.size
        if fraction > MAX_NONFINITE_FRACTION:
            result.problems.append(f"master {kind}: {fraction:.0%} of its pixels are not finite: refused")
            return False
        return True

    def _store_master(
        self,
        kind: str,
        data: np.ndarray,
        mask: np.ndarray | None,
        frames: list[RawFrame],
        work: SetupNight,
        *,
        exposure_time: float = 0.0,
        filter: str = "",
    ) -> LoadedMaster:
        setup, night = work.setup, work.night
        suffix = {"dark": f"_{exposure_time:g}s", "flat": f"_{filter}"}.get(kind, "")
        path = path_inside(self.storage_root, "masters", setup.key, night, f"master_{kind}{suffix}.fits")
        header = fits.Header()
        header["IMAGETYP"] = f"MASTER {kind.upper()}"
        header["NCOMBINE"] = (len(frames), "raw frames combined")
        header["COMBINE"] = (self.settings.combine, "sigma-clipped average or median")
        header["NIGHT"] = night
        header["SETUP"] = setup.key
        header["EXPTIME"] = exposure_time
        header["FILTER"] = filter or "none"
        header["TOROSWO"] = (self.work_order_id, "work order that built it")
        for frame in frames:
            header.add_history(f"from {frame.name}")
        hdus = [fits.PrimaryHDU(data.astype(np.float32, copy=False), header)]
        if mask is not None:
            hdus.append(fits.ImageHDU(mask, name="MASK"))
        sha256 = write_fits(path, hdus)
        master = Master(kind, setup.key, night, exposure_time, filter, path, tuple(str(f.path) for f in frames))
        self.library.add(master, sha256, self.now(), self.work_order_id)
        work.reporter.product(path, f"master_{kind}", sha256)
        work.result.masters.append(path)
        work.result.master_setups.add(setup.key)
        return LoadedMaster(master, data, mask, borrowed=False)

    def _borrow(
        self, kind: str, work: SetupNight, *, exposure_time: float | None = None, filter: str | None = None
    ) -> LoadedMaster | None:
        master = self.library.find(kind, work.setup.key, work.night, exposure_time=exposure_time, filter=filter)
        if master is None:
            return None
        data, mask = master.load()
        borrowed = master.night != work.night
        if borrowed:
            work.result.notes.append(f"master {kind} borrowed from {master.night} ({master.path.name})")
        return LoadedMaster(master, data, mask, borrowed)

    def _calibrate_setup(self, inventory: Inventory, work: SetupNight) -> None:
        setup = work.setup
        work.reporter.check()
        built = self._combine("bias", inventory.of("bias", setup), lambda f: Corrections(), work)
        work.bias = self._store_master("bias", built[0], None, built[1], work) if built else self._borrow("bias", work)
        bias_data = work.bias.data if work.bias else None
        for exposure_time, frames in inventory.darks_by_exposure(setup).items():
            work.reporter.check()
            built = self._combine("dark", frames, lambda f: Corrections(bias=bias_data), work)
            if built:
                hot = self._hot_pixels(built[0], exposure_time)
                work.darks[exposure_time] = self._store_master(
                    "dark", built[0], hot, built[1], work, exposure_time=exposure_time
                )
        for filter_name, frames in inventory.flats_by_filter(setup).items():
            work.reporter.check()
            built = self._combine("flat", frames, lambda f: self._dark_corrections(f, work), work, scale_by_median=True)
            level = float(bottleneck.nanmean(built[0])) if built else math.nan
            if built and not (math.isfinite(level) and level > 0):
                work.result.problems.append(f"master flat {filter_name}: mean level {level:.4g}: refused")
            elif built:
                flat = built[0] / np.float32(level)
                bad = ((flat < self.settings.flat_low) | (flat > self.settings.flat_high)).astype(
                    np.uint8
                ) * MASK_BAD_FLAT
                work.flats[filter_name] = self._store_master("flat", flat, bad, built[1], work, filter=filter_name)
        self._calibrate_lights(inventory.of("light", setup), work)

    def _hot_pixels(self, dark: np.ndarray, exposure_time: float) -> np.ndarray:
        if exposure_time <= 0:
            return np.zeros(dark.shape, dtype=np.uint8)
        level = float(bottleneck.nanmedian(dark))
        spread = float(mad_std(dark[:: max(1, dark.shape[0] // 512)], ignore_nan=True))
        return (dark > level + self.settings.hot_pixel_sigma * max(spread, 1e-6)).astype(np.uint8) * MASK_HOT

    def _dark_for(self, exposure_time: float, work: SetupNight) -> LoadedMaster | None:
        darks = work.darks
        if exposure_time in darks:
            return darks[exposure_time]
        if darks:  # this night's dark of the nearest exposure time, scaled
            return darks[min(darks, key=lambda t: (abs(t - exposure_time), -t))]
        dark = self._borrow("dark", work, exposure_time=exposure_time)
        if dark is not None:
            darks[dark.master.exposure_time] = dark
        return dark

    def _scaled_dark(self, frame: RawFrame, work: SetupNight) -> tuple[LoadedMaster | None, float]:
        """The dark master for a frame and the factor that scales it to the frame's exposure time."""
        dark = self._dark_for(frame.exposure_time, work) if frame.exposure_time > 0 else None
        if dark is None or dark.master.exposure_time <= 0:
            return None, 0.0
        return dark, frame.exposure_time / dark.master.exposure_time

    def _dark_corrections(self, frame: RawFrame, work: SetupNight) -> Corrections:
        dark, scale = self._scaled_dark(frame, work)
        bias = work.bias.data if work.bias else None
        return Corrections(bias=bias, dark=dark.data if dark else None, dark_scale=scale)

    # -- science frames --------------------------------------------------------------------------

    def _calibrate_lights(self, lights: list[RawFrame], work: SetupNight) -> None:
        if work.clean_cosmic_rays and lights:
            self._calibrate_and_clean(lights, work)
        elif self.compute is not None and self.compute.remote and (threads := self.compute.parallelism()) > 1:
            self._calibrate_on_the_cluster(lights, work, threads)
        else:
            for science, (sha256, measured) in self._each_ready(
                lights, work, lambda science: self._calibrated_and_measured(science, work)
            ):
                self._finish(science.frame, science.output, work, sha256, measured)

    def _each_ready(
        self, lights: list[RawFrame], work: SetupNight, step: Callable[[_ScienceFrame], T]
    ) -> Iterator[tuple[_ScienceFrame, T]]:
        """The frames to calibrate, each with what ``step`` made of it. A frame calibrated before a restart is
        finished on the way; one without masters, or that ``step`` finds bad, is skipped with the reason."""
        for frame in lights:
            work.reporter.check()
            science = self._prepared(frame, work)
            if science is None:
                continue
            try:
                result = step(science)
            except (BadFrame, ComputeUnavailable) as exc:  # the cluster gone past compute.wait_s: named
                self._skip(frame, str(exc), work)
                continue
            yield science, result

    def _prepared(self, frame: RawFrame, work: SetupNight) -> _ScienceFrame | None:
        """A science frame with its masters, ready to calibrate; None when it needs no calibration (done before
        a restart: finished now) or cannot have one (skipped, with the reason)."""
        setup, night = work.setup, work.night
        output, identity, made_before = self._product_of(frame, night)
        if made_before:  # calibrated before a restart: written atomically, so complete
            self._finish(frame, output, work, None, self._science_ready(frame, output, work))
            return None
        if work.bias is None:
            self._wait(frame, f"no master bias for setup {setup.key} on or before {night} yet", work)
            return None
        flat = work.flats.get(frame.filter) or self._borrow("flat", work, filter=frame.filter)
        if flat is None:
            self._wait(frame, f"no master flat for filter {frame.filter} on or before {night} yet", work)
            return None
        work.flats[frame.filter] = flat
        return _ScienceFrame(frame, work.bias, flat, identity, output)

    def _calibrate_and_clean(self, lights: list[RawFrame], work: SetupNight) -> None:
        """Calibration here, then cosmic-ray cleaning in processes of their own, a few frames at a time."""
        pool = ProcessPoolExecutor(self.settings.cosmic_ray_processes)
        pending: list[_Cleaning] = []
        try:
            for science, (data, mask, header) in self._each_ready(
                lights, work, lambda science: self._calibrate_in_memory(science, work)
            ):
                frame = science.frame
                gain = 1.0 if self.settings.gain is not None else (frame.gain or 1.0)
                job = pool.submit(_lacosmic, data, gain, float(header.get("RDNOISE", 6.5)), frame.saturation or 65535.0)
                pending.append(_Cleaning(job, mask, header, science.output, frame))
                if len(pending) >= self.settings.cosmic_ray_processes:
                    self._finish_cleaning(pending.pop(0), work)
            while pending:
                self._finish_cleaning(pending.pop(0), work)
        finally:
            pool.shutdown(cancel_futures=True)

    def _calibrate_on_the_cluster(self, lights: list[RawFrame], work: SetupNight, threads: int) -> None:
        """Each frame's calibration and science step on the cluster, as many at once as it has worker threads;
        what follows (products, discovery, references) here, frame after frame in the night's order."""
        pool = ThreadPoolExecutor(threads, thread_name_prefix="calibrate")
        try:
            jobs = [  # the tasks made here (the header, the masters' sizes, the dark), then sent
                (science, pool.submit(self._calibrated_and_measured, science, work, job))
                for science, job in self._each_ready(lights, work, lambda science: self._frame_job(science, work))
            ]
            for science, future in jobs:
                work.reporter.check()
                try:
                    sha256, measured = future.result()
                except (BadFrame, ComputeUnavailable) as exc:  # the cluster gone past compute.wait_s: named
                    self._skip(science.frame, str(exc), work)
                    continue
                self._finish(science.frame, science.output, work, sha256, measured)
        finally:
            pool.shutdown(cancel_futures=True)

    def _calibrated_and_measured(
        self, science: _ScienceFrame, work: SetupNight, job: FrameJob | None = None
    ) -> tuple[str, ScienceResult | None]:
        """One frame calibrated (here, or on the cluster as ``job``) and made science-ready: the product's sha256
        and the science step's result."""
        if self.compute is None or not self.compute.remote:
            sha256 = self._calibrate_to_file(science, work)
        else:
            sha256 = self.compute.run(
                f"calibration of {science.frame.name}",
                lambda: self._calibrate_to_file(science, work),
                (calibrate_frame, (job or self._frame_job(science, work), self.settings)),
                note=self.note,
            )
        return sha256, self._science_ready(science.frame, science.output, work)

    def _product_of(self, frame: RawFrame, night: str) -> tuple[Path, str, bool]:
        """Where a science frame's product goes, the raw file's identity (its path, size and modification time,
        recorded in the product's header), and whether the product is there already, made from this very raw
        file. A product of another raw file with the same name is left alone: this one gets a name of its own."""
        identity = self._raw_identity(frame)
        plain = path_inside(self.storage_root, "calibrated", night, f"{stem(frame.path)}_cal.fits")
        distinct = plain.with_name(f"{plain.name.removesuffix('_cal.fits')}-{_digest(identity)}_cal.fits")
        for candidate in (plain, distinct):
            if not candidate.exists():
                return candidate, identity, False
            if _made_from(candidate) == identity:
                return candidate, identity, True
        return distinct, identity, False

    def _raw_identity(self, frame: RawFrame) -> str:
        status = frame.path.stat()
        return f"{frame.path.resolve().relative_to(self.storage_root.resolve())}:{status.st_size}:{status.st_mtime_ns}"

    def _wait(self, frame: RawFrame, reason: str, work: SetupNight) -> None:
        """A science frame whose masters do not exist yet: it waits for them, and counts as done here."""
        work.result.waiting.append(WaitingFrame(frame.path, work.setup.key, reason))
        self._advance(work.reporter, "science", str(frame.path))

    def _skip(self, frame: RawFrame, reason: str, work: SetupNight) -> None:
        """A science frame that cannot be calibrated: named with the reason, and counted as done."""
        work.result.problems.append(f"{frame.name}: {reason}")
        self._advance(work.reporter, "science", str(frame.path))

    @contextmanager
    def _science_frame(
        self, science: _ScienceFrame, work: SetupNight
    ) -> Iterator[tuple[FrameReader, Corrections, fits.Header, list[np.ndarray]]]:
        """A science frame opened with what calibrates it: the corrections, the calibrated frame's header and
        the masters' masks to merge into its own."""
        frame, bias, flat = science.frame, science.bias, science.flat
        dark, scale = self._scaled_dark(frame, work)
        corrections = Corrections(bias=bias.data, dark=dark.data if dark else None, dark_scale=scale, flat=flat.data)
        with FrameReader(frame, self.settings) as reader:
            if bias.data.shape != reader.shape or flat.data.shape != reader.shape:
                raise BadFrame(f"trimmed size {reader.shape} differs from the masters' {bias.data.shape}")
            header = self._calibrated_header(reader.header, science, dark, scale, work.night)
            yield reader, corrections, header, [m.mask for m in (dark, flat) if m is not None and m.mask is not None]

    def _frame_job(self, science: _ScienceFrame, work: SetupNight) -> FrameJob:
        """A science frame's calibration as a cluster task: the masters' files, paths as the workers see them."""
        assert self.compute is not None
        with self._science_frame(science, work) as (_, _, header, _):  # the header, and the masters' sizes checked
            pass
        dark, scale = self._scaled_dark(science.frame, work)
        paths = self.compute.paths
        return FrameJob(
            dataclasses.replace(science.frame, path=Path(paths.to_worker(science.frame.path))),
            paths.to_worker(science.bias.master.path),
            paths.to_worker(dark.master.path) if dark else None,
            scale,
            paths.to_worker(science.flat.master.path),
            header,
            paths.to_worker(science.output),
        )

    def _calibrate_to_file(self, science: _ScienceFrame, work: SetupNight) -> str:
        """Calibrates a science frame straight into its product, here. Returns the product's sha256."""
        with self._here, self._science_frame(science, work) as (reader, corrections, header, masks):
            return write_calibrated(reader, corrections, header, masks, science.output, self._buffers)

    def _calibrate_in_memory(
        self, science: _ScienceFrame, work: SetupNight
    ) -> tuple[np.ndarray, np.ndarray, fits.Header]:
        """Calibrates a science frame into fresh arrays (image, mask, header), for cosmic-ray cleaning."""
        with self._science_frame(science, work) as (reader, corrections, header, masks):
            data = np.empty(reader.shape, dtype=np.float32)
            mask = np.zeros(reader.shape, dtype=np.uint8)
            for start, stop, band in calibrated_bands(reader, corrections, mask, self._buffers):
                data[start:stop] = band
        for master_mask in masks:
            mask |= master_mask
        return data, mask, header

    def _calibrated_header(
        self, raw_header: fits.Header, science: _ScienceFrame, dark: LoadedMaster | None, dark_scale: float, night: str
    ) -> fits.Header:
        """The raw header with the raw-only keywords removed and every master and step named."""
        frame, bias, flat = science.frame, science.bias, science.flat
        header = raw_header.copy()
        for keyword in ("BIASSEC", "TRIMSEC", "DATASEC", "BZERO", "BSCALE"):
            header.remove(keyword, ignore_missing=True, remove_all=True)
        header["CALSTAT"] = ("OTBDF", "overscan, trim, bias, dark, flat")
        header["OVERSCAN"] = (bool(frame.biassec), "overscan subtracted (per-row median)")
        header["TRIMMED"] = (frame.trimsec or "none", "raw TRIMSEC kept")
        header["GAINCORR"] = (self.settings.gain is not None, "converted to electrons")
        header["MBIAS"] = (bias.master.path.name, f"night {bias.master.night}")
        header["MDARK"] = (dark.master.path.name if dark else "none", f"scaled x{dark_scale:.4g}")
        header["MFLAT"] = (flat.master.path.name, f"night {flat.master.night}")
        header["BORROWED"] = (
            ", ".join(m.master.kind for m in (bias, dark, flat) if m and m.borrowed) or "none",
            "masters from an earlier night",
        )
        header["NIGHT"] = night
        header["TOROSWO"] = (self.work_order_id, "work order that calibrated it")
        header["RAWFILE"] = frame.name
        header["RAWID"] = science.raw_identity
        header.add_history(
            f"TOROS preprocessor: overscan, trim, bias {bias.master.path.name}, "
            f"dark {dark.master.path.name if dark else 'none'} x{dark_scale:.4g}, flat {flat.master.path.name}"
        )
        return header

    def _finish_cleaning(self, cleaning: _Cleaning, work: SetupNight) -> None:
        cleaned, cosmic = cleaning.job.result()
        mask, header = cleaning.mask, cleaning.header
        mask |= cosmic.astype(np.uint8) * MASK_COSMIC_RAY
        header["CRCLEAN"] = (True, "L.A.Cosmic (astroscrappy via ccdproc)")
        header.add_history(f"cosmic rays cleaned: {int(cosmic.sum())} pixels")
        hdus = [fits.PrimaryHDU(cleaned, header), fits.ImageHDU(mask, name="MASK")]
        sha256 = write_fits(cleaning.output, hdus)
        self._finish(
            cleaning.frame, cleaning.output, work, sha256, self._science_ready(cleaning.frame, cleaning.output, work)
        )

    def _finish(
        self, frame: RawFrame, output: Path, work: SetupNight, sha256: str | None, science: ScienceResult | None
    ) -> None:
        """A calibrated frame (and what the science step made of it) recorded; then discovery and references."""
        if science is None:
            work.reporter.product(output, "calibrated", sha256)
        else:
            work.reporter.product(science.catalog_path, "source_catalog", science.catalog_sha256)
            work.reporter.product(output, "calibrated", science.frame_sha256, science=science.proto_fields())
            self._search_transients(output, work)  # before the frame may become its field's reference
            self._consider_reference(output, work)
        work.result.calibrated.append(output)
        self._done += 1
        if science is None:
            work.reporter.stage("science", self._done, self._total, str(frame.path))
        else:
            work.reporter.stage("science", self._done, self._total, str(output), **science.proto_fields())

    def _search_transients(self, output: Path, work: SetupNight) -> None:
        """An alert's frame (or every frame, as configured) against its field's reference."""
        if self.transients is None:
            return
        try:
            if not self.transients.wanted(output):
                return
            outcome = self.transients.search(output, work_order_id=self.work_order_id)
        except Exception as exc:  # the search must never cost the night its calibration
            log.exception("transient search on %s", output)
            work.result.notes.append(f"{output.name}: transient search failed: {type(exc).__name__}: {exc}")
            return
        for path, kind in outcome.products:
            work.reporter.product(path, kind)
        for event in outcome.events:
            work.reporter.candidate(event)
        work.result.notes.append(f"{output.name}: {outcome.message}")

    def _consider_reference(self, output: Path, work: SetupNight) -> None:
        """A science-ready frame may become the reference of its field and filter."""
        if self.references is None:
            return
        try:
            reference = self.references.consider(output, self.work_order_id, self.now())
        except (BadReference, OSError) as exc:
            log.warning("%s: not considered as a reference: %s", output, exc)
            return
        if reference is not None:
            work.reporter.product(reference.path, "reference")
            work.result.notes.append(f"{output.name} is the reference of its field in {reference.filter}")

    def _science_ready(self, frame: RawFrame, output: Path, work: SetupNight) -> ScienceResult | None:
        """The science step on a calibrated frame (when configured); a frame it cannot solve stays calibrated
        and the reason is noted. A frame made science-ready before a restart is not measured again."""
        if self.science is None:
            return None
        try:
            return ScienceResult.from_frame(output) or self.science.run(output)
        except ScienceFailed as exc:
            reason = str(exc)
        except Exception as exc:  # a frame the libraries choke on must not stop the night
            log.exception("science step on %s", output)
            reason = f"{type(exc).__name__}: {exc}"
        log.warning("%s: not science-ready: %s", output, reason)
        work.result.notes.append(f"{frame.name}: not science-ready: {reason}")
        return None


class Buffers:
    """Work arrays kept from one science frame to the next: a fresh array of a full frame costs its page faults
    (a quarter of a second per 200 MB on this machine) every time."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, tuple[int, ...], str], np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type | np.dtype) -> np.ndarray:
        key = (name, shape, np.dtype(dtype).str)
        if key not in self._arrays:
            self._arrays[key] = np.empty(shape, dtype)
        return self._arrays[key]


def calibrated_bands(
    reader: FrameReader, corrections: Corrections, mask: np.ndarray, buffers: Buffers
) -> Iterator[tuple[int, int, np.ndarray]]:
    """The calibrated image as (start row, stop row, band); the band is a buffer reused for the next one.
    Saturated pixels are marked in ``mask``."""
    height, width = reader.shape
    saturation = reader.frame.saturation
    raw = buffers.get("raw band", (SCIENCE_BAND_ROWS, reader.frame.setup.width), np.uint16)
    calibrated = buffers.get("calibrated band", (SCIENCE_BAND_ROWS, width), np.float32)
    for start in range(0, height, SCIENCE_BAND_ROWS):
        stop = min(height, start + SCIENCE_BAND_ROWS)
        rows = reader.read(start, stop, out=raw[: stop - start])
        band = corrections.apply(reader.reduce(rows, out=calibrated[: stop - start]), start, stop)
        if saturation is not None:
            mask[start:stop][rows[:, reader.columns] >= saturation] = MASK_SATURATED
        yield start, stop, band


def write_calibrated(
    reader: FrameReader, corrections: Corrections, header: fits.Header, masks: list[np.ndarray], output: Path,
    buffers: Buffers,
) -> str:  # fmt: skip
    """A science frame calibrated straight into its product, band by band: the file is written (and hashed)
    while the next band is computed, so a full TOROS frame costs little more than its I/O. Returns the sha256."""
    mask = buffers.get("mask", reader.shape, np.uint8)
    mask.fill(0)
    with FitsImageStream(output, header, reader.shape, np.float32) as stream:
        for _, _, band in calibrated_bands(reader, corrections, mask, buffers):
            stream.write_rows(band)
        for master_mask in masks:
            mask |= master_mask
        return stream.finish([fits.ImageHDU(mask, name="MASK")])


@dataclass(frozen=True)
class FrameJob:
    """What calibrating one science frame needs, as files and a header: what a worker of the cluster is sent
    (paths as the workers see them)."""

    frame: RawFrame
    bias: str
    dark: str | None
    dark_scale: float
    flat: str
    header: fits.Header
    output: str


@functools.lru_cache(maxsize=4)
def _master_file(path: str, version: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """A master read once per worker process (and again when its file changes)."""
    with fits.open(path, memmap=False) as hdus:
        data = np.asarray(hdus[0].data, dtype=np.float32)
        mask = np.asarray(hdus["MASK"].data, dtype=np.uint8) if "MASK" in hdus else None
    return data, mask


def _master(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    status = os.stat(path)
    return _master_file(path, (status.st_mtime_ns, status.st_size))


_worker_buffers = threading.local()


def calibrate_frame(job: FrameJob, settings: CalibrationConfig) -> str:
    """On a worker of the compute engine: the frame calibrated into its product from the masters' files."""
    bias, _ = _master(job.bias)
    dark, dark_mask = _master(job.dark) if job.dark else (None, None)
    flat, flat_mask = _master(job.flat)
    corrections = Corrections(bias=bias, dark=dark, dark_scale=job.dark_scale if dark is not None else 0.0, flat=flat)
    masks = [m for m in (dark_mask, flat_mask) if m is not None]
    if not hasattr(_worker_buffers, "buffers"):
        _worker_buffers.buffers = Buffers()
    with FrameReader(job.frame, settings) as reader:
        return write_calibrated(reader, corrections, job.header, masks, Path(job.output), _worker_buffers.buffers)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _made_from(product: Path) -> str | None:
    """The raw identity a product's header records (None for a product that cannot be read)."""
    try:
        return str(fits.getval(product, "RAWID"))
    except (OSError, KeyError, ValueError):
        return None
