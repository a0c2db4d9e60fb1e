"""The operator CLI through subprocesses against a live daemon: one clear line for every failure."""

from __future__ import annotations

import json

import pytest
import yaml
from support import toros_cli, wait_for, write_config

from toros.demo import free_port
from toros.generated import toros_pb2 as pb


@pytest.fixture
def live(tmp_path, make_config, start_daemon):
    """A drill telescope and a config file pointing at it (with a token)."""
    daemon = start_daemon(make_config(security={"token": "cli-token"}))
    config = write_config(tmp_path, security={"token": "cli-token"}, telescope={"port": daemon.port})
    return daemon, str(config)


def test_submit_with_options_then_work_order_and_watch(live):
    daemon, config = live
    submitted = toros_cli(
        "submit",
        "telescope",
        "dome_control",
        "--action",
        "slew",
        "--azimuth-deg",
        "120",
        "--id",
        "cli-1",
        "--config",
        config,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert submitted.stdout.strip() == "cli-1"
    wait_for(lambda: daemon.journal.get("cli-1").final)
    shown = toros_cli("work-order", "telescope", "cli-1", "--config", config)
    assert shown.returncode == 0 and shown.stdout.startswith(
        "cli-1  dome_control  done  100%  dome DOME_ACTION_SLEW done"
    )
    again = toros_cli(
        "submit",
        "telescope",
        "dome_control",
        "--action",
        "slew",
        "--azimuth-deg",
        "120",
        "--id",
        "cli-1",
        "--config",
        config,
    )
    assert again.stdout.strip() == "cli-1 (already known: not run again)"
    watched = toros_cli("watch", "telescope", "--work-order", "cli-1", "--config", config)
    assert watched.returncode == 0 and "cli-1: done: dome DOME_ACTION_SLEW done" in watched.stdout


def test_submit_a_whole_work_order_from_yaml_and_wait(live, tmp_path):
    _, config = live
    order = tmp_path / "order.yaml"
    order.write_text(
        yaml.safe_dump(
            {
                "id": "from-file",
                "priority": 70,
                "observe_targets": {
                    "alert_id": "S251123a",
                    "targets": [{"name": "NGC 4993", "ra_deg": 197.45, "dec_deg": -23.38, "exposure_time": "60s"}],
                },
            }
        )
    )
    result = toros_cli("submit", "telescope", "--file", str(order), "--wait", "--config", config)
    assert result.returncode == 0, result.stderr
    assert "from-file: done: 1 targets observed" in result.stdout


def test_targets_as_json_options(live):
    daemon, config = live
    target = json.dumps({"name": "t", "ra_deg": 10, "dec_deg": 95})
    result = toros_cli("submit", "telescope", "observe_targets", "--targets", target, "--config", config)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"toros: the telescope at 127.0.0.1:{daemon.port} answered INVALID_ARGUMENT: "
        "observe_targets.targets[0].dec_deg: must be in [-90, 90], got 95"
    )


def test_cancel_and_status(tmp_path, make_config, start_daemon):
    # A dome move takes 400 s of real time: the cancel comes first however slowly a loaded machine starts the CLI.
    daemon = start_daemon(make_config(clock={"rate": 0.01}))
    config = str(write_config(tmp_path, telescope={"port": daemon.port}))
    toros_cli("submit", "telescope", "dome_control", "--action", "open", "--id", "to-cancel", "--config", config)
    cancelled = toros_cli("cancel", "telescope", "to-cancel", "--reason", "clouds", "--config", config)
    assert cancelled.returncode == 0 and "to-cancel  dome_control" in cancelled.stdout
    wait_for(lambda: daemon.journal.get("to-cancel").state == pb.WORK_ORDER_STATE_CANCELLED)
    status = toros_cli("status", "telescope", "--config", config)
    assert status.returncode == 0 and status.stdout.startswith("telescope") and "serving" in status.stdout


def test_failures_are_one_line_without_traceback(live, tmp_path):
    daemon, config = live
    cases = [
        (
            ("status", "telescope", "--address", f"127.0.0.1:{free_port()}", "--config", config),
            1,
            "DOWN     cannot reach the telescope at 127.0.0.1:",
        ),
        (
            ("work-order", "telescope", "nope", "--config", config),
            1,
            f"toros: the telescope at 127.0.0.1:{daemon.port} answered NOT_FOUND: id: no work order 'nope'",
        ),
        (("submit", "telescope", "--config", config), 2, "toros: give a task"),
        (("submit", "telescope", "--file", str(tmp_path / "absent.yaml"), "--config", config), 2, "toros: "),
    ]
    for args, code, start in cases:
        result = toros_cli(*args)
        assert result.returncode == code, (args, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
        # `status` reports every module on stdout, a module that is down included; the others use stderr.
        output = result.stdout if args[0] == "status" else result.stderr
        assert len(output.strip().splitlines()) == 1 and start in output, output


def test_a_wrong_token_is_one_clear_line(live, tmp_path):
    daemon, _ = live
    other = tmp_path / "wrong"
    other.mkdir()
    config = write_config(other, security={"token": "wrong"}, telescope={"port": daemon.port})
    result = toros_cli("work-order", "telescope", "x", "--config", str(config))
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"toros: the telescope at 127.0.0.1:{daemon.port} refused the token")
