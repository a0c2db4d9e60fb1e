"""Files of a node: paths confined to the storage root, atomic writes, checksums."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import os
import re
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any


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
    if (
        longest := max(len(part.encode(errors="surrogateescape")) for part in Path(text).parts or ("",))
    ) > MAX_NAME_BYTES:
        raise UnusablePath(f"a name in the path is {longest} bytes long, at most {MAX_NAME_BYTES}")
    real_root = Path(os.path.realpath(root))
    candidate = Path(text)
    resolved = Path(os.path.realpath(candidate if candidate.is_absolute() else real_root / candidate))
    if resolved != real_root and real_root not in resolved.parents:
        raise OutsideStorageRoot(f"{text!r} is outside the storage root {real_root}")
    return resolved


PART_SUFFIX = ".part"
# The mode of every file a daemon writes (``storage.file_mode``, set when the daemon starts): readable by the
# service's group (the documented `toros` group), so the people and tools of the site can read the products.
_file_mode = 0o640


def set_file_mode(mode: int) -> None:
    global _file_mode
    _file_mode = mode


_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME_LENGTH = 100


class NotRegularFile(ValueError):
    """A path that is a FIFO, a device, a socket or a folder where a file is to be read."""


_FILE_TYPES = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def open_regular(path: str | os.PathLike[str], root: Path) -> IO[bytes]:
    """``path`` opened for reading, once checked to be a regular file inside ``root`` (links resolved).

    It is opened without blocking and looked at through the open descriptor, so a FIFO cannot hold the caller
    (and its worker) forever, and what is read is what was checked."""
    return _open_resolved(confine(path, root), os.fspath(path))


def regular_file(path: str | os.PathLike[str], root: Path) -> Path:
    """``path`` resolved (links followed), checked as ``open_regular`` checks it."""
    resolved = confine(path, root)
    with _open_resolved(resolved, os.fspath(path)):
        return resolved


def _open_resolved(resolved: Path, shown: str) -> IO[bytes]:
    try:
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise NotRegularFile(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise NotRegularFile(f"{shown}: is a folder, not a file") from None
    stream = open(descriptor, "rb")
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        stream.close()
        raise NotRegularFile(
            f"{shown}: is {_FILE_TYPES.get(stat.S_IFMT(mode), 'not a regular file')}, not a regular file"
        )
    return stream


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
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Writes to a temporary file beside ``path`` and renames it into place only when the block succeeds.

    Readers never see a partial file; a failure (disk full, crash) leaves no file at ``path``. The temporary
    file is locked while it is written and renamed before it is closed, so ``remove_stale_parts`` can tell
    one a crash left behind from one being written (by any process).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    os.fchmod(handle, _file_mode)  # mkstemp makes 0600
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


CONTENT_NAME_DIGITS = 16  # hex digits of the sha256 in a content-named file (64 bits)


def store_by_content(source: IO[bytes], folder: Path, stem: str, suffix: str) -> tuple[Path, str]:
    """Copies ``source`` into ``folder`` as ``<stem>-<sha256 prefix><suffix>`` and returns the path and the
    full sha256. The name comes from the bytes, so two different files never share one, and a file already
    there is never replaced: the same bytes stored twice are one file; a (64-bit) prefix shared by different
    bytes takes the full digest as its name. Written as ``atomic_write`` writes (a locked temporary, fsync),
    then linked into place, which fails rather than replaces."""
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{stem[:40]}.", suffix=PART_SUFFIX, dir=folder)
    os.fchmod(handle, _file_mode)  # mkstemp makes 0600
    try:
        with open(handle, "wb") as stream:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX)
            digest = hashlib.sha256()
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                stream.write(chunk)
            stream.flush()
            os.fsync(stream.fileno())
            sha256 = digest.hexdigest()
            for name in (f"{stem}-{sha256[:CONTENT_NAME_DIGITS]}{suffix}", f"{stem}-{sha256}{suffix}"):
                target = folder / name
                try:
                    os.link(temporary, target)
                    break
                except FileExistsError:
                    if sha256_of(target) == sha256:
                        break
            else:
                raise FileExistsError(f"{folder}: a file named by the digest {sha256} holds other bytes")
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return target, sha256


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

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
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


class StorageUnavailable(Exception):
    """Something received could not be stored (a full disk, a read-only folder): nothing was accepted."""
