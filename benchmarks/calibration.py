"""Calibration benchmark: the preprocessor against ccdproc's guide recipe, memory and I/O at full TOROS size.

1. A simulated night of N frames of each type (bias, dark, flat, light) of W x H pixels, calibrated end to end
   by the preprocessor and by ccdproc following the astropy CCD Data Reduction Guide (read, overscan, trim,
   combine with sigma clipping, subtract, flat-correct, write), in the same run: times and ratio.
2. Peak memory (VmHWM of a separate process) of combining 10 frames of 10560 x 10560 into a master bias,
   against the configured limit (default 2 GiB).
3. Time to calibrate one 10560 x 10560 science frame once the night's masters exist (overscan, trim, bias,
   scaled dark, flat, mask, atomic write, checksum), measured between successive frames, against reading the
   raw FITS and writing the same output bytes with no computation.

Targets (issue 3): >= 10x ccdproc end to end; a 10560^2 frame within 2x of its raw I/O; memory under the limit.
Usage: .venv/bin/python benchmarks/calibration.py [--size 2048] [--frames 5] [--big 10560] [--big-frames 10]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from toros.preprocessor.library import MasterLibrary
from toros.preprocessor.pipeline import NightCalibration
from toros.runtime.config import CalibrationConfig, DatabaseConfig
from toros.runtime.files import atomic_write
from toros.simulation.ccd import Sensor, make_frame, write_night

GIB = 1024**3


class Clock:
    """Records when each calibration stage reports, to time the science frames."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, int]] = []

    def stage(self, stage: str, done: int, total: int, path: str = "") -> None:
        self.events.append((time.perf_counter(), stage, done))

    def product(self, path: Path, kind: str, sha256: str | None = None) -> None:
        pass

    def check(self) -> None:
        pass


def ours(root: Path, paths: list[Path], settings: CalibrationConfig) -> tuple[float, Clock]:
    library = MasterLibrary(DatabaseConfig(path=root / "bench.db"))
    clock = Clock()
    pipeline = NightCalibration(settings, library, root, longitude_deg=-67.32, work_order_id="bench", now=time.time)
    started = time.perf_counter()
    result = pipeline.run(paths, clock, night="2026-11-22")
    elapsed = time.perf_counter() - started
    library.close()
    if result.problems:
        raise SystemExit(f"calibration problems: {result.problems}")
    return elapsed, clock


def ccdproc_recipe(paths: list[Path], out: Path) -> float:
    """The guide's recipe with ccdproc, writing masters and calibrated frames like the preprocessor."""
    import astropy.units as u
    import ccdproc
    from astropy.nddata import CCDData
    from astropy.stats import mad_std

    warnings.simplefilter("ignore")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def raw(path: Path) -> CCDData:
        ccd = CCDData.read(path, unit="adu")
        ccd = ccdproc.subtract_overscan(ccd, fits_section=ccd.header["BIASSEC"], median=True, overscan_axis=1)
        return ccdproc.trim_image(ccd, fits_section=ccd.header["TRIMSEC"])

    def combine(frames: list[CCDData], name: str, **extra: object) -> CCDData:
        master = ccdproc.combine(
            frames, method="average", sigma_clip=True, sigma_clip_low_thresh=3, sigma_clip_high_thresh=3,
            sigma_clip_func=np.ma.median, sigma_clip_dev_func=mad_std, mem_limit=2 * GIB, **extra,
        )
        master.write(out / name, overwrite=True)
        return master

    kinds = {p: fits.getheader(p)["IMAGETYP"] for p in paths}
    bias = combine([raw(p) for p in paths if kinds[p] == "BIAS"], "bias.fits")
    dark = combine([ccdproc.subtract_bias(raw(p), bias) for p in paths if kinds[p] == "DARK"], "dark.fits")
    flats = [
        ccdproc.subtract_dark(ccdproc.subtract_bias(raw(p), bias), dark, exposure_time="EXPTIME", exposure_unit=u.s, scale=True)
        for p in paths if kinds[p] == "FLAT"
    ]
    flat = combine(flats, "flat.fits", scale=lambda a: 1 / np.ma.median(a))
    for path in (p for p in paths if kinds[p] == "LIGHT"):
        science = ccdproc.ccd_process(
            CCDData.read(path, unit="adu"), oscan=fits.getheader(path)["BIASSEC"], oscan_median=True,
            trim=fits.getheader(path)["TRIMSEC"], master_bias=bias, dark_frame=dark, master_flat=flat,
            exposure_key="EXPTIME", exposure_unit=u.s, dark_scale=True,
        )
        science.write(out / f"{path.stem}_cal.fits", overwrite=True)
    return time.perf_counter() - started


def write_big_frames(folder: Path, size: int, count: int, kind: str) -> list[Path]:
    """``count`` raw frames of size x size (one simulated frame, then cheap per-frame noise)."""
    sensor = Sensor(width=size, height=size, overscan=32)
    base = make_frame(sensor, kind, exposure_time=0.0 if kind == "bias" else 30.0, stars=2000 if kind == "light" else 0)
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        data = base.data + rng.integers(0, 3, size=base.data.shape, dtype=np.uint16)
        path = folder / f"{kind}-{index:03d}.fits"
        fits.PrimaryHDU(data, base.header).writeto(path)
        paths.append(path)
        del data
    return paths


def combine_in_child(folder: Path, limit: int) -> dict:
    """Runs the master-bias combine of the big frames in a fresh process and returns its time and peak memory."""
    code = f"""
import json, time, resource
from pathlib import Path
from toros.preprocessor.library import MasterLibrary
from toros.preprocessor.pipeline import NightCalibration
from toros.runtime.config import CalibrationConfig, DatabaseConfig
folder = Path({str(folder)!r})
paths = sorted(folder.glob("bias-*.fits"))
library = MasterLibrary(DatabaseConfig(path=folder / "big.db"))
class R:
    def stage(self, *a, **k): pass
    def product(self, *a, **k): pass
    def check(self): pass
started = time.perf_counter()
result = NightCalibration(CalibrationConfig(memory_limit_bytes={limit}), library, folder, longitude_deg=-67.32,
                          work_order_id="big", now=time.time).run(paths, R(), night="2026-11-22")
elapsed = time.perf_counter() - started
peak = int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) * 1024
print(json.dumps({{"seconds": elapsed, "peak_bytes": peak, "masters": len(result.masters), "problems": result.problems}}))
"""
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def science_vs_io(folder: Path, size: int) -> tuple[float, float]:
    """Seconds to calibrate one size^2 light frame (masters ready), and to read it and write the same bytes."""
    lights = write_big_frames(folder, size, 3, "light")
    light = lights[0]
    night = sorted(folder.glob("bias-*.fits"))[:3] + write_big_frames(folder, size, 3, "dark") + write_big_frames(folder, size, 3, "flat")
    _, clock = ours(folder, night + lights, CalibrationConfig())
    science = [t for t, stage, _ in clock.events if stage == "science"]
    # Steady state, with the night's masters at hand: the time from one science frame to the next.
    calibrate_seconds = float(np.median(np.diff(science)))

    started = time.perf_counter()
    data = fits.getdata(light)
    out = np.asarray(data, dtype=np.float32)
    mask = np.zeros(out.shape, dtype=np.uint8)
    with atomic_write(folder / "io-reference.fits") as stream:
        fits.HDUList([fits.PrimaryHDU(out, fits.getheader(light)), fits.ImageHDU(mask, name="MASK")]).writeto(stream)
    io_seconds = time.perf_counter() - started
    return calibrate_seconds, io_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--big", type=int, default=10560, help="size of the large frames (0: skip parts 2 and 3)")
    parser.add_argument("--big-frames", type=int, default=10)
    parser.add_argument("--memory-limit", type=int, default=2 * GIB)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.0f} GiB, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="toros-calbench-") as tmp:
        root = Path(tmp)
        n = args.frames
        paths = write_night(root / "raw", Sensor(width=args.size, height=args.size, overscan=32), biases=n, darks=n, flats=n, lights=n)
        ours_seconds, _ = ours(root / "ours", paths, CalibrationConfig())
        reference_seconds = ccdproc_recipe(paths, root / "ccdproc")
        print(f"night of {4 * n} frames of {args.size}x{args.size}: preprocessor {ours_seconds:.2f} s, "
              f"ccdproc guide recipe {reference_seconds:.2f} s: {reference_seconds / ours_seconds:.1f}x faster (target 10x)")
        if not args.big:
            return
        big = root / "big"
        big.mkdir()
        write_big_frames(big, args.big, args.big_frames, "bias")
        combined = combine_in_child(big, args.memory_limit)
        print(f"master bias from {args.big_frames} frames of {args.big}x{args.big}: {combined['seconds']:.1f} s, "
              f"peak memory {combined['peak_bytes'] / GIB:.2f} GiB (limit {args.memory_limit / GIB:.2f} GiB: "
              f"{'under' if combined['peak_bytes'] <= args.memory_limit else 'OVER'})")
        calibrate_seconds, io_seconds = science_vs_io(big, args.big)
        print(f"one {args.big}x{args.big} science frame: calibrated in {calibrate_seconds:.2f} s, raw read + write "
              f"of the same bytes {io_seconds:.2f} s: {calibrate_seconds / io_seconds:.2f}x its I/O (target <= 2x)")


if __name__ == "__main__":
    main()
