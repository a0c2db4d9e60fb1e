"""Imaging: expose one image, store it atomically (``images.store``), announce it (``image_ready``).

A full disk is a storage fault: exposures stop (the camera shows FAULT) until space is back, which is noticed
at the next exposure; the images already stored stay as they are.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from toros.floor import journal_keys
from toros.floor.astronomy import night_of
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.journal import Journal
from toros.telescope import images
from toros.telescope.devices import Camera, CommandRefused, DeviceError, FilterWheel, Mount
from toros.telescope.operations import DeviceOperations
from toros.telescope.preemption import GiveWay, Preemption
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)

FRAMES_OF_ROOM = 4  # a full disk has room again when this many raw frames fit


class StorageFailure(Exception):
    """An image could not be stored (disk full, write error): exposures stop until space is back."""


@dataclass(frozen=True)
class ImageRequest:
    """One image to take: what, how long, through which filter, for which work order."""

    image_type: pb.ImageType
    seconds: float
    filter: str  # "" keeps the filter in the beam
    object: str
    work_order_id: str
    pointing: tuple[float, float] | None = None  # (RA, Dec) of the target, degrees
    drill: bool = False
    flat_source: str = ""  # "dome" or "sky" for flats
    altitude: float | None = None
    follow_up: images.FollowUp | None = None
    preemptible: bool = False  # an alert's target may stop it (routine targets, calibration frames)


@dataclass(frozen=True)
class ImagingPort:
    """What imaging uses of the telescope, and nothing more: the camera, the mount (where it points), the filter
    wheel, commands to devices, the preemption's signal, the clock, and a way to say the devices changed."""

    camera: Camera
    mount: Mount
    wheel: FilterWheel
    operations: DeviceOperations
    preemption: Preemption
    clock: Clock
    devices_changed: Callable[[], None]


class Imaging:
    def __init__(self, port: ImagingPort, config: TelescopeConfig, root: Path, journal: Journal) -> None:
        self.port = port
        self.config = config
        self.root = root
        self.journal = journal
        self.storage_fault: str | None = None
        self._lock = threading.Lock()
        self._image_number = int(journal.get_value(journal_keys.image_number()) or 0)
        self._reading_out: images.Exposure | None = None  # a stopped exposure, collected before the next one

    def storage_ok(self) -> str | None:
        """Why images cannot be stored now (None: they can); a full disk clears itself once space is back."""
        if self.storage_fault is None:
            return None
        frame_bytes = (self.config.camera.width + self.config.camera.overscan) * self.config.camera.height * 2
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            return self.storage_fault
        if free > FRAMES_OF_ROOM * frame_bytes:
            log.info("storage has room again (%d bytes free): exposures resume", free)
            self.storage_fault = None
            self.port.devices_changed()
        return self.storage_fault

    def expose(self, check: Callable[[], None], request: ImageRequest) -> images.StoredImage:
        """Takes and stores one image; emits image_ready and records it as a product of the work order."""
        return self.keep(*self.take(check, request))

    def take(self, check: Callable[[], None], request: ImageRequest) -> tuple[np.ndarray, images.Exposure]:
        """Takes one image (not yet stored): the pixels and what describes them. A ``preemptible`` exposure
        raises ``GiveWay`` when an alert's target stops it (its frame reading out meanwhile, or discarded)."""
        if (reason := self.storage_ok()) is not None:
            raise StorageFailure(reason)
        self.collect_stopped(check)  # a stopped exposure, read out meanwhile (during the slew)
        port, o = self.port, self.port.operations
        camera, mount = port.camera, port.mount
        image_type, seconds, pointing = request.image_type, request.seconds, request.pointing
        o.select_filter(port.wheel, request.filter, check)
        light = image_type in (pb.IMAGE_TYPE_FLAT, pb.IMAGE_TYPE_LIGHT)  # dome flats: the shutter sees the lit screen
        started = port.clock.now()
        mount_position = None
        if image_type == pb.IMAGE_TYPE_LIGHT and not o.call(mount, mount.parked):
            mount_position = o.call(mount, mount.position)
        temperature = o.call(camera, camera.temperature)
        exposure = images.Exposure(
            image_type=image_type,
            exposure_s=seconds,
            filter=request.filter or (port.wheel.current() or ""),
            object=request.object,
            date_obs=started,
            work_order_id=request.work_order_id,
            ra_deg=pointing[0] if pointing else None,
            dec_deg=pointing[1] if pointing else None,
            altitude_deg=request.altitude,
            ccd_temperature=temperature,
            gain=float(camera.gain()),
            read_noise=float(camera.read_noise()),
            drill=request.drill,
            flat_source=request.flat_source,
            mount_position=mount_position,
            pixel_scale_arcsec=self.config.camera.pixel_scale_arcsec,
            follow_up=request.follow_up,
            binning=self.config.camera.binning,
        )
        o.call(camera, lambda: camera.start_exposure(seconds, light))
        watch = check
        if request.preemptible:
            end = port.clock.timestamp() + seconds

            def watch() -> None:
                check()
                if port.preemption.stop_now(f"the exposure of {request.object}", end - port.clock.timestamp()):
                    raise GiveWay(f"the exposure of {request.object} was stopped for an alert's target")

        try:
            o.wait(
                camera,
                camera.image_ready,
                "the exposure",
                watch,
                timeout_s=seconds + 600.0,
                safe_only=image_type == pb.IMAGE_TYPE_LIGHT,
            )
        except GiveWay:
            self._stopped(exposure)
            raise
        except BaseException:
            try:
                camera.abort()
            except DeviceError:
                pass
            raise
        pixels = o.call(camera, camera.read_image)
        return pixels, replace(exposure, device_cards=tuple(camera.header_cards()))

    def _stopped(self, exposure: images.Exposure) -> None:
        """An exposure stopped for an alert's target: its readout starts now and runs while the telescope slews
        (the frame is collected before the next exposure), or it is discarded, as configured."""
        o, camera = self.port.operations, self.port.camera
        if self.config.preemption.aborted_frames == "keep":
            try:
                o.call(camera, camera.stop_exposure)
            except CommandRefused as exc:
                log.info("%s: the frame is discarded", exc)
            else:
                self._reading_out = replace(exposure, aborted=True)
                return
        o.call(camera, camera.abort)

    def collect_stopped(self, check: Callable[[], None]) -> None:
        """Stores the frame of a stopped exposure once read out: under ``aborted/`` with ABORTED = T and its
        true exposure time, listed as a ``raw_aborted`` product and never announced as a science frame."""
        exposure, self._reading_out = self._reading_out, None
        if exposure is None:
            return
        o, camera = self.port.operations, self.port.camera
        o.wait(camera, camera.image_ready, "reading out the stopped exposure", check, timeout_s=600.0)
        pixels = o.call(camera, camera.read_image)
        seconds = camera.last_exposure_s()
        exposure_s = exposure.exposure_s if seconds is None else seconds
        stored = self._store(
            pixels, replace(exposure, exposure_s=exposure_s, device_cards=tuple(camera.header_cards()))
        )
        log.info("stopped exposure kept as %s (%.1f s of %.1f)", stored.path.name, exposure_s, exposure.exposure_s)
        self.journal.add_product(
            exposure.work_order_id,
            {"path": str(stored.path), "kind": "raw_aborted", "size_bytes": stored.size_bytes, "sha256": stored.sha256},
        )

    def keep(self, pixels: np.ndarray, exposure: images.Exposure) -> images.StoredImage:
        """Stores an image atomically, records it as a product of its work order and emits image_ready."""
        stored = self._store(pixels, exposure)
        self._announce(stored, exposure)
        self.port.operations.heartbeat()
        return stored

    def _store(self, pixels: np.ndarray, exposure: images.Exposure) -> images.StoredImage:
        with self._lock:
            self._image_number += 1
            number = self._image_number
        self.journal.set_value(journal_keys.image_number(), str(number))
        site = self.config.site
        night = night_of(site, exposure.date_obs).isoformat()
        try:
            return images.store(
                self.root,
                night,
                pixels,
                exposure,
                number,
                site=site,
                telescope=self.config.name,
                instrument=self.config.camera.instrument,
                overscan=self.port.camera.overscan,
            )
        except OSError as exc:
            self.storage_fault = f"cannot store images under {self.root}: {exc.strerror or exc}"
            self.port.devices_changed()
            raise StorageFailure(self.storage_fault) from None

    def _announce(self, stored: images.StoredImage, exposure: images.Exposure) -> None:
        self.journal.add_product(
            exposure.work_order_id,
            {
                "path": str(stored.path),
                "kind": "raw_" + images.IMAGETYP[exposure.image_type].lower(),
                "size_bytes": stored.size_bytes,
                "sha256": stored.sha256,
            },
        )
        date_obs = Timestamp()
        date_obs.FromDatetime(exposure.date_obs)
        exposure_time = Duration()
        exposure_time.FromNanoseconds(round(exposure.exposure_s * 1e9))
        self.journal.append_event(
            exposure.work_order_id,
            image_ready=pb.ImageReady(
                path=str(stored.path),
                sha256=stored.sha256,
                size_bytes=stored.size_bytes,
                image_type=exposure.image_type,
                filter=exposure.filter,
                exposure_time=exposure_time,
                object=exposure.object,
                night=stored.night,
                date_obs=date_obs,
            ),
        )
