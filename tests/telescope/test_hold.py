"""The operator has the last word: an operator's close puts the telescope on hold (the robot neither opens nor
observes until an operator resumes or opens), alerts that arrive meanwhile wait and are announced, and the dome
does not open in daylight unless an operator overrides it by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from support import (
    DAY_TIME,
    SMALL_CAMERA,
    devices,
    finished,
    refused,
    run,
    step,
    telescope_daemon,
    toros_cli,
    wait_for,
    write_config,
)

from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.runtime.config import DatabaseConfig
from toros.runtime.journal import Journal
from toros.telescope.hold import OperatorHold
from toros.telescope.settings import HoldConfig

OBSERVABLE_AT_NIGHT = pb.Target(name="field south", ra_deg=40.0, dec_deg=-30.0, exposure_count=1)
DONE = pb.WORK_ORDER_STATE_DONE


def clock_of(stub) -> float:
    return stub.GetStatus(pb.GetStatusRequest()).clock_time.ToDatetime().timestamp()


def test_an_operators_close_holds_the_robot_until_an_operator_resumes(telescope, webhook):
    url, posts = webhook
    stub = telescope(mode="robotic", rate=100.0, hold={"wake_on_alert": True, "notify": {"webhook": url}})
    wait_for(lambda: devices(stub)["dome"].message.startswith("shutter open"), timeout=60)  # the robot opened

    close = run(
        stub,
        pb.WorkOrder(
            requester="web:alice",
            dome_control=pb.DomeControl(action=pb.DOME_ACTION_CLOSE, reason="clouds coming from the west"),
        ),
    )
    assert close.state == DONE and close.message.endswith("on hold until an operator resumes or opens")
    status = stub.GetStatus(pb.GetStatusRequest())
    assert status.hold.by == "web:alice" and status.hold.reason == "clouds coming from the west"
    assert status.activity.startswith("on hold by web:alice since ")
    assert status.hold.work_order_id == close.id

    # Ten of the robot's looks later, the dome is still closed: it did not reopen.
    closed_at = clock_of(stub)
    wait_for(lambda: clock_of(stub) > closed_at + 600, timeout=30)
    assert devices(stub)["dome"].message.startswith("shutter closed")
    assert "on hold by web:alice" in refused(
        stub, pb.WorkOrder(requester="robotic night", night_operation=step(pb.NIGHT_STEP_OPEN))
    )

    # An alert arrives: its targets wait for the hold, the order says so, someone is woken.
    stub.Submit(
        pb.WorkOrder(
            id="alert-targets",
            requester="alert:S261123a-preliminary",
            observe_targets=pb.ObserveTargets(targets=[OBSERVABLE_AT_NIGHT], alert_id="S261123a"),
        )
    )
    waiting = wait_for(
        lambda: (
            (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="alert-targets")))
            and "waiting for the operator's hold (web:alice)" in s.message
            and s
        )
    )
    assert waiting.state == pb.WORK_ORDER_STATE_RUNNING
    assert stub.GetStatus(pb.GetStatusRequest()).hold.waiting_alert_targets == 1
    wait_for(lambda: posts)
    assert posts[0]["alert_id"] == "S261123a" and posts[0]["targets"] == 1 and posts[0]["hold"]["by"] == "web:alice"
    assert "night_operation --step resume" in posts[0]["text"]
    updates = [e.hold_update for e in stub.Watch(pb.WatchRequest(kinds=[pb.EVENT_KIND_HOLD_UPDATE], replay_only=True))]
    assert [u.hold.by for u in updates] == ["web:alice", "web:alice"]
    assert "1 targets wait for the operator's hold" in updates[1].message
    assert devices(stub)["dome"].message.startswith("shutter closed"), "an alert does not lift the hold"

    # An operator resumes: the robot opens again and observes the alert's target.
    resumed = run(stub, pb.WorkOrder(requester="web:bob", night_operation=step(pb.NIGHT_STEP_RESUME)))
    assert resumed.message == "hold ended: the robot takes the night again"
    assert not stub.GetStatus(pb.GetStatusRequest()).HasField("hold")
    ended = list(stub.Watch(pb.WatchRequest(kinds=[pb.EVENT_KIND_HOLD_UPDATE], replay_only=True)))[-1].hold_update
    assert ended.ended_by == "web:bob" and not ended.HasField("hold")
    observed = wait_for(lambda: finished(stub, "alert-targets"), timeout=90)
    assert observed.message == "1 of 1 targets observed (1 frames)"


def test_the_robots_own_close_is_no_hold_and_an_operators_open_ends_one(telescope):
    stub = telescope(mode="manual")
    robot_close = run(stub, pb.WorkOrder(requester="robotic night", night_operation=step(pb.NIGHT_STEP_CLOSE)))
    assert robot_close.state == DONE and not stub.GetStatus(pb.GetStatusRequest()).HasField("hold")
    held = run(stub, pb.WorkOrder(requester="toros-cli", night_operation=step(pb.NIGHT_STEP_CLOSE)))
    assert "on hold" in held.message and stub.GetStatus(pb.GetStatusRequest()).hold.by == "toros-cli"
    opened = run(stub, pb.WorkOrder(requester="web:carol", dome_control=pb.DomeControl(action=pb.DOME_ACTION_OPEN)))
    assert opened.state == DONE and opened.message == "shutter open; the operator's hold ended"
    assert not stub.GetStatus(pb.GetStatusRequest()).HasField("hold")
    assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_RESUME))).message == "no hold to end"


def test_the_dome_does_not_open_in_daylight_unless_an_operator_overrides(telescope):
    day = telescope(at=DAY_TIME)
    reason = refused(day, pb.WorkOrder(requester="toros-cli", dome_control=pb.DomeControl(action=pb.DOME_ACTION_OPEN)))
    assert reason.startswith("dome_control: the Sun is at +") and "max_sun_altitude_deg (-3.0 deg)" in reason
    assert "an operator may override it" in reason
    for software in ("robotic night", "alert:S1-preliminary", ""):
        order = pb.WorkOrder(requester=software, dome_control=pb.DomeControl(action=pb.DOME_ACTION_OPEN, override=True))
        assert "an override needs an operator's order with a requester" in refused(day, order)
    overridden = run(
        day,
        pb.WorkOrder(
            requester="web:alice",
            dome_control=pb.DomeControl(action=pb.DOME_ACTION_OPEN, override=True, reason="engineering: shutter test"),
        ),
    )
    assert overridden.state == DONE and "opened with the Sun at +" in overridden.message
    assert "on web:alice's override" in overridden.message and overridden.requester == "web:alice"
    assert devices(day)["dome"].message.startswith("shutter open")


def test_the_hold_is_kept_in_the_journal_across_a_restart(tmp_path):
    from support import SteppedClock

    evening = datetime(2026, 11, 22, 21, 0, tzinfo=UTC)
    clock = SteppedClock(evening)
    journal = Journal(DatabaseConfig(path=tmp_path / "journal.db"), "telescope", clock)
    hold = OperatorHold(journal, clock, HoldConfig())
    hold.take("web:alice", "dust storm", "wo-close")
    clock.set(evening + timedelta(hours=2))
    again = OperatorHold(journal, clock, HoldConfig())
    assert again.current is not None and again.current.by == "web:alice" and again.current.reason == "dust storm"
    assert again.current.since == evening.timestamp()
    assert again.end("web:bob", "wo-resume") and OperatorHold(journal, clock, HoldConfig()).current is None
    journal.close()


def test_toros_status_prints_the_hold(make_config, start_daemon, tmp_path):
    config = make_config(telescope={"port": 0, "mode": "manual", "camera": SMALL_CAMERA, "dome": {"shutter_s": 20.0}})
    daemon = start_daemon(config, telescope_daemon)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        order = pb.WorkOrder(requester="web:alice", night_operation=pb.NightOperation(step=3, reason="lightning"))
        assert run(stub, order).state == DONE
    (tmp_path / "cli").mkdir()
    cli_config = write_config(tmp_path / "cli", telescope={"port": daemon.port})
    shown = toros_cli("status", "telescope", "--config", str(cli_config))
    assert shown.returncode == 0, shown.stderr
    hold_line = next(line for line in shown.stdout.splitlines() if line.strip().startswith("HOLD"))
    assert "by web:alice since" in hold_line and ": lightning" in hold_line
    assert "toros submit telescope night_operation --step resume" in hold_line


def test_a_hold_that_wakes_needs_somewhere_to_send(tmp_path):
    from toros.config import ConfigError, load_config

    (tmp_path / "c").mkdir()
    with pytest.raises(ConfigError, match="wake_on_alert needs hold.notify"):
        load_config(write_config(tmp_path / "c", telescope={"hold": {"wake_on_alert": True}}))
