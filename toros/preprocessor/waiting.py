"""Science frames that wait for their masters, kept in the journal until masters of their setup are built.

A light frame whose bias or flat does not exist yet is not a failure: a node restarted after dusk takes its
bias and darks in the morning, and the night's frames are calibrated then. When a work order builds masters of
a setup, the frames of that setup that waited are calibrated by a work order of their own (an id made from the
one that built the masters, so a restart submits it once); a frame still missing a master waits again."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable

from toros.floor import journal_keys
from toros.floor.requesters import PREPROCESSOR
from toros.generated import toros_pb2 as pb
from toros.preprocessor.progress import WaitingFrame
from toros.runtime.journal import Journal, WorkOrderRecord

log = logging.getLogger(__name__)

#: The preprocessor's activity (``ModuleStatus.activity``) while frames wait: its night is not calibrated yet.
WAITING_FOR_MASTERS = "waiting for masters"


class WaitingForMasters:
    def __init__(self, journal: Journal, submit: Callable[[pb.WorkOrder], tuple[WorkOrderRecord, bool]]) -> None:
        self.journal = journal
        self.submit = submit
        self._lock = threading.Lock()

    def _read(self) -> dict[str, list[str]]:
        stored = self.journal.get_value(journal_keys.waiting_for_masters())
        return json.loads(stored) if stored else {}

    def frames(self) -> dict[str, list[str]]:
        """Raw paths waiting, by setup."""
        with self._lock:
            return self._read()

    def add(self, frames: Iterable[WaitingFrame]) -> None:
        with self._lock:
            waiting = self._read()
            for frame in frames:
                paths = waiting.setdefault(frame.setup, [])
                if str(frame.path) not in paths:
                    paths.append(str(frame.path))
                    log.info("%s waits for its masters: %s", frame.path.name, frame.reason)
            self.journal.set_value(journal_keys.waiting_for_masters(), json.dumps(waiting))

    def masters_built(self, setups: Iterable[str], by_work_order: str) -> list[str]:
        """Masters of these setups now exist: their waiting frames go to a calibrate_images work order each
        setup; returns the ids submitted."""
        submitted = []
        for setup in sorted(setups):
            with self._lock:
                waiting = self._read()
                paths = waiting.get(setup, [])
                if not paths:
                    continue
                order = pb.WorkOrder(
                    id=f"{by_work_order}-waited-{setup}",
                    requester=PREPROCESSOR,
                    calibrate_images=pb.CalibrateImages(paths=paths),
                )
                self.submit(order)  # journaled first: a crash now submits the same id again (known: not run twice)
                del waiting[setup]
                self.journal.set_value(journal_keys.waiting_for_masters(), json.dumps(waiting))
            log.info("masters of %s built by %s: %d waiting frames to %s", setup, by_work_order, len(paths), order.id)
            submitted.append(order.id)
        return submitted
