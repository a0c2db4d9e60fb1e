"""The dome follows the telescope: the slit position for a German mount off the dome's centre (worked
examples), the tolerance from the slit's width, geometry that makes no sense refused, and on the simulated
observatory a long exposure near the zenith vignetted without synchronisation and clear with it; a roll-off
roof needs none; a dome that fails to turn while tracking is a fault that safety handles."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from astropy.io import fits
from pydantic import ValidationError
from support import devices, images, run, step, wait_for

from toros.generated import toros_pb2 as pb
from toros.telescope.dome_geometry import DomeGeometry, PierSide, tolerance_deg
from toros.telescope.protocol_simulators.alpaca import AlpacaSimulator
from toros.telescope.settings import DomeLink


def test_a_mount_at_the_centre_needs_the_targets_own_azimuth():
    geometry = DomeGeometry(3.0, -24.62)
    for azimuth, altitude in ((0.0, 30.0), (123.0, 45.0), (250.0, 80.0)):
        assert geometry.slit(azimuth, altitude) == pytest.approx((azimuth, altitude))


def test_worked_examples():
    # At the equator, pointing at the zenith, the optical axis 0.5 m east of the polar axis in a 2 m dome: it
    # leaves the dome due east, at asin(sqrt(4 - 0.25) / 2) = 75.52 deg.
    east = DomeGeometry(2.0, 0.0, dec_axis_offset_m=0.5, pier_side=PierSide.EAST)
    assert east.slit(0.0, 90.0) == pytest.approx((90.0, math.degrees(math.asin(math.sqrt(3.75) / 2))))
    # The mount 1 m north of the centre of a 3 m dome, a target on the eastern horizon: the ray from (0, 1, 0)
    # eastwards meets the dome at (sqrt(8), 1, 0), azimuth atan(sqrt(8)) = 70.53 deg.
    north = DomeGeometry(3.0, -24.62, mount_offset_m=(0.0, 1.0, 0.0))
    assert north.slit(90.0, 0.0) == pytest.approx((math.degrees(math.atan(math.sqrt(8.0))), 0.0))
    # The two sides of the pier at the meridian: mirror images about the target's azimuth.
    sides = [DomeGeometry(2.5, -24.62, dec_axis_offset_m=0.4, pier_side=side).slit(0.0, 60.0) for side in PierSide]
    auto, on_east, on_west = sides
    assert on_east[0] == pytest.approx(360.0 - on_west[0]) and on_east[1] == pytest.approx(on_west[1])
    assert 0 < on_east[0] < 30, on_east
    # A German mount's usual side: west of the pier for a target east of the meridian, and the other way.
    automatic = DomeGeometry(2.5, -24.62, dec_axis_offset_m=0.4)
    western = DomeGeometry(2.5, -24.62, dec_axis_offset_m=0.4, pier_side=PierSide.WEST)
    assert automatic.slit(100.0, 50.0) == pytest.approx(western.slit(100.0, 50.0))
    assert auto == pytest.approx(on_east), "azimuth 0 is the meridian: the west half's rule"


def test_the_tolerance_grows_towards_the_zenith():
    # 1.2 m slit, 0.6 m beam: 0.3 m to spare on each side, over the dome's horizontal radius.
    assert tolerance_deg(2.5, 1.2, 0.6, 30.0) == pytest.approx(
        math.degrees(math.asin(0.3 / (2.5 * math.cos(math.radians(30.0)))))
    )
    assert tolerance_deg(2.5, 1.2, 0.6, 89.0) == 180.0


@pytest.mark.parametrize(
    ("dome", "message"),
    [
        (
            {"radius_m": 2.0, "geometry": {"mount_offset_m": [1.5, 0.0, 0.5], "dec_axis_offset_m": 0.4}},
            "beyond radius_m 2",
        ),
        ({"slit_width_m": 0.5, "geometry": {"aperture_m": 0.6}}, "wider than slit_width_m 0.5"),
        ({"geometry": {"pier_side": "north"}}, "pier_side"),
    ],
)
def test_geometry_that_makes_no_sense_is_refused(dome, message):
    with pytest.raises(ValidationError, match=message):
        DomeLink(**dome)


def test_a_roll_off_roof_takes_any_geometry():
    assert DomeLink(kind="roof", radius_m=1.0, geometry={"mount_offset_m": [3.0, 0.0, 0.0]}).kind == "roof"


# A target that transits 20 deg from the zenith half-way through an hour's exposure: its azimuth turns by about
# 40 deg meanwhile, several times what a 0.7 m slit leaves a 0.6 m beam up there.
NEAR_TARGET = {"name": "near the zenith", "ra_deg": 39.79 + 7.5, "dec_deg": -4.62, "exposure_count": 1}
NEAR_ZENITH = pb.Target(**NEAR_TARGET, exposure_time={"seconds": 3600})
BASELINE = pb.Target(name="low in the west", ra_deg=39.79 - 45.0 + 360.0, dec_deg=-24.62, exposure_time={"seconds": 60})
# An hour's exposure at x400 is nine real seconds: a loaded machine must not make the watchdog (nothing moved for
# 15 clock minutes, about 2 real seconds) close the dome in the middle of it.
UNHURRIED = {"poll_s": 10.0, "watchdog_s": 7200.0}
NARROW_SLIT = {"slit_width_m": 0.7, "geometry": {"aperture_m": 0.6}}


def sky_level(path: str) -> float:
    data = fits.getdata(path).astype(float)
    return float(np.median(data[:, :-8]) - np.median(data[:, -8:]))  # minus the overscan's bias


@pytest.mark.parametrize(
    ("dome", "vignetted"),
    [
        (NARROW_SLIT, False),
        (NARROW_SLIT | {"sync": {"enabled": False}}, True),
        (NARROW_SLIT | {"sync": {"during_exposures": False}}, True),  # a shaky dome: only between exposures
        ({"kind": "roof"}, False),
    ],
    ids=["synchronised", "not synchronised", "between exposures only", "roof"],
)
def test_a_long_exposure_near_the_zenith_is_vignetted_unless_the_dome_follows(telescope, dome, vignetted):
    stub = telescope(rate=400.0, dome=dome | {"shutter_s": 20.0}, safety=UNHURRIED)
    assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN))).state == pb.WORK_ORDER_STATE_DONE
    levels = []
    # The sky's level per second (the simulated sky is as bright everywhere): a minute on a field low in the
    # west, whose azimuth hardly moves, then the hour near the zenith.
    for name, target in (("baseline", BASELINE), ("zenith", NEAR_ZENITH)):
        status = run(stub, pb.WorkOrder(id=name, observe_targets=pb.ObserveTargets(targets=[target])))
        assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
        frame = images(stub, name)[0].image_ready
        levels.append(sky_level(frame.path) / frame.exposure_time.ToTimedelta().total_seconds())
    short, long = levels
    if vignetted:
        assert long < 0.8 * short, levels
    else:
        assert long == pytest.approx(short, rel=0.1), levels
    if dome.get("kind") == "roof":  # it never turned
        assert devices(stub)["dome"].message.startswith("shutter open, azimuth 180.0")


def test_a_dome_that_fails_to_turn_while_tracking_is_a_fault_and_safety_closes(telescope):
    from toros.runtime.clock import Clock
    from toros.telescope.devices.simulated import SimulatedDome

    dome = SimulatedDome(Clock(rate=600.0), shutter_s=20.0)
    with AlpacaSimulator({"dome": dome}) as alpaca:
        stub = telescope(rate=600.0, dome=NARROW_SLIT | {"driver": "alpaca", "url": alpaca.url},
                         safety=UNHURRIED)  # fmt: skip
        assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN))).state == pb.WORK_ORDER_STATE_DONE
        stub.Submit(pb.WorkOrder(observe_targets=pb.ObserveTargets(targets=[NEAR_ZENITH])))
        wait_for(lambda: "exposing" in devices(stub)["camera"].message, timeout=30, interval=0.02)
        alpaca.faults[("dome", "slewtoazimuth")] = (0x500, "rotation motor overload")  # while tracking
        fault = wait_for(lambda: (d := devices(stub)["dome"]).state == pb.DEVICE_STATE_FAULT and d, timeout=30)
        assert "rotation motor overload" in fault.message
        assert wait_for(lambda: dome.shutter().value == "closed", timeout=30)


def test_an_operators_dome_move_holds_until_the_next_target(telescope):
    stub = telescope(rate=400.0, dome={"shutter_s": 20.0, "sync": {"poll_s": 5.0}}, safety=UNHURRIED)
    assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN))).state == pb.WORK_ORDER_STATE_DONE
    assert run(stub, pb.WorkOrder(id="west", observe_targets=pb.ObserveTargets(targets=[BASELINE]))).state == (
        pb.WORK_ORDER_STATE_DONE
    )
    west = devices(stub)["dome"].message
    assert west.startswith("shutter open, azimuth 2")  # the slit on the western target, tracked
    turned = run(stub, pb.WorkOrder(dome_control=pb.DomeControl(action=pb.DOME_ACTION_SLEW, azimuth_deg=90.0)))
    assert turned.message == "dome at azimuth 90.0"
    time.sleep(10 * 60 / 400.0)  # ten minutes of clock time: 120 looks of the synchronisation
    assert devices(stub)["dome"].message.startswith("shutter open, azimuth 90.0")
    assert run(stub, pb.WorkOrder(id="again", observe_targets=pb.ObserveTargets(targets=[BASELINE]))).state == (
        pb.WORK_ORDER_STATE_DONE
    )
    assert devices(stub)["dome"].message.startswith("shutter open, azimuth 2")
