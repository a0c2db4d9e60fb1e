"""``toros plan``: a night plan from a CSV of targets, without a running daemon.

The CSV has a header with ``name``, ``ra_deg``, ``dec_deg`` and optionally ``exposure_time_s``,
``exposure_count``, ``filter``, ``priority`` (higher first) and ``score``; targets are checked like those of an
observe_targets work order.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from google.protobuf.duration_pb2 import Duration

from toros.generated import toros_pb2 as pb
from toros.runtime.validation import Checker, InvalidWorkOrder
from toros.telescope.orders import check_target
from toros.telescope.scheduler import (
    Plan,
    PlanTarget,
    block_seconds,
    make_plan,
    write_plan,
)
from toros.telescope.settings import TelescopeConfig

REQUIRED = ("name", "ra_deg", "dec_deg")


class BadTargetFile(Exception):
    """A CSV of targets that cannot be used; the message names the file and line."""


@dataclass
class PlanResult:
    plan: Plan
    targets: list[PlanTarget]
    json_path: Path
    png_path: Path


def read_target_file(path: Path, config: TelescopeConfig) -> list[tuple[pb.Target, int]]:
    """The targets of a CSV file, checked, with their priorities (higher first)."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
    except OSError as exc:
        raise BadTargetFile(f"{path}: cannot read: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise BadTargetFile(f"{path}: not a CSV file: {exc}") from None
    if not rows:
        raise BadTargetFile(f"{path}: no targets (a header line with {', '.join(REQUIRED)} and one line per target)")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        raise BadTargetFile(f"{path}: missing column(s) {', '.join(missing)}")
    defaults = config.targets
    targets = []
    for line, row in enumerate(rows, start=2):
        try:
            exposure = float(row.get("exposure_time_s") or defaults.exposure_time_s)
            target = pb.Target(
                name=(row["name"] or "").strip(),
                ra_deg=float(row["ra_deg"]),
                dec_deg=float(row["dec_deg"]),
                exposure_count=int(row.get("exposure_count") or defaults.exposure_count),
                score=float(row.get("score") or 0),
                exposure_time=Duration(seconds=int(exposure), nanos=int(round(exposure % 1 * 1e9))),
                filter=(row.get("filter") or "").strip(),
            )
            priority = int(row.get("priority") or 0)
        except (TypeError, ValueError) as exc:
            raise BadTargetFile(f"{path} line {line}: {exc}") from None
        try:
            check_target(target, Checker(f"line {line}", Path("/")))
        except InvalidWorkOrder as exc:
            raise BadTargetFile(f"{path}: {exc}") from None
        targets.append((target, priority))
    return targets


def read_targets(path: Path, config: TelescopeConfig) -> list[PlanTarget]:
    """The targets of a CSV file as the planner sees them (keys are the file's line numbers)."""
    planned = []
    for line, (target, priority) in enumerate(read_target_file(path, config), start=2):
        exposure = target.exposure_time.ToTimedelta().total_seconds()
        duration = block_seconds(target.exposure_count, exposure, config)
        planned.append(
            PlanTarget(f"{line}", target.name, target.ra_deg, target.dec_deg, duration, priority, target.score)
        )
    return planned


def plan_from_file(config: TelescopeConfig, targets_csv: Path, night: date, out: Path) -> PlanResult:
    """Plans the night and writes ``out`` (JSON) and the altitude chart beside it (same name, .png)."""
    targets = read_targets(targets_csv, config)
    plan, _ = make_plan(targets, config.site, config.constraints, night)
    png = out.with_suffix(".png")
    write_plan(plan, targets, out, png, config)
    return PlanResult(plan, targets, out, png)
