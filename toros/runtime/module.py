"""What a module adds to the runtime: its tasks (validation and execution), devices and background work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic

from toros.generated import toros_pb2 as pb
from toros.runtime.channels import Connect
from toros.runtime.clock import Clock
from toros.runtime.config import DatabaseConfig
from toros.runtime.journal import Journal, WorkOrderRecord
from toros.runtime.validation import Checker
from toros.runtime.workers import TaskContext, TaskMessage


@dataclass(frozen=True)
class Task(Generic[TaskMessage]):
    """One task of WorkOrder.task: how to check it, how to carry it out (None: not in this version), and
    whether it makes sense in the module's current state (a reason to refuse the work order now, or None; it
    sees the whole order: who asks may matter). Typed by the task's message, as its handler is."""

    validate: Callable[[TaskMessage, Checker], None]
    run: Callable[[TaskContext[TaskMessage]], str | None] | None = None
    precondition: Callable[[pb.WorkOrder], str | None] | None = None


@dataclass(frozen=True)
class Services:
    """What the runtime lends a module: its clock and journal, a way to submit work orders to itself, where its
    files live, and how to reach other daemons. Its own settings are handed to it by whoever composes the node
    (``toros.daemons``): a module never sees another's section.

    ``submit`` accepts a work order from the module itself (e.g. one per image a followed telescope
    announces): it is journaled and queued like one from a client, and is idempotent on its id.
    """

    clock: Clock
    journal: Journal
    submit: Callable[[pb.WorkOrder], tuple[WorkOrderRecord, bool]]
    storage_root: Path
    database: DatabaseConfig  # for the module's own stores (masters, references, candidates)
    connect: Connect  # a channel to another daemon, with this node's TLS and token


class Module:
    """Base of the alert, telescope and preprocessor modules."""

    name: ClassVar[str]

    def __init__(self, services: Services) -> None:
        self.services = services
        self.clock = services.clock
        self.journal = services.journal
        self.storage_root = services.storage_root

    def tasks(self) -> dict[str, Task[Any]]:
        """The tasks this module accepts, by WorkOrder.task field name."""
        return {}

    def start(self) -> None:
        """Prepares the module (called before the daemon reports SERVING) and starts background work."""

    def stop(self) -> None:
        """Stops background work; called once when the daemon shuts down."""

    def devices(self) -> list[pb.Device]:
        return []

    def status_message(self) -> str:
        return ""

    def activity(self) -> str:
        """What the module is doing now, in a few words (ModuleStatus.activity)."""
        return ""

    def describe_status(self, status: pb.ModuleStatus) -> None:
        """Adds this module's own fields to its status (the telescope's operator hold)."""
