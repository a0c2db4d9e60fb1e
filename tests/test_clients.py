"""Clients in clients/: Node.js (@grpc/grpc-js loading proto/toros.proto), the C# project, and the Python
operator scripts — each against a live daemon."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from support import REPO, camera_daemon, drill_daemon, wait_for, write_config

from toros.config import load_config
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub

NODE = shutil.which("node")
NODE_CLIENT = REPO / "clients" / "node"


@pytest.fixture(scope="module")
def node_client() -> Path:
    if NODE is None:
        if os.environ.get("TOROS_REQUIRE_NODE"):
            pytest.fail("Node.js is required here (TOROS_REQUIRE_NODE) but not installed")
        pytest.skip("Node.js is not installed")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        assert npm, "Node.js without npm"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_CLIENT, check=True, capture_output=True, timeout=300
        )
    return NODE_CLIENT / "toros-client.js"


def test_node_client_submits_and_follows_a_work_order(node_client, make_config, start_daemon, tmp_path):
    daemon = start_daemon(make_config(security={"token": "node-token"}), drill_daemon)
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"id": "from-node", "dome_control": {"action": "DOME_ACTION_OPEN"}}))
    command = [NODE, str(node_client), "--address", f"127.0.0.1:{daemon.port}", "--work-order", str(order)]
    done = subprocess.run([*command, "--token", "node-token"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0] == {"submitted": "from-node", "already_known": False}
    states = [line["work_order_update"]["state"] for line in lines[1:]]
    assert states[-1] == "WORK_ORDER_STATE_DONE" and "WORK_ORDER_STATE_RUNNING" in states
    assert [line["sequence"] for line in lines[1:]] == sorted((line["sequence"] for line in lines[1:]), key=int)
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "Submit refused: UNAUTHENTICATED" in refused.stderr
    order.write_text(json.dumps({"dome_control": {"action": "DOME_ACTION_SLEW", "azimuth_deg": 400}}))
    invalid = subprocess.run([*command, "--token", "node-token"], capture_output=True, text=True, timeout=60)
    assert invalid.returncode == 2
    assert "INVALID_ARGUMENT: dome_control.azimuth_deg: must be in [0, 360), got 400" in invalid.stderr


def test_csharp_client_is_generated_from_the_same_proto_and_uses_only_its_rpcs():
    project = (REPO / "clients" / "csharp" / "Toros.Client.csproj").read_text()
    assert 'Protobuf Include="../../proto/toros.proto" GrpcServices="Client"' in project
    for package in ("Grpc.Net.Client", "Google.Protobuf", "Grpc.Tools"):
        assert f'Include="{package}"' in project
    program = (REPO / "clients" / "csharp" / "Program.cs").read_text()
    rpcs = set(re.findall(r"rpc (\w+)\(", (REPO / "proto" / "toros.proto").read_text()))
    used = set(re.findall(r"frontDesk\.(\w+?)(?:Async)?\(", program))
    assert used and used <= rpcs, used - rpcs


def test_observe_csv_script(make_config, start_daemon, tmp_path):
    config_path = write_config(tmp_path)
    daemon = start_daemon(load_config(config_path), drill_daemon)
    targets = tmp_path / "tonight.csv"
    targets.write_text("name,ra_deg,dec_deg,exposure_count\nNGC 253,11.888,-25.288,2\nM83,204.25,-29.87,1\n")
    script = REPO / "clients" / "python" / "observe_csv.py"
    command = [sys.executable, str(script), "--config", str(config_path), "--address", f"127.0.0.1:{daemon.port}"]
    result = subprocess.run(
        [*command, "--targets", str(targets), "--id", "csv-1", "--wait"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "csv-1: 2 targets submitted" in result.stdout and "DONE: 2 targets observed" in result.stdout
    targets.write_text("name,ra_deg,dec_deg\nbad,10,95\n")
    bad = subprocess.run([*command, "--targets", str(targets)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "line 2.dec_deg: must be in [-90, 90], got 95" in bad.stderr


def test_fetch_night_script_copies_and_checks_every_image(start_daemon, tmp_path):
    config_path = write_config(tmp_path)
    daemon = start_daemon(load_config(config_path), camera_daemon)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(
            pb.WorkOrder(id="bias", take_calibrations=pb.TakeCalibrations(image_type=pb.IMAGE_TYPE_BIAS, count=3))
        )
        wait_for(lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="bias")).state == pb.WORK_ORDER_STATE_DONE)
        sent = {
            Path(e.image_ready.path).name: e.image_ready.sha256
            for e in stub.Watch(pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_IMAGE_READY]))
        }
    out = tmp_path / "copies"
    command = [
        sys.executable,
        str(REPO / "clients" / "python" / "fetch_night.py"),
        "--config",
        str(config_path),
        "--address",
        f"127.0.0.1:{daemon.port}",
        "--night",
        "2026-11-22",
        "--out",
        str(out),
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "3 images copied, 0 already there" in first.stdout
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.iterdir()} == sent
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "0 images copied, 3 already there" in again.stdout
