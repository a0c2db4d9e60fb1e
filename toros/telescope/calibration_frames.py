"""Calibration frames: bias and darks with the dome closed, dome flats under the flat-field lamp, twilight sky
flats 13° from the zenith away from the Sun, dithered, with each exposure predicted from the frames before it, in the
evening and in the morning.

Each work order counts its stored frames in the journal, so that a restart resumes after them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from toros.floor import journal_keys
from toros.floor.astronomy import altaz_exact, flat_spot, local_noon, night_of, sun_altitude
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.journal import Journal
from toros.runtime.workers import TaskContext, TaskFailed
from toros.telescope.devices import CommandRefused, FlatLamp
from toros.telescope.imaging import ImageRequest
from toros.telescope.observatory import Observatory
from toros.telescope.preemption import GiveWay
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)

SKY_FLAT_RETRY_S = 60.0  # clock seconds to wait when the twilight sky is still too bright (or not yet bright enough)
SATURATION_ADU = 60000.0
TWILIGHT_MAG_PER_DEG = 1.0  # the twilight sky at the zenith, until two frames measure it
MAG_PER_DEG_RANGE = (0.2, 3.0)  # a fit outside this is noise (clouds, a frame cut short)
MIN_SUN_STEP_DEG = 0.05  # two frames closer than this in Sun altitude do not measure the slope
MAX_PREDICTED_S = 3600.0
KINDS = {pb.IMAGE_TYPE_BIAS: "bias", pb.IMAGE_TYPE_DARK: "dark", pb.IMAGE_TYPE_FLAT: "flat"}
ALERT_POLL_S = 30.0  # clock seconds between looks at whether the alert's targets are done

NO_LAMP = "this telescope has no flat-field lamp (telescope.flat_lamp.driver: none): take sky flats"


@dataclass
class TwilightSky:
    """Predicts a sky flat's exposure from the frames before it and from how far the Sun will have moved by
    the middle of the next one: the twilight sky at the zenith fades by about a magnitude per degree the Sun
    sinks, so scaling from the last frame alone is wrong by as much as the time between them (a slew, a
    readout, a busy machine). Two well-exposed frames at different Sun altitudes measure that rate here."""

    sun_at: Callable[[datetime], float]
    samples: list[tuple[float, float, bool]] = field(default_factory=list)  # (Sun mid-exposure, ADU/s, unsaturated)

    def record(self, middle: datetime, seconds: float, level: float) -> None:
        self.samples.append((self.sun_at(middle), max(level, 1.0) / seconds, level < 0.9 * SATURATION_ADU))

    def mag_per_deg(self) -> float:
        measured = [(sun, rate) for sun, rate, unsaturated in self.samples if unsaturated]
        if len(measured) >= 2 and abs(measured[-1][0] - measured[-2][0]) >= MIN_SUN_STEP_DEG:
            (sun0, rate0), (sun1, rate1) = measured[-2:]
            fitted = 2.5 * math.log10(rate1 / rate0) / (sun1 - sun0)
            return min(max(fitted, MAG_PER_DEG_RANGE[0]), MAG_PER_DEG_RANGE[1])
        return TWILIGHT_MAG_PER_DEG

    def exposure(self, start: datetime, target_adu: float, first: float) -> float:
        """Seconds for ``target_adu`` from an exposure starting at ``start`` (``first`` before any frame)."""
        if not self.samples:
            return first
        sun0, rate0, _ = self.samples[-1]
        slope = self.mag_per_deg()
        seconds = target_adu / rate0
        for _ in range(3):  # the middle depends on the length: a few rounds converge
            sun = self.sun_at(start + timedelta(seconds=min(seconds, MAX_PREDICTED_S) / 2))
            seconds = target_adu / (rate0 * 10 ** (0.4 * slope * (sun - sun0)))
        return seconds


class CalibrationFrames:
    def __init__(self, observatory: Observatory, config: TelescopeConfig, clock: Clock, journal: Journal) -> None:
        self.observatory = observatory
        self.config = config
        self.settings = config.calibrations
        self.clock = clock
        self.journal = journal

    def prepare(self, context: TaskContext[pb.NightOperation]) -> str:
        """The night's PREPARE step: the camera cooled, then the routine bias and dark frames."""
        o, settings = self.observatory, self.settings
        plan = [(pb.IMAGE_TYPE_BIAS, 0.0)] * settings.bias_count + [
            (pb.IMAGE_TYPE_DARK, t) for t in settings.dark_times_s for _ in range(settings.dark_count)
        ]
        with o.instrument:
            context.progress(0.0, "cooling the camera")
            temperature = o.cool(context.check)
            for number, (image_type, seconds) in enumerate(plan):
                context.check()
                request = ImageRequest(image_type, seconds, "", KINDS[image_type], context.id)
                o.imaging.expose(context.check, request)
                context.progress(100.0 * (number + 1) / len(plan), f"{number + 1} of {len(plan)} bias and dark frames")
        darks = len(plan) - settings.bias_count
        return f"prepared: CCD at {temperature:.1f} C, {settings.bias_count} bias and {darks} dark frames"

    def take(self, context: TaskContext[pb.TakeCalibrations]) -> str:
        """A take_calibrations work order: ``count`` frames of one kind."""
        task = context.task
        if task.image_type == pb.IMAGE_TYPE_FLAT and task.flat_source != pb.FLAT_SOURCE_DOME:
            return self._sky_flats(context, task)
        if task.image_type == pb.IMAGE_TYPE_FLAT:
            return self._dome_flats(context, task)
        seconds = 0.0 if task.image_type == pb.IMAGE_TYPE_BIAS else task.exposure_time.ToTimedelta().total_seconds()
        with self.observatory.instrument:
            self._series(context, task, seconds)
        kind = KINDS[task.image_type]
        return f"{task.count} {kind} frames" + (f" of {seconds:g} s" if seconds else "")

    def _series(
        self, context: TaskContext[Any], task: pb.TakeCalibrations, seconds: float, flat_source: str = ""
    ) -> None:
        """The frames of one kind, under the instrument (held once by the caller). An alert's target stops the
        frame in progress; the series pauses, lets the target be observed and takes that frame again."""
        kind = KINDS[task.image_type]
        for number in range(self._frames_done(context), task.count):
            request = ImageRequest(
                task.image_type, seconds, task.filter, kind, context.id, flat_source=flat_source, preemptible=True
            )
            while True:
                try:
                    self.observatory.imaging.expose(context.check, request)
                    break
                except GiveWay:
                    self._pause_for_alerts(context, number, task.count, kind)
            self._frame_done(context, number + 1, task.count, kind)

    def _pause_for_alerts(self, context: TaskContext[Any], number: int, total: int, kind: str) -> None:
        """Lends the instrument to the dispatcher until no alert target can be observed any more."""
        o = self.observatory
        context.progress(100.0 * number / total, f"{number} of {total} {kind} frames; paused for an alert's targets")
        o.instrument.release()
        try:
            context.sleep(ALERT_POLL_S)  # the dispatcher takes the instrument meanwhile
            while o.preemption.alert_waiting():
                context.sleep(ALERT_POLL_S)
        finally:
            o.instrument.acquire()
        context.progress(100.0 * number / total, f"{number} of {total} {kind} frames; resumed")

    def _dome_flats(self, context: TaskContext[Any], task: pb.TakeCalibrations) -> str:
        o = self.observatory
        if o.lamp is None:
            raise CommandRefused(NO_LAMP)
        lamp: FlatLamp = o.lamp
        seconds = task.exposure_time.ToTimedelta().total_seconds() or self.settings.dome_flat_exposure_s
        with o.instrument:
            o.operations.call(lamp, lamp.switch_on)
            try:
                o.operations.wait(lamp, lamp.lit, "lighting the flat lamp", context.check)
                self._series(context, task, seconds, flat_source="dome")
            finally:
                o.operations.call(lamp, lamp.switch_off)
        return f"{task.count} flat frames of {seconds:g} s"

    def _frames_done(self, context: TaskContext[Any]) -> int:
        """Frames a previous attempt of this work order already stored (a restart resumes after them)."""
        return int(self.journal.get_value(journal_keys.frames_taken(context.id)) or 0)

    def _frame_done(self, context: TaskContext[Any], done: int, total: int, kind: str) -> None:
        self.journal.set_value(journal_keys.frames_taken(context.id), str(done))
        context.progress(100.0 * done / total, f"{done} of {total} {kind} frames")

    def _sky_flats(self, context: TaskContext[Any], task: pb.TakeCalibrations) -> str:
        """Twilight flats at the flattest spot of the sky (``flat_spot``: 13° from the zenith away from the Sun,
        dithered), each exposure predicted from the frames before it.

        In the evening the sky darkens: too bright → wait; too dark → stop. In the morning the reverse."""
        o, settings = self.observatory, self.settings
        low, high = settings.flat_sun_altitude_deg
        morning = self._morning()
        twilight = TwilightSky(lambda when: sun_altitude(self.config.site, when))
        first = settings.flat_max_exposure_s if morning else settings.flat_min_exposure_s
        done = self._frames_done(context)
        rejected = 0
        with o.instrument:
            while done < task.count and low <= o.sun() <= high:
                context.check()
                ra, dec = flat_spot(self.config.site, self.clock.now(), done + rejected)
                o.point(ra, dec, context.check)
                wanted = twilight.exposure(self.clock.now(), settings.flat_target_adu, first)
                too_bright, too_dark = wanted < settings.flat_min_exposure_s, wanted > settings.flat_max_exposure_s
                if (too_dark and not morning) or (too_bright and morning):
                    break  # the sky only goes further out of range
                if too_bright or too_dark:
                    context.sleep(SKY_FLAT_RETRY_S)
                    continue
                altitude, _ = altaz_exact(self.config.site, ra, dec, self.clock.now())
                request = ImageRequest(
                    pb.IMAGE_TYPE_FLAT, wanted, task.filter, "sky flat", context.id, (ra, dec), flat_source="sky",
                    altitude=altitude,
                )  # fmt: skip
                pixels, exposure = o.imaging.take(context.check, request)
                level, problem = self._judge_flat(pixels)
                twilight.record(exposure.date_obs + timedelta(seconds=wanted / 2), wanted, level)
                if problem:
                    rejected += 1
                    log.info("sky flat of %.1f s rejected: %s", wanted, problem)
                else:
                    o.imaging.keep(pixels, exposure)
                    done += 1
                    self._frame_done(context, done, task.count, "sky flat")
        if done == 0:
            raise TaskFailed(
                f"no usable sky flat while the Sun was between {low:+.0f} and {high:+.0f} deg ({rejected} frames rejected)"
            )
        missing = task.count - done
        return f"{done} sky flats in {task.filter or 'the current filter'}" + (
            f" ({missing} not taken: the sky went out of range)" if missing else ""
        )

    def _morning(self) -> bool:
        site = self.config.site
        now = self.clock.now()
        return now >= local_noon(site, night_of(site, now)) + timedelta(hours=12)

    def _judge_flat(self, pixels: np.ndarray) -> tuple[float, str | None]:
        """(median level above bias in ADU, why to reject it or None): well exposed, far from saturation."""
        target = self.settings.flat_target_adu
        overscan = self.observatory.camera.overscan
        image = pixels[:, : pixels.shape[1] - overscan] if overscan else pixels
        bias = float(np.median(pixels[:, -overscan:])) if overscan else 0.0
        level = float(np.median(image[::4, ::4])) - bias
        low, high = 0.5 * target, min(1.5 * target, SATURATION_ADU - bias)
        if not low <= level <= high:
            return level, f"level {level:.0f} ADU outside {low:.0f}-{high:.0f}"
        return level, None
