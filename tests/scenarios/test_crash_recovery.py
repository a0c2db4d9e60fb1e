"""kill -9 in the middle of work: every accepted work order is found again and finishes exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
from support import SUPPORT_SCRIPT, dome_order, launch, wait_for, write_config

from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.runtime.states import FINAL_STATES


def observe(id: str, target: str) -> pb.WorkOrder:
    return pb.WorkOrder(
        id=id, observe_targets=pb.ObserveTargets(targets=[pb.Target(name=target, ra_deg=10, dec_deg=-20)])
    )


def test_a_work_order_that_kills_the_daemon_each_time_ends_failed(tmp_path):
    """Before: it was resumed after every restart, without end (one that exhausted memory did so again)."""
    config = write_config(tmp_path, telescope={"port": 0, "max_attempts": 2})
    port_file = tmp_path / "port"
    process, port = launch(config, port_file)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            FrontDeskStub(channel).Submit(observe("poison-1", "poison"))
        except grpc.RpcError as error:
            # Journaled before the answer, and started at once: on a busy machine the daemon may die before its
            # answer leaves. That it was accepted shows below (it ends FAILED after its two attempts).
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert process.wait(timeout=30) == -signal.SIGKILL
    # The restart resumes it (attempt 2 of 2), and it takes the daemon down again, maybe before it is listening.
    again = subprocess.Popen(
        [sys.executable, str(SUPPORT_SCRIPT), str(config), str(tmp_path / "port-2")], stderr=subprocess.DEVNULL
    )
    assert again.wait(timeout=60) == -signal.SIGKILL
    process, port = launch(config, port_file)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = FrontDeskStub(channel)
            status = stub.GetWorkOrder(pb.GetWorkOrderRequest(id="poison-1"))
            assert status.state == pb.WORK_ORDER_STATE_FAILED and status.attempts == 2
            assert status.message.startswith("gave up after 2 attempts: the daemon stopped during each (last: ")
            stub.Submit(dome_order("after"))
            assert wait_for(
                lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="after")).state == pb.WORK_ORDER_STATE_DONE
            )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_a_work_order_cancelled_while_running_stays_cancelled_after_kill_9(tmp_path):
    """Before: the daemon died before the handler noticed the cancellation, and the restart resumed it."""
    config = write_config(tmp_path, telescope={"port": 0})
    port_file = tmp_path / "port"
    process, port = launch(config, port_file)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(observe("stubborn-1", "stubborn"))
        wait_for(
            lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="stubborn-1")).state == pb.WORK_ORDER_STATE_RUNNING
        )
        answer = stub.CancelWorkOrder(pb.CancelWorkOrderRequest(id="stubborn-1", reason="retracted"))
        assert answer.state == pb.WORK_ORDER_STATE_RUNNING and answer.message == "cancellation requested: retracted"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process, port = launch(config, port_file)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            status = FrontDeskStub(channel).GetWorkOrder(pb.GetWorkOrderRequest(id="stubborn-1"))
            assert (
                status.state == pb.WORK_ORDER_STATE_CANCELLED and status.message == "cancelled while running: retracted"
            )
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_a_graceful_stop_does_not_count_an_attempt(make_config, start_daemon):
    config = make_config(telescope={"port": 0, "workers": 1, "max_attempts": 1})
    daemon = start_daemon(config)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(dome_order("long"))
        wait_for(lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="long")).state == pb.WORK_ORDER_STATE_RUNNING)
    daemon.stop()
    daemon = start_daemon(config)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        status = wait_for(
            lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="long"))).state in FINAL_STATES and s, timeout=30
        )
        assert status.state == pb.WORK_ORDER_STATE_DONE and status.attempts == 1


def test_kill_9_then_restart_resumes_unfinished_work_exactly_once(tmp_path):
    config = write_config(tmp_path, clock={"rate": 4.0}, telescope={"port": 0, "workers": 2})
    port_file = tmp_path / "port"
    process, port = launch(config, port_file)
    ids = [f"order-{i}" for i in range(8)]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = FrontDeskStub(channel)
        for id in ids:
            stub.Submit(dome_order(id))
        wait_for(lambda: stub.GetStatus(pb.GetStatusRequest()).running == 2)
        time.sleep(0.3)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    process, port = launch(config, port_file)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = FrontDeskStub(channel)

            def all_final():
                states = [stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id)).state for id in ids]
                return all(state in FINAL_STATES for state in states) and states

            states = wait_for(all_final, timeout=60)
            assert set(states) == {pb.WORK_ORDER_STATE_DONE}
            resumed = [stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id)).attempts for id in ids]
            assert resumed.count(2) == 2 and resumed.count(1) == 6, resumed
            events = list(stub.Watch(pb.WatchRequest(replay_only=True)))
            sequences = [e.sequence for e in events]
            assert sequences == list(range(1, len(sequences) + 1)), "sequences survive the crash without gaps"
            for id in ids:
                done = [
                    e for e in events if e.work_order_id == id and e.work_order_update.state == pb.WORK_ORDER_STATE_DONE
                ]
                assert len(done) == 1, f"{id} finished {len(done)} times"
            # Resubmitting after the crash is still recognised.
            assert stub.Submit(dome_order(ids[0])).already_known
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
