"""Sending target lists to telescopes and cancelling them, retried while a telescope is unreachable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.runtime.channels import Connect

log = logging.getLogger(__name__)

RETRIED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}


Answer = TypeVar("Answer")


class Relay:
    def __init__(self, connect: Connect, retry_seconds: float, wait: Callable[[float], None]) -> None:
        self.connect = connect
        self.retry_seconds = retry_seconds
        self.wait = wait  # sleeps, and ends early (raising) when the work order is cancelled or the daemon stops

    def _call(self, address: str, call: Callable[[FrontDeskStub], Answer]) -> Answer:
        deadline = time.monotonic() + self.retry_seconds
        delay = 1.0
        while True:
            channel = self.connect(address)
            try:
                return call(FrontDeskStub(channel))
            except grpc.RpcError as exc:
                if exc.code() not in RETRIED or time.monotonic() + delay > deadline:
                    raise
                log.warning("telescope at %s: %s; retrying in %.0f s", address, exc.code().name, delay)
            finally:
                channel.close()
            self.wait(delay)
            delay = min(2 * delay, 60.0)

    def submit(self, address: str, order: pb.WorkOrder) -> pb.SubmitResponse:
        answer: pb.SubmitResponse = self._call(address, lambda stub: stub.Submit(order, timeout=30))
        return answer

    def cancel(self, address: str, work_order_id: str, reason: str) -> pb.WorkOrderStatus:
        status: pb.WorkOrderStatus = self._call(
            address,
            lambda stub: stub.CancelWorkOrder(pb.CancelWorkOrderRequest(id=work_order_id, reason=reason), timeout=30),
        )
        return status
