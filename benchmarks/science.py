"""Science-step benchmark: the preprocessor's science step against the usual tools one after the other.

For each size (default 4096² and 10560², the TOROS frame), a calibrated frame of the simulated sky at 0.47"/px
whose header WCS is the mount's reported pointing (off by 25"), then, each in a fresh process (peak memory is
that process's VmHWM):

* **toros**: ``ScienceStep.run`` — sep extraction, astroalign on the brightest sources, every star matched and
  the WCS fitted twice with outliers clipped, sigma-clipped zero point, limiting magnitude, the source catalog,
  the frame rewritten with its new header;
* **usual**: the same steps as a user would chain them — sep background and extraction on the full frame,
  ``astroalign.find_transform`` between all the detections and all the catalog stars in the field, astropy's
  ``fit_wcs_from_points`` on astroalign's matched pairs, aperture photometry of every source, the zero point
  from the matched pairs, the catalog written, the frame rewritten.

Both are checked against the truth: the astrometric rms of the fitted WCS at the true positions of the stars
(pixels), the zero point against the simulator's, and the limiting magnitude against the measured recovery of
stars injected into the frame (the magnitude at which the injected stars' median S/N in the LIMMAG aperture is 5).

Targets (issue 13): rms <= 0.1 px, zero point within 0.02 mag, LIMMAG within 0.2 mag of the recovery,
<= 3 s for 4096², <= 15 s for 10560², peak memory within the calibration memory limit (2 GiB).
Usage: .venv/bin/python benchmarks/science.py [--sizes 4096 10560] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

FIELD = (11.888, -25.288)
POINTING_ERROR = (20.0, -15.0)
MEMORY_LIMIT = 2 * 1024**3


def make_frame(folder: Path, size: int) -> dict:
    from toros.simulation.sky import SimulatedSky, write_calibrated_frame

    sky = SimulatedSky()
    path = folder / f"frame{size}_cal.fits"
    truth = write_calibrated_frame(path, sky, FIELD, size, pointing_error_arcsec=POINTING_ERROR)
    radius = size * 0.47 / 3600 * 0.75 + 0.1
    sky.stars.write_reference_catalog(folder / "reference.csv", [FIELD], radius)
    stars = sky.stars.cone(*FIELD, radius)
    x, y = truth.wcs.world_to_pixel_values(stars.ra, stars.dec)
    inside = (x > 5) & (x < size - 5) & (y > 5) & (y < size - 5) & (stars.mags["r"] < 20)
    (folder / "truth.json").write_text(
        json.dumps(
            {
                "magzp": truth.magzp,
                "ra": stars.ra[inside].tolist(),
                "dec": stars.dec[inside].tolist(),
                "x": np.asarray(x)[inside].tolist(),
                "y": np.asarray(y)[inside].tolist(),
                "seeing_px": truth.conditions.seeing_fwhm_arcsec / 0.47,
            }
        )
    )
    return {"path": str(path)}


def run_toros(path: Path, catalog: Path) -> dict:
    from toros.preprocessor.science import ReferenceCatalog, ScienceStep
    from toros.preprocessor.settings import ScienceConfig

    step = ScienceStep(ScienceConfig(reference_catalog=catalog), ReferenceCatalog.read(catalog))
    start = time.perf_counter()
    result = step.run(path)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "magzp": result.magzp,
        "limmag": result.limmag,
        "fwhm": result.fwhm_px,
        "stars": result.astrometry_stars,
    }


def run_usual(path: Path, catalog: Path) -> dict:
    """The same steps with the libraries chained as their documentation shows, no more."""
    import astroalign
    import astropy.units as u
    import sep
    from astropy.coordinates import SkyCoord
    from astropy.table import Table
    from astropy.wcs.utils import fit_wcs_from_points

    start = time.perf_counter()
    with fits.open(path) as hdus:
        header = hdus[0].header.copy()
        data = np.array(hdus[0].data, dtype=np.float32)
        mask = np.array(hdus[1].data)
    background = sep.Background(data)
    data_sub = data - background.back()
    sep.set_extract_pixstack(max(300_000, data.size // 20))
    sources = sep.extract(data_sub, 1.5, err=background.globalrms, minarea=5)
    sources = sources[np.argsort(-sources["flux"])]
    wcs0 = WCS(header)
    table = Table.read(catalog)
    cat_x, cat_y = wcs0.world_to_pixel_values(table["ra_deg"], table["dec_deg"])
    height, width = data.shape
    inside = (cat_x > 0) & (cat_x < width) & (cat_y > 0) & (cat_y < height)
    order = np.argsort(np.asarray(table["r"])[inside])
    reference = np.column_stack([cat_x[inside][order], cat_y[inside][order]])
    detected = np.column_stack([sources["x"], sources["y"]])
    transform, (matched_source, matched_reference) = astroalign.find_transform(detected, reference)
    # fit_wcs_from_points on astroalign's matched pairs: their sky positions through the catalog
    index = {tuple(np.round(p, 6)): i for i, p in enumerate(reference)}
    rows = [index[tuple(np.round(p, 6))] for p in matched_reference]
    ra = np.asarray(table["ra_deg"])[inside][order][rows]
    dec = np.asarray(table["dec_deg"])[inside][order][rows]
    wcs = fit_wcs_from_points(
        (matched_source[:, 0], matched_source[:, 1]), SkyCoord(ra * u.deg, dec * u.deg), projection="TAN"
    )
    flux, flux_err, _ = sep.sum_circle(data_sub, sources["x"], sources["y"], 8.0, err=background.globalrms)
    lookup = {tuple(np.round(p, 6)): i for i, p in enumerate(detected)}
    matched_flux = flux[[lookup[tuple(np.round(p, 6))] for p in matched_source]]
    mags = np.asarray(table["r"])[inside][order][rows]
    good = matched_flux > 0
    magzp = float(np.median(mags[good] + 2.5 * np.log10(matched_flux[good])))
    world = wcs.pixel_to_world_values(sources["x"], sources["y"])
    out = Table(
        {"x": sources["x"], "y": sources["y"], "ra": world[0], "dec": world[1], "flux": flux, "flux_err": flux_err}
    )
    out.write(path.with_name("usual_cat.fits"), overwrite=True)
    header.update(wcs.to_header())
    fits.HDUList([fits.PrimaryHDU(data, header), fits.ImageHDU(mask, name="MASK")]).writeto(path, overwrite=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "magzp": magzp, "stars": len(matched_source)}


def child(method: str, path: str, catalog: str) -> None:
    """Runs one method in this fresh process and prints its figures and its peak memory (VmHWM)."""
    figures = (run_toros if method == "toros" else run_usual)(Path(path), Path(catalog))
    status = Path("/proc/self/status").read_text()
    figures["peak_bytes"] = (
        int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024
    )
    print(json.dumps(figures))


def spawn(method: str, path: Path, catalog: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", method, str(path), str(catalog)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def astrometric_rms(path: Path, truth: dict) -> float:
    wcs = WCS(fits.getheader(path))
    x, y = wcs.world_to_pixel_values(np.array(truth["ra"]), np.array(truth["dec"]))
    return float(np.sqrt(np.mean((x - np.array(truth["x"])) ** 2 + (y - np.array(truth["y"])) ** 2)))


def recovery_limit(path: Path, fwhm: float, magzp: float, limmag: float) -> float:
    """Injects stars from LIMMAG-1.5 to LIMMAG+1.5 into a copy of the frame and measures, with the LIMMAG
    aperture (radius FWHM, local sky), at which magnitude their median S/N is 5."""
    import sep

    from toros.simulation.sky import stamp_gaussians

    with fits.open(path) as hdus:
        data = np.array(hdus[0].data, dtype=np.float32)
    rng = np.random.default_rng(5)
    height, width = data.shape
    mags = np.repeat(np.linspace(limmag - 1.5, limmag + 1.5, 13), 60)
    x = rng.uniform(50, width - 50, len(mags))
    y = rng.uniform(50, height - 50, len(mags))
    stamp_gaussians(data, x, y, 10 ** (-0.4 * (mags - magzp)), fwhm / 2.3548)
    background = sep.Background(data)
    background.subfrom(data)
    flux, flux_err, _ = sep.sum_circle(data, x, y, fwhm, err=background.globalrms, bkgann=(3 * fwhm, 5 * fwhm))
    levels = np.unique(mags)
    snr = np.array([np.median((flux / flux_err)[mags == m]) for m in levels])
    # S/N falls with magnitude: interpolate where it crosses 5
    return float(np.interp(math.log10(5.0), np.log10(np.clip(snr[::-1], 1e-3, None)), levels[::-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 10560])
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "FRAME", "CATALOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="toros-science-") as folder:
            root = Path(folder)
            made = make_frame(root, size)
            frame, catalog = Path(made["path"]), root / "reference.csv"
            truth = json.loads((root / "truth.json").read_text())
            pristine = root / "pristine.fits"
            shutil.copyfile(frame, pristine)
            ours = spawn("toros", frame, catalog)
            ours["rms_px"] = astrometric_rms(frame, truth)
            recovered = recovery_limit(frame, ours["fwhm"], ours["magzp"], ours["limmag"])
            shutil.copyfile(pristine, frame)
            usual = spawn("usual", frame, catalog)
            usual["rms_px"] = astrometric_rms(frame, truth)
            print(f"{size}x{size} frame, {len(truth['ra'])} true stars r < 20 in the field")
            for name, figures in (("toros", ours), ("usual tools", usual)):
                print(
                    f"  {name:12s} {figures['seconds']:6.2f} s  peak {figures['peak_bytes'] / 2**20:6.0f} MiB  "
                    f"rms {figures['rms_px']:.3f} px  zero point {figures['magzp'] - truth['magzp']:+.3f} mag  "
                    f"({figures['stars']} stars)"
                )
            print(
                f"  ratio usual/toros: {usual['seconds'] / ours['seconds']:.2f}x; LIMMAG {ours['limmag']:.2f}, "
                f"injected stars reach S/N 5 at {recovered:.2f} ({ours['limmag'] - recovered:+.2f} mag); "
                f"peak within the {MEMORY_LIMIT / 2**30:.0f} GiB limit: {ours['peak_bytes'] <= MEMORY_LIMIT}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
