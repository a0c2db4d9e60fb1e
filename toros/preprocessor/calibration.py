"""A science frame calibrated: overscan, trim, bias, scaled dark, flat, band by band straight into its product,
with the header that names every master and step. What the calibration stage does here and the cluster's
workers do with the same code (``tasks.calibrate_frame``)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from toros.floor.fitsfiles import FitsImageStream
from toros.preprocessor.inventory import RawFrame, stem
from toros.preprocessor.library import Master
from toros.preprocessor.reduction import Corrections, FrameReader
from toros.runtime.files import path_inside

# Bits of the calibrated frames' MASK extension.
MASK_HOT = 1
MASK_BAD_FLAT = 2
MASK_SATURATED = 4
MASK_COSMIC_RAY = 8
# Rows of a science frame calibrated at a time: 11 MB of float32 for a TOROS frame.
SCIENCE_BAND_ROWS = 256


@dataclass
class LoadedMaster:
    master: Master
    data: np.ndarray
    mask: np.ndarray | None
    borrowed: bool


@dataclass(frozen=True)
class FrameMasters:
    """What calibrates one science frame: its masters, and the factor that scales the dark to its exposure."""

    bias: LoadedMaster
    dark: LoadedMaster | None
    dark_scale: float
    flat: LoadedMaster

    def corrections(self) -> Corrections:
        return Corrections(
            bias=self.bias.data, dark=self.dark.data if self.dark else None, dark_scale=self.dark_scale,
            flat=self.flat.data,
        )  # fmt: skip

    def masks(self) -> list[np.ndarray]:
        """The masters' bad-pixel masks to merge into the frame's own."""
        return [m.mask for m in (self.dark, self.flat) if m is not None and m.mask is not None]


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
class CalibrationJob:
    """What calibrating one science frame needs, as files and a header: what a worker of the cluster is sent
    (paths as the workers see them)."""

    frame: RawFrame
    bias: str
    dark: str | None
    dark_scale: float
    flat: str
    header: fits.Header
    output: str


def calibrated_header(
    raw_header: fits.Header, frame: RawFrame, masters: FrameMasters, identity: str, night: str, work_order_id: str,
    gain_corrected: bool,
) -> fits.Header:  # fmt: skip
    """The raw header with the raw-only keywords removed and every master and step named."""
    bias, dark, flat, dark_scale = masters.bias, masters.dark, masters.flat, masters.dark_scale
    header = raw_header.copy()
    for keyword in ("BIASSEC", "TRIMSEC", "DATASEC", "BZERO", "BSCALE"):
        header.remove(keyword, ignore_missing=True, remove_all=True)
    header["CALSTAT"] = ("OTBDF", "overscan, trim, bias, dark, flat")
    header["OVERSCAN"] = (bool(frame.biassec), "overscan subtracted (per-row median)")
    header["TRIMMED"] = (frame.trimsec or "none", "raw TRIMSEC kept")
    header["GAINCORR"] = (gain_corrected, "converted to electrons")
    header["MBIAS"] = (bias.master.path.name, f"night {bias.master.night}")
    header["MDARK"] = (dark.master.path.name if dark else "none", f"scaled x{dark_scale:.4g}")
    header["MFLAT"] = (flat.master.path.name, f"night {flat.master.night}")
    header["BORROWED"] = (
        ", ".join(m.master.kind for m in (bias, dark, flat) if m and m.borrowed) or "none",
        "masters from an earlier night",
    )
    header["NIGHT"] = night
    header["TOROSWO"] = (work_order_id, "work order that calibrated it")
    header["RAWFILE"] = frame.name
    header["RAWID"] = identity
    header.add_history(
        f"TOROS preprocessor: overscan, trim, bias {bias.master.path.name}, "
        f"dark {dark.master.path.name if dark else 'none'} x{dark_scale:.4g}, flat {flat.master.path.name}"
    )
    return header


def raw_identity(frame: RawFrame, storage_root: Path) -> str:
    """The raw file as its product records it: its path in the storage root, size and modification time."""
    status = frame.path.stat()
    return f"{frame.path.resolve().relative_to(storage_root.resolve())}:{status.st_size}:{status.st_mtime_ns}"


def product_of(frame: RawFrame, night: str, storage_root: Path) -> tuple[Path, str, bool]:
    """Where a science frame's product goes, the raw file's identity, and whether the product is there already,
    made from this very raw file. A product of another raw file with the same name is left alone: this one gets
    a name of its own."""
    identity = raw_identity(frame, storage_root)
    plain = path_inside(storage_root, "calibrated", night, f"{stem(frame.path)}_cal.fits")
    distinct = plain.with_name(f"{plain.name.removesuffix('_cal.fits')}-{_digest(identity)}_cal.fits")
    for candidate in (plain, distinct):
        if not candidate.exists():
            return candidate, identity, False
        if _made_from(candidate) == identity:
            return candidate, identity, True
    return distinct, identity, False


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _made_from(product: Path) -> str | None:
    """The raw identity a product's header records (None for a product that cannot be read)."""
    try:
        return str(fits.getval(product, "RAWID"))
    except (OSError, KeyError, ValueError):
        return None
