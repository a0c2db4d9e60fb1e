"""The public contract: proto names fixed by DESIGN.md, buf lint, no breaking change, generated code current."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, VENV_BIN

from toros.generated import toros_pb2 as pb

BUF = shutil.which("buf", path=str(VENV_BIN)) or shutil.which("buf")


def buf(*args: str) -> subprocess.CompletedProcess:
    assert BUF, "buf (PyPI buf-bin) is installed by the test extra"
    return subprocess.run([BUF, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean():
    result = buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_the_released_contract():
    result = buf("breaking", "--against", "proto/toros.v1.binpb")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_breaking_does_catch_a_breaking_change(tmp_path):
    changed = tmp_path / "proto"
    changed.mkdir()
    text = (REPO / "proto" / "toros.proto").read_text()
    (changed / "toros.proto").write_text(text.replace("string requester = 3;", "reserved 3;"))
    (tmp_path / "buf.yaml").write_text((REPO / "buf.yaml").read_text())
    result = subprocess.run(
        [BUF, "breaking", "--against", str(REPO / "proto" / "toros.v1.binpb")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and 'name "requester"' in result.stdout


def test_generated_code_is_what_the_proto_generates(tmp_path):
    (tmp_path / "proto").mkdir()
    shutil.copy(REPO / "proto" / "toros.proto", tmp_path / "proto" / "toros.proto")
    (tmp_path / "toros" / "generated").mkdir(parents=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Itoros/generated=proto",
            "--python_out=.",
            "--grpc_python_out=.",
            "--pyi_out=.",
            "proto/toros.proto",
        ],
        cwd=tmp_path,
        check=True,
    )
    for name in ("toros_pb2.py", "toros_pb2_grpc.py", "toros_pb2.pyi"):
        assert filecmp.cmp(
            tmp_path / "toros" / "generated" / name, REPO / "toros" / "generated" / name, shallow=False
        ), f"toros/generated/{name} is stale: run `make proto`"


def test_fixed_names_of_the_contract():
    file = pb.DESCRIPTOR
    assert file.package == "toros.v1"
    assert file.GetOptions().csharp_namespace == "Toros.V1"
    service = file.services_by_name["FrontDesk"]
    kinds = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    assert kinds == {
        "Submit": ("WorkOrder", "SubmitResponse"),
        "GetWorkOrder": ("GetWorkOrderRequest", "WorkOrderStatus"),
        "CancelWorkOrder": ("CancelWorkOrderRequest", "WorkOrderStatus"),
        "GetStatus": ("GetStatusRequest", "ModuleStatus"),
        "Watch": ("WatchRequest", "Event"),
        "FetchFile": ("FetchFileRequest", "FileChunk"),
    }
    streaming = {m.name for m in service.methods if m.server_streaming}
    assert streaming == {"Watch", "FetchFile"}
    assert not any(m.client_streaming for m in service.methods)
    work_order = file.message_types_by_name["WorkOrder"]
    assert {"id", "create_time", "requester", "priority"} <= set(work_order.fields_by_name)
    assert {f.name for f in work_order.oneofs_by_name["task"].fields} == {
        "observe_targets",
        "take_calibrations",
        "night_operation",
        "dome_control",
        "calibrate_night",
        "calibrate_images",
        "process_alert",
        "find_transients",
        "label_candidate",
        "reprocess_night",
    }
    event = file.message_types_by_name["Event"]
    assert {"sequence", "time", "work_order_id"} <= set(event.fields_by_name)
    assert {"image_ready", "calibration_progress", "work_order_update", "alert_processed", "transient_candidate"} <= {
        f.name for f in event.oneofs_by_name["kind"].fields
    }
    assert pb.WorkOrderState.keys() == [
        "WORK_ORDER_STATE_UNSPECIFIED",
        "WORK_ORDER_STATE_QUEUED",
        "WORK_ORDER_STATE_RUNNING",
        "WORK_ORDER_STATE_DONE",
        "WORK_ORDER_STATE_FAILED",
        "WORK_ORDER_STATE_CANCELLED",
    ]


@pytest.mark.parametrize(
    "message, fields",
    [
        ("SubmitResponse", {"id"}),
        ("GetWorkOrderRequest", {"id"}),
        ("CancelWorkOrderRequest", {"id"}),
        ("WorkOrderStatus", {"id", "state", "message", "progress_percent", "products"}),
        ("Product", {"path"}),
        ("WatchRequest", {"after_sequence", "work_order_id"}),
        ("FetchFileRequest", {"path"}),
        ("FileChunk", {"data"}),
        ("ObserveTargets", {"targets", "alert_id"}),
        ("Target", {"name", "ra_deg", "dec_deg", "exposure_time", "exposure_count", "filter"}),
        ("ProcessAlert", {"payload"}),
        ("ImageReady", {"path", "sha256", "size_bytes", "image_type", "filter", "exposure_time", "object", "night"}),
    ],
)
def test_fixed_fields(message, fields):
    assert fields <= set(pb.DESCRIPTOR.message_types_by_name[message].fields_by_name)


def test_calibrate_night_directory_is_the_first_field():
    assert pb.CalibrateNight.DESCRIPTOR.fields_by_number[1].name == "directory"
    assert pb.WorkOrderStatus.DESCRIPTOR.fields_by_name["state"].enum_type.name == "WorkOrderState"
    assert pb.SubmitResponse.DESCRIPTOR.fields_by_name["id"].number == 1
    assert Path(REPO / "buf.yaml").exists()


def test_the_runtime_imports_no_module():
    """The runtime knows nothing of telescopes, galaxies or calibration: it imports only itself, the generated
    contract and the package's version and module names."""
    import ast

    from support import REPO

    allowed = ("toros.runtime", "toros.generated")
    for path in sorted((REPO / "toros" / "runtime").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("toros"):
                names = {alias.name for alias in node.names}
                assert node.module.startswith(allowed) or (
                    node.module == "toros" and names <= {"__version__", "MODULES"}
                ), f"{path.name} imports {node.module} {sorted(names)}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("toros") and not a.name.startswith(allowed) for a in node.names), path
