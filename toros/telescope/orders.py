"""Checks of the telescope's work orders (units and ranges are documented in proto/toros.proto)."""

from __future__ import annotations

from toros.generated import toros_pb2 as pb
from toros.runtime.validation import Checker

MAX_EXPOSURE_SECONDS = 3600.0
MAX_FRAMES = 1000
MAX_TARGETS = 10000


def check_target(target: pb.Target, check: Checker) -> None:
    check.text("name", target.name)
    check.number("ra_deg", target.ra_deg, 0.0, 360.0, high_open=True)
    check.number("dec_deg", target.dec_deg, -90.0, 90.0)
    check.duration("exposure_time", target.exposure_time, target, low=0.0, high=MAX_EXPOSURE_SECONDS)
    check.count("exposure_count", target.exposure_count, 0, MAX_FRAMES)
    check.text("filter", target.filter, max_length=32, required=False)
    check.number("score", target.score, 0.0, 1e300)
    check.number("distance_mpc", target.distance_mpc, 0.0, 1e6)


def check_observe_targets(task: pb.ObserveTargets, check: Checker) -> None:
    if not 1 <= len(task.targets) <= MAX_TARGETS:
        check.fail("targets", f"must hold 1 to {MAX_TARGETS} targets, got {len(task.targets)}")
    for index, target in enumerate(task.targets):
        check_target(target, check.at(f"targets[{index}]"))
    check.text("alert_id", task.alert_id, required=False)
    check.timestamp("valid_until", task.valid_until, task)
    check.timestamp("event_time", task.event_time, task)


def check_take_calibrations(task: pb.TakeCalibrations, check: Checker) -> None:
    check.enum(
        "image_type",
        task.image_type,
        pb.ImageType,
        allowed={pb.IMAGE_TYPE_BIAS, pb.IMAGE_TYPE_DARK, pb.IMAGE_TYPE_FLAT},
    )
    check.count("count", task.count, 1, MAX_FRAMES)
    needs_time = task.image_type == pb.IMAGE_TYPE_DARK
    check.duration("exposure_time", task.exposure_time, task, low=0.0, high=MAX_EXPOSURE_SECONDS, required=needs_time)
    check.text("filter", task.filter, max_length=32, required=False)
    if task.flat_source != pb.FLAT_SOURCE_UNSPECIFIED:
        check.enum("flat_source", task.flat_source, pb.FlatSource)


def check_night_operation(task: pb.NightOperation, check: Checker) -> None:
    check.enum("step", task.step, pb.NightStep)


def check_dome_control(task: pb.DomeControl, check: Checker) -> None:
    check.enum("action", task.action, pb.DomeAction)
    if task.action == pb.DOME_ACTION_SLEW:
        check.number("azimuth_deg", task.azimuth_deg, 0.0, 360.0, high_open=True)
