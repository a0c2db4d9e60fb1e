"""Work-order states as the contract names them: which ones are final, and their short names for people."""

from __future__ import annotations

from toros.generated import toros_pb2 as pb

QUEUED = pb.WORK_ORDER_STATE_QUEUED
RUNNING = pb.WORK_ORDER_STATE_RUNNING
DONE = pb.WORK_ORDER_STATE_DONE
FAILED = pb.WORK_ORDER_STATE_FAILED
CANCELLED = pb.WORK_ORDER_STATE_CANCELLED
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED})


def state_name(state: int) -> str:
    """ "done", "failed", "queued", …: a state as the CLI and logs show it."""
    return pb.WorkOrderState.Name(state).removeprefix("WORK_ORDER_STATE_").lower()
