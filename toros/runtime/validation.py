"""Validation of work orders before they are accepted: every problem names the field path.

The runtime checks what every work order has (id, priority, which module handles the task); each module
checks its own tasks with a ``Checker``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from toros.generated import toros_pb2 as pb
from toros.runtime.files import UnusablePath, confine

# Which module handles each task of WorkOrder.task (the public contract, ../shared/DESIGN.md).
TASK_MODULES = {
    "observe_targets": "telescope",
    "take_calibrations": "telescope",
    "night_operation": "telescope",
    "dome_control": "telescope",
    "calibrate_night": "preprocessor",
    "calibrate_images": "preprocessor",
    "find_transients": "preprocessor",
    "label_candidate": "preprocessor",
    "reprocess_night": "preprocessor",
    "process_alert": "alert",
}
DEFAULT_PRIORITY = 50
WORK_ORDER_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MIN_TIMESTAMP = -62135596800  # 0001-01-01T00:00:00Z
_MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z


class InvalidWorkOrder(ValueError):
    """A work order that cannot be accepted; the message starts with the offending field path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Checker:
    """Checks fields of one message; ``at`` descends into a sub-message with a longer field path."""

    def __init__(self, field_path: str, storage_root: Path) -> None:
        self.field_path = field_path
        self.storage_root = storage_root

    def at(self, name: str) -> Checker:
        return Checker(f"{self.field_path}.{name}" if self.field_path else name, self.storage_root)

    def fail(self, name: str, problem: str) -> None:
        raise InvalidWorkOrder(self.at(name).field_path, problem)

    def number(self, name: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
        """A finite number in [low, high] (or [low, high) when ``high_open``)."""
        if not math.isfinite(value):
            self.fail(name, f"must be a finite number, got {value}")
        if value < low or value > high or (high_open and value == high):
            self.fail(name, f"must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value:g}")

    def text(self, name: str, value: str, *, max_length: int = 128, required: bool = True) -> None:
        if required and not value.strip():
            self.fail(name, "must not be empty")
        if len(value) > max_length:
            self.fail(name, f"must be at most {max_length} characters, got {len(value)}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            self.fail(name, "must not contain control characters")

    def count(self, name: str, value: int, low: int, high: int) -> None:
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high}, got {value}")

    def duration(
        self, name: str, message: Message, parent: Message, *, low: float, high: float, required: bool = False
    ) -> None:
        """A Duration field in seconds: unset is allowed unless ``required``; otherwise in (low, high]."""
        if not parent.HasField(name):
            if required:
                self.fail(name, "must be set")
            return
        assert isinstance(message, Duration)
        if not (-999_999_999 <= message.nanos <= 999_999_999):
            self.fail(name, "nanos out of range")
        seconds = message.seconds + message.nanos / 1e9
        if not low < seconds <= high:
            self.fail(name, f"must be more than {low:g} s and at most {high:g} s, got {seconds:g} s")

    def timestamp(self, name: str, message: Timestamp, parent: Message) -> None:
        if parent.HasField(name) and (
            not _MIN_TIMESTAMP <= message.seconds <= _MAX_TIMESTAMP or not 0 <= message.nanos < 1_000_000_000
        ):
            self.fail(name, "is not a valid time")

    def enum(self, name: str, value: int, enum_type: Any, *, allowed: set[int] | None = None) -> None:
        """An enum value that is set, known, and (if given) among ``allowed``."""
        names = enum_type.keys()
        if value not in enum_type.values():
            self.fail(name, f"unknown value {value}")
        if value == 0:
            self.fail(name, f"must be set (one of {', '.join(n for n in names if not n.endswith('UNSPECIFIED'))})")
        if allowed is not None and value not in allowed:
            self.fail(name, f"must be one of {', '.join(enum_type.Name(v) for v in sorted(allowed))}")

    def path(self, name: str, value: str) -> Path:
        """A path inside the storage root (absolute, or relative to the root)."""
        self.text(name, value, max_length=4096)
        try:
            return confine(value, self.storage_root)
        except UnusablePath as exc:
            self.fail(name, str(exc))
            raise AssertionError("unreachable") from exc


def check_envelope(order: pb.WorkOrder, module: str, storage_root: Path) -> tuple[str, int]:
    """Checks the fields every work order has; returns the task name and the effective priority."""
    check = Checker("", storage_root)
    if order.id and not WORK_ORDER_ID.fullmatch(order.id):
        check.fail("id", "must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    check.text("requester", order.requester, required=False)
    check.count("priority", order.priority, 0, 100)
    check.timestamp("create_time", order.create_time, order)
    task = order.WhichOneof("task")
    if task is None:
        check.fail("task", f"no task is set (one of {', '.join(TASK_MODULES)})")
    handler = TASK_MODULES[task]
    if handler != module:
        check.fail("task", f"{task} is handled by the {handler} module, not by {module}")
    return task, order.priority or DEFAULT_PRIORITY
