"""The reference library: images of the sky to subtract from new frames, indexed by footprint and filter.

References come from the project's own science-ready frames (a frame becomes the reference of its field and
filter when it is deeper, or sharper without being much shallower, than the one there: ``preprocessor.references``)
and from images an operator imports (``toros references import``: any FITS with a celestial WCS, e.g. a survey
cutout). Files live under ``storage.root/references/``; the database keeps each reference's footprint (centre,
radius, and the HEALPix cells it covers, nested order 10, 3.4' cells), filter, epoch, depth, FWHM and source.
A look-up is a range of cell numbers, never a scan; ``before`` keeps only references taken before a moment
(an alert's event time), so a replaced reference stays in the library for that.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from astropy_healpix import HEALPix
from sqlalchemy import (
    Boolean,
    Column,
    ColumnElement,
    Float,
    Integer,
    MetaData,
    Row,
    RowMapping,
    String,
    Table,
    Text,
    and_,
    select,
    update,
)

from toros.floor.fitsfiles import (
    BadImage,
    check_declared_size,
    check_finite,
    decompressed_size,
    header_number,
    image_index,
)
from toros.floor.sky_geometry import separation_deg
from toros.preprocessor.inventory import stem
from toros.preprocessor.settings import MAX_FRAME_BYTES, ReferencesConfig
from toros.runtime.config import DatabaseConfig
from toros.runtime.database import make_engine
from toros.runtime.files import GZIP_MAGIC, path_inside, safe_name, store_by_content

log = logging.getLogger(__name__)

MAX_BYTES_NAME = "preprocessor.calibration.max_frame_bytes"
CELL_ORDER = 10
CELLS = HEALPix(nside=2**CELL_ORDER, order="nested")

metadata = MetaData()

references = Table(
    "preprocessor_references",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False),
    Column("filter", String(32), nullable=False, index=True),
    Column("epoch", Float, nullable=False),  # DATE-OBS, unix seconds
    Column("depth", Float, nullable=True),  # LIMMAG
    Column("fwhm_arcsec", Float, nullable=True),
    Column("ra_deg", Float, nullable=False),
    Column("dec_deg", Float, nullable=False),
    Column("radius_deg", Float, nullable=False),
    Column("source", Text, nullable=False),  # "own: <work order>" or "import: <original file>"
    Column("sha256", String(64), nullable=False),
    Column("created", Float, nullable=False),
    Column("current", Boolean, nullable=False),  # the best of its field and filter now
    Column("replaced_by", Integer, nullable=True),
)
reference_cells = Table(
    "preprocessor_reference_cells",
    metadata,
    Column("cell", Integer, primary_key=True),  # HEALPix nested order-10 cell the footprint touches
    Column("reference_id", Integer, primary_key=True),
)


class BadReference(ValueError):
    """An image that cannot be a reference; the message names the file and the reason."""


@dataclass(frozen=True)
class Reference:
    id: int
    path: Path
    filter: str
    epoch: float
    depth: float | None
    fwhm_arcsec: float | None
    ra_deg: float
    dec_deg: float
    radius_deg: float
    source: str
    current: bool

    @classmethod
    def from_row(cls, row: RowMapping) -> Reference:
        """A reference as the database keeps it."""
        return cls(
            int(row["id"]), Path(row["path"]), str(row["filter"]), float(row["epoch"]), row["depth"],
            row["fwhm_arcsec"], float(row["ra_deg"]), float(row["dec_deg"]), float(row["radius_deg"]),
            str(row["source"]), bool(row["current"]),
        )  # fmt: skip

    @property
    def taken(self) -> str:
        return datetime.fromtimestamp(self.epoch, UTC).strftime("%Y-%m-%dT%H:%M") if self.epoch else "?"


@dataclass(frozen=True)
class Footprint:
    ra_deg: float
    dec_deg: float
    radius_deg: float  # of the circle through the image's corners

    def cells(self) -> np.ndarray:
        return np.asarray(
            CELLS.cone_search_lonlat(self.ra_deg * u.deg, self.dec_deg * u.deg, self.radius_deg * u.deg), dtype=np.int64
        )


def footprint_of(header: fits.Header, path: Path) -> Footprint:
    """The circle around an image, from its celestial WCS (BadReference without one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception as exc:  # astropy raises many kinds for a broken WCS
            raise BadReference(f"{path}: the WCS cannot be read: {exc}") from None
    if not wcs.has_celestial:
        raise BadReference(f"{path}: no celestial WCS: an image needs one to be a reference")
    width, height = int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))
    if width < 2 or height < 2:
        raise BadReference(f"{path}: not a 2-D image")
    ra, dec = (float(v) for v in wcs.celestial.pixel_to_world_values((width - 1) / 2.0, (height - 1) / 2.0))
    corners_x, corners_y = np.array([0, width - 1, 0, width - 1]), np.array([0, 0, height - 1, height - 1])
    corner_ra, corner_dec = wcs.celestial.pixel_to_world_values(corners_x, corners_y)
    radius = float(separation_deg(np.asarray(corner_ra), np.asarray(corner_dec), ra, dec).max())
    return Footprint(ra % 360.0, dec, radius)


def epoch_of(header: fits.Header, keyword: str = "DATE-OBS") -> float:
    """A header's time (DATE-OBS unless told) in unix seconds; 0 when missing or unreadable."""
    value = str(header.get(keyword, "")).strip()
    if not value:
        return 0.0
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()  # FITS times are UTC


def _fwhm_arcsec(header: fits.Header) -> float | None:
    """The header's FWHM (pixels) in arcseconds; None without one (BadImage when it is not a number)."""
    fwhm = header_number(header, "FWHM")
    if fwhm is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        scale = float(np.mean(proj_plane_pixel_scales(WCS(header, naxis=2).celestial))) * 3600.0
    return fwhm * scale


class ReferenceLibrary:
    def __init__(
        self,
        database: DatabaseConfig,
        storage_root: Path,
        settings: ReferencesConfig,
        max_image_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self._engine = make_engine(database, writer=True)
        metadata.create_all(self._engine)
        self.root = storage_root
        self.settings = settings
        self.max_image_bytes = max_image_bytes  # an imported image, decompressed (calibration.max_frame_bytes)

    def close(self) -> None:
        self._engine.dispose()

    # -- look-up ---------------------------------------------------------------------------------

    def find(
        self, ra_deg: float, dec_deg: float, radius_deg: float, filter: str | None = None, before: float | None = None
    ) -> list[Reference]:
        """References whose footprint overlaps the circle, best first (current, deepest); ``before`` (unix
        seconds) keeps those taken before it."""
        query_cells = Footprint(ra_deg, dec_deg, radius_deg).cells()
        conditions = [reference_cells.c.cell.in_([int(c) for c in query_cells])]
        ids = select(reference_cells.c.reference_id).where(and_(*conditions)).distinct()
        where: list[ColumnElement[bool]] = [references.c.id.in_(ids)]
        if filter is not None:
            where.append(references.c.filter == filter)
        if before is not None:
            where.append(references.c.epoch < before)
        with self._engine.connect() as conn:
            rows = list(conn.execute(select(references).where(and_(*where))))
        found = [self._reference(row) for row in rows]
        found = [
            r
            for r in found
            if separation_deg(np.array([r.ra_deg]), np.array([r.dec_deg]), ra_deg, dec_deg)[0]
            < r.radius_deg + radius_deg
        ]
        found.sort(key=lambda r: (not r.current, -(r.depth if r.depth is not None else -99.0), -r.epoch))
        return found

    def all(self) -> list[Reference]:
        with self._engine.connect() as conn:
            rows = list(conn.execute(select(references).order_by(references.c.filter, references.c.id)))
        return [self._reference(row) for row in rows]

    @staticmethod
    def _reference(row: Row[Any]) -> Reference:
        return Reference.from_row(row._mapping)

    # -- filling ---------------------------------------------------------------------------------

    def consider(self, frame: Path, work_order_id: str, now: float) -> Reference | None:
        """A science-ready frame becomes its field's reference when it beats the current one (or there is none)
        within the limits; returns the new reference, or None when it does not qualify."""
        header = fits.getheader(frame)
        settings = self.settings
        try:
            depth, fwhm = header_number(header, "LIMMAG"), _fwhm_arcsec(header)
        except BadImage as exc:
            raise BadReference(f"{frame}: {exc}") from None
        if depth is None or fwhm is None:
            return None
        if depth < settings.min_limmag or fwhm > settings.max_fwhm_arcsec:
            return None
        footprint = footprint_of(header, frame)
        filter = str(header.get("FILTER", "")).strip() or "none"
        same_field = [
            r
            for r in self.find(footprint.ra_deg, footprint.dec_deg, footprint.radius_deg, filter)
            if r.current
            and separation_deg(np.array([r.ra_deg]), np.array([r.dec_deg]), footprint.ra_deg, footprint.dec_deg)[0] * 60
            <= settings.same_field_arcmin
        ]
        current = same_field[0] if same_field else None
        if current is not None and not self._better(depth, fwhm, current):
            return None
        return self._add(frame, header, footprint, filter, depth, fwhm, f"own: {work_order_id}", now, current)

    def _better(self, depth: float, fwhm: float, current: Reference) -> bool:
        """Deeper by ``min_depth_gain_mag``, or sharper by ``sharper_factor`` and not more than that much shallower."""
        gain = self.settings.min_depth_gain_mag
        if current.depth is None or current.fwhm_arcsec is None:
            return True
        deeper = depth >= current.depth + gain
        sharper = fwhm <= self.settings.sharper_factor * current.fwhm_arcsec and depth >= current.depth - gain
        return deeper or sharper

    def import_file(self, path: Path, now: float, *, filter: str | None = None) -> Reference:
        """An operator's image (a survey cutout…) into the library: it needs a celestial WCS and a filter, and is
        checked as a raw frame is (its size decompressed and declared within ``max_image_bytes``, declared pixels held
        by the file, at least half of them finite numbers) before anything is copied."""
        try:
            size = decompressed_size(path, self.max_image_bytes, MAX_BYTES_NAME)
            with fits.open(path, memmap=True) as hdus:
                image = hdus[image_index(hdus)]
                check_declared_size(image, size, self.max_image_bytes, MAX_BYTES_NAME)
                header = image.header.copy()
                check_finite(image.data)
            name = (filter or str(header.get("FILTER", ""))).strip()
            depth, fwhm = header_number(header, "LIMMAG"), _fwhm_arcsec(header)
        except BadImage as exc:
            raise BadReference(f"{path}: {exc}") from None
        except (OSError, ValueError, TypeError) as exc:
            raise BadReference(f"{path}: not a readable FITS image: {exc}") from None
        footprint = footprint_of(header, path)
        if not name:
            raise BadReference(f"{path}: no FILTER in the header: say which with --filter")
        return self._add(path, header, footprint, name, depth, fwhm, f"import: {path.name}", now, None)

    def _add(
        self,
        source_file: Path,
        header: fits.Header,
        footprint: Footprint,
        filter: str,
        depth: float | None,
        fwhm: float | None,
        source: str,
        now: float,
        replaces: Reference | None,
    ) -> Reference:
        kind = "own" if source.startswith("own") else "imported"
        folder = path_inside(self.root, "references", safe_name(filter, "filter"), kind)
        with open(source_file, "rb") as stream:
            gzipped = stream.read(2) == GZIP_MAGIC
            stream.seek(0)
            # Named by its content: two images never share a file, and a stored one is never replaced.
            target, sha = store_by_content(
                stream, folder, safe_name(stem(source_file), "image"), ".fits.gz" if gzipped else ".fits"
            )
        with self._engine.begin() as conn:
            same = conn.execute(
                select(references).where(and_(references.c.sha256 == sha, references.c.filter == filter))
            ).first()
            if same is not None:  # these very bytes are a reference of this filter already
                log.info("%s is reference %d already (%s)", source_file, same.id, same.path)
                return self._reference(same)
            inserted = conn.execute(
                references.insert().values(
                    path=str(target),
                    filter=filter,
                    epoch=epoch_of(header),
                    depth=depth,
                    fwhm_arcsec=fwhm,
                    ra_deg=footprint.ra_deg,
                    dec_deg=footprint.dec_deg,
                    radius_deg=footprint.radius_deg,
                    source=source,
                    sha256=sha,
                    created=now,
                    current=True,
                )
            ).inserted_primary_key
            assert inserted is not None, "an insert has a key"
            identity = inserted[0]
            conn.execute(
                reference_cells.insert(), [{"cell": int(c), "reference_id": identity} for c in footprint.cells()]
            )
            if replaces is not None:
                conn.execute(
                    update(references).where(references.c.id == replaces.id).values(current=False, replaced_by=identity)
                )
        log.info(
            "reference %d for %s at %.4f %+.4f: %s (depth %s)%s",
            identity,
            filter,
            footprint.ra_deg,
            footprint.dec_deg,
            target.name,
            f"{depth:.2f}" if depth is not None else "unknown",
            f", replaces {replaces.id}" if replaces else "",
        )
        return Reference(
            int(identity),
            target,
            filter,
            epoch_of(header),
            depth,
            fwhm,
            footprint.ra_deg,
            footprint.dec_deg,
            footprint.radius_deg,
            source,
            True,
        )
