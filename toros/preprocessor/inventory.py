"""What a night holds: raw frames classified by IMAGETYP and grouped by setup; bad files named and set aside."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

from toros.floor.fitsfiles import BadImage, check_declared_size, decompressed_size, image_index
from toros.preprocessor.settings import CalibrationConfig
from toros.runtime.files import NotRegularFile, UnusablePath, regular_file

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = "calibration.max_frame_bytes"

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".fits.fz", ".fit.fz", ".fts.fz", ".fits.gz", ".fit.gz", ".fts.gz")


def is_fits_name(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and name.endswith(FITS_SUFFIXES)


def stem(path: Path) -> str:
    """The raw file's name without its FITS and compression suffixes."""
    name = path.name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


class BadFrame(Exception):
    """A file that cannot be used, with the reason."""


@dataclass(frozen=True)
class Setup:
    """Frames can share masters only within one setup: raw size and binning."""

    width: int
    height: int
    xbin: int
    ybin: int

    @property
    def key(self) -> str:
        return f"{self.width}x{self.height}_bin{self.xbin}x{self.ybin}"


@dataclass(frozen=True)
class RawFrame:
    path: Path
    hdu: int
    kind: str
    imagetyp: str
    exposure_time: float
    filter: str
    setup: Setup
    date_obs: str
    biassec: str | None
    trimsec: str | None
    gain: float | None
    saturation: float | None

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class Inventory:
    frames: list[RawFrame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def of(self, kind: str, setup: Setup | None = None) -> list[RawFrame]:
        return [f for f in self.frames if f.kind == kind and (setup is None or f.setup == setup)]

    def setups(self) -> list[Setup]:
        return sorted({f.setup for f in self.frames}, key=lambda s: s.key)

    def darks_by_exposure(self, setup: Setup) -> dict[float, list[RawFrame]]:
        groups: dict[float, list[RawFrame]] = defaultdict(list)
        for frame in self.of("dark", setup):
            groups[frame.exposure_time].append(frame)
        return dict(sorted(groups.items()))

    def flats_by_filter(self, setup: Setup) -> dict[str, list[RawFrame]]:
        groups: dict[str, list[RawFrame]] = defaultdict(list)
        for frame in self.of("flat", setup):
            groups[frame.filter].append(frame)
        return dict(sorted(groups.items()))


def read_frame(path: Path, settings: CalibrationConfig) -> RawFrame:
    """Reads and checks one raw frame's header (and that its data is complete)."""
    try:
        size = decompressed_size(path, settings.max_frame_bytes, MAX_FRAME_BYTES)
        with fits.open(path, memmap=False) as hdul:
            index = image_index(hdul)
            hdu = hdul[index]
            header = hdu.header
            check_declared_size(hdu, size, settings.max_frame_bytes, MAX_FRAME_BYTES)
            if header.get("ABORTED") is True:
                raise BadFrame("an exposure stopped early for an alert (ABORTED = T): not calibrated")
            imagetyp = str(header.get("IMAGETYP", "")).strip().upper()
            if not imagetyp:
                raise BadFrame("no IMAGETYP keyword")
            kind = settings.imagetyp.get(imagetyp)
            if kind is None:
                raise BadFrame(f"unknown IMAGETYP {imagetyp!r} (known: {', '.join(sorted(settings.imagetyp))})")
            exposure = header.get("EXPTIME", header.get("EXPOSURE"))
            if exposure is None:
                if kind != "bias":
                    raise BadFrame("no EXPTIME keyword")
                exposure = 0.0
            try:
                exposure = float(exposure)
            except (TypeError, ValueError):
                raise BadFrame(f"EXPTIME is not a number: {exposure!r}") from None
            if exposure < 0:
                raise BadFrame(f"negative EXPTIME {exposure}")
            height, width = hdu.shape
            hdu.section[height - 1 : height, :]  # a truncated file fails here rather than mid-calibration
            gain = header.get("GAIN")
            saturation = header.get("SATURATE")
            return RawFrame(
                path=path,
                hdu=index,
                kind=kind,
                imagetyp=imagetyp,
                exposure_time=exposure,
                filter=str(header.get("FILTER", "")).strip() or "none",
                setup=Setup(width, height, int(header.get("XBINNING", 1)), int(header.get("YBINNING", 1))),
                date_obs=str(header.get("DATE-OBS", "")),
                biassec=settings.biassec or header.get("BIASSEC"),
                trimsec=settings.trimsec or header.get("TRIMSEC"),
                gain=float(gain) if isinstance(gain, (int, float)) else None,
                saturation=float(saturation) if isinstance(saturation, (int, float)) else None,
            )
    except BadFrame:
        raise
    except BadImage as exc:
        raise BadFrame(str(exc)) from None
    except (OSError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise BadFrame(f"unreadable FITS: {exc}") from None


def take_inventory(paths: list[Path], settings: CalibrationConfig, root: Path) -> Inventory:
    """Classifies every file; the unusable ones are listed in ``problems`` by name, with the reason. Only
    regular files inside ``root`` are read (links resolved): not a FIFO, which would block, nor a link that
    leads out of the root."""
    inventory = Inventory()
    for path in paths:
        try:
            regular_file(path, root)
            inventory.frames.append(read_frame(path, settings))
        except (BadFrame, NotRegularFile, UnusablePath) as exc:
            inventory.problems.append(f"{path.name}: {exc}")
            log.warning("skipping %s: %s", path, exc)
    return inventory


def night_files(directory: Path) -> list[Path]:
    """The FITS files of a night folder (not recursive), in name order."""
    return sorted(p for p in directory.iterdir() if p.is_file() and is_fits_name(p))
