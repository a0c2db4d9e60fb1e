"""Checks of the preprocessor's work orders: every path must lie inside the storage root."""

from __future__ import annotations

from toros.generated import toros_pb2 as pb
from toros.runtime.validation import Checker

MAX_IMAGES = 10000


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
