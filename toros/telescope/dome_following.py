"""The dome following the telescope: where the slit must be for where the mount points (``dome_geometry.py``),
how far the dome may lag it, and the loop that keeps it there while the mount tracks with the shutter open.

An operator's own dome move (``dome_control`` slew or park) holds the dome where it was put until the telescope
points at its next target; the synchronisation's look-and-turn and an operator's move never interleave. A dome
that fails to move is a fault (safety closes)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from toros.floor.astronomy import altaz_exact
from toros.runtime.clock import Clock
from toros.telescope.devices import Camera, DeviceError, Dome, Mount, Shutter
from toros.telescope.dome_geometry import azimuth_error_deg, tolerance_deg
from toros.telescope.operations import DeviceOperations
from toros.telescope.safety import Safety
from toros.telescope.settings import TelescopeConfig

log = logging.getLogger(__name__)


class DomeFollowing:
    def __init__(
        self,
        config: TelescopeConfig,
        mount: Mount,
        dome: Dome,
        camera: Camera,
        operations: DeviceOperations,
        safety: Safety,
        clock: Clock,
    ) -> None:
        self.config = config
        self.mount, self.dome, self.camera = mount, dome, camera
        self.operations = operations
        self.safety = safety
        self.clock = clock
        self.geometry = config.dome.slit_geometry(config.site.latitude)
        # An operator turned or parked the dome: it stops following the telescope until the next target.
        self.held = False
        self._orders = threading.Lock()  # the synchronisation's look-and-turn, or an operator's turn

    @property
    def turns(self) -> bool:
        """A dome that turns (a roll-off roof does not)."""
        return self.config.dome.kind == "dome"

    @property
    def follows(self) -> bool:
        """The synchronisation loop runs."""
        return self.turns and self.config.dome.sync.enabled

    def slit_for(self, azimuth_deg: float, altitude_deg: float) -> float:
        """The slit's azimuth for a target at this azimuth and altitude."""
        return self.geometry.slit(azimuth_deg, altitude_deg)[0]

    def slit_azimuth(self) -> tuple[float, float] | None:
        """Where the slit must be for where the mount points now, and how far the dome may lag it (None while
        the mount is parked or slewing)."""
        if self.mount.parked() or self.mount.slewing():
            return None
        ra, dec = self.mount.position()
        altitude, azimuth = altaz_exact(self.config.site, ra, dec, self.clock.now())
        slit_azimuth, slit_altitude = self.geometry.slit(azimuth, altitude)
        dome = self.config.dome
        tolerance = dome.sync.tolerance_deg or tolerance_deg(
            dome.radius_m, dome.slit_width_m, dome.geometry.aperture_m, slit_altitude
        )
        return slit_azimuth, tolerance

    def behind(self) -> float | None:
        """Where the slit must go when the dome lags the beam by more than half the tolerance (so the slit
        never reaches the beam between two looks); None when it need not move (or the mount moves)."""
        wanted = self.slit_azimuth()
        if wanted is None:
            return None
        azimuth, tolerance = wanted
        return azimuth if azimuth_error_deg(self.dome.azimuth(), azimuth) > tolerance / 2 else None

    def follow(self) -> None:
        """One look of the synchronisation: while the mount tracks with the shutter open, the dome turns to the
        slit position once it lags by half the tolerance; during an exposure only if
        ``dome.sync.during_exposures``; not after an operator's own dome move (until the next target)."""
        with self._orders:  # an operator's move between this look and its command is not undone
            if self.held or self.safety.faults or self.dome.shutter() is not Shutter.OPEN or self.dome.slewing():
                return
            azimuth = self.behind()
            if azimuth is None:
                return
            if not self.config.dome.sync.during_exposures and self.camera.exposing():
                return
            log.info("dome follows the telescope: slit to azimuth %.1f", azimuth)
            try:
                self.operations.call(self.dome, lambda: self.dome.slew_to(azimuth))
            except DeviceError as exc:
                log.warning("dome synchronisation failed: %s", exc)

    def turn(self, azimuth_deg: float | None, check: Callable[[], None]) -> None:
        """An operator's dome move, to an azimuth or (None) to park; the dome then stays there, not following
        the telescope, until the telescope points at its next target."""
        with self._orders:
            self.held = True
            if azimuth_deg is None:
                self.operations.call(self.dome, self.dome.park)
            else:
                self.operations.call(self.dome, lambda: self.dome.slew_to(azimuth_deg))
        self.operations.wait(self.dome, lambda: not self.dome.slewing(), "rotating the dome", check)
