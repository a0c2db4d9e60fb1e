"""Frames that wait for their masters (waiting.py): kept in the journal, and sent to a work order of their own
(an id made from the one that built the masters: a restart submits it once) when masters of their setup come."""

from __future__ import annotations

from pathlib import Path

from toros.generated import toros_pb2 as pb
from toros.preprocessor.progress import WaitingFrame
from toros.preprocessor.waiting import WaitingForMasters
from toros.runtime.clock import Clock
from toros.runtime.config import DatabaseConfig
from toros.runtime.journal import Journal


def test_waiting_frames_survive_a_restart_and_go_once_to_the_work_order_of_their_masters(tmp_path):
    journal = Journal(DatabaseConfig(path=tmp_path / "journal.db"), "preprocessor", Clock())
    submitted: list[pb.WorkOrder] = []

    def submit(order: pb.WorkOrder):
        submitted.append(order)
        return journal.submit(order, "calibrate_images", 50)

    waiting = WaitingForMasters(journal, submit)
    waiting.add([WaitingFrame(Path("/data/a.fits"), "2048x2048_bin1x1", "no master bias"),
                 WaitingFrame(Path("/data/b.fits"), "1024x1024_bin2x2", "no master bias"),
                 WaitingFrame(Path("/data/a.fits"), "2048x2048_bin1x1", "no master bias")])  # fmt: skip
    again = WaitingForMasters(journal, submit)  # the daemon restarted
    assert again.frames() == {"2048x2048_bin1x1": ["/data/a.fits"], "1024x1024_bin2x2": ["/data/b.fits"]}
    assert again.masters_built({"2048x2048_bin1x1"}, "morning-bias") == ["morning-bias-waited-2048x2048_bin1x1"]
    assert list(submitted[0].calibrate_images.paths) == ["/data/a.fits"]
    assert again.frames() == {"1024x1024_bin2x2": ["/data/b.fits"]}
    assert again.masters_built({"2048x2048_bin1x1"}, "later") == [], "nothing waits for these any more"
    journal.close()
