"""FITS files as the telescope and the preprocessor write them: atomically, hashed as the bytes go out, and a
large image streamed band by band."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from toros.runtime.files import HashingWriter, atomic_write


def write_fits(path: Path, hdus: list[Any]) -> str:
    """Writes FITS HDUs atomically and returns the file's sha256, computed as the bytes go out."""
    from astropy.io import fits

    try:
        with atomic_write(path) as stream:
            writer = HashingWriter(stream)
            fits.HDUList(hdus).writeto(writer)
    except OSError as exc:
        raise system_error(exc) from None
    return writer.hexdigest()


def write_fits_image(path: Path, header: Any, data: np.ndarray, rows: int = 512) -> str:
    """Writes one image as ``write_fits`` does, streamed band by band (``FitsImageStream``): astropy converts a
    whole copy to FITS byte order first, half a GiB and a second of a TOROS frame."""
    with FitsImageStream(path, header, (data.shape[0], data.shape[1]), data.dtype) as stream:
        for start in range(0, data.shape[0], rows):
            stream.write_rows(data[start : start + rows])
        return stream.finish()


def system_error(error: OSError) -> OSError:
    """The operating system's own error behind one that a library re-raised as a bare OSError (astropy's
    "Not enough space on disk…" carries no errno): so a full disk reads as ENOSPC wherever it happened."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause
        cause = cause.__context__
    return error


FITS_BLOCK = 2880
# Image types FITS stores as they are (no BZERO offset): the bytes are the values in big-endian order.
_DIRECT_FITS_TYPES = {np.dtype(t) for t in (np.uint8, np.int16, np.int32, np.int64, np.float32, np.float64)}


def _padding(nbytes: int) -> bytes:
    return bytes(-nbytes % FITS_BLOCK)


class FitsImageStream:
    """A FITS file whose primary image is written band by band, as it is computed, then extension images whole.

    For frames too large to compute, then write, then hash one after the other (a 10560² float32 frame is
    446 MB): each band is converted to FITS byte order into one of the stream's own buffers (so the caller
    may reuse its band at once) and a thread hashes and writes it while the next band is computed (hashlib
    and file writes release the GIL). The bytes are those astropy writes for the same HDUs (the primary
    header always carries EXTEND = T). Atomic like ``write_fits``: the file appears only when complete.

        with FitsImageStream(path, header, (rows, columns), np.float32) as stream:
            for band in bands:
                stream.write_rows(band)
            sha256 = stream.finish([fits.ImageHDU(mask, name="MASK")])
    """

    QUEUE_DEPTH = 3

    def __init__(self, path: Path, header: Any, shape: tuple[int, int], dtype: type | np.dtype[Any]) -> None:
        from astropy.io import fits

        self.path = path
        self.shape = shape
        self._dtype = np.dtype(dtype).newbyteorder(">")
        if np.dtype(dtype) not in _DIRECT_FITS_TYPES:
            raise TypeError(f"FitsImageStream writes {sorted(map(str, _DIRECT_FITS_TYPES))}, not {np.dtype(dtype)}")
        # astropy fills BITPIX and NAXISn from a data-less stand-in of the right type and shape.
        primary = fits.PrimaryHDU(np.broadcast_to(np.zeros((), dtype), shape), header.copy())
        primary.header.set("EXTEND", True, after=f"NAXIS{len(shape)}")
        self._header_bytes = primary.header.tostring().encode("ascii")
        self._rows_written = 0
        self._buffers: list[np.ndarray] = []
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self.QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._sha256: str | None = None
        self._file = atomic_write(path)

    def __enter__(self) -> FitsImageStream:
        stream = self._file.__enter__()
        self._digest = hashlib.sha256()
        self._writer = threading.Thread(target=self._write_out, args=(stream,), name=f"fits-writer {self.path.name}")
        self._writer.start()
        self._put(self._header_bytes)
        return self

    def _write_out(self, stream: IO[bytes]) -> None:
        """The writer thread: hashes and writes each piece in order; after an error (a full disk) it only
        drains the queue, and the error is raised in the producing thread."""
        while (piece := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._digest.update(piece)
                    stream.write(piece)
                except BaseException as exc:  # noqa: BLE001 - handed to the producing thread
                    self._error = exc

    def _put(self, piece: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(piece)

    def _next_buffer(self, rows: int) -> np.ndarray:
        """A band buffer no queued or in-flight piece still uses: the queue's depth plus the one being
        written plus the one being filled."""
        if len(self._buffers) < self.QUEUE_DEPTH + 2:
            buffer = np.empty((rows, self.shape[1]), self._dtype)
        else:
            buffer = self._buffers.pop(0)  # the oldest: written by now
            if buffer.shape[0] < rows:
                buffer = np.empty((rows, self.shape[1]), self._dtype)
        self._buffers.append(buffer)
        return buffer[:rows]

    def write_rows(self, band: np.ndarray) -> None:
        """The next rows of the primary image, in order, as many columns as the image."""
        if band.ndim != 2 or band.shape[1] != self.shape[1] or self._rows_written + band.shape[0] > self.shape[0]:
            raise ValueError(
                f"band of shape {band.shape} does not continue a {self.shape} image at row {self._rows_written}"
            )
        buffer = self._next_buffer(band.shape[0])
        np.copyto(buffer, band, casting="same_kind")
        self._put(buffer.data.cast("B"))
        self._rows_written += band.shape[0]

    def finish(self, extensions: list[Any] | None = None) -> str:
        """Pads the primary image, appends the extension images whole, and returns the file's sha256 (the
        file itself is in place when the ``with`` block ends)."""
        if self._rows_written != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self._rows_written} of {self.shape[0]} rows written")
        self._put(_padding(self._rows_written * self.shape[1] * self._dtype.itemsize))
        for hdu in extensions or []:
            if hdu.data.dtype.newbyteorder("=") not in _DIRECT_FITS_TYPES:
                raise TypeError(f"extension {hdu.name}: FitsImageStream writes no {hdu.data.dtype} data")
            data = np.ascontiguousarray(hdu.data, dtype=hdu.data.dtype.newbyteorder(">"))
            self._put(hdu.header.tostring().encode("ascii"))
            self._put(data.data.cast("B"))
            self._put(_padding(data.nbytes))
        self._stop_writer()
        if self._error is not None:
            raise self._error
        self._sha256 = self._digest.hexdigest()
        return self._sha256

    def _stop_writer(self) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stop_writer()
        if kind is None and self._sha256 is None:
            value = ValueError(f"{self.path.name}: FitsImageStream closed before finish()")
            self._file.__exit__(ValueError, value, None)
            raise value
        self._file.__exit__(kind, value, traceback)


# -- images received from outside: checked before their pixels are trusted ------------------------------------


class BadImage(ValueError):
    """An image file that cannot be used; the message is the reason, in one line."""


MIN_FINITE_FRACTION = 0.5  # an image with fewer of its pixels finite numbers is refused


def decompressed_size(path: Path, max_bytes: int, cap_name: str) -> int:
    """The file's size once decompressed (gzip is decompressed in a stream to find out: a small file can hold
    gigabytes of zeros), refused beyond ``max_bytes``."""
    from toros.runtime.files import GZIP_MAGIC, TooLarge, gunzip_chunks

    with open(path, "rb") as stream:
        if stream.read(2) != GZIP_MAGIC:
            size = os.fstat(stream.fileno()).st_size
            if size > max_bytes:
                raise BadImage(f"{size} bytes, more than {cap_name} ({max_bytes})")
            return size
        stream.seek(0)
        total = 0
        try:
            for chunk in gunzip_chunks(stream, max_bytes):
                total += len(chunk)
        except TooLarge as exc:
            raise BadImage(f"gzip data of {exc} ({cap_name})") from None
        except (EOFError, OSError) as exc:
            raise BadImage(f"corrupt gzip data: {exc}") from None
        return total


def image_index(hdus: Any) -> int:
    """The first HDU holding a 2-D image (the primary, or an extension such as a .fz file's)."""
    from astropy.io import fits

    for index, hdu in enumerate(hdus):
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.header.get("NAXIS") == 2:
            return index
    raise BadImage("no 2-D image in the file")


def check_declared_size(hdu: Any, file_bytes: int, max_bytes: int, cap_name: str) -> None:
    """The image its header declares fits the cap, and an uncompressed one is held by the file (a 14 KB file may
    declare 100000 × 100000 pixels)."""
    from astropy.io import fits

    header = hdu.header  # a compressed image's is the image's own (astropy reads ZNAXISn into NAXISn)
    compressed = isinstance(hdu, fits.CompImageHDU)
    try:
        width, height = int(header["NAXIS1"]), int(header["NAXIS2"])
        bitpix = abs(int(header["BITPIX"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise BadImage(f"an unreadable image size in the header: {exc}") from None
    declared = width * height * bitpix // 8
    if declared > max_bytes:
        raise BadImage(
            f"an image of {width} × {height} pixels ({declared} bytes) is more than {cap_name} ({max_bytes})"
        )
    if not compressed:
        start = int(hdu.fileinfo()["datLoc"])
        if start + declared > file_bytes:
            raise BadImage(
                f"the header declares {width} × {height} pixels ({declared} bytes) but the file holds "
                f"{max(0, file_bytes - start)} bytes of data: truncated or forged"
            )


def check_finite(data: np.ndarray, rows: int = 1024) -> None:
    """At least MIN_FINITE_FRACTION of the pixels are finite numbers (read in bands: a memory map stays one)."""
    finite = 0
    for start in range(0, data.shape[0], rows):
        finite += int(np.count_nonzero(np.isfinite(data[start : start + rows])))
    fraction = finite / max(1, data.size)
    if fraction < MIN_FINITE_FRACTION:
        raise BadImage(
            f"only {fraction:.0%} of its pixels are finite numbers (at least {MIN_FINITE_FRACTION:.0%} needed)"
        )


def header_number(header: Any, keyword: str, default: float | None = None) -> float | None:
    """A numeric header card: ``default`` when absent; BadImage naming the card when it is not a finite number."""
    if keyword not in header:
        return default
    value = header[keyword]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadImage(f"{keyword} is not a number: {value!r}") from None
    if not np.isfinite(number):
        raise BadImage(f"{keyword} is not a finite number: {value!r}")
    return number
