"""Database engines: SQLite (one file, WAL, synchronous=FULL) by default, PostgreSQL by URL.

The journal and any module's own tables (e.g. the preprocessor's master library) share the same database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, inspect
from sqlalchemy.engine import make_url

from toros.runtime.config import DatabaseConfig

# A SQLite writer takes the write lock at once, so another daemon sharing the file cannot make its snapshot
# stale between a read and a write of the same transaction.
SQLITE_WRITER_BEGIN = "BEGIN IMMEDIATE"


def database_url(database: DatabaseConfig) -> str:
    """The SQLAlchemy URL; a plain ``postgresql://`` (the form in the docs) uses the psycopg driver."""
    if database.url is None:
        return f"sqlite:///{Path(database.path)}"
    url = database.url.get_secret_value()
    return "postgresql+psycopg://" + url[len("postgresql://") :] if url.startswith("postgresql://") else url


def url_for_logs(database: DatabaseConfig) -> str:
    """The URL with any password hidden."""
    return make_url(database_url(database)).render_as_string(hide_password=True)


def make_engine(database: DatabaseConfig, *, writer: bool) -> Engine:
    """An engine for writing (takes SQLite's write lock at BEGIN) or for reading."""
    url = database_url(database)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_size=4 if writer else 8, max_overflow=0 if writer else 64)
    if parsed.database:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=1 if writer else 8,
        max_overflow=0 if writer else 64,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun explicitly below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql(SQLITE_WRITER_BEGIN if writer else "BEGIN")

    return engine


def add_missing_columns(engine: Engine, metadata: MetaData) -> list[str]:
    """Adds the nullable columns a newer release gave its tables to a database an older one created (as
    ``ALTER TABLE … ADD COLUMN``: the rows kept, the new columns NULL); returns them as ``table.column``. A
    column that cannot be NULL cannot be added to rows that exist: that is a programming error."""
    added = []
    present = inspect(engine)
    for table in metadata.sorted_tables:
        if not present.has_table(table.name):
            continue
        known = {column["name"] for column in present.get_columns(table.name)}
        for column in table.columns:
            if column.name in known:
                continue
            if not column.nullable:
                raise RuntimeError(f"{table.name}.{column.name} cannot be added to existing rows: make it nullable")
            kind = column.type.compile(dialect=engine.dialect)
            with engine.begin() as conn:
                conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
            added.append(f"{table.name}.{column.name}")
    return added
