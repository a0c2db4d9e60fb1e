"""The galaxy catalog, indexed once: HEALPix nested order-29 pixel of every galaxy, sorted, memory-mapped.

Formats: GLADE+ text (40 whitespace-separated columns, ``null`` for missing), GLADE 2.3 / generic CSV with a
header naming the columns, and GWGC (whitespace-separated, header line starting with ``#PGC``; RA in hours).
The index lives beside the catalog (``<catalog>.toros-index/``) and is rebuilt when the source changes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
import pandas as pd
from astropy_healpix import lonlat_to_healpix

log = logging.getLogger(__name__)

ORDER = 29
NSIDE = 2**ORDER
INDEX_VERSION = 1
CHUNK_ROWS = 1_000_000
NAME_BYTES = 24
# GLADE+ column numbers (0-based) of what the ranking needs.
GLADE_PLUS = {"no": 0, "gwgc": 2, "hyperleda": 3, "twomass": 4, "ra": 8, "dec": 9, "b": 10, "dist": 32}
CSV_NAMES = {
    "ra": ("ra", "ra_deg", "raj2000"),
    "dec": ("dec", "dec_deg", "dej2000", "decj2000"),
    "dist": ("d_l", "dist", "distance", "dl", "lumdist"),
    "b": ("b", "bmag", "b_mag", "b_app"),
    "name": ("name", "gwgc_name", "hyperleda_name", "gwgc", "pgc"),
}


# progress(galaxies read, bytes read, bytes in all)
Progress = Callable[[int, int, int], None]


class BadCatalog(ValueError):
    """A catalog that cannot be read, with the reason."""


@dataclass
class Columns:
    """One chunk of a catalog, in common units: degrees, Mpc, B magnitude."""

    ra: np.ndarray
    dec: np.ndarray
    dist: np.ndarray
    bmag: np.ndarray
    name: np.ndarray


def detect_format(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as stream:
        first = stream.readline()
    if first.startswith("#PGC"):
        return "gwgc"
    if "," in first:
        return "csv"
    if len(first.split()) == 40:
        return "glade+"
    raise BadCatalog(f"{path}: unknown catalog format (first line has {len(first.split())} fields)")


def _names(*candidates: pd.Series, fallback: pd.Series) -> np.ndarray:
    name = fallback.astype(str)
    for column in reversed(candidates):
        name = column.where(column.notna() & (column.astype(str) != "null"), name).astype(str)
    return np.asarray(name.str.slice(0, NAME_BYTES).to_numpy(dtype=f"S{NAME_BYTES}"))


def read_chunks(path: Path, kind: str, stream: Any) -> Iterator[Columns]:
    """Chunks of the catalog read from ``stream`` (an open binary file of ``path``)."""
    if kind == "glade+":
        columns = sorted(GLADE_PLUS.values())
        for chunk in pd.read_csv(
            stream,
            sep=r"\s+",
            header=None,
            usecols=columns,
            na_values=["null"],
            chunksize=CHUNK_ROWS,
            dtype={c: str for c in (0, 2, 3, 4)},
            engine="c",
        ):
            yield Columns(
                chunk[8].to_numpy(np.float64),
                chunk[9].to_numpy(np.float64),
                chunk[32].to_numpy(np.float32),
                chunk[10].to_numpy(np.float32),
                _names(chunk[2], chunk[3], chunk[4], fallback="GLADE+" + chunk[0].astype(str)),
            )
    elif kind == "gwgc":
        for chunk in pd.read_csv(stream, sep=r"\s+", chunksize=CHUNK_ROWS, na_values=["NaN", "null", "~"], engine="c"):
            chunk.columns = [c.lstrip("#") for c in chunk.columns]
            yield Columns(
                chunk["RA"].to_numpy(np.float64) * 15.0,
                chunk["Dec"].to_numpy(np.float64),
                chunk["Dist"].to_numpy(np.float32),
                chunk["App_Mag"].to_numpy(np.float32),
                _names(chunk["Name"], fallback="PGC" + chunk["PGC"].astype(str)),
            )
    else:
        for chunk in pd.read_csv(stream, chunksize=CHUNK_ROWS, na_values=["null", "NaN", ""], engine="c"):
            lower = {c.strip().lower(): c for c in chunk.columns}

            def pick(
                key: str, required: bool = True, chunk: pd.DataFrame = chunk, lower: dict[str, str] = lower
            ) -> pd.Series | None:
                for name in CSV_NAMES[key]:
                    if name in lower:
                        return chunk[lower[name]]
                if required:
                    raise BadCatalog(f"{path}: no {key} column (one of {', '.join(CSV_NAMES[key])})")
                return None

            dist, bmag, name = pick("dist", False), pick("b", False), pick("name", False)
            nan = np.full(len(chunk), np.nan, dtype=np.float32)
            ra, dec = pick("ra"), pick("dec")
            assert ra is not None and dec is not None, "required columns are there or pick raised"
            yield Columns(
                ra.to_numpy(np.float64),
                dec.to_numpy(np.float64),
                nan if dist is None else dist.to_numpy(np.float32),
                nan if bmag is None else bmag.to_numpy(np.float32),
                _names(name, fallback=pd.Series(np.arange(len(chunk)) + 1, index=chunk.index).astype(str))
                if name is not None
                else np.array([f"row{i}" for i in range(len(chunk))], dtype=f"S{NAME_BYTES}"),
            )


COLUMN_NAMES = tuple(f.name for f in fields(Columns))


class GalaxyIndex:
    """The memory-mapped, sorted index of a catalog."""

    FILES = ("hpx", *COLUMN_NAMES)
    # Memory-mapped columns, sorted by hpx (the order-29 nested HEALPix pixel of each galaxy).
    hpx: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    dist: np.ndarray
    bmag: np.ndarray
    name: np.ndarray

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = json.loads((folder / "manifest.json").read_text())
        for name in self.FILES:
            setattr(self, name, np.load(folder / f"{name}.npy", mmap_mode="r"))

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def cone(self, ra_deg: float, dec_deg: float, radius_deg: float) -> np.ndarray:
        """Rows of the galaxies within ``radius_deg`` of a place: the order-10 cells the circle touches, each
        a range of the sorted order-29 pixels, then the exact distance."""
        from astropy_healpix import HEALPix

        from toros.floor.sky_geometry import separation_deg

        level = 10
        cells = HEALPix(nside=2**level, order="nested").cone_search_lonlat(
            ra_deg * u.deg, dec_deg * u.deg, (radius_deg + 0.06) * u.deg
        )
        shift = 2 * (ORDER - level)
        cells = np.asarray(cells, dtype=np.int64)
        starts = np.searchsorted(self.hpx, cells << shift)
        stops = np.searchsorted(self.hpx, (cells + 1) << shift)
        rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)] or [np.empty(0, int)])
        if len(rows) == 0:
            return rows.astype(np.int64)
        distance = separation_deg(np.asarray(self.ra[rows]), np.asarray(self.dec[rows]), ra_deg, dec_deg)
        return rows[distance <= radius_deg].astype(np.int64)

    @staticmethod
    def folder_for(catalog: Path) -> Path:
        return catalog.with_name(catalog.name + ".toros-index")

    @classmethod
    def open(cls, catalog: Path, progress: Progress | None = None) -> GalaxyIndex:
        """The index of ``catalog``, built first if it is missing or older than the catalog."""
        folder = cls.folder_for(catalog)
        stat = catalog.stat()
        source = {
            "path": str(catalog.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "version": INDEX_VERSION,
        }
        manifest = folder / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text()).get("source") == source:
            return cls(folder)
        build_index(catalog, folder, source, progress)
        return cls(folder)


def build_index(catalog: Path, folder: Path, source: dict[str, Any], progress: Progress | None = None) -> None:
    """Reads the catalog in chunks, computes order-29 pixels, sorts, and writes the index atomically."""
    kind = detect_format(catalog)
    parts: list[Columns] = []
    count = 0
    total = catalog.stat().st_size
    try:
        with open(catalog, "rb") as stream:
            for chunk in read_chunks(catalog, kind, stream):
                good = np.isfinite(chunk.ra) & np.isfinite(chunk.dec) & (np.abs(chunk.dec) <= 90)
                parts.append(Columns(*(getattr(chunk, name)[good] for name in COLUMN_NAMES)))
                count += int(good.sum())
                if progress:
                    progress(count, min(stream.tell(), total), total)
    except (ValueError, KeyError, pd.errors.ParserError) as exc:
        raise BadCatalog(f"{catalog}: cannot read as {kind}: {exc}") from None
    if not count:
        raise BadCatalog(f"{catalog}: no galaxies with coordinates")
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}")  # two daemons may build at once
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    ra = np.concatenate([p.ra for p in parts])
    dec = np.concatenate([p.dec for p in parts])
    hpx = lonlat_to_healpix(np.mod(ra, 360.0) * u.deg, dec * u.deg, NSIDE, order="nested").astype(np.int64)
    order = np.argsort(hpx, kind="stable")
    np.save(building / "hpx.npy", hpx[order])
    del hpx
    columns = {"ra": ra, "dec": dec}
    del ra, dec
    for name in COLUMN_NAMES:  # one column at a time, to keep memory low
        column = columns.pop(name) if name in columns else np.concatenate([getattr(p, name) for p in parts])
        np.save(building / f"{name}.npy", column[order])
        for part in parts:
            setattr(part, name, None)
        del column
    (building / "manifest.json").write_text(
        json.dumps({"source": source, "format": kind, "count": count, "order": ORDER})
    )
    manifest = folder / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("source") == source:
        shutil.rmtree(building)  # another daemon built the same index meanwhile
        return
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(building, folder)
    log.info("indexed %d galaxies of %s (%s) in %s", count, catalog, kind, folder)
