"""Work orders through a live daemon: life cycle, idempotency, priorities, cancellation, failures."""

from __future__ import annotations

import grpc
import pytest
from support import dome_order, wait_for

from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub

DONE, FAILED, CANCELLED, QUEUED, RUNNING = (
    pb.WORK_ORDER_STATE_DONE,
    pb.WORK_ORDER_STATE_FAILED,
    pb.WORK_ORDER_STATE_CANCELLED,
    pb.WORK_ORDER_STATE_QUEUED,
    pb.WORK_ORDER_STATE_RUNNING,
)


def final_status(stub, work_order_id: str, timeout: float = 20.0) -> pb.WorkOrderStatus:
    def done():
        status = stub.GetWorkOrder(pb.GetWorkOrderRequest(id=work_order_id))
        return status if status.state in (DONE, FAILED, CANCELLED) else None

    return wait_for(done, timeout)


def test_work_order_runs_to_done_with_progress_and_history(stub):
    receipt = stub.Submit(dome_order("dome-1"))
    assert receipt.id == "dome-1" and not receipt.already_known
    status = final_status(stub, "dome-1")
    assert status.state == DONE
    assert status.message == "dome DOME_ACTION_OPEN done"
    assert status.progress_percent == 100
    assert status.attempts == 1 and status.task == "dome_control" and status.priority == 50
    assert status.start_time.ToNanoseconds() <= status.end_time.ToNanoseconds()
    events = list(stub.Watch(pb.WatchRequest(work_order_id="dome-1", replay_only=True)))
    states = [e.work_order_update.state for e in events]
    assert states[0] == QUEUED and states[1] == RUNNING and states[-1] == DONE
    assert [e.work_order_update.progress_percent for e in events if e.work_order_update.message.startswith("step")] == [
        25,
        50,
        75,
        100,
    ]


def test_server_assigns_an_id_when_empty(stub):
    receipt = stub.Submit(dome_order(""))
    assert receipt.id.startswith("telescope-")
    assert stub.GetWorkOrder(pb.GetWorkOrderRequest(id=receipt.id)).id == receipt.id


def test_resubmitting_a_known_id_returns_the_same_receipt_and_runs_once(stub, drill):
    first = stub.Submit(dome_order("same"))
    second = stub.Submit(dome_order("same"))
    assert second.already_known and second.id == first.id and second.accept_time == first.accept_time
    final_status(stub, "same")
    third = stub.Submit(dome_order("same"))
    assert third.already_known
    events = list(stub.Watch(pb.WatchRequest(work_order_id="same", replay_only=True)))
    assert sum(e.work_order_update.state == RUNNING and e.work_order_update.message == "running" for e in events) == 1
    assert stub.GetWorkOrder(pb.GetWorkOrderRequest(id="same")).attempts == 1


def test_products_and_domain_events_are_journaled(stub, drill):
    targets = [pb.Target(name=f"t{i}", ra_deg=10.0 * i, dec_deg=-20.0) for i in range(3)]
    stub.Submit(pb.WorkOrder(id="obs", observe_targets=pb.ObserveTargets(targets=targets)))
    status = final_status(stub, "obs")
    assert status.state == DONE and len(status.products) == 3
    for product in status.products:
        assert product.size_bytes > 0 and len(product.sha256) == 64
    ready = [e for e in stub.Watch(pb.WatchRequest(kinds=[pb.EVENT_KIND_IMAGE_READY], replay_only=True))]
    assert [e.image_ready.object for e in ready] == ["t0", "t1", "t2"]
    assert all(e.work_order_id == "obs" for e in ready)


def test_a_failing_handler_fails_its_work_order_with_the_reason(stub):
    stub.Submit(
        pb.WorkOrder(id="bad", observe_targets=pb.ObserveTargets(targets=[pb.Target(name="fail", ra_deg=1, dec_deg=1)]))
    )
    status = final_status(stub, "bad")
    assert status.state == FAILED
    assert status.message == "targets[0]: cannot observe fail"


def test_cancel_a_queued_work_order(make_config, start_daemon):
    daemon = start_daemon(make_config(telescope={"port": 0, "workers": 1}))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(dome_order("first"))
        stub.Submit(dome_order("second"))
        cancelled = stub.CancelWorkOrder(pb.CancelWorkOrderRequest(id="second", reason="weather"))
        assert cancelled.state == CANCELLED and cancelled.message == "cancelled: weather"
        assert final_status(stub, "first").state == DONE
        assert stub.GetWorkOrder(pb.GetWorkOrderRequest(id="second")).attempts == 0


def test_cancel_a_running_work_order(stub):
    stub.Submit(dome_order("long"))
    wait_for(lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="long")).state == RUNNING)
    answer = stub.CancelWorkOrder(pb.CancelWorkOrderRequest(id="long", reason="retraction"))
    assert answer.state in (RUNNING, CANCELLED)
    assert final_status(stub, "long").state == CANCELLED
    # Cancelling a finished work order changes nothing.
    assert stub.CancelWorkOrder(pb.CancelWorkOrderRequest(id="long")).state == CANCELLED


def test_higher_priority_runs_first(make_config, start_daemon):
    daemon = start_daemon(make_config(telescope={"port": 0, "workers": 1}))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(dome_order("blocker"))
        wait_for(lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="blocker")).state == RUNNING)
        stub.Submit(dome_order("low", priority=10))
        stub.Submit(dome_order("high", priority=90))
        stub.Submit(dome_order("normal"))
        for id in ("low", "high", "normal"):
            final_status(stub, id, timeout=30)
        starts = {
            id: stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id)).start_time.ToNanoseconds()
            for id in ("low", "high", "normal")
        }
        assert starts["high"] < starts["normal"] < starts["low"]


@pytest.mark.parametrize(
    "call, request_, code",
    [
        ("GetWorkOrder", pb.GetWorkOrderRequest(id="nope"), grpc.StatusCode.NOT_FOUND),
        ("GetWorkOrder", pb.GetWorkOrderRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ("CancelWorkOrder", pb.CancelWorkOrderRequest(id="nope"), grpc.StatusCode.NOT_FOUND),
    ],
)
def test_unknown_work_orders(stub, call, request_, code):
    with pytest.raises(grpc.RpcError) as error:
        getattr(stub, call)(request_)
    assert error.value.code() == code


def test_status_reports_module_queue_and_clock(stub):
    status = stub.GetStatus(pb.GetStatusRequest())
    assert status.module == "telescope" and status.version
    assert status.clock_time.seconds > 0
