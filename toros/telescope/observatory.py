"""The observatory: the devices of one telescope, what they may do together, and safety.

Work orders, the robotic night and the dispatcher all act through here. ``instrument`` serialises the
sequences that use the telescope (a slew-expose-store sequence is never interleaved with another); safety
does not wait for it: bad weather, a device fault or a watchdog timeout close the dome and park the mount at
once, and everything that polls (exposures, slews) sees ``unsafe`` and stops.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from toros import journal_keys
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.journal import Journal
from toros.simulation.ccd import Sensor
from toros.telescope import images
from toros.telescope.astronomy import altaz_exact, night_of, sun_altitude
from toros.telescope.devices import (
    Camera,
    CommandRefused,
    Device,
    DeviceError,
    Dome,
    FilterWheel,
    Look,
    Mount,
    WeatherStation,
)
from toros.telescope.devices.simulated import (
    SimulatedCamera,
    SimulatedDome,
    SimulatedFilterWheel,
    SimulatedMount,
    SimulatedWeather,
    Sky,
)
from toros.telescope.loops import Repeating
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)

POLL_S = 2.0  # clock seconds between polls of a moving device
MOVE_TIMEOUT_S = 600.0  # clock seconds a slew, shutter or filter move may take before the device is declared failed
COOLING_TOLERANCE_C = 1.0


class SafetyCause(Enum):
    """Why safety closed the observatory. Weather clears itself when the weather is safe again; the others
    need the cause mended (a device reconnected, room on the disk) or an operator's close."""

    WEATHER = "weather"
    DEVICE_FAULT = "device fault"
    WATCHDOG = "watchdog"
    STORAGE = "storage"


@dataclass(frozen=True)
class Unsafety:
    cause: SafetyCause
    reason: str  # in words, for the status and the logs


class Unsafe(Exception):
    """Safety closed the observatory while a sequence was running."""


class StorageFailure(Exception):
    """An image could not be stored (disk full, write error): exposures stop until space is back."""


def build_devices(
    config: TelescopeConfig, clock: Clock
) -> tuple[Mount, Dome, Camera, FilterWheel, WeatherStation, Sky | None]:
    """The devices the config names; simulators by default."""
    from toros.telescope.devices import alpaca

    mount: Mount
    dome: Dome
    camera: Camera
    wheel: FilterWheel
    weather: WeatherStation
    if config.mount.driver == "lx200":
        from toros.telescope.devices.lx200 import Lx200Mount

        mount = Lx200Mount(config.mount)
    elif config.mount.driver == "alpaca":
        mount = alpaca.AlpacaMount(config.mount)
    else:
        mount = SimulatedMount(clock, config.mount.slew_rate_deg_s)
    if config.dome.driver == "serial":
        from toros.telescope.devices.serial_dome import SerialDome

        dome = SerialDome(config.dome)
    elif config.dome.driver == "alpaca":
        dome = alpaca.AlpacaDome(config.dome)
    else:
        dome = SimulatedDome(clock, config.dome.rotation_deg_s, config.dome.shutter_s, config.dome.park_azimuth_deg)
    wheel = (
        alpaca.AlpacaFilterWheel(config.filter_wheel)
        if config.filter_wheel.driver == "alpaca"
        else SimulatedFilterWheel(clock, config.filter_wheel.filters, config.filter_wheel.change_s)
    )
    weather = (
        alpaca.AlpacaSafetyMonitor(config.weather)
        if config.weather.driver == "alpaca"
        else SimulatedWeather(clock, config.weather.bad_weather)
    )
    sky = None
    if config.camera.driver == "alpaca":
        camera = alpaca.AlpacaCamera(config.camera)
    else:
        sky = Sky(clock, config.site, dome, mount, wheel)
        link = config.camera
        sensor = Sensor(width=link.width, height=link.height, overscan=link.overscan, read_noise=link.read_noise_e)
        camera = SimulatedCamera(clock, sensor, link.readout_s, sky.light)
    return mount, dome, camera, wheel, weather, sky


class Observatory:
    def __init__(self, config: TelescopeConfig, storage_root: Path, clock: Clock, journal: Journal) -> None:
        self.config = config
        self.site = config.site
        self.root = storage_root
        self.clock = clock
        self.journal = journal
        self.mount, self.dome, self.camera, self.wheel, self.weather, self.sky = build_devices(config, clock)
        self.devices: list[Device] = [self.mount, self.dome, self.camera, self.wheel, self.weather]
        self.instrument = threading.RLock()
        self.faults: dict[str, str] = {}
        self.unsafe: Unsafety | None = None  # why safety closed; None while safe
        self.storage_fault: str | None = None
        self.closed_by_safety_at: float | None = None
        self.safe_since: float | None = clock.timestamp()
        self._last_heartbeat = clock.timestamp()
        self._lock = threading.Lock()
        self._image_number = int(journal.get_value(journal_keys.image_number()) or 0)
        self._published: dict[str, tuple[int, str]] = {}
        self._described: dict[str, Look] = {}
        # Safety runs on its own thread and does no device I/O but the weather and the closing itself, so a
        # hung driver elsewhere cannot stop it; device states are looked at by another thread.
        poll = config.safety.poll_s
        self._loops = (
            Repeating("telescope-safety", self.check_safety, poll, clock),
            Repeating("telescope-devices", self.publish_devices, poll, clock),
        )

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        for device in self.devices:
            try:
                device.connect()
            except DeviceError as exc:
                self.fault(device, str(exc))
        self.publish_devices()
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        for loop in self._loops:
            loop.stop(timeout=5)
        for device in self.devices:
            device.close()

    # -- state -----------------------------------------------------------------------------------

    def fault(self, device: Device, message: str) -> None:
        """Marks a device failed; safety closes the dome and parks the mount."""
        log.error("%s FAULT: %s", device.kind, message)
        self.faults[device.kind] = message
        self.publish_devices()
        self.make_safe(SafetyCause.DEVICE_FAULT, f"{device.kind} fault: {message}")

    def device_states(self) -> list[pb.Device]:
        """What each device was doing at the last look (no device I/O: a hung driver never blocks a status)."""
        states = []
        for device in self.devices:
            look = self._described.get(device.kind, Look(False, "not looked at yet"))
            message = look.message
            if device.kind in self.faults:
                state, message = pb.DEVICE_STATE_FAULT, self.faults[device.kind]
            else:
                state = (
                    pb.DEVICE_STATE_BUSY
                    if look.busy
                    else pb.DEVICE_STATE_PARKED
                    if look.parked
                    else pb.DEVICE_STATE_IDLE
                )
            if device is self.camera and self.storage_fault:
                state, message = pb.DEVICE_STATE_FAULT, f"storage: {self.storage_fault}"
            states.append(pb.Device(name=device.kind, state=state, driver=device.driver, message=message))
        return states

    def publish_devices(self) -> None:
        """Looks at every device and journals a device_update event for each whose state changed."""
        for device in self.devices:
            if device.kind in self.faults:
                continue
            try:
                self._described[device.kind] = device.describe()
            except DeviceError as exc:
                self.fault(device, str(exc))  # a device lost while idle is a fault too: safety acts
            except CommandRefused as exc:
                self._described[device.kind] = Look(False, str(exc))
        for state in self.device_states():
            seen = (state.state, state.message.split(",")[0])
            if self._published.get(state.name) != seen:
                self._published[state.name] = seen
                self.journal.append_event(device_update=pb.DeviceUpdate(device=state))

    def heartbeat(self) -> None:
        """The night is moving: the watchdog is reset."""
        self._last_heartbeat = self.clock.timestamp()

    def sun(self) -> float:
        return sun_altitude(self.site, self.clock.now())

    def weather_safe(self) -> tuple[bool, str]:
        try:
            return self.weather.safe()
        except DeviceError as exc:
            self.faults["weather"] = str(exc)
            return False, f"weather station not answering: {exc}"

    def is_open(self) -> bool:
        return self.dome.shutter() == "open"

    def ready_to_observe(self) -> bool:
        return (
            self.unsafe is None
            and not self.faults
            and self.storage_fault is None
            and self.is_open()
            and not self.mount.parked()
        )

    # -- safety ----------------------------------------------------------------------------------

    def check_safety(self) -> None:
        safe, reason = self.weather_safe()
        now = self.clock.timestamp()
        if not safe:
            self.safe_since = None
            self.make_safe(SafetyCause.WEATHER, f"weather: {reason}")
            return
        if self.safe_since is None:
            self.safe_since = now
            log.info("weather is safe again")
        if self.unsafe is not None and self.unsafe.cause is SafetyCause.WEATHER and not self.faults:
            self.unsafe = None
        if not self.faults and self.is_open() and now - self._last_heartbeat > self.config.safety.watchdog_s:
            self.make_safe(
                SafetyCause.WATCHDOG,
                f"watchdog: nothing happened for {now - self._last_heartbeat:.0f} s with the dome open",
            )

    @property
    def unsafe_reason(self) -> str | None:
        """Why safety closed, in words (None while safe)."""
        return self.unsafe.reason if self.unsafe is not None else None

    def make_safe(self, cause: SafetyCause, reason: str) -> None:
        """Closes the shutter and parks mount and dome, whatever else is going on; never raises."""
        if self.unsafe is None:
            log.warning("making the observatory safe: %s", reason)
        self.unsafe = Unsafety(cause, reason)
        self.closed_by_safety_at = self.clock.timestamp()
        for what, action in (
            ("close the shutter", self.dome.close_shutter),
            ("park the mount", self.mount.park),
            ("park the dome", self.dome.park),
            ("abort the exposure", self.camera.abort),
        ):
            try:
                if what == "close the shutter" and self.dome.shutter() == "closed":
                    continue
                action()
            except (DeviceError, CommandRefused) as exc:
                log.error("safety could not %s: %s", what, exc)

    def reopen_allowed(self) -> str | None:
        """Why the dome must stay closed now (None: it may open)."""
        safe, reason = self.weather_safe()
        if not safe:
            return f"weather is unsafe: {reason}"
        if self.faults:
            name, message = next(iter(self.faults.items()))
            return f"{name} is in FAULT: {message}"
        if self.unsafe is not None and self.unsafe.cause is not SafetyCause.WEATHER:
            return f"closed by safety: {self.unsafe.reason}"
        return None

    def clear_faults(self) -> None:
        """An operator's explicit close resets faults that a reconnect can clear."""
        for device in self.devices:
            if device.kind in self.faults:
                try:
                    device.connect()
                    device.describe()
                except (DeviceError, CommandRefused):
                    continue
                del self.faults[device.kind]
        if not self.faults and self.unsafe is not None and self.unsafe.cause is not SafetyCause.WEATHER:
            self.unsafe = None

    # -- movements -------------------------------------------------------------------------------

    def call(self, device: Device, action: Callable[[], object]) -> object:
        """Runs a device command; a DeviceError marks the device FAULT (and safety acts) before it propagates."""
        try:
            return action()
        except DeviceError as exc:
            self.fault(device, str(exc))
            raise

    def wait(
        self,
        device: Device,
        done: Callable[[], bool],
        what: str,
        check: Callable[[], None],
        timeout_s: float = MOVE_TIMEOUT_S,
        safe_only: bool = False,
    ) -> None:
        """Polls ``done`` in clock time until true; ``check`` raises to stop (cancel, shutdown)."""
        deadline = self.clock.timestamp() + timeout_s
        while not self.call(device, done):
            check()
            if safe_only and self.unsafe_reason:
                raise Unsafe(self.unsafe_reason)
            if self.clock.timestamp() > deadline:
                self.fault(device, f"{what} did not finish within {timeout_s:.0f} s")
                raise DeviceError(f"{device.kind}: {what} did not finish within {timeout_s:.0f} s")
            self.clock.sleep(POLL_S)
            self.heartbeat()

    def open(self, check: Callable[[], None]) -> None:
        """Opens the shutter and unparks the mount, if safe."""
        reason = self.reopen_allowed()
        if reason:
            raise Unsafe(reason)
        self.unsafe = None
        self.heartbeat()
        self.call(self.dome, self.dome.open_shutter)
        self.wait(self.dome, lambda: self.dome.shutter() == "open", "opening the shutter", check, safe_only=True)
        self.call(self.mount, self.mount.unpark)
        self.publish_devices()

    def close(self, check: Callable[[], None]) -> None:
        """Parks the mount, closes the shutter, parks the dome."""
        self.call(self.mount, self.mount.park)
        self.call(self.dome, self.dome.close_shutter)
        self.wait(self.dome, lambda: self.dome.shutter() == "closed", "closing the shutter", check)
        self.call(self.dome, self.dome.park)
        self.wait(self.mount, lambda: not self.mount.slewing(), "parking the mount", check)
        self.wait(self.dome, lambda: not self.dome.slewing(), "parking the dome", check)
        self.publish_devices()

    def point(self, ra_deg: float, dec_deg: float, check: Callable[[], None]) -> float:
        """Slews mount and dome to a target; returns its altitude. CommandRefused when it cannot be reached."""
        altitude, azimuth = altaz_exact(self.site, ra_deg, dec_deg, self.clock.now())
        if altitude < 0:
            raise CommandRefused(f"{ra_deg:.4f} {dec_deg:+.4f} is below the horizon (altitude {altitude:.1f})")
        self.call(self.mount, lambda: self.mount.slew_to(ra_deg, dec_deg))
        self.call(self.dome, lambda: self.dome.slew_to(azimuth))
        self.wait(self.mount, lambda: not self.mount.slewing(), "slewing the mount", check, safe_only=True)
        self.wait(self.dome, lambda: not self.dome.slewing(), "rotating the dome", check, safe_only=True)
        return altitude

    def select_filter(self, name: str, check: Callable[[], None]) -> None:
        if not name:
            return
        self.call(self.wheel, lambda: self.wheel.select(name))
        self.wait(self.wheel, lambda: self.wheel.current() == name, f"changing to filter {name}", check)

    def cool(self, check: Callable[[], None]) -> float:
        target = self.config.camera.cooling_target_c
        self.call(self.camera, lambda: self.camera.cool_to(target))
        self.wait(
            self.camera,
            lambda: abs(self.camera.temperature() - target) <= COOLING_TOLERANCE_C,
            f"cooling to {target:.0f} C",
            check,
            timeout_s=3600.0,
        )
        return float(self.camera.temperature())  # type: ignore[arg-type]

    # -- exposures -------------------------------------------------------------------------------

    def storage_ok(self) -> str | None:
        """Why images cannot be stored now (None: they can); a full disk clears itself once space is back."""
        if self.storage_fault is None:
            return None
        frame_bytes = (self.config.camera.width + self.config.camera.overscan) * self.config.camera.height * 2
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            return self.storage_fault
        if free > 4 * frame_bytes:
            log.info("storage has room again (%d bytes free): exposures resume", free)
            self.storage_fault = None
            self.publish_devices()
        return self.storage_fault

    def expose(
        self,
        check: Callable[[], None],
        *,
        image_type: pb.ImageType,
        seconds: float,
        filter: str,
        object: str,
        work_order_id: str,
        pointing: tuple[float, float] | None = None,
        drill: bool = False,
        flat_source: str = "",
        altitude: float | None = None,
    ) -> images.StoredImage:
        """Takes and stores one image; emits image_ready and records it as a product of the work order."""
        pixels, exposure = self.take(
            check,
            image_type=image_type,
            seconds=seconds,
            filter=filter,
            object=object,
            work_order_id=work_order_id,
            pointing=pointing,
            drill=drill,
            flat_source=flat_source,
            altitude=altitude,
        )
        return self.keep(pixels, exposure)

    def take(
        self,
        check: Callable[[], None],
        *,
        image_type: pb.ImageType,
        seconds: float,
        filter: str,
        object: str,
        work_order_id: str,
        pointing: tuple[float, float] | None = None,
        drill: bool = False,
        flat_source: str = "",
        altitude: float | None = None,
    ) -> tuple[np.ndarray, images.Exposure]:
        """Takes one image (not yet stored): the pixels and what describes them."""
        if (reason := self.storage_ok()) is not None:
            raise StorageFailure(reason)
        self.select_filter(filter, check)
        light = image_type in (pb.IMAGE_TYPE_FLAT, pb.IMAGE_TYPE_LIGHT)  # dome flats: the shutter sees the lit screen
        started = self.clock.now()
        temperature = float(self.call(self.camera, self.camera.temperature))  # type: ignore[arg-type]
        self.call(self.camera, lambda: self.camera.start_exposure(seconds, light))
        try:
            self.wait(
                self.camera,
                self.camera.image_ready,
                "the exposure",
                check,
                timeout_s=seconds + 600.0,
                safe_only=image_type == pb.IMAGE_TYPE_LIGHT,
            )
        except BaseException:
            try:
                self.camera.abort()
            except DeviceError:
                pass
            raise
        pixels: np.ndarray = self.call(self.camera, self.camera.read_image)  # type: ignore[assignment]
        exposure = images.Exposure(
            image_type=image_type,
            exposure_s=seconds,
            filter=filter or (self.wheel.current() or ""),
            object=object,
            date_obs=started,
            work_order_id=work_order_id,
            ra_deg=pointing[0] if pointing else None,
            dec_deg=pointing[1] if pointing else None,
            altitude_deg=altitude,
            ccd_temperature=temperature,
            gain=float(self.camera.gain()),
            read_noise=float(self.camera.read_noise()),
            drill=drill,
            flat_source=flat_source,
        )
        return pixels, exposure

    def keep(self, pixels: np.ndarray, exposure: images.Exposure) -> images.StoredImage:
        """Stores an image atomically, records it as a product of its work order and emits image_ready."""
        with self._lock:
            self._image_number += 1
            number = self._image_number
        self.journal.set_value(journal_keys.image_number(), str(number))
        night = night_of(self.site, exposure.date_obs).isoformat()
        try:
            stored = images.store(
                self.root,
                night,
                pixels,
                exposure,
                number,
                site=self.site,
                telescope=self.config.name,
                instrument=self.config.camera.instrument,
                overscan=self.camera.overscan,
            )
        except OSError as exc:
            self.storage_fault = f"cannot store images under {self.root}: {exc.strerror or exc}"
            self.publish_devices()
            raise StorageFailure(self.storage_fault) from None
        self._announce(stored, exposure)
        self.heartbeat()
        return stored

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
