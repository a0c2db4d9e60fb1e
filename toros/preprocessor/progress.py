"""What a work order of the preprocessor reports as it goes (progress, products, candidates) and what it comes to
(frames calibrated, masters built, frames waiting or skipped, notes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from toros.generated import toros_pb2 as pb


class Reporter(Protocol):
    """Where a calibration reports to (the work order's context)."""

    def stage(self, stage: str, done: int, total: int, path: str = "", **science: object) -> None:
        """``science``: the proto's FrameScience fields, when ``path`` was just made science-ready."""

    def product(self, path: Path, kind: str, sha256: str | None = None, **fields: object) -> None:
        """``fields``: more fields of the Product message (``science``)."""

    def candidate(self, candidate: pb.TransientCandidate) -> None:
        """A vetted transient candidate, as an event."""

    def forced(self, measurement: pb.ForcedPhotometry) -> None:
        """A known candidate measured where it was not detected, as an event."""

    def check(self) -> None: ...


@dataclass(frozen=True)
class WaitingFrame:
    """A science frame whose masters do not exist yet: it waits for them (not a failure: a node restarted after
    dusk takes its bias and darks in the morning, and the night's frames are calibrated then)."""

    path: Path
    setup: str
    reason: str


@dataclass
class NightResult:
    calibrated: list[Path] = field(default_factory=list)
    masters: list[Path] = field(default_factory=list)
    master_setups: set[str] = field(default_factory=set)  # the setups whose masters were built
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    waiting: list[WaitingFrame] = field(default_factory=list)
    science_ready: int = 0  # frames made science-ready (or found so) in this work order
    searched: int = 0  # frames searched for transients

    def summary(self) -> str:
        text = f"{len(self.calibrated)} frames calibrated, {len(self.masters)} masters built"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        if self.waiting:
            text += f"; {len(self.waiting)} wait for their masters: " + "; ".join(
                f"{w.path.name}: {w.reason}" for w in self.waiting
            )
        if self.problems:
            text += f"; {len(self.problems)} skipped: " + "; ".join(self.problems)
        return text


@dataclass
class Progress:
    """Frames done of those a work order has (used, skipped or made), reported as calibration_progress."""

    reporter: Reporter
    total: int = 0
    done: int = 0

    def report(self, stage: str, done: int | None = None) -> None:
        self.reporter.stage(stage, self.done if done is None else done, self.total)

    def advance(self, stage: str, path: str = "", **science: object) -> None:
        """One more frame done (``science``: the FrameScience fields of a frame just made science-ready)."""
        self.done += 1
        self.reporter.stage(stage, self.done, self.total, path, **science)
