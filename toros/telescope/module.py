"""The telescope module as the runtime sees it: its tasks, their preconditions, devices and the night."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from toros.floor.astronomy import coming_night
from toros.floor.requesters import is_operator
from toros.generated import toros_pb2 as pb
from toros.runtime.module import Module, Services, Task
from toros.runtime.workers import TaskContext, TaskFailed, TaskMessage
from toros.telescope import orders
from toros.telescope.calibration_frames import NO_LAMP, CalibrationFrames
from toros.telescope.devices import CommandRefused, DeviceError
from toros.telescope.hold import OperatorHold
from toros.telescope.imaging import StorageFailure
from toros.telescope.night import NightRunner
from toros.telescope.observatory import Observatory
from toros.telescope.safety import Unsafe
from toros.telescope.scheduler import make_plan
from toros.telescope.settings import TelescopeConfig
from toros.telescope.targets import FINAL, Dispatcher, Entry, TargetBook, TargetState

log = logging.getLogger(__name__)

WAIT_POLL_S = 60.0  # clock seconds between looks at an observe_targets order's targets


def _failures(handler: Callable[[TaskContext[TaskMessage]], str]) -> Callable[[TaskContext[TaskMessage]], str]:
    """Device, safety and storage problems end a work order FAILED with their message."""

    def run(context: TaskContext[Any]) -> str:
        try:
            return handler(context)
        except (DeviceError, CommandRefused, Unsafe, StorageFailure) as exc:
            raise TaskFailed(str(exc)) from None

    run.__name__ = handler.__name__
    return run


def _answering(precondition: Callable[[pb.WorkOrder], str | None]) -> Callable[[pb.WorkOrder], str | None]:
    """A device that fails while a precondition is checked is itself the reason to refuse."""

    def check(order: pb.WorkOrder) -> str | None:
        try:
            return precondition(order)
        except (DeviceError, CommandRefused) as exc:
            return f"a device did not answer: {exc}"

    return check


class TelescopeModule(Module):
    name = "telescope"

    def __init__(self, services: Services, settings: TelescopeConfig) -> None:
        super().__init__(services)
        self.settings = settings
        root = self.storage_root
        self.observatory = Observatory(settings, root, self.clock, self.journal)
        self.hold = OperatorHold(self.journal, self.clock, settings.hold)
        self.book = TargetBook(settings, self.journal)
        self.dispatcher = Dispatcher(self.observatory, self.book, settings, self.clock, root, self.hold)
        self.calibration_frames = CalibrationFrames(self.observatory, settings, self.clock, self.journal)
        self.night = NightRunner(self.observatory, settings, self.clock, self.journal, services.submit, self.hold)

    def start(self) -> None:
        """Connects the devices (a device that fails is FAULT; the daemon still serves) and starts the night."""
        settings = self.settings
        self.observatory.start()
        self.dispatcher.start()
        if settings.mode == "robotic":
            self.night.start()

    def stop(self) -> None:
        self.night.stop()
        self.dispatcher.stop()
        self.observatory.stop()

    def tasks(self) -> dict[str, Task[Any]]:
        return {
            "observe_targets": Task(orders.check_observe_targets, _failures(self.observe_targets)),
            "take_calibrations": Task(
                orders.check_take_calibrations,
                _failures(self.calibration_frames.take),
                _answering(self.can_calibrate),
            ),
            "night_operation": Task(
                orders.check_night_operation, _failures(self.night_operation), _answering(self.can_do_step)
            ),
            "dome_control": Task(
                orders.check_dome_control, _failures(self.dome_control), _answering(self.can_move_dome)
            ),
        }

    def devices(self) -> list[pb.Device]:
        return self.observatory.device_states()

    def activity(self) -> str:
        if (hold := self.hold.current) is not None:
            return hold.describe()
        return self.night.describe() if self.settings.mode == "robotic" else "manual"

    def describe_status(self, status: pb.ModuleStatus) -> None:
        if (hold := self.hold.message()) is not None:
            status.hold.CopyFrom(hold)

    def status_message(self) -> str:
        o = self.observatory
        state = self.activity()
        unsafe, storage_fault = o.safety.unsafe_reason, o.imaging.storage_fault
        safety = f"; safety: {unsafe}" if unsafe else ""
        storage = f"; storage: {storage_fault}" if storage_fault else ""
        current = self.dispatcher.current
        target = (
            f"; target {current.target.name} ({current.done} of {current.count} frames, {current.work_order_id})"
            if current is not None
            else ""
        )
        return (
            f"mode {self.settings.mode}, site {self.settings.site.name}; {state}{target}; "
            f"{len(self.book.pending())} targets pending; Sun {o.sun():+.1f} deg{safety}{storage}"
        )

    # -- preconditions (FAILED_PRECONDITION at Submit) ---------------------------------------------

    def _fault(self, *names: str) -> str | None:
        faults = self.observatory.safety.faults
        for name in names:
            if name in faults:
                return f"{name} is in FAULT: {faults[name]}"
        return None

    def can_open(self, order: pb.WorkOrder, override: bool) -> str | None:
        """Why the dome may not open for this order now (None: it may): the daylight limit (an operator's
        override aside), the weather, a fault, safety; the robot's own open while an operator holds it."""
        if self.hold.active and not is_operator(order.requester):
            assert self.hold.current is not None
            return f"the telescope is {self.hold.current.describe()}: an operator resumes it"
        if (daylight := self._daylight(order, override)) is not None:
            return daylight
        return self.observatory.safety.reopen_allowed()

    def _daylight(self, order: pb.WorkOrder, override: bool) -> str | None:
        """The Sun above ``safety.max_sun_altitude_deg``, unless an operator overrides it (by name)."""
        limit = self.settings.safety.max_sun_altitude_deg
        if (sun := self.observatory.sun()) <= limit:
            return None
        if override and is_operator(order.requester) and order.requester:
            return None
        why = (
            "; an override needs an operator's order with a requester"
            if override
            else "; an operator may override it (override, with a reason)"
        )
        return f"the Sun is at {sun:+.1f} deg, above telescope.safety.max_sun_altitude_deg ({limit:+.1f} deg){why}"

    def can_move_dome(self, order: pb.WorkOrder) -> str | None:
        task = order.dome_control
        if task.action == pb.DOME_ACTION_OPEN:
            return self.can_open(order, task.override)
        return self._fault("dome") if task.action != pb.DOME_ACTION_CLOSE else None

    def can_do_step(self, order: pb.WorkOrder) -> str | None:
        task = order.night_operation
        if task.step == pb.NIGHT_STEP_OPEN:
            return self.can_open(order, task.override)
        if task.step == pb.NIGHT_STEP_PREPARE:
            if self.observatory.is_open():
                return "the dome is open: close it before taking bias and dark frames"
            return self._fault("camera")
        return None

    def can_calibrate(self, order: pb.WorkOrder) -> str | None:
        task = order.take_calibrations
        if reason := self._fault("camera", "filter_wheel") or self.observatory.imaging.storage_ok():
            return reason
        if task.image_type == pb.IMAGE_TYPE_FLAT and task.flat_source != pb.FLAT_SOURCE_DOME:
            if not self.observatory.is_open():
                return "sky flats need the dome open (night_operation OPEN), or use flat_source DOME"
            low, high = self.settings.calibrations.flat_sun_altitude_deg
            if not low <= (sun := self.observatory.sun()) <= high:
                return f"the Sun is at {sun:+.1f} deg, outside the sky-flat band {low:+.1f} to {high:+.1f} deg"
        if task.image_type == pb.IMAGE_TYPE_FLAT and task.flat_source == pb.FLAT_SOURCE_DOME:
            if self.observatory.lamp is None:
                return NO_LAMP
            if self.observatory.is_open():
                return "dome flats need the dome closed"
            return self._fault("flat_lamp")
        return None

    # -- handlers --------------------------------------------------------------------------------

    def _opened(self, context: TaskContext[Any], override: bool) -> str:
        """Opens for an order that may (checked again: time passed since it was accepted); an operator's open
        ends the hold. Returns what was done beyond opening, for the message."""
        if (reason := self.can_open(context.order, override)) is not None:
            raise TaskFailed(reason)
        sun = self.observatory.sun()
        limit = self.settings.safety.max_sun_altitude_deg
        with self.observatory.instrument:
            self.observatory.open(context.check)
        notes = ""
        if sun > limit:
            notes += f"; opened with the Sun at {sun:+.1f} deg on {context.order.requester}'s override"
            log.warning("dome opened with the Sun at %+.1f deg on %s's override", sun, context.order.requester)
        if is_operator(context.order.requester) and self.hold.end(context.order.requester, context.id):
            notes += "; the operator's hold ended"
        return notes

    def _closing(self, context: TaskContext[Any], reason: str) -> str:
        """An operator's close puts the telescope on hold, before it waits for the instrument: an observation
        in progress stops for it."""
        if not is_operator(context.order.requester):
            return ""
        self.hold.take(context.order.requester, reason, context.id)
        self.dispatcher.wake()
        return "; on hold until an operator resumes or opens"

    def dome_control(self, context: TaskContext[pb.DomeControl]) -> str:
        task = context.task
        o = self.observatory
        if task.action == pb.DOME_ACTION_OPEN:
            return "shutter open" + self._opened(context, task.override)
        if task.action == pb.DOME_ACTION_CLOSE:
            held = self._closing(context, task.reason)
            with o.instrument:
                o.close(context.check)
            return "mount parked, shutter closed, dome parked" + held
        with o.instrument:
            if task.action == pb.DOME_ACTION_SLEW:
                o.turn_dome(task.azimuth_deg, context.check)
                return f"dome at azimuth {o.dome.azimuth():.1f}"
            o.turn_dome(None, context.check)
            return "dome parked"

    def night_operation(self, context: TaskContext[pb.NightOperation]) -> str:
        task = context.task
        o = self.observatory
        if task.step == pb.NIGHT_STEP_CLOSE:
            held = self._closing(context, task.reason)
            with o.instrument:
                o.close(context.check)
                o.safety.clear_faults()
            return "closed: mount parked, shutter closed, dome parked" + held
        if task.step == pb.NIGHT_STEP_OPEN:
            return "open: shutter open, mount unparked" + self._opened(context, task.override)
        if task.step == pb.NIGHT_STEP_RESUME:
            if not self.hold.end(context.order.requester, context.id):
                return "no hold to end"
            self.night.wake()
            self.dispatcher.wake()
            return "hold ended: the robot takes the night again"
        return self.calibration_frames.prepare(context)

    def observe_targets(self, context: TaskContext[pb.ObserveTargets]) -> str:
        task = context.task
        accepted = datetime.fromtimestamp(context.record.accept_time, tz=UTC)
        _, deadline = coming_night(self.settings.site, self.settings.constraints, accepted)
        if task.HasField("valid_until"):
            deadline = min(deadline, task.valid_until.ToDatetime(tzinfo=UTC))
        entries = self.book.add(context.id, task, on_progress=context.wake)  # progress shown per frame
        total_frames = sum(e.count for e in entries)
        try:
            self._drop_unobservable(entries)
            if task.alert_id:
                self.hold.alert_waits(task.alert_id, context.id, sum(e.state not in FINAL for e in entries))
            while True:
                done_frames = sum(e.done for e in entries)
                open_entries = [e for e in entries if e.state not in FINAL]
                hold = self.hold.current
                waiting = f", {len(open_entries)} waiting" + (
                    f" for the operator's hold ({hold.by})" if hold is not None and open_entries else ""
                )
                context.progress(
                    100.0 * done_frames / total_frames,
                    f"{sum(e.state == TargetState.OBSERVED for e in entries)} of {len(entries)} targets observed{waiting}",
                )
                if not open_entries:
                    break
                if self.clock.now() >= deadline:
                    for entry in open_entries:
                        self.book.finish(entry, TargetState.EXPIRED, f"not observed by {deadline:%Y-%m-%d %H:%M} UTC")
                    break
                context.sleep(WAIT_POLL_S)
        finally:
            self.book.remove(context.id)
            self.hold.alert_done(context.id)
        return self._summary(entries)

    def _drop_unobservable(self, entries: list[Entry]) -> None:
        """Targets that cannot be observed tonight are reported at once, with the reason."""
        settings = self.settings
        now = self.clock.now()
        pending = [e for e in entries if e.state == TargetState.PENDING]
        targets = [e.plan_target(settings) for e in pending]
        plan, _ = make_plan(
            targets,
            settings.site,
            settings.constraints,
            coming_night(settings.site, settings.constraints, now)[0],
            since=now,
        )
        for entry in pending:
            reason = plan.unobservable.get(entry.key)
            if reason and entry.key not in plan.crowded_out:
                self.book.finish(entry, TargetState.UNOBSERVABLE, reason)

    @staticmethod
    def _summary(entries: list[Entry]) -> str:
        observed = [e for e in entries if e.state == TargetState.OBSERVED]
        frames = sum(e.done for e in entries)
        text = f"{len(observed)} of {len(entries)} targets observed ({frames} frames)"
        others = [e for e in entries if e.state != TargetState.OBSERVED]
        if others:
            text += "; " + "; ".join(f"{e.target.name}: {e.state}, {e.reason}" for e in others[:20])
            if len(others) > 20:
                text += f"; and {len(others) - 20} more"
        return text
