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
from toros.preprocessor.settings import CalibrationConfig


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


def _unsigned_16_bit(hdu: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU) -> bool:
    """An uncompressed image of unsigned 16-bit values stored as signed (BITPIX 16, BZERO 32768, BSCALE 1)."""
    header = hdu.header
    return (
        not isinstance(hdu, fits.CompImageHDU)
        and header.get("BITPIX") == 16
        and header.get("BZERO") == 32768
        and header.get("BSCALE", 1) == 1
        and "BLANK" not in header
    )


class FrameReader:
    """One raw frame, opened once, served as bands of its trimmed (and overscan- and gain-corrected) image.

    Bands are read as whole rows (one contiguous read each); columns are selected in memory.
    """

    def __init__(self, frame: RawFrame, settings: CalibrationConfig) -> None:
        self.frame = frame
        self._hdul = fits.open(frame.path, memmap=False)  # sections read only the rows asked for
        self._hdu = self._hdul[frame.hdu]
        # The usual camera raw, unsigned 16-bit stored as signed with BZERO 32768, is read straight from the
        # file into the caller's buffer and made unsigned in place: astropy's own conversion goes through 64-bit
        # arithmetic and fresh arrays, seconds per full-size frame.
        self._file = None
        if _unsigned_16_bit(self._hdu):
            file = open(frame.path, "rb")
            if file.read(6) == b"SIMPLE":  # a plain FITS file, not gzip'd: its bytes are the data
                self._file = file
                self._data_offset = int(self._hdul.fileinfo(frame.hdu)["datLoc"])
                self._raw_width = frame.setup.width
            else:
                file.close()
        raw_shape = (frame.setup.height, frame.setup.width)
        self.rows, self.columns = section(frame.trimsec, raw_shape, "TRIMSEC")
        self._overscan_rows: slice | None = None
        self._overscan_columns: slice | None = None
        if frame.biassec:
            self._overscan_rows, self._overscan_columns = section(frame.biassec, raw_shape, "BIASSEC")
        self._column_levels = self._overscan_of_columns(raw_shape) if frame.biassec else None
        self.gain = self._gain(settings)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.stop - self.rows.start, self.columns.stop - self.columns.start

    @property
    def header(self) -> fits.Header:
        return self._hdu.header

    def _overscan_of_columns(self, raw_shape: tuple[int, int]) -> np.ndarray | None:
        """For an overscan strip of rows (wider than tall): its median per column, measured once.

        A strip of columns (the usual case) is measured per row, band by band, as the rows are read.
        """
        rows, columns = self._overscan_rows, self._overscan_columns
        assert rows is not None and columns is not None, "called for a frame with a BIASSEC"
        if columns.stop - columns.start <= rows.stop - rows.start:
            if (rows.start, rows.stop) != (0, raw_shape[0]):
                raise BadFrame(f"BIASSEC {self.frame.biassec!r} must span every row of the frame")
            return None
        if (columns.start, columns.stop) != (0, raw_shape[1]):
            raise BadFrame(f"BIASSEC {self.frame.biassec!r} must span every column of the frame")
        strip = np.asarray(self._hdu.section[rows, :], dtype=np.float32)
        return np.median(strip, axis=0).astype(np.float32)

    def _gain(self, settings: CalibrationConfig) -> float | None:
        if settings.gain == "header":
            if self.frame.gain is None:
                raise BadFrame("calibration.gain is 'header' but the frame has no GAIN keyword")
            return self.frame.gain
        return settings.gain

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """The raw rows behind rows [start, stop) of the trimmed image, every column, as stored; into ``out``
        (uint16, rows × every column) when given and the frame is plain unsigned 16-bit."""
        rows = slice(self.rows.start + start, self.rows.start + stop)
        if self._file is None:
            return np.asarray(self._hdu.section[rows, :])
        shape = (rows.stop - rows.start, self._raw_width)
        raw = out if out is not None and out.shape == shape and out.dtype == np.uint16 else np.empty(shape, np.uint16)
        self._file.seek(self._data_offset + rows.start * self._raw_width * 2)
        if self._file.readinto(raw.data.cast("B")) != raw.nbytes:
            raise BadFrame(f"{self.frame.name}: the data ends before row {rows.stop}")
        raw.byteswap(inplace=True)  # FITS is big-endian
        raw ^= np.uint16(0x8000)  # + 32768 modulo 2**16: the stored signed value made unsigned
        return raw

    def reduce(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Overscan, trim and gain applied to raw rows from ``read``: float32 (electrons if gain is set),
        written into ``out`` when given.

        The trimmed region is converted once; the overscan level is measured on the raw values."""
        band = np.empty((raw.shape[0], self.shape[1]), dtype=np.float32) if out is None else out
        np.copyto(band, raw[:, self.columns])
        if self._column_levels is not None:
            band -= self._column_levels[np.newaxis, self.columns]
        elif self._overscan_columns is not None:
            band -= np.median(raw[:, self._overscan_columns], axis=1).astype(np.float32)[:, np.newaxis]
        if self.gain is not None:
            band *= np.float32(self.gain)
        return band

    def band(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the trimmed image, overscan subtracted, in electrons if gain is set."""
        return self.reduce(self.read(start, stop))

    def close(self) -> None:
        self._hdul.close()
        if self._file is not None:
            self._file.close()

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
            if self.dark_scale == 1.0:
                band -= self.dark[start:stop]
            else:
                band -= np.float32(self.dark_scale) * self.dark[start:stop]
        if self.flat is not None:
            band /= self.flat[start:stop]
        return band
