"""A database an older release created gains the columns a newer one added, its rows kept."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, select

from toros.runtime.config import DatabaseConfig
from toros.runtime.database import add_missing_columns, make_engine


def test_missing_nullable_columns_are_added_and_the_rows_kept(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name VARCHAR(16) NOT NULL)")
        old.execute("INSERT INTO things (name) VALUES ('kept')")
    metadata = MetaData()
    things = Table(
        "things", metadata, Column("id", Integer, primary_key=True), Column("name", String(16), nullable=False),
        Column("depth", Float, nullable=True),
    )  # fmt: skip
    engine = make_engine(DatabaseConfig(path=path), writer=True)
    assert add_missing_columns(engine, metadata) == ["things.depth"]
    assert add_missing_columns(engine, metadata) == []  # once
    with engine.connect() as conn:
        assert conn.execute(select(things.c.name, things.c.depth)).all() == [("kept", None)]
    strict = MetaData()
    Table("things", strict, Column("id", Integer, primary_key=True), Column("must", Float, nullable=False))
    with pytest.raises(RuntimeError, match="things.must cannot be added"):
        add_missing_columns(engine, strict)
    engine.dispose()
