"""The FrontDesk servicer under pytest-grpc's fixtures, with enough workers for a stream beside unary calls."""

from __future__ import annotations

import pytest
from support import DrillTelescope, dome_order

from toros.generated import toros_pb2 as pb
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.runtime.channels import connector
from toros.runtime.clock import Clock
from toros.runtime.frontdesk import FrontDesk
from toros.runtime.journal import Journal
from toros.runtime.module import Services
from toros.runtime.workers import WorkerPool

# Read by pytest-grpc as a module attribute: its default of one worker would deadlock a unary call beside an
# open Watch stream.
grpc_max_workers = 8


@pytest.fixture(scope="module")
def grpc_add_to_server():
    return pb_grpc.add_FrontDeskServicer_to_server


@pytest.fixture(scope="module")
def grpc_stub_cls(grpc_channel):
    return pb_grpc.FrontDeskStub


@pytest.fixture(scope="module")
def grpc_servicer(tmp_path_factory):
    from support import write_config

    from toros.config import load_config

    folder = tmp_path_factory.mktemp("pytest-grpc")
    config = load_config(write_config(folder, clock={"rate": 50.0}))
    clock = Clock(rate=50.0)
    journal = Journal(config.database, "telescope", clock)
    module = DrillTelescope(
        Services(
            clock,
            journal,
            submit=lambda order: journal.submit(order, "dome_control", 50),
            storage_root=config.storage.root,
            database=config.database,
            connect=connector(config.security),
        )
    )
    workers = WorkerPool(journal, clock, module.tasks(), 2, "telescope")
    workers.start()
    yield FrontDesk(module, journal, workers, config.storage.root, max_streams=4)
    workers.stop(timeout=5)
    journal.close()


def test_a_unary_call_beside_an_open_stream(grpc_stub):
    stream = grpc_stub.Watch(pb.WatchRequest())
    receipt = grpc_stub.Submit(dome_order("beside-stream"), timeout=5)
    first = next(stream)
    assert first.work_order_id == "beside-stream" and first.work_order_update.state == pb.WORK_ORDER_STATE_QUEUED
    assert grpc_stub.GetWorkOrder(pb.GetWorkOrderRequest(id=receipt.id), timeout=5).id == "beside-stream"
    stream.cancel()
