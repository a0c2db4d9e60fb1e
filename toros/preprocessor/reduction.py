"""Raw frames read in row bands with the per-frame reduction applied, in order (as in BANZAI's stage list):

1. overscan: the median of the overscan strip, per row (or per column for a strip of rows), subtracted;
2. trim to TRIMSEC;
3. gain: ADU to electrons, when configured;
4. master bias subtracted;
5. master dark subtracted, scaled by exposure time when the exposure times differ;
6. divided by the normalised master flat.

Steps 1-3 follow ccdproc's ``subtract_overscan(median=True)``, ``trim_image`` and ``gain_correct``. Each file
is opened once and read band by band, so memory holds a band, never a whole night.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from ccdproc.utils.slices import slice_from_string

from toros.preprocessor.inventory import BadFrame, RawFrame
from toros.runtime.config import CalibrationConfig


def section(text: str | None, shape: tuple[int, int], keyword: str) -> tuple[slice, slice]:
    """A FITS section string ([x1:x2,y1:y2], 1-based, inclusive) as numpy (row, column) slices."""
    if not text:
        return slice(0, shape[0]), slice(0, shape[1])
    try:
        rows, columns = slice_from_string(text, fits_convention=True)
    except (ValueError, TypeError) as exc:
        raise BadFrame(f"{keyword} {text!r} is not a FITS section: {exc}") from None
    rows = slice(*rows.indices(shape[0])[:2])
    columns = slice(*columns.indices(shape[1])[:2])
    if rows.stop <= rows.start or columns.stop <= columns.start:
        raise BadFrame(f"{keyword} {text!r} lies outside the {shape[1]}x{shape[0]} image")
    return rows, columns


@dataclass
class Overscan:
    """The overscan level to subtract: one value per raw row (axis 1) or per raw column (axis 0)."""

    axis: int
    values: np.ndarray

    def apply(self, raw_band: np.ndarray, raw_rows: slice) -> None:
        if self.axis == 1:
            raw_band -= self.values[raw_rows, np.newaxis]
        else:
            raw_band -= self.values[np.newaxis, :]


class FrameReader:
    """One raw frame, opened once, served as bands of its trimmed (and overscan- and gain-corrected) image."""

    def __init__(self, frame: RawFrame, settings: CalibrationConfig) -> None:
        self.frame = frame
        self._hdul = fits.open(frame.path, memmap=False)  # sections read only the rows asked for
        self._hdu = self._hdul[frame.hdu]
        raw_shape = (frame.setup.height, frame.setup.width)
        self.rows, self.columns = section(frame.trimsec, raw_shape, "TRIMSEC")
        self.overscan = self._measure_overscan(frame.biassec, raw_shape) if frame.biassec else None
        self.gain = self._gain(settings)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.columns.stop - self.columns.start

    def _measure_overscan(self, biassec: str, raw_shape: tuple[int, int]) -> Overscan:
        rows, columns = section(biassec, raw_shape, "BIASSEC")
        strip = np.asarray(self._hdu.section[rows, columns], dtype=np.float32)
        axis = 1 if strip.shape[1] <= strip.shape[0] else 0
        if axis == 1 and (rows.start, rows.stop) != (0, raw_shape[0]):
            raise BadFrame(f"BIASSEC {biassec!r} must span every row of the frame")
        if axis == 0 and (columns.start, columns.stop) != (0, raw_shape[1]):
            raise BadFrame(f"BIASSEC {biassec!r} must span every column of the frame")
        return Overscan(axis, np.median(strip, axis=axis).astype(np.float32))

    def _gain(self, settings: CalibrationConfig) -> float | None:
        if settings.gain == "header":
            if self.frame.gain is None:
                raise BadFrame("calibration.gain is 'header' but the frame has no GAIN keyword")
            return self.frame.gain
        return settings.gain

    def band(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the trimmed image as float32, overscan subtracted, in electrons if gain is set."""
        raw_rows = slice(self.rows.start + start, self.rows.start + stop)
        raw = np.asarray(self._hdu.section[raw_rows, :], dtype=np.float32)
        if self.overscan is not None:
            self.overscan.apply(raw, raw_rows)
        band = raw[:, self.columns]
        if self.gain is not None:
            band *= np.float32(self.gain)
        return np.ascontiguousarray(band)

    def raw_band(self, start: int, stop: int) -> np.ndarray:
        """The raw values of the same trimmed rows (to find saturated pixels)."""
        raw_rows = slice(self.rows.start + start, self.rows.start + stop)
        return np.asarray(self._hdu.section[raw_rows, self.columns])

    def close(self) -> None:
        self._hdul.close()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class Corrections:
    """The masters applied to a frame after overscan, trim and gain, with the dark's scale factor."""

    bias: np.ndarray | None = None
    dark: np.ndarray | None = None
    dark_scale: float = 1.0
    flat: np.ndarray | None = None

    def apply(self, band: np.ndarray, start: int, stop: int) -> np.ndarray:
        if self.bias is not None:
            band -= self.bias[start:stop]
        if self.dark is not None:
            band -= np.float32(self.dark_scale) * self.dark[start:stop]
        if self.flat is not None:
            band /= self.flat[start:stop]
        return band
