"""Worker threads that execute queued work orders, apart from the RPC threads.

Work orders run highest priority first, then in order of acceptance. Handlers get a ``TaskContext`` to
report progress, journal events and products, and notice cancellation or shutdown.
"""

from __future__ import annotations

import heapq
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from google.protobuf.message import Message

from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.files import sha256_of
from toros.runtime.journal import Journal, WorkOrderRecord
from toros.runtime.logs import work_order_context
from toros.runtime.states import CANCELLED, DONE, FAILED, QUEUED, RUNNING

if TYPE_CHECKING:
    from toros.runtime.module import Task

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """Raised inside a handler when its work order was cancelled."""


class Interrupted(Exception):
    """Raised inside a handler when the daemon shuts down: the work order resumes after the restart."""


class TaskFailed(Exception):
    """A handler's way to fail its work order with a clear message."""


TaskMessage = TypeVar("TaskMessage", bound=Message)


class TaskContext(Generic[TaskMessage]):
    """A running work order, as its handler sees it: ``task`` is its task's message, typed per task as the gRPC
    examples type one request per method (``TaskContext[pb.DomeControl]``)."""

    def __init__(self, record: WorkOrderRecord, journal: Journal, clock: Clock, stopping: threading.Event) -> None:
        self.record = record
        self.id = record.id
        self.order: pb.WorkOrder = record.work_order()
        self.task: TaskMessage = cast(TaskMessage, getattr(self.order, record.task))
        self.attempt = record.attempts
        self.journal = journal
        self.clock = clock
        self.cancel_requested = threading.Event()
        self.cancel_reason = ""
        self._stopping = stopping
        self._interrupt = threading.Event()

    def check(self) -> None:
        """Raises Cancelled or Interrupted when the handler should stop now."""
        if self.cancel_requested.is_set():
            raise Cancelled()
        if self._stopping.is_set():
            raise Interrupted()

    def sleep(self, clock_seconds: float) -> None:
        """Waits in clock time, ending early when woken: by a stop (Cancelled or Interrupted are raised) or by
        news the handler waits for (``wake``)."""
        self.clock.sleep(clock_seconds, self._interrupt)
        self._interrupt.clear()  # before the check: a stop that comes now is raised here or wakes the next sleep
        self.check()

    def sleep_real(self, seconds: float) -> None:
        """Waits in real time (network retries), ending early when asked to stop."""
        self._interrupt.wait(seconds)
        self.check()

    def wake(self) -> None:
        """Ends the current (or the next) ``sleep`` now."""
        self._interrupt.set()

    def progress(self, percent: float, message: str | None = None) -> None:
        """Journals progress (0-100) and, optionally, a new message; Watch streams see it at once."""
        changes: dict[str, Any] = {"progress": max(0.0, min(100.0, percent))}
        if message is not None:
            changes["message"] = message
        self.journal.transition(self.id, **changes)

    def emit(self, **kind: Any) -> pb.Event:
        """Journals a domain event of this work order, e.g. ``emit(image_ready=pb.ImageReady(...))``."""
        return self.journal.append_event(self.id, **kind)

    def add_product(
        self, path: Path, kind: str, sha256: str | None = None, fields: dict[str, Any] | None = None
    ) -> pb.Product:
        """Records a finished file (written atomically beforehand) as a product of this work order; its
        sha256 is computed unless the writer already knows it. ``fields``: more fields of the Product message
        (in the proto's JSON names), kept with it."""
        product: dict[str, Any] = {
            "path": str(path),
            "kind": kind,
            "size_bytes": path.stat().st_size,
            "sha256": sha256 or sha256_of(path),
            **(fields or {}),
        }
        self.journal.add_product(self.id, product)
        return pb.Product(**product)


class WorkerPool:
    """Executes a module's queued work orders on a fixed number of threads."""

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        tasks: dict[str, Task[Any]],
        count: int,
        module: str,
        *,
        max_attempts: int = 3,
    ) -> None:
        self.journal = journal
        self.max_attempts = max_attempts
        self.clock = clock
        self.tasks = tasks
        self.count = count
        self.module = module
        self._queue: list[tuple[int, int, str]] = []
        self._queued_ids: set[str] = set()
        self._running: dict[str, TaskContext[Message]] = {}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def queue_depth(self) -> int:
        with self._lock:
            return len(self._queued_ids)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def start(self) -> None:
        """Resumes what a previous run left unfinished, then starts the worker threads."""
        for record in self.journal.unfinished():
            if record.state == RUNNING:
                record = self._after_crash(record)
            if not record.final:
                self.enqueue(record)
        for number in range(self.count):
            thread = threading.Thread(target=self._work, name=f"{self.module}-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _after_crash(self, record: WorkOrderRecord) -> WorkOrderRecord:
        """A work order that was running when the daemon died: cancelled if that was asked, given up when it
        has started ``max_attempts`` times (each attempt ended with the daemon: a poison work order), else
        queued to run again."""
        reason = self.journal.get_value(_cancel_key(record.id))
        if reason is not None:
            log.warning("work order %s was cancelled while running, before the daemon stopped", record.id)
            return (
                self.journal.transition(
                    record.id, state=CANCELLED, message=f"cancelled while running: {reason or 'no reason given'}"
                )
                or record
            )
        if record.attempts >= self.max_attempts:
            log.error(
                "work order %s was running each of the %d times the daemon stopped: giving up",
                record.id,
                record.attempts,
            )
            return (
                self.journal.transition(
                    record.id,
                    state=FAILED,
                    message=f"gave up after {record.attempts} attempts: the daemon stopped during each (last: {record.message})",
                )
                or record
            )
        log.warning("work order %s was running when the daemon stopped: resuming it", record.id)
        return (
            self.journal.transition(
                record.id,
                state=QUEUED,
                message=f"interrupted by a restart; resuming (attempt {record.attempts + 1} of {self.max_attempts})",
            )
            or record
        )

    def enqueue(self, record: WorkOrderRecord) -> None:
        with self._lock:
            if record.id in self._queued_ids:
                return
            heapq.heappush(self._queue, (-record.priority, record.queue_sequence, record.id))
            self._queued_ids.add(record.id)
            self._lock.notify()

    def cancel(self, work_order_id: str, reason: str) -> WorkOrderRecord | None:
        """Cancels a queued work order at once, or asks a running one's handler to stop."""
        message = f"cancelled: {reason}" if reason else "cancelled"
        record = self.journal.transition(work_order_id, only_from={QUEUED}, state=CANCELLED, message=message)
        if record is None or record.state != RUNNING:
            with self._lock:
                self._queued_ids.discard(work_order_id)
            return record
        # Kept durably, so that the work order stays cancelled if the daemon dies before its handler stops.
        self.journal.set_value(_cancel_key(work_order_id), reason)
        with self._lock:
            context = self._running.get(work_order_id)
        if context is not None:
            context.cancel_reason = reason
            context.cancel_requested.set()
            context.wake()
            return self.journal.transition(
                work_order_id, message=f"cancellation requested: {reason or 'no reason given'}"
            )
        return record

    def stop(self, timeout: float) -> None:
        """Asks running handlers to stop (their work orders resume after a restart) and joins the threads."""
        self._stopping.set()
        with self._lock:
            for context in self._running.values():
                context.wake()
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _next(self) -> str | None:
        with self._lock:
            while not self._stopping.is_set():
                while self._queue:
                    _, _, work_order_id = heapq.heappop(self._queue)
                    if work_order_id in self._queued_ids:
                        self._queued_ids.discard(work_order_id)
                        return work_order_id
                self._lock.wait()
            return None

    def _work(self) -> None:
        while (work_order_id := self._next()) is not None:
            with work_order_context(work_order_id):
                try:
                    self._execute(work_order_id)
                except Exception:  # the journal itself failed: keep the thread alive for the next order
                    log.exception("could not execute work order %s", work_order_id)

    def _execute(self, work_order_id: str) -> None:
        record = self.journal.transition(work_order_id, only_from={QUEUED}, state=RUNNING, message="running")
        if record is None or record.state != RUNNING:
            return
        context: TaskContext[Message] = TaskContext(record, self.journal, self.clock, self._stopping)
        with self._lock:
            self._running[work_order_id] = context
        log.info("%s started (attempt %d)", record.task, record.attempts)
        try:
            run = self.tasks[record.task].run
            assert run is not None, "Submit accepts only tasks with a handler"
            message = run(context) or "done"
            self.journal.transition(work_order_id, state=DONE, message=message)
            log.info("%s done: %s", record.task, message)
        except Cancelled:
            reason = f": {context.cancel_reason}" if context.cancel_reason else ""
            self.journal.transition(work_order_id, state=CANCELLED, message=f"cancelled while running{reason}")
            log.info("%s cancelled", record.task)
        except Interrupted:
            # Put down in good order: this attempt does not count towards max_attempts.
            self.journal.transition(
                work_order_id,
                state=QUEUED,
                attempts=record.attempts - 1,
                message="interrupted by a shutdown; resumes after the restart",
            )
            log.info("%s interrupted by shutdown; it resumes after the restart", record.task)
        except TaskFailed as exc:
            self.journal.transition(work_order_id, state=FAILED, message=str(exc))
            log.error("%s failed: %s", record.task, exc)
        except Exception as exc:
            self.journal.transition(work_order_id, state=FAILED, message=f"internal error: {type(exc).__name__}: {exc}")
            log.exception("%s failed with an unexpected error", record.task)
        finally:
            with self._lock:
                self._running.pop(work_order_id, None)


def _cancel_key(work_order_id: str) -> str:
    return f"runtime:cancel-requested:{work_order_id}"
