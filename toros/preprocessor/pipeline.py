"""Calibrating a night: the inventory, then per setup the masters (``masters.py``), then every science frame
through the stages (``stages.py``): calibrated, cleaned of cosmic rays when asked, made science-ready, searched,
offered to the reference library.

Bad files never stop the night: each is named in the result with the reason and the rest goes on; a science
frame whose masters do not exist yet waits for them (``waiting.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from toros.floor.site import observing_night
from toros.preprocessor.calibration import MASK_COSMIC_RAY, MASK_HOT, product_of
from toros.preprocessor.compute import Engine, Here, Processes
from toros.preprocessor.inventory import take_inventory
from toros.preprocessor.library import MasterLibrary
from toros.preprocessor.masters import Masters
from toros.preprocessor.progress import NightResult, Progress, Reporter, WaitingFrame
from toros.preprocessor.references import ReferenceLibrary
from toros.preprocessor.science import ScienceStep
from toros.preprocessor.settings import CalibrationConfig
from toros.preprocessor.stages import Frame, StageRun, run_stages
from toros.preprocessor.transients import TransientSearch

__all__ = ["MASK_COSMIC_RAY", "MASK_HOT", "NIGHT_NAME", "NightCalibration", "NightResult", "night_of"]

NIGHT_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")


def night_of(date_obs: str, longitude_deg: float, now: float) -> str:
    """The observing night (YYYY-MM-DD) of an exposure that started at ``date_obs`` (the night of ``now``, in
    clock seconds, for a frame without a readable DATE-OBS)."""
    try:
        when = datetime.fromisoformat(date_obs.replace("Z", "+00:00"))
    except ValueError:
        when = datetime.fromtimestamp(now, UTC)
    return observing_night(when, longitude_deg).isoformat()


class NightCalibration:
    """Calibrates the frames of a night (or a handful of them as they stream in) for one work order."""

    def __init__(
        self,
        settings: CalibrationConfig,
        library: MasterLibrary,
        storage_root: Path,
        *,
        longitude_deg: float,
        work_order_id: str,
        now: Callable[[], float],
        science: ScienceStep | None = None,
        reference_catalog: Path | None = None,
        references: ReferenceLibrary | None = None,
        transients: TransientSearch | None = None,
        compute: Engine | None = None,
        note: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.settings = settings
        self.library = library
        self.storage_root = storage_root
        self.longitude = longitude_deg
        self.work_order_id = work_order_id
        self.now = now
        self.science = science
        self.reference_catalog = reference_catalog
        self.references = references
        self.transients = transients
        self.compute = compute or Here()
        self.note = note  # hears what the compute engine did instead (computed here, waited), for the work order

    def run(
        self, paths: list[Path], reporter: Reporter, *, night: str | None = None, clean_cosmic_rays: bool = False
    ) -> NightResult:
        result = NightResult()
        reporter.stage("inventory", 0, len(paths))
        inventory = take_inventory(paths, self.settings, self.storage_root)
        result.problems += inventory.problems
        if not inventory.frames:
            result.problems.append("no usable FITS frames")
            return result
        progress = Progress(reporter, total=len(inventory.frames))
        masters = Masters(
            self.settings, self.library, self.storage_root, work_order_id=self.work_order_id, now=self.now,
            progress=progress, result=result,
        )  # fmt: skip
        cosmic_rays = Processes(self.settings.cosmic_ray_processes, self.storage_root) if clean_cosmic_rays else None
        try:
            for setup in inventory.setups():
                lights = inventory.of("light", setup)
                first = (lights or [f for f in inventory.frames if f.setup == setup])[0]
                setup_night = night or night_of(first.date_obs, self.longitude, self.now())
                made = masters.build(inventory, setup, setup_night, reporter.check)
                frames = []
                for light in lights:
                    output, identity, made_before = product_of(light, setup_night, self.storage_root)
                    found = None if made_before else masters.for_frame(light, made)
                    if isinstance(found, str):  # no masters yet: it waits for them
                        result.waiting.append(WaitingFrame(light.path, setup.key, found))
                        progress.advance("science", str(light.path))
                        continue
                    frames.append(Frame(output, light, found, identity, made_before=made_before))
                run = StageRun(
                    self.storage_root, setup_night, self.work_order_id, self.settings, self.compute, progress, result,
                    self.now, self.science, self.reference_catalog, self.references, self.transients,
                    cosmic_rays=cosmic_rays, note=self.note,
                )  # fmt: skip
                run_stages(frames, run, check=reporter.check)
        finally:
            if cosmic_rays is not None:
                cosmic_rays.close()
        return result
