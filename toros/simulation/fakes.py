"""Pairs of frames for the vetting's training and the discovery benchmark: a reference and a new frame of
the simulated sky, the new one with injected point sources (the truth of "real") and the artefacts a
subtraction meets (cosmic rays and hot pixels the calibration missed; bright-star residuals come by
themselves from seeing ratios and registration errors)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from astropy.io import fits

from toros.simulation.psf import Optics
from toros.simulation.sky import Conditions, Galaxy, SimulatedSky, StarCatalog, VariableStar, write_calibrated_frame

WHEN = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Fake:
    ra_deg: float
    dec_deg: float
    mag: float
    x: float  # 0-based pixel of the new frame
    y: float
    on_galaxy: bool
    nuclear: bool = False  # on its galaxy's nucleus


@dataclass(frozen=True)
class Pair:
    new: Path
    reference: Path
    fakes: list[Fake]
    artefacts: list[tuple[float, float, str]]  # x, y, kind
    limmag: float  # the new frame's 5σ point-source depth (true zero point, measured noise)
    seeing_ratio: float
    misregistration_px: float


def make_pair(
    folder: Path,
    seed: int,
    *,
    size: int = 1024,
    pixel_scale: float = 0.47,
    fakes: int = 60,
    seeing_ratio: float | None = None,
    misregistration_px: float | None = None,
    cosmic_rays: int = 30,
    hot_pixels: int = 20,
    galaxies: int = 12,
    bright_stars: int = 6,
    optics: Optics | None = None,
) -> Pair:
    """A reference (300 s) and a new frame (60 s) of a random southern field with ``fakes`` point sources from
    4 mag above (30%) or 2 mag above (70%) to 1 mag below the new frame's 5σ limit, a third of them on galaxies
    (one per galaxy: half on its nucleus, half within 10 pixels of it; blended fakes would measure the blending,
    not the subtraction). Stars and galaxies through ``optics`` (by default Moffat PSFs), galaxies with nuclei."""
    rng = np.random.default_rng(seed)
    ra, dec = float(rng.uniform(0, 360)), float(rng.uniform(-70, -10))
    ratio = seeing_ratio if seeing_ratio is not None else float(rng.uniform(1.0, 2.5))
    misregistration = misregistration_px if misregistration_px is not None else float(rng.uniform(0, 0.3))
    reference_seeing = float(rng.uniform(1.2, 1.8))
    new_seeing = reference_seeing * ratio
    if rng.random() < 0.3:  # a sharper new frame than the reference happens too
        reference_seeing, new_seeing = new_seeing, reference_seeing
    half_deg = size * pixel_scale / 3600.0 / 2
    hosts = [
        Galaxy(f"SIM{seed:04d}-{i}", ra + rng.uniform(-0.8, 0.8) * half_deg / math.cos(math.radians(dec)),
               dec + rng.uniform(-0.8, 0.8) * half_deg, float(rng.uniform(13.5, 16.5)), float(rng.uniform(20, 120)))
        for i in range(galaxies)
    ]  # fmt: skip
    stars = StarCatalog()
    new_conditions = Conditions("r", 60.0, 1.2, new_seeing, WHEN)
    reference_conditions = Conditions("r", 300.0, 1.1, reference_seeing, WHEN - timedelta(days=30))
    optics = optics or Optics()
    sky = SimulatedSky(stars, hosts, optics=optics)
    from toros.floor.sky_geometry import tan_wcs

    wcs = tan_wcs(ra, dec, size, size, pixel_scale)
    photometry = sky.photometry
    sky_e = photometry.sky_electrons("r", pixel_scale) * 60.0
    sigma_px = new_seeing / pixel_scale / 2.3548
    noise_e = math.sqrt(sky_e + 36.0) * math.sqrt(4 * math.pi * sigma_px**2)  # PSF-weighted noise, electrons
    limmag = -2.5 * math.log10(5 * noise_e / 60.0) + photometry.magzp("r", 1.2, 1.0, 1.0)
    injected = []
    for i in range(fakes):
        on_galaxy = i % 3 == 0 and i // 3 < len(hosts)
        nuclear = on_galaxy and (i // 3) % 2 == 0
        if on_galaxy:
            host = hosts[i // 3]
            x, y = wcs.world_to_pixel_values(host.ra_deg, host.dec_deg)
            distance, angle = (0.0 if nuclear else rng.uniform(2, 10)), rng.uniform(0, 2 * math.pi)
            x, y = float(x) + distance * math.cos(angle), float(y) + distance * math.sin(angle)
        else:
            x, y = rng.uniform(40, size - 40, 2)
        f_ra, f_dec = wcs.pixel_to_world_values(x, y)
        bright = rng.random() < 0.3  # some well above the limit: a nearby kilonova is S/N 50
        mag = float(rng.uniform(limmag - 4.0, limmag - 2.0) if bright else rng.uniform(limmag - 2.0, limmag + 1.0))
        injected.append(Fake(float(f_ra), float(f_dec), mag, float(x), float(y), on_galaxy, nuclear))
    transients = [VariableStar(f.ra_deg, f.dec_deg, f.mag, 0.0, 1.0, WHEN) for f in injected]
    # Bright stars in both frames: their residuals are the subtraction's commonest bogus (a sparse field has few)
    static = []
    for _ in range(bright_stars):
        b_ra, b_dec = wcs.pixel_to_world_values(*rng.uniform(40, size - 40, 2))
        static.append(
            VariableStar(float(b_ra), float(b_dec), float(rng.uniform(limmag - 9, limmag - 5)), 0.0, 1.0, WHEN)
        )
    sky = SimulatedSky(stars, hosts, static, optics=optics)
    reference_path, new_path = folder / f"ref-{seed}.fits", folder / f"new-{seed}.fits"
    offset = rng.uniform(-30, 30, 2)  # the reference's pointing differs by whole and fractional pixels
    reference_centre = (ra + offset[0] / 3600 / math.cos(math.radians(dec)), dec + offset[1] / 3600)
    write_calibrated_frame(
        reference_path, sky, reference_centre, size, pointing_error_arcsec=(0.0, 0.0),
        pixel_scale_arcsec=pixel_scale, conditions=reference_conditions, seed=seed * 2 + 1,
    )  # fmt: skip
    write_calibrated_frame(
        new_path, SimulatedSky(stars, hosts, static + transients, optics=optics), (ra, dec), size, pointing_error_arcsec=(0.0, 0.0),
        pixel_scale_arcsec=pixel_scale, conditions=new_conditions, seed=seed * 2 + 2,
    )  # fmt: skip
    artefacts = _add_artefacts(new_path, rng, cosmic_rays, hot_pixels, misregistration)
    _add_artefacts(reference_path, rng, cosmic_rays // 2, hot_pixels // 2, 0.0)  # the reference has its own
    for path, truth in ((reference_path, reference_conditions), (new_path, new_conditions)):
        with fits.open(path, mode="update") as hdus:
            zp = photometry.magzp("r", truth.airmass, truth.exposure_s, float(hdus[0].header["GAIN"]))
            hdus[0].header["MAGZP"] = round(zp, 4)
            hdus[0].header["FWHM"] = round(truth.seeing_fwhm_arcsec / pixel_scale, 3)
    return Pair(new_path, reference_path, injected, artefacts, limmag, ratio, misregistration)


def _add_artefacts(
    path: Path, rng: np.random.Generator, cosmic_rays: int, hot_pixels: int, misregistration: float
) -> list[tuple[float, float, str]]:
    """Cosmic-ray tracks and hot pixels into the new frame; its WCS moved by ``misregistration`` pixels."""
    artefacts = []
    with fits.open(path, mode="update") as hdus:
        data = hdus[0].data
        height, width = data.shape
        for _ in range(cosmic_rays):
            x, y = rng.uniform(20, width - 20), rng.uniform(20, height - 20)
            length, angle = rng.uniform(1, 5), rng.uniform(0, math.pi)
            energy = rng.uniform(300, 5000)
            for t in np.linspace(0, length, int(length * 2) + 1):
                px, py = int(x + t * math.cos(angle)), int(y + t * math.sin(angle))
                data[py, px] += energy / (length * 2 + 1)
            artefacts.append((x, y, "cosmic_ray"))
        for _ in range(hot_pixels):
            x, y = int(rng.uniform(20, width - 20)), int(rng.uniform(20, height - 20))
            data[y, x] += rng.uniform(200, 3000)
            artefacts.append((float(x), float(y), "hot_pixel"))
        angle = rng.uniform(0, 2 * math.pi)
        hdus[0].header["CRPIX1"] += misregistration * math.cos(angle)
        hdus[0].header["CRPIX2"] += misregistration * math.sin(angle)
    return artefacts
