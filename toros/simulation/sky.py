"""The simulated sky: stars, galaxies and transients where they are on the sky, whatever the pointing.

What the camera simulator draws, what the tests and benchmarks measure against, and what the demo observes:

* **stars** from a deterministic synthetic catalog tied to the sky (``StarCatalog``): HEALPix tiles, each
  seeded by its index, so the same star sits at the same RA/Dec in every frame that covers it; magnitudes in
  g, r, i, z and clear; counts per square degree by galactic latitude;
* **galaxies** (``Galaxy``, e.g. those of the alert robot's catalog) as an exponential disc and a compact
  bulge — a nucleus, point-like at 100 Mpc — with sizes and brightness from their distance and B magnitude;
* **transients** (``Kilonova`` after AT2017gfo, ``Supernova`` (Ia, II), ``VariableStar``, ``Asteroid``) with a magnitude per filter
  as a function of time;
* the **conditions** of each frame: seeing, sky brightness, extinction with airmass, the telescope's zero
  point (``Photometry``: a 0.6 m CDK24 with an STA1600 at 0.47"/px);
* the **optics** (``psf.Optics``): a Moffat PSF (β 3 by default) that widens and elongates toward the corners
  of the 1.4° field.

``SimulatedSky.render`` adds the electrons of every source into an image, given the true WCS of the pointing
(the mount's pointing error is the simulator's secret: the raw header's WCS is where the mount *says* it
points). Sources are stamped only where they are (the PSF of their place in the field, integrated over each
pixel, vectorised), so a 10560² frame takes seconds. ``StarCatalog.write_reference_catalog`` exports the stars as the site's reference
catalog (the stand-in for a Gaia/Pan-STARRS extract).
"""

from __future__ import annotations

import csv
import functools
import math
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astropy_healpix import HEALPix

from toros.floor.kilonova import kilonova_mag
from toros.floor.sky_geometry import separation_deg
from toros.floor.supernovae import SupernovaType, supernova_mag
from toros.runtime.files import atomic_write
from toros.simulation.psf import Optics, PsfShape, kernel, kernel_half, stamp

FILTERS = ("g", "r", "i", "z", "clear")
TOROS_PIXEL_SCALE_ARCSEC = 0.47
REFERENCE_COLUMNS = ("ra_deg", "dec_deg", "g", "r", "i", "z", "clear")


@dataclass(frozen=True)
class Photometry:
    """A telescope and its site: the AB magnitude giving 1 e-/s above the atmosphere, extinction per airmass
    and the dark sky, per filter."""

    zero_point: dict[str, float] = field(
        default_factory=lambda: {"g": 22.3, "r": 22.5, "i": 22.1, "z": 21.4, "clear": 23.2}
    )
    extinction: dict[str, float] = field(
        default_factory=lambda: {"g": 0.18, "r": 0.10, "i": 0.06, "z": 0.05, "clear": 0.12}
    )
    dark_sky: dict[str, float] = field(  # mag / arcsec², a dark high site
        default_factory=lambda: {"g": 22.1, "r": 21.2, "i": 20.3, "z": 19.3, "clear": 21.3}
    )

    def electrons_per_second(self, mag: np.ndarray | float, filter: str, airmass: float) -> np.ndarray:
        return 10 ** (-0.4 * (np.asarray(mag) + self.extinction[filter] * airmass - self.zero_point[filter]))

    def sky_electrons(self, filter: str, pixel_scale_arcsec: float, brightening: float = 1.0) -> float:
        """Dark-sky electrons per second per pixel, times ``brightening`` (twilight, Moon)."""
        rate = 10 ** (-0.4 * (self.dark_sky[filter] - self.zero_point[filter])) * pixel_scale_arcsec**2
        return float(rate * brightening)

    def magzp(self, filter: str, airmass: float, exposure_s: float, gain: float) -> float:
        """The true MAGZP of a frame: the AB magnitude of a source giving 1 ADU in total."""
        return (
            self.zero_point[filter]
            - self.extinction[filter] * airmass
            + 2.5 * math.log10(exposure_s)
            - 2.5 * math.log10(gain)
        )


@dataclass(frozen=True)
class Stars:
    ra: np.ndarray
    dec: np.ndarray
    mags: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ra)


class StarCatalog:
    """Deterministic synthetic stars: HEALPix nested tiles of NSIDE 64 (0.84 deg²), each from its own seed.

    Counts follow N(<m) ∝ 10^(0.3 m) down to ``faintest_mag`` (r), about 1000 stars per square degree
    brighter than r = 20 at the galactic poles and ten times that near the plane."""

    NSIDE = 64
    BRIGHTEST_MAG = 10.0
    SLOPE = 0.3  # d log10 N / dm

    def __init__(self, faintest_mag: float = 21.5, seed: int = 2017) -> None:
        self.faintest_mag = faintest_mag
        self.seed = seed
        self.healpix = HEALPix(nside=self.NSIDE, order="nested")
        self._tile = functools.lru_cache(maxsize=256)(self._make_tile)

    def per_square_degree(self, galactic_latitude_deg: float, mag: float) -> float:
        """Stars brighter than ``mag`` (r) per square degree at a galactic latitude."""
        at_20 = 1000.0 * (1.0 + 9.0 * math.exp(-abs(galactic_latitude_deg) / 15.0))
        return at_20 * 10 ** (self.SLOPE * (mag - 20.0))

    def _make_tile(self, index: int) -> Stars:
        rng = np.random.default_rng([self.seed, index])
        lon, lat = self.healpix.healpix_to_lonlat([index])
        centre = SkyCoord(lon[0], lat[0], frame="icrs")
        area = self.healpix.pixel_area.to_value(u.deg**2)
        expected = self.per_square_degree(centre.galactic.b.deg, self.faintest_mag) * area
        count = int(rng.poisson(expected))
        # Uniform positions inside the tile: draw within its bounding box, keep those in the tile.
        corners = self.healpix.boundaries_lonlat([index], step=4)
        ra_corners, dec_corners = corners[0].to_value(u.deg)[0], corners[1].to_value(u.deg)[0]
        ra_corners = np.unwrap(ra_corners, period=360.0)
        ra_low, ra_high = ra_corners.min(), ra_corners.max()
        z_low, z_high = np.sin(np.radians(dec_corners.min())), np.sin(np.radians(dec_corners.max()))
        ra_list, dec_list = [], []
        kept = 0
        while kept < count:
            n = int((count - kept) * 1.6) + 16
            ra = rng.uniform(ra_low, ra_high, n) % 360.0
            dec = np.degrees(np.arcsin(rng.uniform(z_low, z_high, n)))
            inside = self.healpix.lonlat_to_healpix(ra * u.deg, dec * u.deg) == index
            ra_list.append(ra[inside])
            dec_list.append(dec[inside])
            kept += int(inside.sum())
        ra = np.concatenate(ra_list)[:count]
        dec = np.concatenate(dec_list)[:count]
        # N(<m) ∝ 10^(SLOPE m): inverse-transform sampling between the brightest and faintest magnitudes.
        low, high = 10 ** (self.SLOPE * self.BRIGHTEST_MAG), 10 ** (self.SLOPE * self.faintest_mag)
        r = np.log10(rng.uniform(low, high, count)) / self.SLOPE
        g_r = rng.uniform(0.25, 1.4, count)
        r_i = 0.1 + 0.4 * g_r + rng.normal(0, 0.03, count)
        i_z = 0.05 + 0.2 * g_r
        mags = {"r": r, "g": r + g_r, "i": r - r_i, "z": r - r_i - i_z, "clear": r - 0.1 - 0.1 * g_r}
        return Stars(ra, dec, mags)

    def cone(self, ra_deg: float, dec_deg: float, radius_deg: float) -> Stars:
        """Every star within ``radius_deg`` of (RA, Dec)."""
        tiles = self.healpix.cone_search_lonlat(ra_deg * u.deg, dec_deg * u.deg, radius_deg * u.deg)
        parts = [self._tile(int(index)) for index in tiles]
        ra = np.concatenate([p.ra for p in parts])
        dec = np.concatenate([p.dec for p in parts])
        mags = {f: np.concatenate([p.mags[f] for p in parts]) for f in FILTERS}
        near = separation_deg(ra, dec, ra_deg, dec_deg) <= radius_deg
        return Stars(ra[near], dec[near], {f: m[near] for f, m in mags.items()})

    def write_reference_catalog(self, path: Path, centres: Sequence[tuple[float, float]], radius_deg: float) -> int:
        """Writes the stars within ``radius_deg`` of any of ``centres`` as a reference catalog (CSV: ra_deg,
        dec_deg and AB magnitudes per filter); returns how many."""
        seen: set[tuple[float, float]] = set()
        lines = [",".join(REFERENCE_COLUMNS)]
        for ra, dec in centres:
            stars = self.cone(ra, dec, radius_deg)
            for n in range(len(stars)):
                key = (round(float(stars.ra[n]), 9), round(float(stars.dec[n]), 9))
                if key in seen:
                    continue
                seen.add(key)
                values = [stars.ra[n], stars.dec[n], *(stars.mags[f][n] for f in REFERENCE_COLUMNS[2:])]
                lines.append(",".join(f"{v:.7f}" if k < 2 else f"{v:.4f}" for k, v in enumerate(values)))
        with atomic_write(path) as stream:
            stream.write(("\n".join(lines) + "\n").encode())
        return len(seen)


@dataclass(frozen=True)
class Galaxy:
    """A galaxy of a catalog: an exponential disc and a bulge whose sizes follow from its distance."""

    name: str
    ra_deg: float
    dec_deg: float
    b_mag: float
    distance_mpc: float
    SCALE_LENGTH_KPC = 2.5
    BULGE_SCALE_KPC = 0.15  # an exponential bulge: 0.8" at 40 Mpc, unresolved at 100 Mpc (a nucleus)

    def scale_length_arcsec(self) -> float:
        return 206.265 * self.SCALE_LENGTH_KPC / max(self.distance_mpc, 1.0)

    def bulge_scale_arcsec(self) -> float:
        return 206.265 * self.BULGE_SCALE_KPC / max(self.distance_mpc, 1.0)

    def bulge_fraction(self) -> float:
        """The bulge's share of the light (0.1–0.5, fixed by the name)."""
        rng = np.random.default_rng(zlib.crc32(self.name.encode()) + 1)
        return float(rng.uniform(0.1, 0.5))

    def mag(self, filter: str) -> float:
        """Colours of a typical spiral (B − r ≈ 1.1)."""
        return self.b_mag - {"g": 0.6, "r": 1.1, "i": 1.5, "z": 1.8, "clear": 1.0}[filter]

    def shape(self) -> tuple[float, float]:
        """(axis ratio, position angle in degrees), fixed by the name."""
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        return float(rng.uniform(0.3, 1.0)), float(rng.uniform(0, 180))


class Galaxies:
    """Galaxies of a catalog as columns (e.g. the alert robot's memory-mapped index), drawn where they are."""

    ABSOLUTE_B = -20.0  # for a galaxy without a B magnitude

    def __init__(
        self, ra: np.ndarray, dec: np.ndarray, b_mag: np.ndarray, distance_mpc: np.ndarray, names: np.ndarray
    ) -> None:
        self.ra, self.dec, self.b_mag, self.distance, self.names = ra, dec, b_mag, distance_mpc, names

    @classmethod
    def of(cls, galaxies: Sequence[Galaxy]) -> Galaxies:
        return cls(
            np.array([g.ra_deg for g in galaxies]),
            np.array([g.dec_deg for g in galaxies]),
            np.array([g.b_mag for g in galaxies]),
            np.array([g.distance_mpc for g in galaxies]),
            np.array([g.name for g in galaxies]),
        )

    def cone(self, ra_deg: float, dec_deg: float, radius_deg: float) -> list[Galaxy]:
        if len(self.ra) == 0:
            return []
        near_dec = np.flatnonzero(np.abs(np.asarray(self.dec) - dec_deg) <= radius_deg)
        near = near_dec[separation_deg(self.ra[near_dec], self.dec[near_dec], ra_deg, dec_deg) <= radius_deg]
        found = []
        for n in near:
            distance = float(self.distance[n]) if np.isfinite(self.distance[n]) and self.distance[n] > 0 else 100.0
            b_mag = float(self.b_mag[n])
            if not np.isfinite(b_mag):
                b_mag = self.ABSOLUTE_B + 5 * math.log10(distance * 1e5)
            name = self.names[n]
            name = name.decode(errors="replace").strip() if isinstance(name, bytes) else str(name).strip()
            found.append(Galaxy(name or f"galaxy {n}", float(self.ra[n]), float(self.dec[n]), b_mag, distance))
        return found


class Transient(ABC):
    """A point source whose brightness (and maybe position) changes with time."""

    @abstractmethod
    def position(self, when: datetime) -> tuple[float, float]: ...

    @abstractmethod
    def mag(self, filter: str, when: datetime) -> float | None:
        """AB magnitude in ``filter`` at ``when``; None while it is not there (before it starts)."""


@dataclass(frozen=True)
class Kilonova(Transient):
    """AT2017gfo's light curves (``floor.kilonova``) scaled to ``distance_mpc``, from the merger time ``start``."""

    ra_deg: float
    dec_deg: float
    start: datetime
    distance_mpc: float

    def position(self, when: datetime) -> tuple[float, float]:
        return self.ra_deg, self.dec_deg

    def mag(self, filter: str, when: datetime) -> float | None:
        return kilonova_mag(filter, (when - self.start).total_seconds() / 86400.0, self.distance_mpc)


@dataclass(frozen=True)
class Supernova(Transient):
    """A type Ia or II supernova (``floor.supernovae``) at ``distance_mpc``, its r peak at ``peak``."""

    ra_deg: float
    dec_deg: float
    peak: datetime
    distance_mpc: float
    type: SupernovaType = SupernovaType.IA

    def position(self, when: datetime) -> tuple[float, float]:
        return self.ra_deg, self.dec_deg

    def mag(self, filter: str, when: datetime) -> float | None:
        return supernova_mag(self.type, filter, (when - self.peak).total_seconds() / 86400.0, self.distance_mpc)


@dataclass(frozen=True)
class VariableStar(Transient):
    ra_deg: float
    dec_deg: float
    mean_mag: float
    amplitude_mag: float
    period_days: float
    epoch: datetime

    def position(self, when: datetime) -> tuple[float, float]:
        return self.ra_deg, self.dec_deg

    def mag(self, filter: str, when: datetime) -> float | None:
        phase = (when - self.epoch).total_seconds() / 86400.0 / self.period_days
        return self.mean_mag + self.amplitude_mag * math.sin(2 * math.pi * phase)


@dataclass(frozen=True)
class Asteroid(Transient):
    """A slow mover: a straight track at ``rate_arcsec_per_hour`` towards ``position_angle_deg`` (east of north)."""

    ra_deg: float
    dec_deg: float
    epoch: datetime
    rate_arcsec_per_hour: float
    position_angle_deg: float
    magnitude: float

    def position(self, when: datetime) -> tuple[float, float]:
        hours = (when - self.epoch).total_seconds() / 3600.0
        distance = self.rate_arcsec_per_hour * hours / 3600.0
        angle = math.radians(self.position_angle_deg)
        dec = self.dec_deg + distance * math.cos(angle)
        ra = self.ra_deg + distance * math.sin(angle) / max(math.cos(math.radians(self.dec_deg)), 1e-6)
        return ra % 360.0, dec

    def mag(self, filter: str, when: datetime) -> float | None:
        return self.magnitude + {"g": 0.4, "r": 0.0, "i": -0.1, "z": -0.1, "clear": -0.05}[filter]


@dataclass(frozen=True)
class Conditions:
    """What one frame sees besides the sources."""

    filter: str
    exposure_s: float
    airmass: float
    seeing_fwhm_arcsec: float
    when: datetime


@dataclass(frozen=True)
class Scene:
    """What a light frame sees: the sky through the true pointing (``wcs``) under ``conditions``."""

    sky: SimulatedSky
    wcs: WCS
    pixel_scale_arcsec: float
    conditions: Conditions

    def render(self, electrons: np.ndarray, exposure_s: float) -> int:
        conditions = replace(self.conditions, exposure_s=exposure_s)
        return self.sky.render(electrons, self.wcs, self.pixel_scale_arcsec, conditions)


class SimulatedSky:
    """Stars, galaxies and transients, rendered into frames through ``Photometry`` and ``Optics``."""

    def __init__(
        self,
        stars: StarCatalog | None = None,
        galaxies: Galaxies | Sequence[Galaxy] = (),
        transients: Sequence[Transient] = (),
        photometry: Photometry | None = None,
        optics: Optics | None = None,
    ) -> None:
        self.stars = stars or StarCatalog()
        self.galaxies = galaxies if isinstance(galaxies, Galaxies) else Galaxies.of(galaxies)
        self.transients = list(transients)
        self.photometry = photometry or Photometry()
        self.optics = optics or Optics()

    def point_sources(self, centre: tuple[float, float], radius_deg: float, conditions: Conditions) -> Stars:
        """Stars and the transients present, within ``radius_deg`` of ``centre``, with their magnitudes."""
        stars = self.stars.cone(centre[0], centre[1], radius_deg)
        ra, dec, mag = [stars.ra], [stars.dec], [stars.mags[conditions.filter]]
        for transient in self.transients:
            brightness = transient.mag(conditions.filter, conditions.when)
            if brightness is None:
                continue
            t_ra, t_dec = transient.position(conditions.when)
            ra.append(np.array([t_ra]))
            dec.append(np.array([t_dec]))
            mag.append(np.array([brightness]))
        return Stars(np.concatenate(ra), np.concatenate(dec), {conditions.filter: np.concatenate(mag)})

    def psf_at(
        self, x: np.ndarray, y: np.ndarray, axis: tuple[float, float], pixel_scale_arcsec: float, seeing_arcsec: float
    ) -> PsfShape:
        """The PSF at pixels (x, y) of a frame whose optical axis falls on pixel ``axis``."""
        to_deg = pixel_scale_arcsec / 3600.0
        return self.optics.shape_at(
            seeing_arcsec / pixel_scale_arcsec, (np.asarray(x) - axis[0]) * to_deg, (np.asarray(y) - axis[1]) * to_deg
        )

    def render(
        self,
        electrons: np.ndarray,
        wcs: WCS,
        pixel_scale_arcsec: float,
        conditions: Conditions,
        axis: tuple[float, float] | None = None,
    ) -> int:
        """Adds every source's electrons (over the exposure) into ``electrons`` (rows × columns) as seen
        through ``wcs`` (the true pointing), the optical axis on pixel ``axis`` (the frame's centre unless
        told); returns how many point sources fell on the frame."""
        height, width = electrons.shape
        axis = axis or ((width - 1) / 2.0, (height - 1) / 2.0)
        centre = wcs.pixel_to_world_values((width - 1) / 2.0, (height - 1) / 2.0)
        radius = math.hypot(width, height) / 2.0 * pixel_scale_arcsec / 3600.0 + 0.01
        sources = self.point_sources((float(centre[0]), float(centre[1])), radius, conditions)
        x, y = (np.asarray(v) for v in wcs.world_to_pixel_values(sources.ra, sources.dec))
        flux = (
            self.photometry.electrons_per_second(sources.mags[conditions.filter], conditions.filter, conditions.airmass)
            * conditions.exposure_s
        )
        on = (x > -40) & (x < width + 39) & (y > -40) & (y < height + 39)  # the wings of a star beyond the edge
        shape = self.psf_at(x[on], y[on], axis, pixel_scale_arcsec, conditions.seeing_fwhm_arcsec)
        stamp(electrons, x[on], y[on], flux[on], shape, self.optics)
        for galaxy in self.galaxies.cone(float(centre[0]), float(centre[1]), radius):
            self._render_galaxy(electrons, wcs, pixel_scale_arcsec, galaxy, conditions, axis)
        return int(((x > -0.5) & (x < width - 0.5) & (y > -0.5) & (y < height - 0.5)).sum())

    def _render_galaxy(
        self, electrons: np.ndarray, wcs: WCS, scale: float, galaxy: Galaxy, conditions: Conditions,
        axis: tuple[float, float],
    ) -> None:  # fmt: skip
        """The disc and the bulge seen through the PSF of their place, computed in Fourier space (both profiles'
        transforms are analytic): exact at any sub-pixel position, however compact the bulge."""
        from scipy import fft

        height, width = electrons.shape
        x, y = (float(v) for v in wcs.world_to_pixel_values(galaxy.ra_deg, galaxy.dec_deg))
        length = galaxy.scale_length_arcsec() / scale  # pixels
        shape = self.psf_at(np.array([x]), np.array([y]), axis, scale, conditions.seeing_fwhm_arcsec)
        psf_half = kernel_half(self.optics, shape)
        half = int(min(max(8 * length, 2 * psf_half), 400))
        cx, cy = int(round(x)), int(round(y))
        if cx + half < 0 or cx - half >= width or cy + half < 0 or cy - half >= height:
            return
        side = fft.next_fast_len(2 * half + 1)
        ky = fft.fftfreq(side)[:, None]
        kx = fft.rfftfreq(side)[None, :]
        q, angle = galaxy.shape()
        theta = math.radians(angle)
        # The disc's major and minor coordinates are M (dx, dy); its transform is the round one's at M^-T k.
        matrix = np.array([[math.sin(theta), math.cos(theta)], [math.cos(theta) / q, -math.sin(theta) / q]])
        inverse_t = np.linalg.inv(matrix).T
        k_major = inverse_t[0, 0] * kx + inverse_t[0, 1] * ky
        k_minor = inverse_t[1, 0] * kx + inverse_t[1, 1] * ky
        disc = _exponential_hat(np.hypot(k_major, k_minor), max(length, 0.3))
        bulge = _exponential_hat(np.hypot(kx, ky), galaxy.bulge_scale_arcsec() / scale)
        nucleus = galaxy.bulge_fraction()
        psf = np.zeros((side, side))
        psf[: 2 * psf_half + 1, : 2 * psf_half + 1] = kernel(self.optics, shape, psf_half)
        psf_hat = fft.rfft2(np.roll(psf, (-psf_half, -psf_half), axis=(0, 1)))
        # The galaxy's centre at (half + its sub-pixel offset) of the stamp.
        phase = np.exp(-2j * np.pi * (kx * (half + x - cx) + ky * (half + y - cy)))
        total = self.photometry.electrons_per_second(
            galaxy.mag(conditions.filter), conditions.filter, conditions.airmass
        )
        light = ((1.0 - nucleus) * disc + nucleus * bulge) * psf_hat * phase * (float(total) * conditions.exposure_s)
        cut = fft.irfft2(light, s=(side, side))[: 2 * half + 1, : 2 * half + 1].astype(np.float32)
        y0, y1 = max(cy - half, 0), min(cy + half + 1, height)
        x0, x1 = max(cx - half, 0), min(cx + half + 1, width)
        electrons[y0:y1, x0:x1] += cut[y0 - (cy - half) : y1 - (cy - half), x0 - (cx - half) : x1 - (cx - half)]


def _exponential_hat(k: np.ndarray, scale: float) -> np.ndarray:
    """The Fourier transform of a round exponential profile exp(-r / scale), normalised to 1 at k = 0."""
    return np.asarray((1.0 + (2.0 * math.pi * scale * k) ** 2) ** -1.5)


def read_reference_catalog_csv(path: Path) -> dict[str, np.ndarray]:
    """The simulator's reference catalog back as columns (for tests and benchmarks)."""
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    return {column: np.array([float(row[column]) for row in rows]) for column in REFERENCE_COLUMNS}


@dataclass(frozen=True)
class FrameTruth:
    """What the simulator knows of a frame it wrote: where it truly points, its true zero point and PSF."""

    wcs: WCS
    magzp: float
    conditions: Conditions
    sky: SimulatedSky
    axis: tuple[float, float]  # the optical axis's pixel
    pixel_scale_arcsec: float

    def psf_at(self, x: np.ndarray, y: np.ndarray) -> PsfShape:
        return self.sky.psf_at(x, y, self.axis, self.pixel_scale_arcsec, self.conditions.seeing_fwhm_arcsec)


def write_calibrated_frame(
    path: Path,
    sky: SimulatedSky,
    centre: tuple[float, float],
    size: int,
    *,
    pointing_error_arcsec: tuple[float, float] = (20.0, -15.0),
    pixel_scale_arcsec: float = TOROS_PIXEL_SCALE_ARCSEC,
    conditions: Conditions | None = None,
    gain: float = 1.5,
    read_noise: float = 6.0,
    seed: int = 0,
    axis: tuple[float, float] | None = None,
) -> FrameTruth:
    """A calibrated science frame as the preprocessor writes one (float32 ADU, bias and dark removed, a MASK
    extension) whose header WCS is the *reported* pointing ``centre``, while the sky is rendered where the
    telescope truly points (``pointing_error_arcsec``: ΔRA·cos Dec, ΔDec). ``axis``: the optical axis's pixel
    (the centre unless told; a small frame cut from a corner of the field has it far outside). For tests and
    benchmarks."""
    from astropy.io import fits

    from toros.floor.fitsfiles import write_fits
    from toros.floor.sky_geometry import tan_wcs

    conditions = conditions or Conditions("r", 60.0, 1.2, 1.8, datetime(2026, 11, 23, 3, 0, tzinfo=UTC))
    ra, dec = centre
    true_dec = dec + pointing_error_arcsec[1] / 3600.0
    true_ra = ra + pointing_error_arcsec[0] / 3600.0 / math.cos(math.radians(true_dec))
    true_wcs = tan_wcs(true_ra, true_dec, size, size, pixel_scale_arcsec)
    rng = np.random.default_rng(seed)
    sky_rate = sky.photometry.sky_electrons(conditions.filter, pixel_scale_arcsec)
    electrons = np.full((size, size), sky_rate * conditions.exposure_s, dtype=np.float32)
    axis = axis or ((size - 1) / 2.0, (size - 1) / 2.0)
    sky.render(electrons, true_wcs, pixel_scale_arcsec, conditions, axis)
    noise = rng.standard_normal(electrons.shape, dtype=np.float32)
    noise *= np.sqrt(np.maximum(electrons, 0.0) + read_noise**2)
    data = (electrons + noise) / np.float32(gain)
    header = fits.Header()
    header["IMAGETYP"] = "LIGHT"
    header["FILTER"] = conditions.filter
    header["EXPTIME"] = conditions.exposure_s
    header["DATE-OBS"] = conditions.when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    header["GAIN"] = gain
    header["RDNOISE"] = read_noise
    header["SATURATE"] = 65535.0
    header["AIRMASS"] = conditions.airmass
    header["RAWFILE"] = path.name
    header.update(tan_wcs(ra, dec, size, size, pixel_scale_arcsec).to_header())
    write_fits(path, [fits.PrimaryHDU(data, header), fits.ImageHDU(np.zeros(data.shape, np.uint8), name="MASK")])
    magzp = sky.photometry.magzp(conditions.filter, conditions.airmass, conditions.exposure_s, gain)
    return FrameTruth(true_wcs, magzp, conditions, sky, axis, pixel_scale_arcsec)
