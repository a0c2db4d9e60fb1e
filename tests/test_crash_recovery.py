"""kill -9 in the middle of work: every accepted work order is found again and finishes exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc

from conftest import wait_for, write_config
from support import dome_order
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub

SUPPORT = Path(__file__).with_name("support.py")
FINAL = (pb.WORK_ORDER_STATE_DONE, pb.WORK_ORDER_STATE_FAILED, pb.WORK_ORDER_STATE_CANCELLED)


def launch(config: Path, port_file: Path) -> tuple[subprocess.Popen, int]:
    port_file.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, str(SUPPORT), str(config), str(port_file)], stderr=subprocess.DEVNULL)
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), timeout=30))
    return process, port


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
                return all(state in FINAL for state in states) and states

            states = wait_for(all_final, timeout=60)
            assert set(states) == {pb.WORK_ORDER_STATE_DONE}
            resumed = [stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id)).attempts for id in ids]
            assert resumed.count(2) == 2 and resumed.count(1) == 6, resumed
            events = list(stub.Watch(pb.WatchRequest(replay_only=True)))
            sequences = [e.sequence for e in events]
            assert sequences == list(range(1, len(sequences) + 1)), "sequences survive the crash without gaps"
            for id in ids:
                done = [e for e in events if e.work_order_id == id and e.work_order_update.state == pb.WORK_ORDER_STATE_DONE]
                assert len(done) == 1, f"{id} finished {len(done)} times"
            # Resubmitting after the crash is still recognised.
            assert stub.Submit(dome_order(ids[0])).already_known
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
