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
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url

from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.config import DatabaseConfig
from toros.runtime.events import EventHub

log = logging.getLogger(__name__)

QUEUED = pb.WORK_ORDER_STATE_QUEUED
RUNNING = pb.WORK_ORDER_STATE_RUNNING
DONE = pb.WORK_ORDER_STATE_DONE
FAILED = pb.WORK_ORDER_STATE_FAILED
CANCELLED = pb.WORK_ORDER_STATE_CANCELLED
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED})

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


def timestamp(seconds: float | None) -> Timestamp | None:
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
    state: int
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


@dataclass
class _Batch:
    """What one group of writes adds to the event log."""

    module: str
    next_sequence: int
    time: float
    new_events: list[pb.Event] = field(default_factory=list)

    def add_event(self, work_order_id: str, **kind: Any) -> pb.Event:
        event = pb.Event(sequence=self.next_sequence, time=timestamp(self.time), work_order_id=work_order_id, **kind)
        self.next_sequence += 1
        self.new_events.append(event)
        return event

    def rows(self) -> list[dict[str, Any]]:
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


_Operation = Callable[[Any, _Batch], Any]


def _update_event(record: WorkOrderRecord) -> pb.WorkOrderUpdate:
    return pb.WorkOrderUpdate(
        state=record.state, message=record.message, progress_percent=record.progress, task=record.task
    )


class Journal:
    """Durable store of one module's work orders and events."""

    def __init__(self, database: DatabaseConfig, module: str, clock: Clock) -> None:
        self.module = module
        self.clock = clock
        url = database.url.get_secret_value() if database.url else f"sqlite:///{Path(database.path)}"
        self.url_for_logs = make_url(url).render_as_string(hide_password=True)
        self._write_engine = self._engine(url, writer=True)
        self._read_engine = self._engine(url, writer=False)
        self._dialect_insert = postgresql_insert if self._write_engine.dialect.name == "postgresql" else sqlite_insert
        metadata.create_all(self._write_engine)
        with self._read_engine.connect() as conn:
            last = conn.execute(
                select(func.max(events.c.sequence)).where(events.c.module == module)
            ).scalar_one_or_none()
        self.events = EventHub(last_sequence=last or 0)
        self._pending: queue.SimpleQueue[tuple[_Operation, Future] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name=f"{module}-journal", daemon=True)
        self._writer.start()
        log.info("journal of %s at %s, last event %d", module, self.url_for_logs, self.events.last_sequence)

    @staticmethod
    def _engine(url: str, *, writer: bool) -> Engine:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(url, pool_pre_ping=True, pool_size=4 if writer else 8, max_overflow=0 if writer else 64)
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=1 if writer else 8,
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
            # The writer takes the write lock at once, so another daemon sharing the file cannot make its
            # snapshot stale between a read and a write of the same transaction.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine

    # -- the writer ------------------------------------------------------------------------------

    def _write(self, operation: _Operation) -> Any:
        future: Future = Future()
        self._pending.put((operation, future))
        return future.result()

    def _write_loop(self) -> None:
        while True:
            item = self._pending.get()
            if item is None:
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

    def _commit(self, group: list[tuple[_Operation, Future]]) -> None:
        batch = _Batch(self.module, self.events.last_sequence + 1, self.clock.timestamp())
        try:
            with self._write_engine.begin() as conn:
                results = [operation(conn, batch) for operation, _ in group]
                if batch.new_events:
                    conn.execute(events.insert(), batch.rows())
        except Exception as exc:  # one bad write must not fail its neighbours: retry them one by one
            if len(group) == 1:
                group[0][1].set_exception(exc)
            else:
                for item in group:
                    self._commit([item])
            return
        self.events.publish(batch.new_events)
        for (_, future), result in zip(group, results):
            future.set_result(result)

    def close(self) -> None:
        self._pending.put(None)
        self._writer.join(timeout=30)
        self._write_engine.dispose()
        self._read_engine.dispose()

    # -- writes ----------------------------------------------------------------------------------

    def submit(self, order: pb.WorkOrder, task: str, priority: int) -> tuple[WorkOrderRecord, bool]:
        """Stores a new work order as QUEUED; returns its record and whether the id was already known."""

        def operation(conn: Any, batch: _Batch) -> tuple[WorkOrderRecord, bool]:
            record = WorkOrderRecord(
                id=order.id, task=task, state=QUEUED, priority=priority, requester=order.requester,
                accept_time=batch.time, queue_sequence=batch.next_sequence, message="queued",
                work_order_bytes=order.SerializeToString(),
            )
            inserted = conn.execute(
                self._dialect_insert(work_orders)
                .values(self._row(record))
                .on_conflict_do_nothing(index_elements=["module", "id"])
            ).rowcount
            if inserted:
                batch.add_event(record.id, work_order_update=_update_event(record))
                return record, False
            return self._select(conn, order.id), True

        return self._write(operation)

    def transition(
        self, work_order_id: str, *, only_from: set[int] | None = None, **changes: Any
    ) -> WorkOrderRecord | None:
        """Applies changes to a work order that is not yet final and journals a WorkOrderUpdate event.

        With ``only_from``, nothing changes unless the work order is in one of those states. Entering RUNNING
        counts an attempt. Returns the record after the change (unchanged if nothing applied), or None if
        the id is unknown.
        """

        def operation(conn: Any, batch: _Batch) -> WorkOrderRecord | None:
            record = self._select(conn, work_order_id)
            if record is None or record.final or (only_from is not None and record.state not in only_from):
                return record
            applied = dict(changes)
            if applied.get("state") in FINAL_STATES:
                applied.setdefault("end_time", batch.time)
                if applied["state"] == DONE:
                    applied.setdefault("progress", 100.0)
            if applied.get("state") == RUNNING and record.state != RUNNING:
                applied.setdefault("start_time", batch.time)
                applied["attempts"] = record.attempts + 1
            updated = replace(record, **applied)
            conn.execute(
                work_orders.update()
                .where(work_orders.c.module == self.module, work_orders.c.id == work_order_id)
                .values(self._row(updated))
            )
            batch.add_event(work_order_id, work_order_update=_update_event(updated))
            return updated

        return self._write(operation)

    def add_product(self, work_order_id: str, product: dict[str, Any]) -> None:
        """Records a product of a work order (kept across a crash)."""

        def operation(conn: Any, _batch: _Batch) -> None:
            record = self._select(conn, work_order_id)
            if record is None:
                return
            products = [p for p in record.products if p["path"] != product["path"]] + [product]
            conn.execute(
                work_orders.update()
                .where(work_orders.c.module == self.module, work_orders.c.id == work_order_id)
                .values(products=json.dumps(products))
            )

        self._write(operation)

    def append_event(self, work_order_id: str = "", **kind: Any) -> pb.Event:
        """Journals a domain event (e.g. ``image_ready=ImageReady(...)``) and returns it with its sequence."""
        return self._write(lambda _conn, batch: batch.add_event(work_order_id, **kind))

    def set_value(self, key: str, value: str) -> None:
        """Durably remembers a small piece of module state (e.g. a followed stream's position)."""

        def operation(conn: Any, _batch: _Batch) -> None:
            conn.execute(
                self._dialect_insert(module_state)
                .values(module=self.module, key=key, value=value)
                .on_conflict_do_update(index_elements=["module", "key"], set_={"value": value})
            )

        self._write(operation)

    # -- reads -----------------------------------------------------------------------------------

    def get(self, work_order_id: str) -> WorkOrderRecord | None:
        with self._read_engine.connect() as conn:
            return self._select(conn, work_order_id)

    def unfinished(self) -> list[WorkOrderRecord]:
        """QUEUED and RUNNING work orders in order of acceptance (to resume after a restart)."""
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

    def get_value(self, key: str) -> str | None:
        with self._read_engine.connect() as conn:
            return conn.execute(
                select(module_state.c.value).where(module_state.c.module == self.module, module_state.c.key == key)
            ).scalar_one_or_none()

    # -- helpers ---------------------------------------------------------------------------------

    def _select(self, conn: Any, work_order_id: str) -> WorkOrderRecord | None:
        row = conn.execute(
            select(work_orders).where(work_orders.c.module == self.module, work_orders.c.id == work_order_id)
        ).first()
        return WorkOrderRecord.from_row(row) if row else None

    def _row(self, record: WorkOrderRecord) -> dict[str, Any]:
        return {
            "module": self.module,
            "id": record.id,
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
