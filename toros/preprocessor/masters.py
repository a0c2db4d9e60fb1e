"""Master frames of one setup and night: bias, darks (one per exposure time), flats (one per filter), each built
from the night's frames by its maker or borrowed from the master library, and what calibrates each science
frame with them.

Every maker combines in row bands, each file opened once, within ``calibration.memory_limit_bytes``; it differs
only in what corrects a frame before the combination and what is done with the combination after it."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import bottleneck
import numpy as np
from astropy.io import fits
from astropy.stats import mad_std

from toros.floor.fitsfiles import write_fits
from toros.preprocessor.calibration import MASK_BAD_FLAT, MASK_HOT, FrameMasters, LoadedMaster
from toros.preprocessor.combine import THREADS, combine_bands
from toros.preprocessor.inventory import BadFrame, Inventory, RawFrame, Setup
from toros.preprocessor.library import Master, MasterLibrary
from toros.preprocessor.progress import NightResult, Progress
from toros.preprocessor.reduction import Corrections, FrameReader
from toros.preprocessor.settings import CalibrationConfig
from toros.runtime.files import path_inside

MasterKey = float | str | None  # what tells one master from another of its kind: a dark's exposure, a flat's filter
MAX_NONFINITE_FRACTION = 0.5  # a master with more pixels than this not finite is refused


@dataclass
class SetupMasters:
    """The masters of one setup and night, as they are built or borrowed (darks by exposure time, flats by
    filter)."""

    setup: Setup
    night: str
    bias: LoadedMaster | None = None
    darks: dict[float, LoadedMaster] = field(default_factory=dict)
    flats: dict[str, LoadedMaster] = field(default_factory=dict)


class MasterMaker(ABC):
    """How one kind of master is made: which frames, corrected how before they are combined, and what the
    combination becomes."""

    kind: ClassVar[str]
    scale_by_median: ClassVar[bool] = False  # each frame normalised by its median before the combination

    @abstractmethod
    def groups(self, inventory: Inventory, setup: Setup) -> dict[MasterKey, list[RawFrame]]:
        """The night's frames of this kind, one group per master."""

    def corrections(self, frame: RawFrame, masters: Masters, made: SetupMasters) -> Corrections:
        """What corrects a frame before it is combined (nothing: the bias)."""
        return Corrections()

    def finish(
        self, combined: np.ndarray, key: MasterKey, masters: Masters
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The master and its bad-pixel mask from the combination; None (and a problem) when it is refused."""
        return combined, None

    @abstractmethod
    def keep(self, master: LoadedMaster, key: MasterKey, made: SetupMasters) -> None:
        """The master where the night's frames find it."""

    def describe(self, key: MasterKey) -> tuple[float, str]:
        """The master's exposure time and filter (for its file, header and library record)."""
        return 0.0, ""


class BiasMaker(MasterMaker):
    kind = "bias"

    def groups(self, inventory: Inventory, setup: Setup) -> dict[MasterKey, list[RawFrame]]:
        return {None: inventory.of("bias", setup)}

    def keep(self, master: LoadedMaster, key: MasterKey, made: SetupMasters) -> None:
        made.bias = master


class DarkMaker(MasterMaker):
    kind = "dark"

    def groups(self, inventory: Inventory, setup: Setup) -> dict[MasterKey, list[RawFrame]]:
        return {exposure: frames for exposure, frames in inventory.darks_by_exposure(setup).items()}

    def corrections(self, frame: RawFrame, masters: Masters, made: SetupMasters) -> Corrections:
        return Corrections(bias=made.bias.data if made.bias else None)

    def finish(self, combined: np.ndarray, key: MasterKey, masters: Masters) -> tuple[np.ndarray, np.ndarray | None]:
        """Hot pixels (a dark's outliers) form its mask."""
        exposure_time = float(key or 0.0)
        if exposure_time <= 0:
            return combined, np.zeros(combined.shape, dtype=np.uint8)
        level = float(bottleneck.nanmedian(combined))
        spread = float(mad_std(combined[:: max(1, combined.shape[0] // 512)], ignore_nan=True))
        hot = combined > level + masters.settings.hot_pixel_sigma * max(spread, 1e-6)
        return combined, hot.astype(np.uint8) * MASK_HOT

    def keep(self, master: LoadedMaster, key: MasterKey, made: SetupMasters) -> None:
        made.darks[float(key or 0.0)] = master

    def describe(self, key: MasterKey) -> tuple[float, str]:
        return float(key or 0.0), ""


class FlatMaker(MasterMaker):
    kind = "flat"
    scale_by_median = True

    def groups(self, inventory: Inventory, setup: Setup) -> dict[MasterKey, list[RawFrame]]:
        return {filter: frames for filter, frames in inventory.flats_by_filter(setup).items()}

    def corrections(self, frame: RawFrame, masters: Masters, made: SetupMasters) -> Corrections:
        dark, scale = masters.scaled_dark(frame, made)
        return Corrections(
            bias=made.bias.data if made.bias else None, dark=dark.data if dark else None, dark_scale=scale
        )

    def finish(
        self, combined: np.ndarray, key: MasterKey, masters: Masters
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Normalised to mean 1; responses outside ``flat_low``–``flat_high`` are bad pixels."""
        level = float(bottleneck.nanmean(combined))
        if not (math.isfinite(level) and level > 0):
            masters.result.problems.append(f"master flat {key}: mean level {level:.4g}: refused")
            return None
        flat = combined / np.float32(level)
        settings = masters.settings
        bad = ((flat < settings.flat_low) | (flat > settings.flat_high)).astype(np.uint8) * MASK_BAD_FLAT
        return flat, bad

    def keep(self, master: LoadedMaster, key: MasterKey, made: SetupMasters) -> None:
        made.flats[str(key)] = master

    def describe(self, key: MasterKey) -> tuple[float, str]:
        return 0.0, str(key)


MAKERS: tuple[MasterMaker, ...] = (BiasMaker(), DarkMaker(), FlatMaker())  # in the order each needs the one before


class Masters:
    """Builds and borrows the masters of a work order's nights."""

    def __init__(
        self,
        settings: CalibrationConfig,
        library: MasterLibrary,
        storage_root: Path,
        *,
        work_order_id: str,
        now: Callable[[], float],
        progress: Progress,
        result: NightResult,
    ) -> None:
        self.settings = settings
        self.library = library
        self.storage_root = storage_root
        self.work_order_id = work_order_id
        self.now = now
        self.progress = progress
        self.result = result

    def build(self, inventory: Inventory, setup: Setup, night: str, check: Callable[[], None]) -> SetupMasters:
        """This night's masters of a setup, each kind from its frames (or, for the bias, borrowed when it has none)."""
        made = SetupMasters(setup, night)
        for maker in MAKERS:
            for key, frames in maker.groups(inventory, setup).items():
                check()
                combined = self._combine(maker, frames, made)
                finished = maker.finish(combined[0], key, self) if combined is not None else None
                if finished is not None and combined is not None:
                    maker.keep(self._store(maker, key, *finished, combined[1], made), key, made)
            if maker.kind == "bias" and made.bias is None:
                made.bias = self.borrow("bias", made)
        return made

    # -- what calibrates a science frame -----------------------------------------------------------------------

    def for_frame(self, frame: RawFrame, made: SetupMasters) -> FrameMasters | str:
        """The masters of a science frame (built tonight or borrowed), or why it has none yet."""
        if made.bias is None:
            return f"no master bias for setup {made.setup.key} on or before {made.night} yet"
        flat = made.flats.get(frame.filter) or self.borrow("flat", made, filter=frame.filter)
        if flat is None:
            return f"no master flat for filter {frame.filter} on or before {made.night} yet"
        made.flats[frame.filter] = flat
        dark, scale = self.scaled_dark(frame, made)
        return FrameMasters(made.bias, dark, scale, flat)

    def scaled_dark(self, frame: RawFrame, made: SetupMasters) -> tuple[LoadedMaster | None, float]:
        """The dark master for a frame and the factor that scales it to the frame's exposure time: tonight's of
        that exposure time, else tonight's nearest, else the library's nearest."""
        if frame.exposure_time <= 0:
            return None, 0.0
        darks = made.darks
        dark = darks.get(frame.exposure_time)
        if dark is None and darks:
            dark = darks[min(darks, key=lambda t: (abs(t - frame.exposure_time), -t))]
        if dark is None and (dark := self.borrow("dark", made, exposure_time=frame.exposure_time)) is not None:
            darks[dark.master.exposure_time] = dark
        if dark is None or dark.master.exposure_time <= 0:
            return None, 0.0
        return dark, frame.exposure_time / dark.master.exposure_time

    def borrow(
        self, kind: str, made: SetupMasters, *, exposure_time: float | None = None, filter: str | None = None
    ) -> LoadedMaster | None:
        master = self.library.find(kind, made.setup.key, made.night, exposure_time=exposure_time, filter=filter)
        if master is None:
            return None
        data, mask = master.load()
        borrowed = master.night != made.night
        if borrowed:
            self.result.notes.append(f"master {kind} borrowed from {master.night} ({master.path.name})")
        return LoadedMaster(master, data, mask, borrowed)

    # -- combining ---------------------------------------------------------------------------------------------

    def _readers(self, frames: list[RawFrame]) -> list[FrameReader]:
        readers: list[FrameReader] = []
        for frame in frames:
            try:
                readers.append(FrameReader(frame, self.settings))
            except BadFrame as exc:
                self.result.problems.append(f"{frame.name}: {exc}")
        if readers:
            shape = max({r.shape for r in readers}, key=lambda s: sum(r.shape == s for r in readers))
            for reader in [r for r in readers if r.shape != shape]:
                self.result.problems.append(
                    f"{reader.frame.name}: trimmed size {reader.shape} differs from the night's {shape}"
                )
                reader.close()
                readers.remove(reader)
        return readers

    def _combine(
        self, maker: MasterMaker, frames: list[RawFrame], made: SetupMasters
    ) -> tuple[np.ndarray, list[RawFrame]] | None:
        """The frames corrected and combined (sigma-clipped, in row bands); None (and a problem) when too few
        frames are usable or the result is mostly not finite."""
        kind = maker.kind
        readers = self._readers(frames)
        minimum = getattr(self.settings, f"min_{kind}")
        if len(readers) < minimum:
            for reader in readers:
                reader.close()
            if frames:
                self.result.problems.append(f"master {kind}: {len(readers)} usable frames, at least {minimum} needed")
            self.progress.done += len(frames)
            return None
        try:
            shape = readers[0].shape
            fixes = [maker.corrections(r.frame, self, made) for r in readers]
            held = sum({id(a): a.nbytes for f in fixes for a in (f.bias, f.dark, f.flat) if a is not None}.values())
            budget = self.settings.memory_limit_bytes - held - shape[0] * shape[1] * 4

            def corrected(i: int, start: int, stop: int) -> np.ndarray:
                return fixes[i].apply(readers[i].band(start, stop), start, stop)

            read_band = corrected
            scales = None
            if maker.scale_by_median:
                measured = self._medians(kind, readers, corrected, shape, budget, minimum)
                if measured is None:
                    return None
                usable, scales, kept = measured
                fixes = [fixes[i] for i in usable]
                if kept is not None:

                    def from_memory(i: int, start: int, stop: int) -> np.ndarray:
                        return kept[i][start:stop]

                    read_band = from_memory
                    budget -= len(readers) * 4 * shape[0] * shape[1]
            combined = combine_bands(
                len(readers),
                shape,
                read_band,
                method=self.settings.combine,
                sigma_low=self.settings.sigma_low,
                sigma_high=self.settings.sigma_high,
                budget_bytes=max(budget, 1),
                scales=scales,
                on_band=lambda stop, height: self.progress.report(
                    f"master_{kind}", self.progress.done + len(readers) * stop // height
                ),
            )
        finally:
            for reader in readers:
                reader.close()
            self.progress.done += len(frames)  # used or skipped, each frame is done
        fraction = 1.0 - np.count_nonzero(np.isfinite(combined)) / combined.size
        if fraction > MAX_NONFINITE_FRACTION:
            self.result.problems.append(f"master {kind}: {fraction:.0%} of its pixels are not finite: refused")
            return None
        return combined, [r.frame for r in readers]

    def _medians(
        self,
        kind: str,
        readers: list[FrameReader],
        corrected: Callable[[int, int, int], np.ndarray],
        shape: tuple[int, int],
        budget: int,
        minimum: int,
    ) -> tuple[list[int], list[float], list[np.ndarray] | None] | None:
        """Each frame's median (frames read in parallel), to normalise it before the combination; frames whose
        median is zero, negative or not a number are named and left out (``readers`` keeps the usable ones).
        Frames small enough are kept corrected for the combination (returned), so they are read once."""
        frame_bytes = 4 * shape[0] * shape[1]
        keep = len(readers) * frame_bytes * 3 <= budget

        def measure(i: int) -> tuple[float, np.ndarray | None]:
            frame = corrected(i, 0, shape[0])
            with np.errstate(divide="ignore", invalid="ignore"):
                return float(np.float64(1.0) / bottleneck.nanmedian(frame)), frame if keep else None

        workers = max(1, min(THREADS, self.settings.memory_limit_bytes // (8 * shape[0] * shape[1])))
        with ThreadPoolExecutor(workers) as pool:
            measured = list(pool.map(measure, range(len(readers))))
        usable = [i for i, (scale, _) in enumerate(measured) if math.isfinite(scale) and scale > 0]
        for i in sorted(set(range(len(readers))) - set(usable)):
            self.result.problems.append(
                f"{readers[i].frame.name}: median {1.0 / measured[i][0]:.4g}: not a usable {kind} frame"
            )
            readers[i].close()
        if len(usable) < minimum:
            self.result.problems.append(f"master {kind}: {len(usable)} usable frames, at least {minimum} needed")
            return None
        readers[:] = [readers[i] for i in usable]
        kept = [frame for i in usable if (frame := measured[i][1]) is not None] if keep else None
        return usable, [measured[i][0] for i in usable], kept

    def _store(
        self,
        maker: MasterMaker,
        key: MasterKey,
        data: np.ndarray,
        mask: np.ndarray | None,
        frames: list[RawFrame],
        made: SetupMasters,
    ) -> LoadedMaster:
        kind, setup, night = maker.kind, made.setup, made.night
        exposure_time, filter = maker.describe(key)
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
        self.progress.reporter.product(path, f"master_{kind}", sha256)
        self.result.masters.append(path)
        self.result.master_setups.add(setup.key)
        return LoadedMaster(master, data, mask, borrowed=False)
