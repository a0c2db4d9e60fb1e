"""The stage list and the one function that runs it: the order of the stages, slices of it (``reprocess --from``),
the engines' stages of several frames at once while the node's stages keep the night's order, and a frame that
cannot go on named with its reason while the others go on. Stand-in stages and a stand-in engine: no FITS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from toros.preprocessor.compute import Task
from toros.preprocessor.progress import NightResult, Progress
from toros.preprocessor.settings import CalibrationConfig
from toros.preprocessor.stages import (
    STAGES,
    Frame,
    FrameStops,
    Stage,
    StageName,
    StageRun,
    run_stages,
    stages_between,
)


def test_the_stages_in_their_order_and_reprocessing_as_a_slice():
    assert [stage.name for stage in STAGES] == list(StageName)
    assert [s.name for s in stages_between(StageName.SCIENCE, StageName.DISCOVERY)] == ["science", "discovery"]
    assert [s.name for s in stages_between(StageName.DISCOVERY, StageName.DISCOVERY)] == ["discovery"]
    assert all(s.on_the_cluster for s in STAGES[:3]) and not any(s.on_the_cluster for s in STAGES[3:])
    assert StageName.CALIBRATION.not_after(StageName.SCIENCE) and not StageName.REFERENCES.not_after(StageName.SCIENCE)


class Recorder:
    def __init__(self) -> None:
        self.stages: list[tuple[str, int, int, str]] = []
        self.products: list[tuple[Path, str]] = []

    def stage(self, stage: str, done: int, total: int, path: str = "", **science: object) -> None:
        self.stages.append((stage, done, total, path))

    def product(self, path: Path, kind: str, sha256: str | None = None, **fields: object) -> None:
        self.products.append((path, kind))

    def candidate(self, candidate: object) -> None: ...

    def check(self) -> None: ...


class Threads:
    """An engine with threads: tasks run here, several at once (as on a cluster), each taking its time."""

    remote = True

    def __init__(self, count: int) -> None:
        self.count = count
        self.in_flight = 0
        self.most = 0
        self._lock = threading.Lock()

    def parallelism(self) -> int:
        return self.count

    def run(self, task: Task[Any], note: Callable[[str], None]) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            return task.here()
        finally:
            with self._lock:
                self.in_flight -= 1


class Compute(Stage):
    """An engine's stage: the first frame takes longest, so the engine finishes frames out of order."""

    name: ClassVar[StageName] = StageName.CALIBRATION
    on_the_cluster = True

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def run(self, frame: Frame, run: StageRun) -> None:
        delay = 0.3 if frame.path.name == "a.fits" else 0.01

        def work() -> str:
            time.sleep(delay)
            if frame.path.name == "bad.fits":
                raise FrameStops("it cannot be calibrated")
            return frame.path.name

        try:
            self.log.append(f"computed {run.compute.run(Task('x', work, str, lambda paths: ()), run.note)}")
        except FrameStops:
            raise


class Record(Stage):
    name: ClassVar[StageName] = StageName.DISCOVERY

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def run(self, frame: Frame, run: StageRun) -> None:
        self.log.append(f"recorded {frame.path.name}")


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    log: list[str] = []
    monkeypatch.setattr("toros.preprocessor.stages.STAGES", (Compute(log), Record(log)))
    return log


def a_run(tmp_path: Path, engine: Any, result: NightResult, recorder: Recorder, total: int) -> StageRun:
    return StageRun(
        tmp_path, "2026-11-22", "wo", CalibrationConfig(), engine, Progress(recorder, total=total), result, time.time
    )


def test_engines_work_on_several_frames_at_once_and_the_node_keeps_the_nights_order(stages, tmp_path):
    names = ["a.fits", "b.fits", "bad.fits", "c.fits", "d.fits"]
    engine, result, recorder = Threads(2), NightResult(), Recorder()
    run = a_run(tmp_path, engine, result, recorder, len(names))
    run_stages([Frame(tmp_path / n) for n in names], run, first=StageName.CALIBRATION, last=StageName.DISCOVERY)
    recorded = [line for line in stages if line.startswith("recorded")]
    assert recorded == ["recorded a.fits", "recorded b.fits", "recorded c.fits", "recorded d.fits"], "the night's order"
    assert stages.index("computed b.fits") < stages.index("computed a.fits"), "b computed while a still was"
    assert engine.most == 2, "as many in flight as the engine has threads, no more"
    assert result.problems == ["bad.fits: it cannot be calibrated"], "named, and the night went on"
    assert [s[1] for s in recorder.stages] == [1, 2, 3, 4, 5] and recorder.stages[-1][2] == 5


def test_one_thread_means_one_frame_after_the_other(stages, tmp_path):
    engine = Threads(1)
    run_stages([Frame(tmp_path / n) for n in ("a.fits", "b.fits")], a_run(tmp_path, engine, NightResult(), Recorder(), 2),
               first=StageName.CALIBRATION, last=StageName.DISCOVERY)  # fmt: skip
    assert stages == ["computed a.fits", "recorded a.fits", "computed b.fits", "recorded b.fits"]


def test_a_cancellation_stops_between_frames(stages, tmp_path):
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        run_stages([Frame(tmp_path / f"{n}.fits") for n in "abcdef"], a_run(tmp_path, Threads(1), NightResult(), Recorder(), 6),
                   first=StageName.CALIBRATION, last=StageName.DISCOVERY, check=check)  # fmt: skip
    assert len([line for line in stages if line.startswith("recorded")]) < 6
