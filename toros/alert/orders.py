"""Checks of the alert module's work orders."""

from __future__ import annotations

from toros.generated import toros_pb2 as pb
from toros.runtime.validation import Checker

MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


def check_process_alert(task: pb.ProcessAlert, check: Checker) -> None:
    if not 1 <= len(task.payload) <= MAX_PAYLOAD_BYTES:
        check.fail("payload", f"must hold 1 byte to {MAX_PAYLOAD_BYTES} bytes, got {len(task.payload)}")
    if task.format != pb.ALERT_FORMAT_UNSPECIFIED:
        check.enum("format", task.format, pb.AlertFormat)
    check.text("source", task.source, max_length=1024, required=False)
