"""The operator's hold: an operator's close hands the telescope to people until an operator resumes or opens.

While held, the robotic night takes no step and the dispatcher observes nothing; an observation in progress
stops (so the operator's close is not kept waiting behind it). Alert targets that arrive meanwhile stay in the
book, shown as waiting for the hold, and (``telescope.hold.wake_on_alert``) someone is notified. The hold is
kept in the journal, so a restart keeps it, and every change is a ``hold_update`` event.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from toros.floor.journal_keys import operator_hold
from toros.floor.notifications import notify
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.journal import Journal, timestamp
from toros.telescope.settings import HoldConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hold:
    by: str
    since: float  # clock seconds
    reason: str
    work_order_id: str

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.since, UTC).strftime("%Y-%m-%d %H:%M UTC")
        return f"on hold by {self.by or 'an anonymous client'} since {when}" + (
            f": {self.reason}" if self.reason else ""
        )


class OperatorHold:
    def __init__(self, journal: Journal, clock: Clock, settings: HoldConfig) -> None:
        self.journal = journal
        self.clock = clock
        self.settings = settings
        self._lock = threading.Lock()
        stored = journal.get_value(operator_hold())
        self.current: Hold | None = Hold(**json.loads(stored)) if stored else None
        self._waiting: dict[str, int] = {}  # alert work order → its targets that wait for the hold

    @property
    def active(self) -> bool:
        return self.current is not None

    def message(self) -> pb.OperatorHold | None:
        hold = self.current
        if hold is None:
            return None
        return pb.OperatorHold(
            by=hold.by,
            since=timestamp(hold.since),
            reason=hold.reason,
            work_order_id=hold.work_order_id,
            waiting_alert_targets=sum(self._waiting.values()),
        )

    def take(self, by: str, reason: str, work_order_id: str) -> None:
        """An operator's close: the robot stands aside until an operator resumes or opens (a second close
        keeps the first hold's time and adds nothing)."""
        with self._lock:
            if self.current is not None:
                return
            self.current = Hold(by, self.clock.timestamp(), reason, work_order_id)
            self.journal.set_value(operator_hold(), json.dumps(asdict(self.current)))
        log.warning("telescope %s", self.current.describe())
        self.journal.append_event(
            work_order_id, hold_update=pb.HoldUpdate(hold=self.message(), message=self.current.describe())
        )

    def end(self, by: str, work_order_id: str) -> bool:
        """An operator's resume or open; True when there was a hold to end."""
        with self._lock:
            if self.current is None:
                return False
            self.current = None
            self._waiting.clear()
            self.journal.set_value(operator_hold(), "")
        text = f"hold ended by {by or 'an anonymous client'}: the robot takes the night again"
        log.warning("telescope %s", text)
        self.journal.append_event(work_order_id, hold_update=pb.HoldUpdate(message=text, ended_by=by))
        return True

    def alert_waits(self, alert_id: str, work_order_id: str, targets: int) -> None:
        """An alert's targets arrived during the hold: said in an event, and sent to people when asked to."""
        hold = self.current
        if hold is None or targets == 0:
            return
        self._waiting[work_order_id] = targets
        text = f"alert {alert_id}: {targets} targets wait for the operator's hold ({hold.describe()})"
        log.warning(text)
        self.journal.append_event(work_order_id, hold_update=pb.HoldUpdate(hold=self.message(), message=text))
        if self.settings.wake_on_alert:
            notify(
                self.settings.notify,
                f"TOROS: alert {alert_id} waits for the telescope's hold",
                text + ". Resume with: toros submit telescope night_operation --step resume",
                {"alert_id": alert_id, "work_order_id": work_order_id, "targets": targets, "hold": asdict(hold)},
            )

    def alert_done(self, work_order_id: str) -> None:
        self._waiting.pop(work_order_id, None)
