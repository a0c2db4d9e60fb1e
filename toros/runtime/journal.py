"""The durable journal of a module: work orders, their state changes, and events.

SQLite (one file, WAL, synchronous=FULL) by default; PostgreSQL when ``database.url`` names one, for sites
where several nodes share a database. Rows are keyed by module, so the three daemons of a node may share one
database file.

All writes go through one writer thread that commits them in groups: concurrent Submits share a transaction
and its fsync, which is what makes durable submission fast. A write's caller waits until its group is
committed; only then are its events published to live Watch streams. Event sequence numbers are assigned by
the writer, so they are strictly increasing and have no gaps.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, cast, overload

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.config import DatabaseConfig
from toros.runtime.database import SQLITE_WRITER_BEGIN, make_engine, url_for_logs
from toros.runtime.events import EventHub
from toros.runtime.states import DONE, FINAL_STATES, QUEUED, RUNNING

log = logging.getLogger(__name__)


metadata = MetaData()

work_orders = Table(
    "work_orders",
    metadata,
    Column("module", String(32), primary_key=True),
    Column("id", String(128), primary_key=True),
    Column("queue_sequence", BigInteger, nullable=False),
    Column("task", String(64), nullable=False),
    Column("state", Integer, nullable=False, index=True),
    Column("priority", Integer, nullable=False),
    Column("requester", String(128), nullable=False),
    Column("accept_time", Float, nullable=False),
    Column("start_time", Float),
    Column("end_time", Float),
    Column("message", Text, nullable=False),
    Column("progress", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("products", Text, nullable=False),
    Column("work_order", LargeBinary, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("module", String(32), primary_key=True),
    Column("sequence", BigInteger, primary_key=True, autoincrement=False),
    Column("time", Float, nullable=False),
    Column("work_order_id", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
)

module_state = Table(
    "module_state",
    metadata,
    Column("module", String(32), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("value", Text, nullable=False),
)


@overload
def timestamp(seconds: float) -> Timestamp: ...
@overload
def timestamp(seconds: float | None) -> Timestamp | None: ...
def timestamp(seconds: float | None) -> Timestamp | None:
    """A protobuf Timestamp of seconds since the epoch (None stays None)."""
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(round(seconds * 1e9)))
    return stamp


@dataclass(frozen=True)
class WorkOrderRecord:
    """A work order as the journal holds it."""

    id: str
    task: str
    state: pb.WorkOrderState
    priority: int
    requester: str
    accept_time: float
    queue_sequence: int
    message: str = ""
    progress: float = 0.0
    attempts: int = 0
    start_time: float | None = None
    end_time: float | None = None
    products: tuple[dict[str, Any], ...] = ()
    work_order_bytes: bytes = b""

    @classmethod
    def from_row(cls, row: Any) -> WorkOrderRecord:
        return cls(
            id=row.id,
            task=row.task,
            state=row.state,
            priority=row.priority,
            requester=row.requester,
            accept_time=row.accept_time,
            queue_sequence=row.queue_sequence,
            message=row.message,
            progress=row.progress,
            attempts=row.attempts,
            start_time=row.start_time,
            end_time=row.end_time,
            products=tuple(json.loads(row.products)),
            work_order_bytes=row.work_order,
        )

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def work_order(self) -> pb.WorkOrder:
        return pb.WorkOrder.FromString(self.work_order_bytes)

    def status(self) -> pb.WorkOrderStatus:
        return pb.WorkOrderStatus(
            id=self.id,
            state=self.state,
            message=self.message,
            progress_percent=self.progress,
            products=[pb.Product(**product) for product in self.products],
            task=self.task,
            requester=self.requester,
            priority=self.priority,
            accept_time=timestamp(self.accept_time),
            start_time=timestamp(self.start_time),
            end_time=timestamp(self.end_time),
            attempts=self.attempts,
        )

    def receipt(self, already_known: bool) -> pb.SubmitResponse:
        return pb.SubmitResponse(id=self.id, accept_time=timestamp(self.accept_time), already_known=already_known)


# -- writes, as data: one group of them is committed in one transaction -------------------------------


@dataclass(frozen=True)
class _Submit:
    order: pb.WorkOrder
    task: str
    priority: int


@dataclass(frozen=True)
class _Transition:
    work_order_id: str
    only_from: frozenset[int] | None
    changes: dict[str, Any]


@dataclass(frozen=True)
class _AddProduct:
    work_order_id: str
    product: dict[str, Any]


@dataclass(frozen=True)
class _AppendEvent:
    work_order_id: str
    kind: dict[str, Any]


@dataclass(frozen=True)
class _SetValue:
    key: str
    value: str


_Write = _Submit | _Transition | _AddProduct | _AppendEvent | _SetValue


def _update_event(record: WorkOrderRecord) -> pb.WorkOrderUpdate:
    return pb.WorkOrderUpdate(
        state=record.state, message=record.message, progress_percent=record.progress, task=record.task
    )


@dataclass
class _Group:
    """The effect of one group of writes, built in memory before it is committed."""

    module: str
    time: float
    next_sequence: int
    records: dict[str, WorkOrderRecord] = field(default_factory=dict)  # new or changed, latest version
    inserted: list[str] = field(default_factory=list)
    updated: set[str] = field(default_factory=set)
    new_events: list[pb.Event] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)

    def add_event(self, work_order_id: str, **kind: Any) -> pb.Event:
        event = pb.Event(sequence=self.next_sequence, time=timestamp(self.time), work_order_id=work_order_id, **kind)
        self.next_sequence += 1
        self.new_events.append(event)
        return event

    def change(self, record: WorkOrderRecord) -> None:
        self.records[record.id] = record
        if record.id not in self.inserted:
            self.updated.add(record.id)

    def event_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "module": self.module,
                "sequence": e.sequence,
                "time": self.time,
                "work_order_id": e.work_order_id,
                "payload": e.SerializeToString(),
            }
            for e in self.new_events
        ]


class JournalUnavailable(Exception):
    """The database refused or lost a write (a PostgreSQL server restarting, a full disk): nothing was stored."""


class Journal:
    """Durable store of one module's work orders and events."""

    def __init__(self, database: DatabaseConfig, module: str, clock: Clock) -> None:
        self.module = module
        self.clock = clock
        self.url_for_logs = url_for_logs(database)
        self._write_engine = make_engine(database, writer=True)
        self._read_engine = make_engine(database, writer=False)
        self._dialect_insert = postgresql_insert if self._write_engine.dialect.name == "postgresql" else sqlite_insert
        metadata.create_all(self._write_engine)
        with self._read_engine.connect() as conn:
            last = conn.execute(
                select(func.max(events.c.sequence)).where(events.c.module == module)
            ).scalar_one_or_none()
        self.events = EventHub(last_sequence=last or 0)
        self._prepare_statements()
        # The module's unfinished work orders, as committed. The writer thread is their only mutator, so
        # this view is exact; it spares a read for every state change and every status query.
        self._unfinished = {record.id: record for record in self._read_unfinished()}
        self._pending: queue.SimpleQueue[tuple[_Write, Future[Any]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name=f"{module}-journal", daemon=True)
        self._writer.start()
        log.info("journal of %s at %s, last event %d", module, self.url_for_logs, self.events.last_sequence)

    def _prepare_statements(self) -> None:
        """Statements built once and executed with parameters (building them per call costs more than SQLite).

        The writer's statements run through the driver's own cursor (rows as dicts, named parameters):
        SQLAlchemy's per-execution machinery costs more CPU than SQLite itself, and the writer thread is what
        every Submit waits for. They are compiled once for the engine's dialect."""
        self._select_one = select(work_orders).where(
            work_orders.c.module == bindparam("m"), work_orders.c.id == bindparam("i")
        )
        update_order = work_orders.update().where(
            work_orders.c.module == bindparam("b_module"), work_orders.c.id == bindparam("b_id")
        )
        upsert = self._dialect_insert(module_state)
        upsert = upsert.on_conflict_do_update(index_elements=["module", "key"], set_={"value": upsert.excluded.value})
        dialect = self._write_engine.dialect
        if dialect.name == "sqlite":
            dialect = cast(Any, type(dialect))(paramstyle="named")  # the driver's named style
        changing = [column.name for column in work_orders.c if column.name not in ("module", "id")]
        self._select_one_sql = str(self._select_one.compile(dialect=dialect))
        self._insert_order_sql = str(work_orders.insert().compile(dialect=dialect))
        self._update_order_sql = str(update_order.compile(dialect=dialect, column_keys=changing))
        self._insert_event_sql = str(events.insert().compile(dialect=dialect))
        self._upsert_value_sql = str(upsert.compile(dialect=dialect))
        self._begin_sql = SQLITE_WRITER_BEGIN if dialect.name == "sqlite" else None  # psycopg begins by itself

    # -- the writer ------------------------------------------------------------------------------

    def _write(self, write: _Write) -> Any:
        future: Future[Any] = Future()
        self._pending.put((write, future))
        return future.result()

    def _write_loop(self) -> None:
        # One driver connection for as long as it works: no pool checkout and reset per group.
        self._driver_connection: Any = None
        while True:
            item = self._pending.get()
            if item is None:
                if self._driver_connection is not None:
                    self._driver_connection.close()
                return
            group = [item]
            while len(group) < 1024:
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._pending.put(None)
                    break
                group.append(more)
            self._commit(group)

    def _commit(self, items: list[tuple[_Write, Future[Any]]]) -> None:
        group = _Group(self.module, self.clock.timestamp(), self.events.last_sequence + 1)
        try:
            if self._driver_connection is None:
                self._driver_connection = self._write_engine.raw_connection()
            cursor = self._driver_connection.cursor()
            try:
                if self._begin_sql:
                    cursor.execute(self._begin_sql)
                results = self._apply(cursor, group, [write for write, _ in items])
                if group.inserted:
                    cursor.executemany(self._insert_order_sql, [self._row(group.records[id]) for id in group.inserted])
                if group.updated:
                    cursor.executemany(
                        self._update_order_sql, [self._row(group.records[id], key_prefix="b_") for id in group.updated]
                    )
                if group.new_events:
                    cursor.executemany(self._insert_event_sql, group.event_rows())
                if group.values:
                    cursor.executemany(
                        self._upsert_value_sql,
                        [{"module": self.module, "key": k, "value": v} for k, v in group.values.items()],
                    )
                self._driver_connection.commit()
            finally:
                cursor.close()
        except Exception as exc:  # one bad write must not fail its neighbours: retry them one by one
            self._end_failed_transaction(exc)
            if len(items) == 1:
                unavailable = isinstance(exc, (self._write_engine.dialect.loaded_dbapi.Error, DBAPIError))
                items[0][1].set_exception(JournalUnavailable(f"database: {exc}".strip()) if unavailable else exc)
            else:
                for item in items:
                    self._commit([item])
            return
        for record in group.records.values():
            if record.final:
                self._unfinished.pop(record.id, None)
            else:
                self._unfinished[record.id] = record
        self.events.publish(group.new_events)
        for (_, future), result in zip(items, results, strict=True):
            future.set_result(result)

    def _end_failed_transaction(self, error: Exception) -> None:
        """Rolls back a failed group. A connection the database dropped (a PostgreSQL restart), as the
        dialect recognises it, or one that cannot even roll back, is discarded: the next group connects anew."""
        connection = self._driver_connection
        if connection is None:
            return
        dialect = self._write_engine.dialect
        try:
            connection.rollback()
            lost = isinstance(error, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
                error, connection.dbapi_connection, None
            )
        except Exception:
            lost = True
        if lost:
            log.warning(
                "journal: lost the connection to %s (%s); reconnecting at the next write", self.url_for_logs, error
            )
            connection.invalidate()
            self._driver_connection = None

    def _apply(self, cursor: Any, group: _Group, writes: list[_Write]) -> list[Any]:
        """Works out each write's effect on the group; reads only rows not known in memory."""
        mentioned = {w.order.id if isinstance(w, _Submit) else getattr(w, "work_order_id", "") for w in writes}
        stored = self._select_many(cursor, {id for id in mentioned if id and id not in self._unfinished})

        def current(work_order_id: str) -> WorkOrderRecord | None:
            return group.records.get(work_order_id) or self._unfinished.get(work_order_id) or stored.get(work_order_id)

        results: list[Any] = []
        for write in writes:
            if isinstance(write, _Submit):
                known = current(write.order.id)
                if known is not None:
                    results.append((known, True))
                    continue
                record = WorkOrderRecord(
                    id=write.order.id,
                    task=write.task,
                    state=QUEUED,
                    priority=write.priority,
                    requester=write.order.requester,
                    accept_time=group.time,
                    queue_sequence=group.next_sequence,
                    message="queued",
                    work_order_bytes=write.order.SerializeToString(),
                )
                group.records[record.id] = record
                group.inserted.append(record.id)
                group.add_event(record.id, work_order_update=_update_event(record))
                results.append((record, False))
            elif isinstance(write, _Transition):
                existing = current(write.work_order_id)
                if (
                    existing is None
                    or existing.final
                    or (write.only_from is not None and existing.state not in write.only_from)
                ):
                    results.append(existing)
                    continue
                updated = replace(existing, **self._effective_changes(existing, write.changes, group.time))
                group.change(updated)
                group.add_event(updated.id, work_order_update=_update_event(updated))
                results.append(updated)
            elif isinstance(write, _AddProduct):
                owner = current(write.work_order_id)
                if owner is not None:
                    products = tuple(p for p in owner.products if p["path"] != write.product["path"]) + (write.product,)
                    group.change(replace(owner, products=products))
                results.append(None)
            elif isinstance(write, _AppendEvent):
                results.append(group.add_event(write.work_order_id, **write.kind))
            else:
                group.values[write.key] = write.value
                results.append(None)
        return results

    @staticmethod
    def _effective_changes(record: WorkOrderRecord, changes: dict[str, Any], now: float) -> dict[str, Any]:
        applied = dict(changes)
        if applied.get("state") in FINAL_STATES:
            applied.setdefault("end_time", now)
            if applied["state"] == DONE:
                applied.setdefault("progress", 100.0)
        if applied.get("state") == RUNNING and record.state != RUNNING:
            applied.setdefault("start_time", now)
            applied["attempts"] = record.attempts + 1
        return applied

    def close(self) -> None:
        self._pending.put(None)
        self._writer.join(timeout=30)
        self._write_engine.dispose()
        self._read_engine.dispose()

    # -- writes ----------------------------------------------------------------------------------

    def submit(self, order: pb.WorkOrder, task: str, priority: int) -> tuple[WorkOrderRecord, bool]:
        """Stores a new work order as QUEUED; returns its record and whether the id was already known."""
        return cast(tuple[WorkOrderRecord, bool], self._write(_Submit(order, task, priority)))

    def transition(
        self, work_order_id: str, *, only_from: set[int] | None = None, **changes: Any
    ) -> WorkOrderRecord | None:
        """Applies changes to a work order that is not yet final and journals a WorkOrderUpdate event.

        With ``only_from``, nothing changes unless the work order is in one of those states. Entering RUNNING
        counts an attempt. Returns the record after the change (unchanged if nothing applied), or None if
        the id is unknown.
        """
        return cast(
            WorkOrderRecord | None,
            self._write(_Transition(work_order_id, frozenset(only_from) if only_from else None, changes)),
        )

    def add_product(self, work_order_id: str, product: dict[str, Any]) -> None:
        """Records a product of a work order (kept across a crash)."""
        self._write(_AddProduct(work_order_id, product))

    def append_event(self, work_order_id: str = "", **kind: Any) -> pb.Event:
        """Journals a domain event (e.g. ``image_ready=ImageReady(...)``) and returns it with its sequence."""
        return cast(pb.Event, self._write(_AppendEvent(work_order_id, kind)))

    def set_value(self, key: str, value: str) -> None:
        """Durably remembers a small piece of module state (e.g. a followed stream's position)."""
        self._write(_SetValue(key, value))

    # -- reads -----------------------------------------------------------------------------------

    def get(self, work_order_id: str) -> WorkOrderRecord | None:
        record = self._unfinished.get(work_order_id)  # committed, and the latest version
        if record is not None:
            return record
        with self._read_engine.connect() as conn:
            row = conn.execute(self._select_one, {"m": self.module, "i": work_order_id}).first()
            return WorkOrderRecord.from_row(row) if row else None

    def unfinished(self) -> list[WorkOrderRecord]:
        """QUEUED and RUNNING work orders in order of acceptance (to resume after a restart)."""
        return sorted(self._unfinished.values(), key=lambda record: record.queue_sequence)

    def _read_unfinished(self) -> list[WorkOrderRecord]:
        with self._read_engine.connect() as conn:
            rows = conn.execute(
                select(work_orders)
                .where(work_orders.c.module == self.module, work_orders.c.state.in_([QUEUED, RUNNING]))
                .order_by(work_orders.c.queue_sequence)
            )
            return [WorkOrderRecord.from_row(row) for row in rows]

    def read_events(self, after: int, limit: int = 1000) -> list[pb.Event]:
        with self._read_engine.connect() as conn:
            rows = conn.execute(
                select(events.c.payload)
                .where(events.c.module == self.module, events.c.sequence > after)
                .order_by(events.c.sequence)
                .limit(limit)
            )
            return [pb.Event.FromString(row.payload) for row in rows]

    def last_event_time(self) -> float | None:
        """Clock time of the latest event (None for an empty journal)."""
        last = self.read_events(self.events.last_sequence - 1, limit=1)
        return last[0].time.ToNanoseconds() / 1e9 if last else None

    def get_value(self, key: str) -> str | None:
        with self._read_engine.connect() as conn:
            return conn.execute(
                select(module_state.c.value).where(module_state.c.module == self.module, module_state.c.key == key)
            ).scalar_one_or_none()

    # -- helpers ---------------------------------------------------------------------------------

    def _select_many(self, cursor: Any, ids: set[str]) -> dict[str, WorkOrderRecord]:
        """The stored records of these ids, through the writer's cursor (one indexed lookup each)."""
        found = {}
        for work_order_id in ids:
            cursor.execute(self._select_one_sql, {"m": self.module, "i": work_order_id})
            row = cursor.fetchone()
            if row is not None:
                names = [column[0] for column in cursor.description]
                found[work_order_id] = WorkOrderRecord.from_row(SimpleNamespace(**dict(zip(names, row, strict=True))))
        return found

    def _row(self, record: WorkOrderRecord, key_prefix: str = "") -> dict[str, Any]:
        return {
            key_prefix + "module": self.module,
            key_prefix + "id": record.id,
            "queue_sequence": record.queue_sequence,
            "task": record.task,
            "state": record.state,
            "priority": record.priority,
            "requester": record.requester,
            "accept_time": record.accept_time,
            "start_time": record.start_time,
            "end_time": record.end_time,
            "message": record.message,
            "progress": record.progress,
            "attempts": record.attempts,
            "products": json.dumps(list(record.products)),
            "work_order": record.work_order_bytes,
        }
