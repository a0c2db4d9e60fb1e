"""The telescope module as the runtime sees it: its tasks, their preconditions, devices and the night."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import numpy as np

from toros import journal_keys
from toros.config import Config
from toros.generated import toros_pb2 as pb
from toros.runtime.module import Module, Services, Task
from toros.runtime.workers import TaskContext, TaskFailed
from toros.telescope import orders
from toros.telescope.astronomy import local_noon, night_of, zenith
from toros.telescope.devices import CommandRefused, DeviceError
from toros.telescope.night import NightRunner
from toros.telescope.observatory import Observatory, StorageFailure, Unsafe
from toros.telescope.scheduler import make_plan
from toros.telescope.targets import FINAL, Dispatcher, Entry, TargetBook, TargetState, coming_night

log = logging.getLogger(__name__)

WAIT_POLL_S = 60.0  # clock seconds between looks at an observe_targets order's targets
SKY_FLAT_RETRY_S = 60.0
KINDS = {pb.IMAGE_TYPE_BIAS: "bias", pb.IMAGE_TYPE_DARK: "dark", pb.IMAGE_TYPE_FLAT: "flat"}


def _failures(handler: Callable[[TaskContext], str]) -> Callable[[TaskContext], str]:
    """Device, safety and storage problems end a work order FAILED with their message."""

    def run(context: TaskContext) -> str:
        try:
            return handler(context)
        except (DeviceError, CommandRefused, Unsafe, StorageFailure) as exc:
            raise TaskFailed(str(exc)) from None

    run.__name__ = handler.__name__
    return run


TaskMessage = TypeVar("TaskMessage")


def _answering(precondition: Callable[[TaskMessage], str | None]) -> Callable[[TaskMessage], str | None]:
    """A device that fails while a precondition is checked is itself the reason to refuse."""

    def check(task: TaskMessage) -> str | None:
        try:
            return precondition(task)
        except (DeviceError, CommandRefused) as exc:
            return f"a device did not answer: {exc}"

    return check


class TelescopeModule(Module):
    name = "telescope"
    config: Config  # the node's whole config (the daemon loads it)

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        root = self.config.storage.root
        settings = self.config.telescope
        self.observatory = Observatory(settings, root, self.clock, self.journal)
        self.book = TargetBook(settings, self.journal)
        self.dispatcher = Dispatcher(self.observatory, self.book, settings, self.clock, root)
        self.night = NightRunner(self.observatory, settings, self.clock, self.journal, services.submit)

    def start(self) -> None:
        """Connects the devices (a device that fails is FAULT; the daemon still serves) and starts the night."""
        settings = self.config.telescope
        self.observatory.start()
        self.dispatcher.start()
        if settings.mode == "robotic":
            self.night.start()

    def stop(self) -> None:
        self.night.stop()
        self.dispatcher.stop()
        self.observatory.stop()

    def tasks(self) -> dict[str, Task]:
        return {
            "observe_targets": Task(orders.check_observe_targets, _failures(self.observe_targets)),
            "take_calibrations": Task(
                orders.check_take_calibrations, _failures(self.take_calibrations), _answering(self.can_calibrate)
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
        return self.night.describe() if self.config.telescope.mode == "robotic" else "manual"

    def status_message(self) -> str:
        o = self.observatory
        state = self.activity()
        safety = f"; safety: {o.unsafe_reason}" if o.unsafe_reason else ""
        storage = f"; storage: {o.storage_fault}" if o.storage_fault else ""
        return (
            f"mode {self.config.telescope.mode}, site {self.config.telescope.site.name}; {state}; "
            f"{len(self.book.pending())} targets pending; Sun {o.sun():+.1f} deg{safety}{storage}"
        )

    # -- preconditions (FAILED_PRECONDITION at Submit) ---------------------------------------------

    def _fault(self, *names: str) -> str | None:
        for name in names:
            if name in self.observatory.faults:
                return f"{name} is in FAULT: {self.observatory.faults[name]}"
        return None

    def can_move_dome(self, task: pb.DomeControl) -> str | None:
        if task.action == pb.DOME_ACTION_OPEN:
            return self.observatory.reopen_allowed()
        return self._fault("dome") if task.action != pb.DOME_ACTION_CLOSE else None

    def can_do_step(self, task: pb.NightOperation) -> str | None:
        if task.step == pb.NIGHT_STEP_OPEN:
            high = self.config.telescope.calibrations.flat_sun_altitude_deg[1]
            if (sun := self.observatory.sun()) > high:
                return f"the Sun is at {sun:+.1f} deg, above {high:+.1f} deg: too early or too late to open"
            return self.observatory.reopen_allowed()
        if task.step == pb.NIGHT_STEP_PREPARE:
            if self.observatory.is_open():
                return "the dome is open: close it before taking bias and dark frames"
            return self._fault("camera")
        return None

    def can_calibrate(self, task: pb.TakeCalibrations) -> str | None:
        if reason := self._fault("camera", "filter_wheel") or self.observatory.storage_ok():
            return reason
        if task.image_type == pb.IMAGE_TYPE_FLAT and task.flat_source != pb.FLAT_SOURCE_DOME:
            if not self.observatory.is_open():
                return "sky flats need the dome open (night_operation OPEN), or use flat_source DOME"
            low, high = self.config.telescope.calibrations.flat_sun_altitude_deg
            if not low <= (sun := self.observatory.sun()) <= high:
                return f"the Sun is at {sun:+.1f} deg, outside the sky-flat band {low:+.1f} to {high:+.1f} deg"
        if (
            task.image_type == pb.IMAGE_TYPE_FLAT
            and task.flat_source == pb.FLAT_SOURCE_DOME
            and self.observatory.is_open()
        ):
            return "dome flats need the dome closed"
        return None

    # -- handlers --------------------------------------------------------------------------------

    def dome_control(self, context: TaskContext) -> str:
        task: pb.DomeControl = context.task  # type: ignore[assignment]
        o = self.observatory
        with o.instrument:
            if task.action == pb.DOME_ACTION_OPEN:
                o.open(context.check)
                return "shutter open"
            if task.action == pb.DOME_ACTION_CLOSE:
                o.close(context.check)
                return "mount parked, shutter closed, dome parked"
            if task.action == pb.DOME_ACTION_SLEW:
                o.call(o.dome, lambda: o.dome.slew_to(task.azimuth_deg))
                o.wait(o.dome, lambda: not o.dome.slewing(), "rotating the dome", context.check)
                return f"dome at azimuth {o.dome.azimuth():.1f}"
            o.call(o.dome, o.dome.park)
            o.wait(o.dome, lambda: not o.dome.slewing(), "parking the dome", context.check)
            return "dome parked"

    def night_operation(self, context: TaskContext) -> str:
        step = context.task.step  # type: ignore[attr-defined]
        o = self.observatory
        if step == pb.NIGHT_STEP_CLOSE:
            with o.instrument:
                o.close(context.check)
                o.clear_faults()
            return "closed: mount parked, shutter closed, dome parked"
        if step == pb.NIGHT_STEP_OPEN:
            with o.instrument:
                o.open(context.check)
            return "open: shutter open, mount unparked"
        calibrations = self.config.telescope.calibrations
        with o.instrument:
            context.progress(0.0, "cooling the camera")
            temperature = o.cool(context.check)
            plan = [(pb.IMAGE_TYPE_BIAS, 0.0)] * calibrations.bias_count + [
                (pb.IMAGE_TYPE_DARK, t) for t in calibrations.dark_times_s for _ in range(calibrations.dark_count)
            ]
            for number, (image_type, seconds) in enumerate(plan):
                context.check()
                o.expose(
                    context.check,
                    image_type=image_type,
                    seconds=seconds,
                    filter="",
                    object=KINDS[image_type],
                    work_order_id=context.id,
                )
                context.progress(100.0 * (number + 1) / len(plan), f"{number + 1} of {len(plan)} bias and dark frames")
        return f"prepared: CCD at {temperature:.1f} C, {calibrations.bias_count} bias and {len(plan) - calibrations.bias_count} dark frames"

    def take_calibrations(self, context: TaskContext) -> str:
        task: pb.TakeCalibrations = context.task  # type: ignore[assignment]
        o = self.observatory
        kind = KINDS[task.image_type]
        if task.image_type == pb.IMAGE_TYPE_FLAT and task.flat_source != pb.FLAT_SOURCE_DOME:
            return self._sky_flats(context, task)
        seconds = 0.0 if task.image_type == pb.IMAGE_TYPE_BIAS else task.exposure_time.ToTimedelta().total_seconds()
        dome_flat = task.image_type == pb.IMAGE_TYPE_FLAT
        if dome_flat and seconds == 0:
            seconds = self.config.telescope.calibrations.dome_flat_exposure_s
        done = self._frames_done(context)
        with o.instrument:
            if o.sky is not None:
                o.sky.lamp_on = dome_flat
            try:
                for number in range(done, task.count):
                    o.expose(
                        context.check,
                        image_type=task.image_type,
                        seconds=seconds,
                        filter=task.filter,
                        object=kind,
                        work_order_id=context.id,
                        flat_source="dome" if dome_flat else "",
                    )
                    self._frame_done(context, number + 1, task.count, kind)
            finally:
                if o.sky is not None:
                    o.sky.lamp_on = False
        return f"{task.count} {kind} frames" + (f" of {seconds:g} s" if seconds else "")

    def _frames_done(self, context: TaskContext) -> int:
        """Frames a previous attempt of this work order already stored (a restart resumes after them)."""
        return int(self.journal.get_value(journal_keys.frames_taken(context.id)) or 0)

    def _frame_done(self, context: TaskContext, done: int, total: int, kind: str) -> None:
        self.journal.set_value(journal_keys.frames_taken(context.id), str(done))
        context.progress(100.0 * done / total, f"{done} of {total} {kind} frames")

    def _sky_flats(self, context: TaskContext, task: pb.TakeCalibrations) -> str:
        """Twilight flats near the zenith, each exposure scaled from the counts of the one before.

        In the evening the sky darkens: too bright → wait; too dark → stop. In the morning the reverse."""
        o = self.observatory
        settings = self.config.telescope.calibrations
        low, high = settings.flat_sun_altitude_deg
        morning = self._morning()
        seconds = settings.flat_max_exposure_s if morning else settings.flat_min_exposure_s
        done = self._frames_done(context)
        rejected = 0
        with o.instrument:
            while done < task.count and low <= o.sun() <= high:
                context.check()
                ra, dec = zenith(self.config.telescope.site, self.clock.now())
                o.point(ra, dec, context.check)
                pixels, exposure = o.take(
                    context.check,
                    image_type=pb.IMAGE_TYPE_FLAT,
                    seconds=seconds,
                    filter=task.filter,
                    object="sky flat",
                    work_order_id=context.id,
                    flat_source="sky",
                    pointing=(ra, dec),
                )
                level, problem = self._judge_flat(pixels)
                if problem:
                    rejected += 1
                    log.info("sky flat of %.1f s rejected: %s", seconds, problem)
                else:
                    o.keep(pixels, exposure)
                    done += 1
                    self._frame_done(context, done, task.count, "sky flat")
                wanted = seconds * settings.flat_target_adu / max(level, 1.0)
                too_bright, too_dark = wanted < settings.flat_min_exposure_s, wanted > settings.flat_max_exposure_s
                if (too_dark and not morning) or (too_bright and morning):
                    break  # the sky only goes further out of range
                if too_bright or too_dark:
                    context.sleep(SKY_FLAT_RETRY_S)
                seconds = min(max(wanted, settings.flat_min_exposure_s), settings.flat_max_exposure_s)
        if done == 0:
            raise TaskFailed(
                f"no usable sky flat while the Sun was between {low:+.0f} and {high:+.0f} deg ({rejected} frames rejected)"
            )
        missing = task.count - done
        return f"{done} sky flats in {task.filter or 'the current filter'}" + (
            f" ({missing} not taken: the sky went out of range)" if missing else ""
        )

    def _morning(self) -> bool:
        site = self.config.telescope.site
        now = self.clock.now()
        return now >= local_noon(site, night_of(site, now)) + timedelta(hours=12)

    def _judge_flat(self, pixels: np.ndarray) -> tuple[float, str | None]:
        """(median level above bias in ADU, why to reject it or None): well exposed, far from saturation."""
        settings = self.config.telescope.calibrations
        overscan = self.observatory.camera.overscan
        image = pixels[:, : pixels.shape[1] - overscan] if overscan else pixels
        bias = float(np.median(pixels[:, -overscan:])) if overscan else 0.0
        level = float(np.median(image[::4, ::4])) - bias
        low, high = 0.5 * settings.flat_target_adu, min(1.5 * settings.flat_target_adu, 60000.0 - bias)
        if not low <= level <= high:
            return level, f"level {level:.0f} ADU outside {low:.0f}-{high:.0f}"
        return level, None

    def observe_targets(self, context: TaskContext) -> str:
        task: pb.ObserveTargets = context.task  # type: ignore[assignment]
        accepted = datetime.fromtimestamp(context.record.accept_time, tz=UTC)
        _, deadline = coming_night(self.config.telescope, accepted)
        if task.HasField("valid_until"):
            deadline = min(deadline, task.valid_until.ToDatetime(tzinfo=UTC))
        entries = self.book.add(context.id, task)
        total_frames = sum(e.count for e in entries)
        try:
            self._drop_unobservable(entries)
            while True:
                done_frames = sum(e.done for e in entries)
                open_entries = [e for e in entries if e.state not in FINAL]
                context.progress(
                    100.0 * done_frames / total_frames,
                    f"{sum(e.state == TargetState.OBSERVED for e in entries)} of {len(entries)} targets observed, {len(open_entries)} waiting",
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
        return self._summary(entries)

    def _drop_unobservable(self, entries: list[Entry]) -> None:
        """Targets that cannot be observed tonight are reported at once, with the reason."""
        settings = self.config.telescope
        now = self.clock.now()
        pending = [e for e in entries if e.state == TargetState.PENDING]
        targets = [e.plan_target(settings) for e in pending]
        plan, _ = make_plan(targets, settings.site, settings.constraints, coming_night(settings, now)[0], since=now)
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
