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

Both are checked against the truth, on frames of Moffat stars (β 3, the PSF 15% wider and 10% elongated at the
corners of the 1.4° field) and, as a second column, of Gaussian ones: the astrometric rms of the fitted WCS at
the true positions of the stars (pixels), the zero point against the simulator's, the FWHM against the seeing,
and LIMMAG against the 50% recovery magnitude of stars injected into the frame (the PSF of their place) and
found by a matched filter at 5σ.

Targets (issues 13 and 30): rms <= 0.1 px, zero point within 0.01 mag (1%), FWHM within 3%, LIMMAG within 0.1 mag
of the 50% recovery, <= 3 s for 4096², <= 15 s for 10560², peak memory within the calibration memory limit
(2 GiB). Usage: .venv/bin/python benchmarks/science.py [--sizes 4096 10560] [--profiles moffat gaussian]
"""

from __future__ import annotations

import argparse
import json
import os
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


def make_frame(folder: Path, size: int, profile: str) -> dict:
    from toros.simulation.psf import Optics
    from toros.simulation.sky import SimulatedSky, write_calibrated_frame

    sky = SimulatedSky(optics=Optics(profile=profile))
    path = folder / f"frame{size}_cal.fits"
    truth = write_calibrated_frame(path, sky, FIELD, size, pointing_error_arcsec=POINTING_ERROR)
    centre = np.array([(size - 1) / 2.0])
    grid = np.linspace(0, size - 1, 9)
    gx, gy = np.meshgrid(grid, grid)
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
                "fwhm_centre_px": float(truth.psf_at(centre, centre).fwhm[0]),
                "fwhm_median_px": float(np.median(truth.psf_at(gx.ravel(), gy.ravel()).fwhm)),
                "profile": profile,
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


def recovery_limit(path: Path, truth: dict, magzp: float, limmag: float) -> float:
    """Injects stars from LIMMAG-1 to LIMMAG+1 into a copy of the frame, each with the PSF of its place (the
    simulator's optics), and finds them with a matched filter at 5σ (the frame convolved with the PSF, over its
    noise): the magnitude at which half of them are found within 1.5 px."""
    import sep
    from scipy import ndimage

    from toros.simulation.psf import Optics, kernel, stamp
    from toros.simulation.sky import SimulatedSky

    with fits.open(path) as hdus:
        data = np.array(hdus[0].data, dtype=np.float32)
    sky = SimulatedSky(optics=Optics(profile=truth["profile"]))
    rng = np.random.default_rng(5)
    height, width = data.shape
    mags = np.repeat(np.linspace(limmag - 1.0, limmag + 1.0, 21), 40)
    x = rng.uniform(50, width - 50, len(mags))
    y = rng.uniform(50, height - 50, len(mags))
    axis = ((width - 1) / 2.0, (height - 1) / 2.0)
    shapes = sky.psf_at(x, y, axis, 0.47, truth["seeing_px"] * 0.47)
    stamp(data, x, y, 10 ** (-0.4 * (mags - magzp)), shapes, sky.optics)
    background = sep.Background(data)
    background.subfrom(data)
    centre = sky.psf_at(np.array([axis[0]]), np.array([axis[1]]), axis, 0.47, truth["seeing_px"] * 0.47)
    psf = kernel(sky.optics, centre, 12)
    filtered = ndimage.convolve(data, psf[::-1, ::-1], mode="constant")
    significance = filtered / (background.globalrms * np.sqrt(np.sum(psf**2)))
    peaks = (significance >= 5.0) & (significance == ndimage.maximum_filter(significance, size=3))
    py, px = np.nonzero(peaks)
    from scipy.spatial import cKDTree

    found = cKDTree(np.column_stack([px, py])).query(np.column_stack([x, y]))[0] < 1.5
    levels = np.unique(mags)
    fraction = np.array([found[mags == m].mean() for m in levels])
    return float(np.interp(0.5, fraction[::-1], levels[::-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 10560])
    parser.add_argument("--profiles", nargs="+", default=["moffat", "gaussian"], choices=["moffat", "gaussian"])
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "FRAME", "CATALOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    for size in args.sizes:
        for profile in args.profiles:
            with tempfile.TemporaryDirectory(prefix="toros-science-") as folder:
                root = Path(folder)
                made = make_frame(root, size, profile)
                frame, catalog = Path(made["path"]), root / "reference.csv"
                truth = json.loads((root / "truth.json").read_text())
                pristine = root / "pristine.fits"
                shutil.copyfile(frame, pristine)
                ours = spawn("toros", frame, catalog)
                ours["rms_px"] = astrometric_rms(frame, truth)
                recovered = recovery_limit(pristine, truth, truth["magzp"], ours["limmag"])
                shutil.copyfile(pristine, frame)
                usual = spawn("usual", frame, catalog)
                usual["rms_px"] = astrometric_rms(frame, truth)
                print(f"{size}x{size} frame, {profile} stars, {len(truth['ra'])} true stars r < 20 in the field")
                for name, figures in (("toros", ours), ("usual tools", usual)):
                    print(
                        f"  {name:12s} {figures['seconds']:6.2f} s  peak {figures['peak_bytes'] / 2**20:6.0f} MiB  "
                        f"rms {figures['rms_px']:.3f} px  zero point {figures['magzp'] - truth['magzp']:+.4f} mag  "
                        f"({figures['stars']} stars)"
                    )
                print(
                    f"  ratio usual/toros: {usual['seconds'] / ours['seconds']:.2f}x; FWHM {ours['fwhm']:.3f} px, the "
                    f"field's median {truth['fwhm_median_px']:.3f} ({100 * (ours['fwhm'] / truth['fwhm_median_px'] - 1):+.1f}%; "
                    f"{truth['fwhm_centre_px']:.3f} at the centre); LIMMAG {ours['limmag']:.2f} (PSF fit), "
                    f"50% of injected stars found at {recovered:.2f} ({ours['limmag'] - recovered:+.2f} mag); "
                    f"peak within the {MEMORY_LIMIT / 2**30:.0f} GiB limit: {ours['peak_bytes'] <= MEMORY_LIMIT}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
