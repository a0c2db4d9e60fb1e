"""The observatory: one telescope's devices, what they may do together, and how they look.

Work orders, the robotic night and the dispatcher act through here. The rooms: ``equipment`` builds the devices
from config, ``safety`` closes the dome and decides when it may reopen, ``imaging`` exposes, stores and announces
images. ``instrument`` serialises the sequences that use the telescope (a slew-expose-store sequence is never
interleaved with another); safety does not wait for it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from toros.floor.astronomy import altaz_exact, sun_altitude
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.journal import Journal
from toros.telescope.devices import CommandRefused, Device, DeviceError, Look, Shutter
from toros.telescope.dome_geometry import azimuth_error_deg, tolerance_deg
from toros.telescope.equipment import build_equipment
from toros.telescope.imaging import Imaging
from toros.telescope.loops import Repeating
from toros.telescope.preemption import GiveWay, Preemption
from toros.telescope.safety import Safety, Unsafe
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)

POLL_S = 2.0  # clock seconds between polls of a moving device
MOVE_TIMEOUT_S = 600.0  # clock seconds a slew, shutter or filter move may take before the device is declared failed
COOLING_TOLERANCE_C = 1.0


class Observatory:
    def __init__(self, config: TelescopeConfig, storage_root: Path, clock: Clock, journal: Journal) -> None:
        self.config = config
        self.site = config.site
        self.clock = clock
        self.journal = journal
        self.equipment = build_equipment(config, clock)
        e = self.equipment
        self.mount, self.dome, self.camera, self.wheel, self.lamp = e.mount, e.dome, e.camera, e.wheel, e.lamp
        self.devices = e.devices
        self.instrument = threading.RLock()
        self.safety = Safety(e, config.safety, clock, on_fault=self.publish_devices)
        self.imaging = Imaging(self, config, storage_root, journal)
        self.preemption = Preemption(config.preemption)
        dome = config.dome
        self.geometry = dome.slit_geometry(config.site.latitude)
        self._published: dict[str, tuple[int, str]] = {}
        self._described: dict[str, Look] = {}
        # An operator turned or parked the dome: it stops following the telescope until the next target.
        self.dome_held = False
        self._dome_orders = threading.Lock()  # the synchronisation's look-and-turn, or an operator's turn
        # Device states are looked at on their own thread, so that a hung driver never blocks safety's.
        poll = config.safety.poll_s
        self._loops = (
            Repeating("telescope-safety", self.safety.check, poll, clock),
            Repeating("telescope-devices", self.publish_devices, poll, clock),
        ) + ((Repeating("telescope-dome-sync", self.follow, dome.sync.poll_s, clock),) if self._follows() else ())

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        for device in self.devices:
            try:
                device.connect()
            except DeviceError as exc:
                self.safety.fault(device, str(exc))
        self.publish_devices()
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        for loop in self._loops:
            loop.stop(timeout=5)
        for device in self.devices:
            device.close()

    # -- how the devices look ----------------------------------------------------------------------

    def device_states(self) -> list[pb.Device]:
        """What each device was doing at the last look (no device I/O: a hung driver never blocks a status)."""
        states = []
        faults = self.safety.faults
        for device in self.devices:
            look = self._described.get(device.kind, Look(False, "not looked at yet"))
            message = look.message
            if device.kind in faults:
                state, message = pb.DEVICE_STATE_FAULT, faults[device.kind]
            else:
                state = (
                    pb.DEVICE_STATE_BUSY
                    if look.busy
                    else pb.DEVICE_STATE_PARKED
                    if look.parked
                    else pb.DEVICE_STATE_IDLE
                )
            if device is self.camera and self.imaging.storage_fault:
                state, message = pb.DEVICE_STATE_FAULT, f"storage: {self.imaging.storage_fault}"
            states.append(pb.Device(name=device.kind, state=state, driver=device.driver, message=message))
        return states

    def publish_devices(self) -> None:
        """Looks at every device and journals a device_update event for each whose state changed."""
        for device in self.devices:
            if device.kind in self.safety.faults:
                continue
            try:
                self._described[device.kind] = device.describe()
            except DeviceError as exc:
                self.safety.fault(device, str(exc))  # a device lost while idle is a fault too: safety acts
            except CommandRefused as exc:
                self._described[device.kind] = Look(False, str(exc))
        for state in self.device_states():
            seen = (state.state, state.message.split(",")[0])
            if self._published.get(state.name) != seen:
                self._published[state.name] = seen
                self.journal.append_event(device_update=pb.DeviceUpdate(device=state))

    def sun(self) -> float:
        return sun_altitude(self.site, self.clock.now())

    def is_open(self) -> bool:
        return self.dome.shutter() is Shutter.OPEN

    def ready_to_observe(self) -> bool:
        return (
            self.safety.unsafe is None
            and not self.safety.faults
            and self.imaging.storage_fault is None
            and self.is_open()
            and not self.mount.parked()
        )

    # -- movements -------------------------------------------------------------------------------

    def call(self, device: Device, action: Callable[[], object]) -> object:
        """Runs a device command; a DeviceError marks the device FAULT (and safety acts) before it propagates."""
        try:
            return action()
        except DeviceError as exc:
            self.safety.fault(device, str(exc))
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
        started = self.clock.timestamp()
        deadline = started + timeout_s
        while not self.call(device, done):
            check()
            if safe_only and (reason := self.safety.unsafe_reason):
                raise Unsafe(reason)
            if self.clock.timestamp() > deadline:
                self.safety.fault(device, f"{what} did not finish within {timeout_s:.0f} s")
                raise DeviceError(f"{device.kind}: {what} did not finish within {timeout_s:.0f} s")
            self.clock.sleep(POLL_S)
            self.safety.heartbeat()
        log.debug("%s: %s took %.1f s", device.kind, what, self.clock.timestamp() - started)

    def open(self, check: Callable[[], None]) -> None:
        """Opens the shutter and unparks the mount, if safe."""
        reason = self.safety.reopen_allowed()
        if reason:
            raise Unsafe(reason)
        self.safety.opening()
        self.call(self.dome, self.dome.open_shutter)
        self.wait(self.dome, lambda: self.dome.shutter() is Shutter.OPEN, "opening the shutter", check, safe_only=True)
        self.call(self.mount, self.mount.unpark)
        self.publish_devices()

    def close(self, check: Callable[[], None]) -> None:
        """Parks the mount, closes the shutter, parks the dome."""
        self.call(self.mount, self.mount.park)
        self.call(self.dome, self.dome.close_shutter)
        self.wait(self.dome, lambda: self.dome.shutter() is Shutter.CLOSED, "closing the shutter", check)
        self.call(self.dome, self.dome.park)
        self.wait(self.mount, lambda: not self.mount.slewing(), "parking the mount", check)
        self.wait(self.dome, lambda: not self.dome.slewing(), "parking the dome", check)
        self.publish_devices()

    def point(self, ra_deg: float, dec_deg: float, check: Callable[[], None], filter: str = "") -> float:
        """Slews mount and dome to a target, the filter wheel turning to ``filter`` meanwhile; returns the
        target's altitude. CommandRefused when it cannot be reached."""
        altitude, azimuth = altaz_exact(self.site, ra_deg, dec_deg, self.clock.now())
        if altitude < 0:
            raise CommandRefused(f"{ra_deg:.4f} {dec_deg:+.4f} is below the horizon (altitude {altitude:.1f})")
        self.call(self.mount, lambda: self.mount.slew_to(ra_deg, dec_deg))
        self.dome_held = False
        if self.config.dome.kind == "dome":
            slit_azimuth, _ = self.geometry.slit(azimuth, altitude)
            self.call(self.dome, lambda: self.dome.slew_to(slit_azimuth))
        turning = bool(filter) and self.wheel.current() != filter
        if turning:
            self.call(self.wheel, lambda: self.wheel.select(filter))
        try:
            self.wait(self.mount, lambda: not self.mount.slewing(), "slewing the mount", check, safe_only=True)
            self.wait(self.dome, lambda: not self.dome.slewing(), "rotating the dome", check, safe_only=True)
            # The sky turned while mount and dome moved (minutes on a slow machine or a long slew): the slit
            # is set again where the beam is now, so that the exposure starts with all its light.
            if self.config.dome.kind == "dome" and (behind := self._slit_behind()) is not None:
                self.call(self.dome, lambda: self.dome.slew_to(behind))
                self.wait(self.dome, lambda: not self.dome.slewing(), "rotating the dome", check, safe_only=True)
        except GiveWay:  # an alert's target: the mount and the dome stop where they are and turn to it
            self.call(self.mount, self.mount.abort)
            self.call(self.dome, self.dome.abort)
            raise
        if turning:
            self.select_filter(filter, check)
        return altitude

    def _follows(self) -> bool:
        return self.config.dome.kind == "dome" and self.config.dome.sync.enabled

    def slit_azimuth(self) -> tuple[float, float] | None:
        """Where the slit must be for where the mount points now, and how far the dome may lag it (None while
        the mount is parked or slewing)."""
        if self.mount.parked() or self.mount.slewing():
            return None
        ra, dec = self.mount.position()
        altitude, azimuth = altaz_exact(self.site, ra, dec, self.clock.now())
        slit_azimuth, slit_altitude = self.geometry.slit(azimuth, altitude)
        dome = self.config.dome
        tolerance = dome.sync.tolerance_deg or tolerance_deg(
            dome.radius_m, dome.slit_width_m, dome.geometry.aperture_m, slit_altitude
        )
        return slit_azimuth, tolerance

    def _slit_behind(self) -> float | None:
        """Where the slit must go when the dome lags the beam by more than half the tolerance (so the slit
        never reaches the beam between two looks); None when it need not move (or the mount moves)."""
        wanted = self.slit_azimuth()
        if wanted is None:
            return None
        azimuth, tolerance = wanted
        return azimuth if azimuth_error_deg(self.dome.azimuth(), azimuth) > tolerance / 2 else None

    def follow(self) -> None:
        """One look of the dome synchronisation: while the mount tracks with the shutter open, the dome turns to
        the slit position once it lags by half the tolerance (so the slit never reaches the beam between two
        looks); during an exposure only if ``dome.sync.during_exposures``; not after an operator's own dome
        move (until the next target). A dome that fails to move is a fault (safety closes)."""
        with self._dome_orders:  # an operator's move between this look and its command is not undone
            if self.dome_held or self.safety.faults or not self.is_open() or self.dome.slewing():
                return
            azimuth = self._slit_behind()
            if azimuth is None:
                return
            if not self.config.dome.sync.during_exposures and self.camera.exposing():
                return
            log.info("dome follows the telescope: slit to azimuth %.1f", azimuth)
            try:
                self.call(self.dome, lambda: self.dome.slew_to(azimuth))
            except DeviceError as exc:
                log.warning("dome synchronisation failed: %s", exc)

    def turn_dome(self, azimuth_deg: float | None, check: Callable[[], None]) -> None:
        """An operator's dome move, to an azimuth or (None) to park; the dome then stays there, not following
        the telescope, until the telescope points at its next target."""
        with self._dome_orders:
            self.dome_held = True
            if azimuth_deg is None:
                self.call(self.dome, self.dome.park)
            else:
                self.call(self.dome, lambda: self.dome.slew_to(azimuth_deg))
        self.wait(self.dome, lambda: not self.dome.slewing(), "rotating the dome", check)

    def select_filter(self, name: str, check: Callable[[], None]) -> None:
        if not name:
            return
        if self.wheel.current() != name:
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
