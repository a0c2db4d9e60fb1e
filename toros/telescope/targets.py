"""Targets to observe: the book of every open observe_targets order, the night plan, and the dispatcher.

An observe_targets work order puts its targets in the book and stays RUNNING until each is observed, found
unobservable (with the reason), expired (``valid_until``, or the end of the night it arrived in) or
cancelled (a retraction cancels the work order; its targets leave the book at once). The dispatcher observes
whenever the observatory is open in the dark: the best target that can be observed from now to the end of
its block, alert targets before routine ones. When an alert's target becomes observable, a routine target
gives way before its next frame, and the frame in progress stops or finishes as ``telescope.preemption`` says
(``preemption.py``). Frames already taken are remembered in the journal, so a restart never repeats them.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from pathlib import Path

from toros.floor import journal_keys
from toros.floor.astronomy import altaz_exact, coming_night, night_of
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.files import atomic_write
from toros.runtime.journal import Journal
from toros.telescope.devices import CommandRefused, DeviceError
from toros.telescope.hold import OperatorHold
from toros.telescope.images import FollowUp
from toros.telescope.imaging import ImageRequest, StorageFailure
from toros.telescope.loops import Repeating
from toros.telescope.observatory import Observatory
from toros.telescope.plan_picture import Observation, draw_night
from toros.telescope.preemption import GiveWay
from toros.telescope.safety import SafetyCause, Unsafe
from toros.telescope.scheduler import (
    PlanTarget,
    best_now,
    block_seconds,
    make_plan,
    write_plan,
)
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)


class TargetState(StrEnum):
    """Where a target of the book stands (the words are those the status message shows)."""

    PENDING = "pending"
    OBSERVED = "observed"
    UNOBSERVABLE = "unobservable"
    EXPIRED = "expired"


FINAL = frozenset({TargetState.OBSERVED, TargetState.UNOBSERVABLE, TargetState.EXPIRED})
POLL_S = 30.0  # clock seconds between looks for something to observe


@dataclass
class Entry:
    work_order_id: str
    index: int
    target: pb.Target
    alert: bool
    drill: bool
    exposure_s: float
    count: int
    filter: str
    done: int = 0
    state: TargetState = TargetState.PENDING
    reason: str = ""
    follow_up: FollowUp | None = None

    @property
    def key(self) -> str:
        return f"{self.work_order_id}#{self.index}"

    def plan_target(self, settings: TelescopeConfig) -> PlanTarget:
        """The frames still to take, as the planner sees them."""
        return PlanTarget(
            self.key,
            self.target.name,
            self.target.ra_deg,
            self.target.dec_deg,
            block_seconds(self.count - self.done, self.exposure_s, settings),
            1 if self.alert else 0,
            self.target.score,
        )


class Dropped(Exception):
    """The target's work order was cancelled while it was being observed."""


class TargetBook:
    def __init__(self, config: TelescopeConfig, journal: Journal) -> None:
        self.config = config
        self.journal = journal
        self._entries: dict[str, list[Entry]] = {}
        self._watchers: dict[str, Callable[[], None]] = {}  # work order → told of each frame and finished target
        self._lock = threading.Lock()
        self.version = 0
        self.on_alert: Callable[[], None] = lambda: None  # an alert's targets came in (the dispatcher listens)
        self.on_targets: Callable[[], None] = lambda: None  # other targets came in: an idle dispatcher looks now

    def add(
        self, work_order_id: str, task: pb.ObserveTargets, on_progress: Callable[[], None] = lambda: None
    ) -> list[Entry]:
        defaults = self.config.targets
        entries = []
        for index, target in enumerate(task.targets):
            exposure = (
                target.exposure_time.ToTimedelta().total_seconds()
                if target.HasField("exposure_time")
                else defaults.exposure_time_s
            )
            entry = Entry(
                work_order_id,
                index,
                target,
                bool(task.alert_id),
                task.drill,
                exposure,
                target.exposure_count or defaults.exposure_count,
                target.filter or defaults.filter,
                follow_up=FollowUp(
                    task.alert_id,
                    task.event_time.ToDatetime(tzinfo=UTC) if task.HasField("event_time") else None,
                )
                if task.alert_id
                else None,
            )
            entry.done = int(self.journal.get_value(journal_keys.frames_observed(entry.key)) or 0)
            if entry.done >= entry.count:
                entry.state = TargetState.OBSERVED
            entries.append(entry)
        with self._lock:
            self._entries[work_order_id] = entries
            self._watchers[work_order_id] = on_progress
            self.version += 1
        if task.alert_id and any(e.state is TargetState.PENDING for e in entries):
            self.on_alert()
        elif entries:
            self.on_targets()
        return entries

    def remove(self, work_order_id: str) -> None:
        with self._lock:
            self._watchers.pop(work_order_id, None)
            if self._entries.pop(work_order_id, None) is not None:
                self.version += 1

    def holds(self, work_order_id: str) -> bool:
        return work_order_id in self._entries

    def pending(self) -> list[Entry]:
        with self._lock:
            return [e for entries in self._entries.values() for e in entries if e.state == TargetState.PENDING]

    def finish(self, entry: Entry, state: TargetState, reason: str = "") -> None:
        entry.state, entry.reason = state, reason
        with self._lock:
            self.version += 1
            watcher = self._watchers.get(entry.work_order_id)
        if watcher is not None:
            watcher()

    def observations(self, night: str) -> list[Observation]:
        """What was observed in a night, in order."""
        stored = self.journal.get_value(journal_keys.night_observations(night))
        return [Observation.from_dict(item) for item in json.loads(stored)] if stored else []

    def record_observation(self, night: str, observation: Observation) -> None:
        with self._lock:
            observations = self.observations(night) + [observation]
            self.journal.set_value(
                journal_keys.night_observations(night), json.dumps([o.to_dict() for o in observations])
            )
            self.version += 1  # the plan picture shows it

    def record_frame(self, entry: Entry) -> None:
        entry.done += 1
        self.journal.set_value(journal_keys.frames_observed(entry.key), str(entry.done))
        if entry.done >= entry.count:
            self.finish(entry, TargetState.OBSERVED)
        elif watcher := self._watchers.get(entry.work_order_id):
            watcher()


class Dispatcher:
    """Observes the best target now, whenever the observatory is open in the dark; keeps the plan current."""

    def __init__(
        self,
        observatory: Observatory,
        book: TargetBook,
        config: TelescopeConfig,
        clock: Clock,
        root: Path,
        hold: OperatorHold,
    ) -> None:
        self.observatory = observatory
        self.book = book
        self.config = config
        self.clock = clock
        self.root = root
        self.hold = hold
        self._planned_version = -1
        self.current: Entry | None = None  # the target being observed, for the status
        self._loop = Repeating("telescope-dispatcher", self._step, POLL_S, clock)
        observatory.preemption.alert_waiting = self._alert_waiting
        book.on_alert = self._alert_arrived
        book.on_targets = self._loop.wake

    def _alert_arrived(self) -> None:
        """An exposure in progress may give way, and an idle dispatcher looks at once."""
        self.observatory.preemption.alert_arrived()
        self._loop.wake()

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def wake(self) -> None:
        """Looks again now (the hold changed)."""
        self._loop.wake()

    def _check(self, entry: Entry | None = None) -> None:
        if self._loop.stopping.is_set():
            raise Dropped("the daemon is stopping")
        if self.hold.current is not None:
            raise Dropped(f"the telescope is {self.hold.current.describe()}")
        if entry is not None and not self.book.holds(entry.work_order_id):
            raise Dropped(f"work order {entry.work_order_id} was cancelled")

    def _check_slew(self, entry: Entry) -> None:
        """As ``_check``; and a slew to a routine target stops for an alert's (unless frames finish first)."""
        self._check(entry)
        if not entry.alert and self.observatory.preemption.stop_now(f"the slew to {entry.target.name}", math.inf):
            raise GiveWay(f"the slew to {entry.target.name} was stopped for an alert's target")

    def _plan_targets(self, entries: list[Entry]) -> list[PlanTarget]:
        return [e.plan_target(self.config) for e in entries]

    def _step(self) -> bool:
        self.observatory.safety.heartbeat()
        if self.book.version != self._planned_version:
            self.replan()
        return self.dispatch_once()

    def replan(self) -> None:
        """Re-makes tonight's plan from the targets in the book and writes plan.json and plan.png."""
        self._planned_version = self.book.version
        entries = self.book.pending()
        now = self.clock.now()
        night, _ = coming_night(self.config.site, self.config.constraints, now)
        targets = self._plan_targets(entries)
        folder = self.root / night.isoformat()
        json_path, png_path = folder / "plan.json", folder / "plan.png"
        observed = self.book.observations(night.isoformat())
        if not targets and not observed:
            return  # nothing to plan or to show yet
        plan, _ = make_plan(targets, self.config.site, self.config.constraints, night, since=now)
        plan.made = now
        if not targets and json_path.exists():  # the last plan of the night stays on disk to be looked at
            draw_night(png_path, plan, targets, self.config.site, self.config.constraints, observed, now)
            last = json.loads(json_path.read_text())
            last["observed"] = [o.to_dict() for o in observed]  # with what the night did since
            with atomic_write(json_path, "w") as stream:
                json.dump(last, stream, indent=2)
            return
        write_plan(plan, targets, json_path, png_path, self.config, observed, now)
        log.info("night plan %s: %d blocks, %d not observable tonight", night, len(plan.blocks), len(plan.unobservable))

    def dispatch_once(self) -> bool:
        """Observes one target if one can be observed now (not while an operator holds the telescope); True when
        it did."""
        if self.hold.active or not self.observatory.ready_to_observe():
            return False
        entries = self.book.pending()
        if not entries:
            return False
        best, _ = best_now(self._plan_targets(entries), self.config.site, self.config.constraints, self.clock.now())
        if best is None:
            return False
        self.observe(entries[best])
        return True

    def observe(self, entry: Entry) -> None:
        target = entry.target
        started, frames_before = self.clock.now(), entry.done
        log.info(
            "observing %s (%s) for work order %s: %d of %d frames done",
            target.name,
            entry.key,
            entry.work_order_id,
            entry.done,
            entry.count,
        )
        self.current = entry
        try:
            with self.observatory.instrument:
                self.observatory.point(target.ra_deg, target.dec_deg, lambda: self._check_slew(entry), entry.filter)
                while entry.done < entry.count:
                    self._check(entry)
                    if not entry.alert and self._alert_waiting():
                        log.info("%s gives way to an alert's target before its next frame", target.name)
                        return
                    altitude, _ = altaz_exact(self.config.site, target.ra_deg, target.dec_deg, self.clock.now())
                    request = ImageRequest(
                        pb.IMAGE_TYPE_LIGHT,
                        entry.exposure_s,
                        entry.filter,
                        target.name,
                        entry.work_order_id,
                        (target.ra_deg, target.dec_deg),
                        drill=entry.drill,
                        altitude=altitude,
                        follow_up=entry.follow_up,
                        preemptible=not entry.alert,
                    )
                    self.observatory.imaging.expose(lambda: self._check(entry), request)
                    self.book.record_frame(entry)
        except GiveWay as exc:
            log.info("%s gives way to an alert's target: %s", target.name, exc)
        except CommandRefused as exc:
            self.book.finish(entry, TargetState.UNOBSERVABLE, str(exc))
        except StorageFailure as exc:
            # no point in an open dome that cannot store images
            self.observatory.safety.make_safe(SafetyCause.STORAGE, f"storage: {exc}")
        except (Dropped, Unsafe, DeviceError) as exc:
            log.warning("observation of %s stopped: %s", target.name, exc)
        finally:
            self.current = None
            if entry.done > frames_before:
                night = night_of(self.config.site, started).isoformat()
                observation = Observation(
                    target.name, target.ra_deg, target.dec_deg, started, self.clock.now(), entry.done - frames_before
                )
                self.book.record_observation(night, observation)

    def _alert_waiting(self) -> bool:
        alerts = [e for e in self.book.pending() if e.alert]
        if not alerts:
            return False
        best, _ = best_now(self._plan_targets(alerts), self.config.site, self.config.constraints, self.clock.now())
        return best is not None
