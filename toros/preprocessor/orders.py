"""Checks of the preprocessor's work orders: every path must lie inside the storage root."""

from __future__ import annotations

import re

from toros.generated import toros_pb2 as pb
from toros.runtime.validation import Checker

MAX_IMAGES = 10000
NIGHT = re.compile(r"\d{4}-\d{2}-\d{2}")
TNS_NAME = re.compile(r"((AT|SN|TDE|FRB) ?)?\d{4}[a-z]{3,4}")  # as the TNS names objects


def check_calibrate_night(task: pb.CalibrateNight, check: Checker) -> None:
    directory = check.path("directory", task.directory)
    if not directory.is_dir():
        check.fail("directory", f"no such directory: {directory}")


def check_calibrate_images(task: pb.CalibrateImages, check: Checker) -> None:
    if not 1 <= len(task.paths) <= MAX_IMAGES:
        check.fail("paths", f"must hold 1 to {MAX_IMAGES} files, got {len(task.paths)}")
    for index, path in enumerate(task.paths):
        resolved = check.path(f"paths[{index}]", path)
        if resolved.exists() and not resolved.is_file():  # a FIFO would block the worker that opens it
            check.fail(f"paths[{index}]", "is not a regular file")


def check_find_transients(task: pb.FindTransients, check: Checker) -> None:
    if not task.paths and not task.night:
        check.fail("paths", "name frames, or a night (find_transients.night)")
    if task.paths and task.night:
        check.fail("night", "give frames or a night, not both")
    if len(task.paths) > MAX_IMAGES:
        check.fail("paths", f"must hold at most {MAX_IMAGES} files, got {len(task.paths)}")
    for index, path in enumerate(task.paths):
        resolved = check.path(f"paths[{index}]", path)
        if resolved.exists() and not resolved.is_file():
            check.fail(f"paths[{index}]", "is not a regular file")
    if task.night and not NIGHT.fullmatch(task.night):
        check.fail("night", f"must be YYYY-MM-DD, got {task.night!r}")
    check.text("alert_id", task.alert_id, required=False)
    check.timestamp("event_time", task.event_time, task)


def check_label_candidate(task: pb.LabelCandidate, check: Checker) -> None:
    check.text("name", task.name, max_length=64)
    check.enum("label", task.label, pb.CandidateLabel)
    check.text("note", task.note, max_length=1024, required=False)
    if task.tns_name and not TNS_NAME.fullmatch(task.tns_name):
        check.fail("tns_name", f"not a TNS name (e.g. AT 2026abc), got {task.tns_name!r}")


def check_reprocess_night(task: pb.ReprocessNight, check: Checker) -> None:
    if not NIGHT.fullmatch(task.night):
        check.fail("night", f"must be YYYY-MM-DD, got {task.night!r}")
    if task.from_step not in pb.ReprocessStep.values():
        check.fail("from_step", f"unknown value {task.from_step}")
