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
from toros.telescope.devices import CommandRefused, DeviceError, Look, Shutter
from toros.telescope.dome_following import DomeFollowing
from toros.telescope.equipment import build_equipment
from toros.telescope.imaging import Imaging, ImagingPort
from toros.telescope.loops import Repeating
from toros.telescope.operations import DeviceOperations
from toros.telescope.preemption import GiveWay, Preemption
from toros.telescope.safety import Safety, Unsafe
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)

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
        self.operations = DeviceOperations(self.safety, clock)
        self.preemption = Preemption(config.preemption)
        self.imaging = Imaging(
            ImagingPort(
                self.camera, self.mount, self.wheel, self.operations, self.preemption, clock, self.publish_devices
            ),
            config,
            storage_root,
            journal,
        )
        self.dome_following = DomeFollowing(
            config, self.mount, self.dome, self.camera, self.operations, self.safety, clock
        )
        self._published: dict[str, tuple[int, str]] = {}
        self._described: dict[str, Look] = {}
        # Device states are looked at on their own thread, so that a hung driver never blocks safety's.
        poll = config.safety.poll_s
        following = self.dome_following
        self._loops = (
            Repeating("telescope-safety", self.safety.check, poll, clock),
            Repeating("telescope-devices", self.publish_devices, poll, clock),
        ) + (
            (Repeating("telescope-dome-sync", following.follow, config.dome.sync.poll_s, clock),)
            if following.follows
            else ()
        )

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

    def open(self, check: Callable[[], None]) -> None:
        """Opens the shutter and unparks the mount, if safe."""
        reason = self.safety.reopen_allowed()
        if reason:
            raise Unsafe(reason)
        self.safety.opening()
        self.operations.call(self.dome, self.dome.open_shutter)
        self.operations.wait(
            self.dome, lambda: self.dome.shutter() is Shutter.OPEN, "opening the shutter", check, safe_only=True
        )
        self.operations.call(self.mount, self.mount.unpark)
        self.publish_devices()

    def close(self, check: Callable[[], None]) -> None:
        """Parks the mount, closes the shutter, parks the dome."""
        self.operations.call(self.mount, self.mount.park)
        self.operations.call(self.dome, self.dome.close_shutter)
        self.operations.wait(self.dome, lambda: self.dome.shutter() is Shutter.CLOSED, "closing the shutter", check)
        self.operations.call(self.dome, self.dome.park)
        self.operations.wait(self.mount, lambda: not self.mount.slewing(), "parking the mount", check)
        self.operations.wait(self.dome, lambda: not self.dome.slewing(), "parking the dome", check)
        self.publish_devices()

    def point(self, ra_deg: float, dec_deg: float, check: Callable[[], None], filter: str = "") -> float:
        """Slews mount and dome to a target, the filter wheel turning to ``filter`` meanwhile; returns the
        target's altitude. CommandRefused when it cannot be reached."""
        altitude, azimuth = altaz_exact(self.site, ra_deg, dec_deg, self.clock.now())
        if altitude < 0:
            raise CommandRefused(f"{ra_deg:.4f} {dec_deg:+.4f} is below the horizon (altitude {altitude:.1f})")
        self.operations.call(self.mount, lambda: self.mount.slew_to(ra_deg, dec_deg))
        following = self.dome_following
        following.held = False
        if following.turns:
            slit_azimuth = following.slit_for(azimuth, altitude)
            self.operations.call(self.dome, lambda: self.dome.slew_to(slit_azimuth))
        turning = bool(filter) and self.wheel.current() != filter
        if turning:
            self.operations.call(self.wheel, lambda: self.wheel.select(filter))
        try:
            self.operations.wait(
                self.mount, lambda: not self.mount.slewing(), "slewing the mount", check, safe_only=True
            )
            self.operations.wait(self.dome, lambda: not self.dome.slewing(), "rotating the dome", check, safe_only=True)
            # The sky turned while mount and dome moved (minutes on a slow machine or a long slew): the slit
            # is set again where the beam is now, so that the exposure starts with all its light.
            if following.turns and (behind := following.behind()) is not None:
                self.operations.call(self.dome, lambda: self.dome.slew_to(behind))
                self.operations.wait(
                    self.dome, lambda: not self.dome.slewing(), "rotating the dome", check, safe_only=True
                )
        except GiveWay:  # an alert's target: the mount and the dome stop where they are and turn to it
            self.operations.call(self.mount, self.mount.abort)
            self.operations.call(self.dome, self.dome.abort)
            raise
        if turning:
            self.select_filter(filter, check)
        return altitude

    def select_filter(self, name: str, check: Callable[[], None]) -> None:
        self.operations.select_filter(self.wheel, name, check)

    def turn_dome(self, azimuth_deg: float | None, check: Callable[[], None]) -> None:
        """An operator's dome move (``dome_following``: it then holds until the next target)."""
        self.dome_following.turn(azimuth_deg, check)

    def cool(self, check: Callable[[], None]) -> float:
        target = self.config.camera.cooling_target_c
        self.operations.call(self.camera, lambda: self.camera.cool_to(target))
        self.operations.wait(
            self.camera,
            lambda: abs(self.camera.temperature() - target) <= COOLING_TOLERANCE_C,
            f"cooling to {target:.0f} C",
            check,
            timeout_s=3600.0,
        )
        return self.camera.temperature()
