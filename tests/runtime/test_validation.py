"""Every bad work order gets INVALID_ARGUMENT naming the field path; random work orders never hurt the daemon."""

from __future__ import annotations

import math

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toros.daemons import build_daemon
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub


def target(**fields) -> pb.Target:
    values = {"name": "NGC 4993", "ra_deg": 197.45, "dec_deg": -23.38}
    values.update(fields)
    return pb.Target(**values)


def observe(*targets: pb.Target) -> pb.WorkOrder:
    return pb.WorkOrder(observe_targets=pb.ObserveTargets(targets=targets))


TELESCOPE_CASES = [
    (pb.WorkOrder(), "task: no task is set"),
    (pb.WorkOrder(process_alert=pb.ProcessAlert(payload=b"x")), "task: process_alert is handled by the alert module"),
    (
        pb.WorkOrder(calibrate_night=pb.CalibrateNight(directory="x")),
        "task: calibrate_night is handled by the preprocessor module",
    ),
    (pb.WorkOrder(id="has space", dome_control=pb.DomeControl(action=1)), "id: must be 1-128 characters"),
    (pb.WorkOrder(id="x" * 129, dome_control=pb.DomeControl(action=1)), "id: must be 1-128 characters"),
    (pb.WorkOrder(priority=101, dome_control=pb.DomeControl(action=1)), "priority: must be between 0 and 100"),
    (pb.WorkOrder(priority=-1, dome_control=pb.DomeControl(action=1)), "priority: must be between 0 and 100"),
    (
        pb.WorkOrder(requester="a\nb", dome_control=pb.DomeControl(action=1)),
        "requester: must not contain control characters",
    ),
    (observe(), "observe_targets.targets: must hold 1 to 10000 targets"),
    (observe(target(), target(ra_deg=360.0)), "observe_targets.targets[1].ra_deg: must be in [0, 360)"),
    (observe(target(ra_deg=-0.1)), "observe_targets.targets[0].ra_deg"),
    (observe(target(dec_deg=90.5)), "observe_targets.targets[0].dec_deg: must be in [-90, 90]"),
    (observe(target(dec_deg=math.nan)), "observe_targets.targets[0].dec_deg: must be a finite number, got nan"),
    (observe(target(ra_deg=math.inf)), "observe_targets.targets[0].ra_deg: must be a finite number"),
    (observe(target(name="  ")), "observe_targets.targets[0].name: must not be empty"),
    (
        observe(target(exposure_time=Duration(seconds=0))),
        "observe_targets.targets[0].exposure_time: must be more than 0 s",
    ),
    (
        observe(target(exposure_time=Duration(seconds=3601))),
        "observe_targets.targets[0].exposure_time: must be more than 0 s and at most 3600 s",
    ),
    (observe(target(exposure_time=Duration(seconds=-5))), "observe_targets.targets[0].exposure_time"),
    (observe(target(exposure_count=1001)), "observe_targets.targets[0].exposure_count: must be between 0 and 1000"),
    (observe(target(score=-1)), "observe_targets.targets[0].score"),
    (
        pb.WorkOrder(take_calibrations=pb.TakeCalibrations(image_type=pb.IMAGE_TYPE_LIGHT, count=1)),
        "take_calibrations.image_type: must be one of",
    ),
    (
        pb.WorkOrder(take_calibrations=pb.TakeCalibrations(image_type=pb.IMAGE_TYPE_BIAS, count=0)),
        "take_calibrations.count: must be between 1 and 1000",
    ),
    (
        pb.WorkOrder(take_calibrations=pb.TakeCalibrations(image_type=pb.IMAGE_TYPE_DARK, count=3)),
        "take_calibrations.exposure_time: must be set",
    ),
    (pb.WorkOrder(night_operation=pb.NightOperation()), "night_operation.step: must be set"),
    (pb.WorkOrder(night_operation=pb.NightOperation(step=99)), "night_operation.step: unknown value 99"),
    (
        pb.WorkOrder(dome_control=pb.DomeControl(action=pb.DOME_ACTION_SLEW, azimuth_deg=360)),
        "dome_control.azimuth_deg: must be in [0, 360)",
    ),
]


@pytest.mark.parametrize(
    "order, message", TELESCOPE_CASES, ids=[m.split(":")[0] + f"-{i}" for i, (_, m) in enumerate(TELESCOPE_CASES)]
)
def test_telescope_refuses_bad_work_orders_naming_the_field(stub, order, message):
    with pytest.raises(grpc.RpcError) as error:
        stub.Submit(order)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(message), error.value.details()


@pytest.fixture
def preprocessor(make_config, start_daemon):
    daemon = start_daemon(make_config(), lambda config: build_daemon("preprocessor", config))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield FrontDeskStub(channel), daemon


@pytest.mark.parametrize(
    "task, message",
    [
        (pb.CalibrateNight(directory="/etc"), "calibrate_night.directory: '/etc' is outside the storage root"),
        (pb.CalibrateNight(directory="../.."), "calibrate_night.directory: '../..' is outside the storage root"),
        (pb.CalibrateNight(directory=""), "calibrate_night.directory: must not be empty"),
        (pb.CalibrateNight(directory="2026-11-23"), "calibrate_night.directory: no such directory"),
        (pb.CalibrateImages(), "calibrate_images.paths: must hold 1 to 10000 files"),
        (
            pb.CalibrateImages(paths=["ok.fits", "/tmp/x.fits"]),
            "calibrate_images.paths[1]: '/tmp/x.fits' is outside the storage root",
        ),
    ],
)
def test_preprocessor_confines_paths_to_the_storage_root(preprocessor, task, message):
    stub, _ = preprocessor
    field = "calibrate_night" if isinstance(task, pb.CalibrateNight) else "calibrate_images"
    with pytest.raises(grpc.RpcError) as error:
        stub.Submit(pb.WorkOrder(**{field: task}))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(message), error.value.details()


def test_preprocessor_accepts_a_night_inside_the_root(preprocessor):
    stub, daemon = preprocessor
    (daemon.storage_root / "2026-11-23").mkdir()
    receipt = stub.Submit(pb.WorkOrder(calibrate_night=pb.CalibrateNight(directory="2026-11-23")))
    assert receipt.id.startswith("preprocessor-")


def test_alert_checks_its_payload(make_config, start_daemon):
    daemon = start_daemon(make_config(), lambda config: build_daemon("alert", config))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        for order, message in [
            (pb.WorkOrder(process_alert=pb.ProcessAlert()), "process_alert.payload: must hold 1 byte"),
            (
                pb.WorkOrder(process_alert=pb.ProcessAlert(payload=b"x", format=7)),
                "process_alert.format: unknown value 7",
            ),
            (
                pb.WorkOrder(dome_control=pb.DomeControl(action=1)),
                "task: dome_control is handled by the telescope module, not by alert",
            ),
        ]:
            with pytest.raises(grpc.RpcError) as error:
                stub.Submit(order)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.value.details().startswith(message)


# -- property-based: random work orders at a live server --------------------------------------------

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
texts = st.text(max_size=140)
durations = st.builds(Duration, seconds=st.integers(-(10**6), 10**6), nanos=st.integers(-(10**9) + 1, 10**9 - 1))
targets = st.builds(
    pb.Target,
    name=texts,
    ra_deg=floats,
    dec_deg=floats,
    exposure_count=st.integers(0, 2000),
    filter=texts,
    score=floats,
    distance_mpc=floats,
    exposure_time=durations,
)
tasks = st.one_of(
    st.builds(lambda t: {"observe_targets": pb.ObserveTargets(targets=t)}, st.lists(targets, max_size=4)),
    st.builds(lambda a, z: {"dome_control": pb.DomeControl(action=a, azimuth_deg=z)}, st.integers(0, 6), floats),
    st.builds(lambda s: {"night_operation": pb.NightOperation(step=s)}, st.integers(0, 5)),
    st.builds(
        lambda k, n, e: {"take_calibrations": pb.TakeCalibrations(image_type=k, count=n, exposure_time=e)},
        st.integers(0, 6),
        st.integers(0, 2000),
        durations,
    ),
    st.builds(lambda d: {"calibrate_night": pb.CalibrateNight(directory=d)}, texts),
    st.builds(lambda p: {"process_alert": pb.ProcessAlert(payload=p)}, st.binary(max_size=64)),
    st.just({}),
)
orders = st.builds(
    lambda id, requester, priority, task: pb.WorkOrder(id=id, requester=requester, priority=priority, **task),
    st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True), texts),
    texts,
    st.integers(-(2**31), 2**31 - 1),
    tasks,
)
ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=orders)
def test_random_work_orders_get_a_clear_answer_and_the_daemon_keeps_serving(stub, order):
    try:
        receipt = stub.Submit(order, timeout=10)
        code = grpc.StatusCode.OK
        assert receipt.id
    except grpc.RpcError as error:
        code = error.code()
        assert error.details() and ":" in error.details(), "the message names a field"
    assert code in ANSWERS
    assert stub.GetStatus(pb.GetStatusRequest(), timeout=10).module == "telescope"
