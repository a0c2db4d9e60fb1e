"""What a module adds to the runtime: its tasks (validation and execution), devices and background work."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.config import NodeConfig
from toros.runtime.journal import Journal, WorkOrderRecord
from toros.runtime.validation import Checker
from toros.runtime.workers import TaskContext


@dataclass(frozen=True)
class Task:
    """One task of WorkOrder.task: how to check it, how to carry it out (None: not in this version), and
    whether it makes sense in the module's current state (a reason to refuse the work order now, or None; it
    sees the whole order: who asks may matter)."""

    validate: Callable[[Any, Checker], None]
    run: Callable[[TaskContext], str | None] | None = None
    precondition: Callable[[pb.WorkOrder], str | None] | None = None


@dataclass(frozen=True)
class Services:
    """What the runtime lends a module.

    ``submit`` accepts a work order from the module itself (e.g. one per image a followed telescope
    announces): it is journaled and queued like one from a client, and is idempotent on its id.
    """

    config: NodeConfig
    clock: Clock
    journal: Journal
    submit: Callable[[pb.WorkOrder], tuple[WorkOrderRecord, bool]]


class Module:
    """Base of the alert, telescope and preprocessor modules."""

    name: ClassVar[str]

    def __init__(self, services: Services) -> None:
        self.services = services
        self.config = services.config
        self.clock = services.clock
        self.journal = services.journal

    def tasks(self) -> dict[str, Task]:
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
