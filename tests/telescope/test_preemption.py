"""Alert targets first: a routine exposure in progress is stopped (kept as aborted or discarded) or allowed to
finish, as configured; a series of calibration frames pauses and resumes; the filter turns during the slew; the
same over the Alpaca camera's StopExposure and AbortExposure. How soon the shutter opens is measured by
benchmarks/rapid_response.py."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.io import fits
from support import calibrations, devices, finished, images, run, step, wait_for

from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.preprocessor.inventory import BadFrame, read_frame
from toros.preprocessor.settings import CalibrationConfig
from toros.telescope.protocol_simulators.alpaca import AlpacaSimulator

ROUTINE = pb.Target(
    name="routine field", ra_deg=40.0, dec_deg=-30.0, exposure_count=1, exposure_time={"seconds": 240}, filter="r"
)
HOST = pb.Target(
    name="host galaxy", ra_deg=11.888, dec_deg=-25.288, exposure_count=1, exposure_time={"seconds": 30}, filter="g"
)
ALERT = pb.WorkOrder(id="alert", observe_targets=pb.ObserveTargets(targets=[HOST], alert_id="S261123b"))
# Where the alert must stop what is under way, it is long: a loaded machine's seconds between the alert's order and
# the exposure's next look are minutes of clock time at ×80, and they must not let the routine frame end first.
LONG_ROUTINE = pb.Target(
    name="routine field", ra_deg=40.0, dec_deg=-30.0, exposure_count=1, exposure_time={"seconds": 900}, filter="r"
)


def clock_now(stub: FrontDeskStub) -> datetime:
    return stub.GetStatus(pb.GetStatusRequest()).clock_time.ToDatetime(tzinfo=UTC)


def exposing(stub: FrontDeskStub) -> bool:
    return "exposing" in devices(stub)["camera"].message


@dataclass(frozen=True)
class Moments:
    routine_started: datetime  # when the routine exposure was first seen under way (clock)
    sent: datetime  # when the alert's order was sent
    first: pb.ImageReady  # the alert's first frame
    routine_exposure_s: float

    def stopped_the_routine_frame(self) -> bool:
        """The alert's first frame started before the routine exposure would have ended (how soon is the
        benchmark's measure, not a test's: benchmarks/rapid_response.py)."""
        started = datetime.fromisoformat(fits.getheader(self.first.path)["DATE-OBS"]).replace(tzinfo=UTC)
        return (started - self.routine_started).total_seconds() < self.routine_exposure_s


def alert_mid_exposure(stub: FrontDeskStub, routine: pb.Target = LONG_ROUTINE, into_s: float = 40.0) -> Moments:
    """Opens, starts the routine target, sends the alert's order ``into_s`` clock seconds into its exposure."""
    assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN))).state == pb.WORK_ORDER_STATE_DONE
    stub.Submit(pb.WorkOrder(id="routine", observe_targets=pb.ObserveTargets(targets=[routine])))
    wait_for(lambda: exposing(stub), timeout=30, interval=0.02)
    started = clock_now(stub)
    wait_for(lambda: (clock_now(stub) - started).total_seconds() >= into_s, timeout=30)
    sent = clock_now(stub)
    stub.Submit(ALERT)
    first = wait_for(lambda: images(stub, "alert"), timeout=60)[0].image_ready
    return Moments(started, sent, first, routine.exposure_time.seconds)


def test_an_alert_stops_a_routine_exposure_which_is_kept_as_aborted(telescope):
    stub = telescope(rate=80.0, safety={"poll_s": 2.0}, filter_wheel={"change_s": 20.0})
    moments = alert_mid_exposure(stub)
    assert moments.stopped_the_routine_frame()
    assert moments.first.filter == "g", "the wheel turned to the alert's filter during the slew"
    routine = wait_for(lambda: finished(stub, "routine"), timeout=60)
    assert routine.state == pb.WORK_ORDER_STATE_DONE, routine.message
    aborted = [Path(p.path) for p in routine.products if p.kind == "raw_aborted"]
    assert len(aborted) == 1 and aborted[0].parent.name == "aborted", list(routine.products)
    with pytest.raises(BadFrame, match="ABORTED = T"):  # the preprocessor never calibrates it
        read_frame(aborted[0], CalibrationConfig())
    header = fits.getheader(aborted[0])
    assert header["ABORTED"] is True and header["IMAGETYP"] == "LIGHT" and header["OBJECT"] == "routine field"
    stopped_after = (moments.sent - datetime.fromisoformat(header["DATE-OBS"]).replace(tzinfo=UTC)).total_seconds()
    # its true exposure time: from its start to a moment after the alert's order came (not the 900 s asked)
    assert stopped_after - 2 <= header["EXPTIME"] < LONG_ROUTINE.exposure_time.seconds
    announced = [e.image_ready for e in images(stub)]
    assert [i.object for i in announced] == ["host galaxy", "routine field"], "the stopped frame is never announced"
    assert all(fits.getheader(i.path)["EXPTIME"] in (30.0, 900.0) for i in announced)


@pytest.mark.parametrize(
    "preemption",
    [{"routine_exposure": "finish_frame"}, {"routine_exposure": "abort", "finish_below_s": 220.0}],
    ids=["finish_frame", "little-time-left"],
)
def test_a_routine_frame_allowed_to_finish_is_announced_before_the_alert(telescope, preemption):
    stub = telescope(rate=80.0, safety={"poll_s": 2.0}, preemption=preemption)
    moments = alert_mid_exposure(stub, ROUTINE)
    routine_frame, alert_frame = (e.image_ready for e in images(stub)[:2])
    assert (routine_frame.object, alert_frame.object) == ("routine field", "host galaxy")
    assert fits.getheader(routine_frame.path)["EXPTIME"] == 240.0 and not moments.stopped_the_routine_frame()
    routine = wait_for(lambda: finished(stub, "routine"), timeout=30)
    assert not [p for p in routine.products if p.kind == "raw_aborted"]


def test_calibration_frames_pause_for_an_alert_and_resume(telescope):
    stub = telescope(rate=80.0, safety={"poll_s": 2.0})
    assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN))).state == pb.WORK_ORDER_STATE_DONE
    darks = pb.WorkOrder(  # long darks: the alert stops the second whatever a loaded machine's delays
        id="darks", take_calibrations=calibrations(pb.IMAGE_TYPE_DARK, 3, exposure_time={"seconds": 300})
    )
    stub.Submit(darks)
    wait_for(lambda: len(images(stub, "darks")) == 1, timeout=30)
    wait_for(lambda: exposing(stub), timeout=30, interval=0.02)
    time.sleep(0.25)  # 20 clock seconds into the second dark
    stub.Submit(ALERT)
    wait_for(lambda: images(stub, "alert"), timeout=60)
    status = wait_for(lambda: finished(stub, "darks"), timeout=90)
    assert status.state == pb.WORK_ORDER_STATE_DONE and status.message == "3 dark frames of 300 s", status.message
    assert [e.image_ready.image_type for e in images(stub)] == [pb.IMAGE_TYPE_DARK, pb.IMAGE_TYPE_LIGHT] + [
        pb.IMAGE_TYPE_DARK
    ] * 2, "the stopped dark is taken again after the alert's frame"
    assert [p.kind for p in status.products].count("raw_aborted") == 1


@pytest.mark.parametrize("kept", ["keep", "discard"])
def test_over_alpaca_the_camera_stops_or_aborts(telescope, tmp_path, kept):
    from toros.runtime.clock import Clock
    from toros.simulation.ccd import Sensor
    from toros.telescope.devices.simulated import Light, SimulatedCamera, SimulatedMount

    clock = Clock(rate=80.0)
    camera = SimulatedCamera(clock, Sensor(width=64, height=48, overscan=8), 2.0, lambda seconds: Light(100.0, 5))
    with AlpacaSimulator({"telescope": SimulatedMount(clock), "camera": camera}) as alpaca:
        link = {"driver": "alpaca", "url": alpaca.url}
        stub = telescope(rate=80.0, safety={"poll_s": 2.0}, mount=link, camera=link | {"overscan": 8},
                         preemption={"aborted_frames": kept}, storage=str(tmp_path))  # fmt: skip
        assert alert_mid_exposure(stub).stopped_the_routine_frame()
        routine = wait_for(lambda: finished(stub, "routine"), timeout=60)
    used = {"keep": "camera.stopexposure", "discard": "camera.abortexposure"}[kept]
    assert used in alpaca.commands, alpaca.commands
    aborted = [Path(p.path) for p in routine.products if p.kind == "raw_aborted"]
    if kept == "keep":
        assert len(aborted) == 1 and fits.getheader(aborted[0])["EXPTIME"] < 900
    else:  # discarded: nothing left behind
        assert not aborted and not list(tmp_path.rglob("aborted"))
    assert [e.image_ready.object for e in images(stub)] == ["host galaxy", "routine field"]


@pytest.mark.parametrize("drivers", ["lx200 and serial dome", "alpaca"])
def test_a_slew_to_a_routine_target_is_stopped_for_an_alert_by_each_drivers_abort(telescope, drivers):
    from toros.runtime.clock import Clock
    from toros.telescope.devices.simulated import SimulatedDome, SimulatedMount
    from toros.telescope.protocol_simulators.serial import DomeProtocolSimulator, Lx200Simulator, PtyServer

    clock = Clock(rate=80.0)
    # A slow mount: the alert must come while it slews, however long a loaded machine takes to send it.
    mount, dome = SimulatedMount(clock, slew_rate_deg_s=0.2), SimulatedDome(clock, rotation_deg_s=0.5, shutter_s=20.0)
    with ExitStack() as stack:
        if drivers == "alpaca":
            alpaca = stack.enter_context(AlpacaSimulator({"telescope": mount, "dome": dome}))
            links = {"mount": {"driver": "alpaca", "url": alpaca.url}, "dome": {"driver": "alpaca", "url": alpaca.url}}
        else:
            mount_simulator, dome_simulator = Lx200Simulator(mount, high_precision=True), DomeProtocolSimulator(dome)
            mount_port = stack.enter_context(PtyServer(mount_simulator))
            dome_port = stack.enter_context(PtyServer(dome_simulator))
            links = {"mount": {"driver": "lx200", "port": mount_port.path},
                     "dome": {"driver": "serial", "port": dome_port.path}}  # fmt: skip
        stub = telescope(rate=80.0, safety={"poll_s": 2.0}, **links)
        assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN))).state == pb.WORK_ORDER_STATE_DONE
        stub.Submit(pb.WorkOrder(id="routine", observe_targets=pb.ObserveTargets(targets=[LONG_ROUTINE])))
        wait_for(lambda: devices(stub)["mount"].message.startswith("slewing"), timeout=30, interval=0.02)
        stub.Submit(ALERT)
        first = wait_for(lambda: images(stub, "alert"), timeout=120)[0].image_ready
        if drivers == "alpaca":
            assert {"telescope.abortslew", "dome.abortslew"} <= set(alpaca.commands), alpaca.commands
        else:
            assert b":Q#" in mount_simulator.received, "the LX200 mount was told to stop its slew"
            assert any(b"ABORT" in line for line in dome_simulator.received), dome_simulator.received
        assert [e.image_ready.object for e in images(stub)][0] == "host galaxy" and first.object == "host galaxy"


def test_an_abort_the_camera_refuses_is_a_fault_and_the_dome_closes(telescope):
    from toros.runtime.clock import Clock
    from toros.simulation.ccd import Sensor
    from toros.telescope.devices.simulated import Light, SimulatedCamera

    clock = Clock(rate=80.0)
    camera = SimulatedCamera(clock, Sensor(width=64, height=48, overscan=8), 2.0, lambda seconds: Light(100.0, 5))
    with AlpacaSimulator({"camera": camera}) as alpaca:
        alpaca.faults[("camera", "abortexposure")] = (0x500, "shutter driver not responding")
        link = {"driver": "alpaca", "url": alpaca.url, "overscan": 8}
        stub = telescope(rate=80.0, safety={"poll_s": 2.0}, camera=link, preemption={"aborted_frames": "discard"})
        assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN))).state == pb.WORK_ORDER_STATE_DONE
        stub.Submit(pb.WorkOrder(id="routine", observe_targets=pb.ObserveTargets(targets=[LONG_ROUTINE])))
        wait_for(lambda: exposing(stub), timeout=30, interval=0.02)
        stub.Submit(ALERT)
        fault = wait_for(lambda: (d := devices(stub)["camera"]).state == pb.DEVICE_STATE_FAULT and d, timeout=30)
        assert "AbortExposure" in fault.message and "shutter driver not responding" in fault.message, fault.message
        wait_for(lambda: devices(stub)["dome"].message.startswith("shutter closed"), timeout=30)
        assert stub.GetStatus(pb.GetStatusRequest()).module == "telescope", "the daemon keeps serving"
