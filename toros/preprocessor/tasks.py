"""Every piece of per-frame work that may run in another process (a worker of the cluster, a process of the node's
pool), in one room: module-level functions of files, paths and settings, which a Dask worker or a process pool
imports by name. Each reads its inputs from the storage the node and the workers share, writes its products
atomically (so a task run again after its worker died writes them once) and returns something small.

The stages (``stages.py``) say which of them runs where, through an engine (``compute.py``)."""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np
from astropy.io import fits

from toros.floor.fitsfiles import write_fits
from toros.preprocessor.calibration import MASK_COSMIC_RAY, Buffers, CalibrationJob, write_calibrated
from toros.preprocessor.discovery import DiscoveryResult, DiscoverySettings, StarCatalog, discover
from toros.preprocessor.reduction import Corrections, FrameReader
from toros.preprocessor.science import ReferenceCatalog, ScienceResult, ScienceStep
from toros.preprocessor.settings import CalibrationConfig, ScienceConfig

# -- calibration ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _master_file(path: str, version: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """A master read once per process (and again when its file changes)."""
    with fits.open(path, memmap=False) as hdus:
        data = np.asarray(hdus[0].data, dtype=np.float32)
        mask = np.asarray(hdus["MASK"].data, dtype=np.uint8) if "MASK" in hdus else None
    return data, mask


def _master(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    status = os.stat(path)
    return _master_file(path, (status.st_mtime_ns, status.st_size))


_buffers = threading.local()


def calibrate_frame(job: CalibrationJob, settings: CalibrationConfig) -> str:
    """A science frame calibrated into its product from the masters' files; returns the product's sha256."""
    bias, _ = _master(job.bias)
    dark, dark_mask = _master(job.dark) if job.dark else (None, None)
    flat, flat_mask = _master(job.flat)
    corrections = Corrections(bias=bias, dark=dark, dark_scale=job.dark_scale if dark is not None else 0.0, flat=flat)
    masks = [m for m in (dark_mask, flat_mask) if m is not None]
    if not hasattr(_buffers, "buffers"):
        _buffers.buffers = Buffers()
    with FrameReader(job.frame, settings) as reader:
        return write_calibrated(reader, corrections, job.header, masks, Path(job.output), _buffers.buffers)


def clean_cosmic_rays(path: str, gain: float, read_noise: float, saturation: float) -> str:
    """L.A.Cosmic (astroscrappy, through ccdproc) on a calibrated frame: the repaired pixels marked in its MASK,
    the frame rewritten atomically; returns its sha256."""
    from ccdproc import cosmicray_lacosmic

    with fits.open(path, memmap=False) as hdus:
        data = np.asarray(hdus[0].data, dtype=np.float32)
        header = hdus[0].header.copy()
        mask = np.asarray(hdus["MASK"].data, dtype=np.uint8).copy()
    cleaned, cosmic = cosmicray_lacosmic(data, gain=gain, readnoise=read_noise, satlevel=saturation, gain_apply=False)
    cosmic = np.asarray(cosmic, dtype=bool)
    mask |= cosmic.astype(np.uint8) * MASK_COSMIC_RAY
    header["CRCLEAN"] = (True, "L.A.Cosmic (astroscrappy via ccdproc)")
    header.add_history(f"cosmic rays cleaned: {int(cosmic.sum())} pixels")
    hdus_out = [fits.PrimaryHDU(np.asarray(cleaned, dtype=np.float32), header), fits.ImageHDU(mask, name="MASK")]
    return write_fits(Path(path), hdus_out)


# -- the science step ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _science_step(settings: str, catalog: str, version: tuple[int, int]) -> ScienceStep:
    """A process reads the reference catalog once per version of the file."""
    return ScienceStep(ScienceConfig.model_validate_json(settings), ReferenceCatalog.read(Path(catalog)))


def measure_frame(frame: str, settings: str, catalog: str) -> ScienceResult:
    """The science step on one calibrated frame (rewritten atomically, its catalog written beside it);
    ``settings``: the ScienceConfig as JSON."""
    status = os.stat(catalog)
    return _science_step(settings, catalog, (status.st_mtime_ns, status.st_size)).run(Path(frame))


# -- difference imaging -----------------------------------------------------------------------------------------


def difference(
    frame: str, reference: str, settings: DiscoverySettings, stars: StarCatalog | None = None
) -> DiscoveryResult:
    """Difference imaging of one frame against its reference (registration, ZOGY, the candidates measured)."""
    return discover(Path(frame), Path(reference), settings, stars)
