"""Files of a node: paths confined to the storage root, atomic writes, checksums."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import queue
import re
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import numpy as np


class UnusablePath(ValueError):
    """A path given as input that cannot name a file here (too long, a NUL, outside the root)."""


class OutsideStorageRoot(UnusablePath):
    """A path that escapes the configured storage root."""


MAX_PATH_BYTES = 4096  # Linux's PATH_MAX
MAX_NAME_BYTES = 255  # one file or folder name (NAME_MAX)


def confine(path: str | os.PathLike[str], root: Path) -> Path:
    """Resolves ``path`` (absolute, or relative to ``root``) and checks that it stays inside ``root``.

    Symbolic links are resolved first, so a link pointing out of the root is refused too.
    """
    text = os.fspath(path)
    if "\x00" in text:
        raise UnusablePath("path contains a NUL character")
    if (length := len(text.encode(errors="surrogateescape"))) > MAX_PATH_BYTES:
        raise UnusablePath(f"path is {length} bytes long, at most {MAX_PATH_BYTES}")
    if (longest := max(len(part.encode(errors="surrogateescape")) for part in Path(text).parts or ("",))) > MAX_NAME_BYTES:
        raise UnusablePath(f"a name in the path is {longest} bytes long, at most {MAX_NAME_BYTES}")
    real_root = Path(os.path.realpath(root))
    candidate = Path(text)
    resolved = Path(os.path.realpath(candidate if candidate.is_absolute() else real_root / candidate))
    if resolved != real_root and real_root not in resolved.parents:
        raise OutsideStorageRoot(f"{text!r} is outside the storage root {real_root}")
    return resolved


PART_SUFFIX = ".part"
_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME_LENGTH = 100


class NotRegularFile(ValueError):
    """A path that is a FIFO, a device, a socket or a folder where a file is to be read."""


_FILE_TYPES = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def open_regular(path: str | os.PathLike[str], root: Path) -> IO[bytes]:
    """``path`` opened for reading, once checked to be a regular file inside ``root`` (links resolved).

    It is opened without blocking and looked at through the open descriptor, so a FIFO cannot hold the caller
    (and its worker) forever, and what is read is what was checked."""
    resolved = confine(path, root)
    try:
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise NotRegularFile(f"{os.fspath(path)}: no such file") from None
    except IsADirectoryError:
        raise NotRegularFile(f"{os.fspath(path)}: is a folder, not a file") from None
    stream = open(descriptor, "rb")
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        stream.close()
        raise NotRegularFile(f"{os.fspath(path)}: is {_FILE_TYPES.get(stat.S_IFMT(mode), 'not a regular file')}, not a regular file")
    return stream


def regular_file(path: str | os.PathLike[str], root: Path) -> Path:
    """``path`` resolved (links followed), checked as ``open_regular`` checks it."""
    with open_regular(path, root):
        return confine(path, root)


def safe_name(text: str, fallback: str = "unnamed", max_length: int = MAX_NAME_LENGTH) -> str:
    """One file or folder name made from input (an event id, a target, a raw file's stem): only A-Z a-z 0-9
    . _ + -, no leading dot (so never "." or ".."), at most ``max_length`` characters; ``fallback`` when
    nothing is left."""
    name = _UNSAFE_CHARACTERS.sub("_", text).lstrip(".")[:max_length].strip("_")
    return name or fallback


def path_inside(root: Path, *names: str) -> Path:
    """``root`` joined with each name made safe, checked to lie inside ``root`` (links resolved)."""
    path = root.joinpath(*(safe_name(name) for name in names))
    confine(path, root)
    return path


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Writes to a temporary file beside ``path`` and renames it into place only when the block succeeds.

    Readers never see a partial file; a failure (disk full, crash) leaves no file at ``path``. The temporary
    file is locked while it is written and renamed before it is closed, so ``remove_stale_parts`` can tell
    one a crash left behind from one being written (by any process).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    os.close(handle)
    try:
        # Opened by name, so the stream's name is the file's (astropy reports a full disk by it).
        with open(temporary, mode) as stream:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
            os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_stale_parts(root: Path) -> list[Path]:
    """Removes the temporary files of atomic writes that a crash left under ``root`` (none that a live
    process is writing: those hold their lock); returns what was removed."""
    removed = []
    for part in root.rglob(f".*{PART_SUFFIX}"):
        try:
            descriptor = os.open(part, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            continue  # gone meanwhile (renamed into place), or a link: not ours
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being written
            with suppress(FileNotFoundError):
                os.unlink(part)
                removed.append(part)
        finally:
            os.close(descriptor)
    return removed


class TooLarge(ValueError):
    """Data that would exceed its size cap."""


GZIP_MAGIC = b"\x1f\x8b"


def gunzip_chunks(stream: IO[bytes], max_bytes: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The decompressed bytes of a gzip stream, chunk by chunk, never more than ``max_bytes`` in all: a
    gzip bomb costs the CPU time of ``max_bytes`` and the memory of one chunk before TooLarge is raised.

    Corrupt data raises OSError or EOFError, as the gzip module does."""
    total = 0
    with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
        while chunk := unzipped.read(chunk_size):
            total += len(chunk)
            if total > max_bytes:
                raise TooLarge(f"more than {max_bytes} bytes once decompressed")
            yield chunk


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class HashingWriter(io.RawIOBase):
    """A write-only stream that computes the sha256 of what passes through it (no second read of a
    large product just to checksum it). A large piece is hashed on another thread while it is written
    (hashlib and file writes both release the GIL), so hashing costs little extra time."""

    OVERLAP_BYTES = 1 << 20

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream
        self._digest = hashlib.sha256()

    @property
    def name(self) -> str:
        """The file's name: astropy's writeto looks at it when a write fails (without one, a full disk
        surfaces as an AttributeError from its free-space check instead of the OSError)."""
        return str(self.stream.name)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        if memoryview(data).nbytes < self.OVERLAP_BYTES:
            self._digest.update(data)
            return self.stream.write(data)
        hashing = threading.Thread(target=self._digest.update, args=(data,))
        hashing.start()
        try:
            return self.stream.write(data)
        finally:
            hashing.join()  # the caller may reuse its buffer once write returns

    def flush(self) -> None:
        self.stream.flush()

    def tell(self) -> int:
        return self.stream.tell()

    @property
    def mode(self) -> str:
        return "wb"

    @property
    def name(self) -> str:
        return getattr(self.stream, "name", "")

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def write_fits(path: Path, hdus: list) -> str:
    """Writes FITS HDUs atomically and returns the file's sha256, computed as the bytes go out."""
    from astropy.io import fits

    try:
        with atomic_write(path) as stream:
            writer = HashingWriter(stream)
            fits.HDUList(hdus).writeto(writer)
    except OSError as exc:
        raise system_error(exc) from None
    return writer.hexdigest()


def system_error(error: OSError) -> OSError:
    """The operating system's own error behind one that a library re-raised as a bare OSError (astropy's
    "Not enough space on disk…" carries no errno): so a full disk reads as ENOSPC wherever it happened."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause
        cause = cause.__context__
    return error


class StorageUnavailable(Exception):
    """Something received could not be stored (a full disk, a read-only folder): nothing was accepted."""


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

    def __init__(self, path: Path, header, shape: tuple[int, int], dtype: type | np.dtype) -> None:
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
        self._queue: queue.Queue = queue.Queue(maxsize=self.QUEUE_DEPTH)
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

    def _put(self, piece) -> None:
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
            raise ValueError(f"band of shape {band.shape} does not continue a {self.shape} image at row {self._rows_written}")
        buffer = self._next_buffer(band.shape[0])
        np.copyto(buffer, band, casting="same_kind")
        self._put(memoryview(buffer).cast("B"))
        self._rows_written += band.shape[0]

    def finish(self, extensions: list | None = None) -> str:
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
            self._put(memoryview(data).cast("B"))
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

    def __exit__(self, kind, value, traceback) -> None:
        self._stop_writer()
        if kind is None and self._sha256 is None:
            value = ValueError(f"{self.path.name}: FitsImageStream closed before finish()")
            self._file.__exit__(ValueError, value, None)
            raise value
        self._file.__exit__(kind, value, traceback)
