"""The FrontDesk service of one daemon: accepts work orders, reports on them, streams events and files."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import grpc

from toros import __version__
from toros.generated import toros_pb2 as pb
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.runtime.files import (
    NotRegularFile,
    StorageUnavailable,
    UnusablePath,
    confine,
    open_regular,
)
from toros.runtime.journal import (
    Journal,
    JournalUnavailable,
    WorkOrderRecord,
    timestamp,
)
from toros.runtime.module import Module
from toros.runtime.validation import Checker, InvalidWorkOrder, check_envelope
from toros.runtime.workers import WorkerPool

log = logging.getLogger(__name__)

# Each kind of WatchRequest.kinds is the event's oneof member of the same name (EVENT_KIND_IMAGE_READY: image_ready).
EVENT_KINDS = {
    value.number: value.name.removeprefix("EVENT_KIND_").lower()
    for value in pb.EventKind.DESCRIPTOR.values
    if value.number
}
DEFAULT_CHUNK = 64 << 10
# What one FetchFile stream holds in this process while its reader is slow grows with the chunk (a stalled
# stream held about 7 MiB with 1 MiB chunks, 0.4 MiB with 64 KiB ones, at the same speed): chunks are sent no
# larger than this, whatever the client prefers.
SERVED_CHUNK = 256 << 10
MAX_CHUNK = 4 << 20
# How often a waiting Watch stream checks that its client is still there.
WATCH_POLL_SECONDS = 1.0


class NotCarriedOut(Exception):
    """A valid work order for a task this module does not carry out (UNIMPLEMENTED)."""


class NotNow(Exception):
    """A valid work order that makes no sense in the module's current state (FAILED_PRECONDITION)."""


class FrontDesk(pb_grpc.FrontDeskServicer):
    def __init__(
        self, module: Module, journal: Journal, workers: WorkerPool, storage_root: Path, max_streams: int
    ) -> None:
        self.module = module
        self.tasks = module.tasks()
        self.journal = journal
        self.workers = workers
        self.storage_root = storage_root
        self._stream_slots = threading.BoundedSemaphore(max_streams)
        self._max_streams = max_streams
        self.start_time = module.clock.timestamp()

    # -- work orders -----------------------------------------------------------------------------

    def accept(self, request: pb.WorkOrder) -> tuple[WorkOrderRecord, bool]:
        """Validates, journals and queues a work order (from a client or from the module itself).

        Returns its record and whether the id was already known; raises InvalidWorkOrder, NotCarriedOut
        for a task this module does not carry out, or NotNow when the module's state forbids it (a known id
        is not checked again: its receipt is returned)."""
        task, priority = check_envelope(request, self.module.name, self.storage_root)
        if task not in self.tasks:
            raise NotCarriedOut(f"task: {task} is not supported by this {self.module.name}")
        self.tasks[task].validate(getattr(request, task), Checker(task, self.storage_root))
        if self.tasks[task].run is None:
            raise NotCarriedOut(
                f"task: {task} is recognised but not carried out by this version ({__version__}) of the {self.module.name}"
            )
        precondition = self.tasks[task].precondition
        if precondition is not None and not (request.id and self.journal.get(request.id)):
            if (reason := precondition(request)) is not None:
                raise NotNow(f"{task}: {reason}")
        order = pb.WorkOrder()
        order.CopyFrom(request)
        order.DiscardUnknownFields()  # fields of a newer contract, or junk: never journaled
        if not order.id:
            # Named by the module's clock, as everything it makes: a drill's night has the drill's date.
            order.id = f"{self.module.name}-{self.module.clock.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        if not order.HasField("create_time"):
            order.create_time.CopyFrom(timestamp(self.module.clock.timestamp()))
        record, already_known = self.journal.submit(order, task, priority)
        if already_known:
            log.info("work order %s was already known (%s): not run again", record.id, record.task)
        else:
            self.workers.enqueue(record)
        return record, already_known

    def Submit(self, request: pb.WorkOrder, context: grpc.ServicerContext) -> pb.SubmitResponse:
        try:
            record, already_known = self.accept(request)
        except InvalidWorkOrder as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotCarriedOut as exc:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, str(exc))
        except NotNow as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except (JournalUnavailable, StorageUnavailable) as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"not accepted, try again: {exc}")
        return record.receipt(already_known)

    def GetWorkOrder(self, request: pb.GetWorkOrderRequest, context: grpc.ServicerContext) -> pb.WorkOrderStatus:
        record = self.journal.get(self._required_id(request.id, context))
        if record is None:
            self._not_found(request.id, context)
        return record.status()

    def _not_found(self, work_order_id: str, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.NOT_FOUND, f"id: no work order {work_order_id!r} in the {self.module.name}")
        raise AssertionError("abort raises")

    def CancelWorkOrder(self, request: pb.CancelWorkOrderRequest, context: grpc.ServicerContext) -> pb.WorkOrderStatus:
        try:
            record = self.workers.cancel(self._required_id(request.id, context), request.reason)
        except JournalUnavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"not cancelled, try again: {exc}")
        if record is None:
            self._not_found(request.id, context)
        return record.status()

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.ModuleStatus:
        status = pb.ModuleStatus(
            module=self.module.name,
            version=__version__,
            queue_depth=self.workers.queue_depth,
            running=self.workers.running,
            devices=self.module.devices(),
            last_sequence=self.journal.events.last_sequence,
            start_time=timestamp(self.start_time),
            clock_time=timestamp(self.module.clock.timestamp()),
            message=self.module.status_message(),
            activity=self.module.activity(),
        )
        self.module.describe_status(status)
        return status

    @staticmethod
    def _required_id(work_order_id: str, context: grpc.ServicerContext) -> str:
        if not work_order_id:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: must not be empty")
        return work_order_id

    # -- streams ---------------------------------------------------------------------------------

    @property
    def open_streams(self) -> int:
        """Watch and FetchFile streams open now."""
        return self._max_streams - self._stream_slots._value  # the semaphore's count

    def _take_stream_slot(self, context: grpc.ServicerContext) -> None:
        if not self._stream_slots.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._max_streams} streams are open already (server.max_streams); try again later",
            )

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.Event]:
        unknown = [kind for kind in request.kinds if kind not in EVENT_KINDS]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"kinds: unknown event kind {unknown[0]}")
        wanted = {EVENT_KINDS[kind] for kind in request.kinds}
        self._take_stream_slot(context)
        context.send_initial_metadata(())  # tells the subscriber its stream is live before any event comes
        hub = self.journal.events
        context.add_callback(hub.wake)
        try:
            last = request.after_sequence
            while context.is_active() and not hub.closed:
                batch = hub.after(last)
                if batch is None:  # fallen behind the in-memory window: read the journal
                    batch = self.journal.read_events(last)
                if not batch:
                    if request.replay_only:
                        return
                    hub.wait(last, WATCH_POLL_SECONDS)
                    continue
                for event in batch:
                    last = event.sequence
                    if request.work_order_id and event.work_order_id != request.work_order_id:
                        continue
                    if wanted and event.WhichOneof("kind") not in wanted:
                        continue
                    yield event
        finally:
            self._stream_slots.release()

    def FetchFile(self, request: pb.FetchFileRequest, context: grpc.ServicerContext) -> Iterator[pb.FileChunk]:
        if not request.path:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "path: must not be empty")
        if request.chunk_size > MAX_CHUNK:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk_size: at most {MAX_CHUNK} bytes")
        try:
            path = confine(request.path, self.storage_root)
        except UnusablePath as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"path: {exc}")
        self._take_stream_slot(context)
        try:
            try:
                opened = open_regular(path, self.storage_root)
            except NotRegularFile:
                context.abort(grpc.StatusCode.NOT_FOUND, f"path: no stored file {request.path!r}")
            chunk_size = min(request.chunk_size or DEFAULT_CHUNK, SERVED_CHUNK)
            digest = hashlib.sha256()
            # The size is the open file's: a file replaced meanwhile is served whole as it was when opened.
            with opened as stream:
                status = os.fstat(stream.fileno())
                size = status.st_size
                offset = 0
                while context.is_active():
                    data = stream.read(min(chunk_size, size - offset))
                    if offset + len(data) < size and not data:
                        context.abort(
                            grpc.StatusCode.ABORTED,
                            f"path: {request.path!r} shrank from {size} to "
                            f"{offset} bytes while it was sent; fetch it again",
                        )
                    digest.update(data)
                    last = offset + len(data) >= size
                    if last and _changed(status, os.fstat(stream.fileno())):
                        context.abort(
                            grpc.StatusCode.ABORTED,
                            f"path: {request.path!r} was written to while it was sent; fetch it again",
                        )
                    yield pb.FileChunk(
                        data=data, offset=offset, size_bytes=size, last=last, sha256=digest.hexdigest() if last else ""
                    )
                    offset += len(data)
                    if last:
                        return
        finally:
            self._stream_slots.release()


def _changed(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns)
