"""The master library: every master frame with its provenance, in the database and on disk.

A night that lacks a calibration type borrows the nearest earlier master of the same setup; the borrowing
is written into the calibrated frames' headers and the work order's result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    select,
)

from toros.runtime.config import DatabaseConfig
from toros.runtime.database import make_engine

metadata = MetaData()

masters = Table(
    "preprocessor_masters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(8), nullable=False),
    Column("setup", String(64), nullable=False, index=True),
    Column("night", String(10), nullable=False),
    Column("exposure_time", Float, nullable=False),
    Column("filter", String(32), nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("frames", Text, nullable=False),
    Column("created", Float, nullable=False),
    Column("work_order_id", String(128), nullable=False),
)


@dataclass(frozen=True)
class Master:
    kind: str
    setup: str
    night: str
    exposure_time: float
    filter: str
    path: Path
    frames: tuple[str, ...]

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The master's data (float32) and its bad-pixel mask extension, if it has one."""
        with fits.open(self.path, memmap=False) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float32)
            mask = np.asarray(hdul["MASK"].data, dtype=np.uint8) if "MASK" in hdul else None
        return data, mask


class MasterLibrary:
    def __init__(self, database: DatabaseConfig) -> None:
        self._engine = make_engine(database, writer=True)
        metadata.create_all(self._engine)

    def add(self, master: Master, sha256: str, created: float, work_order_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                masters.insert().values(
                    kind=master.kind,
                    setup=master.setup,
                    night=master.night,
                    exposure_time=master.exposure_time,
                    filter=master.filter,
                    path=str(master.path),
                    sha256=sha256,
                    frames=json.dumps(list(master.frames)),
                    created=created,
                    work_order_id=work_order_id,
                )
            )

    def find(
        self, kind: str, setup: str, night: str, *, exposure_time: float | None = None, filter: str | None = None
    ) -> Master | None:
        """The master of this night, else of the nearest earlier night; darks prefer the exact exposure time."""
        conditions = [masters.c.kind == kind, masters.c.setup == setup, masters.c.night <= night]
        if filter is not None:
            conditions.append(masters.c.filter == filter)
        query = select(masters).where(and_(*conditions)).order_by(masters.c.night.desc(), masters.c.created.desc())
        with self._engine.connect() as conn:
            rows = [row for row in conn.execute(query) if Path(row.path).exists()]
        if not rows:
            return None
        nearest = [row for row in rows if row.night == rows[0].night]
        if exposure_time is not None:
            nearest.sort(key=lambda row: (abs(row.exposure_time - exposure_time), -row.exposure_time))
        row = nearest[0]
        return Master(
            row.kind, row.setup, row.night, row.exposure_time, row.filter, Path(row.path), tuple(json.loads(row.frames))
        )

    def close(self) -> None:
        self._engine.dispose()
