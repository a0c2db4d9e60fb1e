"""Realistic raw CCD frames: the project's one frame generator.

The telescope's camera simulator, the preprocessor's tests and the benchmarks all draw their frames here, so
that calibration is tested on what the camera simulator produces. A ``Sensor`` holds what is fixed for a
given chip (bias column pattern, hot pixels, pixel-to-pixel response, vignetting); each frame adds what
changes (read noise, dark current, sky, stars, cosmic rays) and is saturated and digitised to uint16.

The raw frame is ``height`` rows by ``width + overscan`` columns: the overscan strip is on the right, and
the header gives BIASSEC and TRIMSEC in FITS (1-based, inclusive, x first) notation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits

from toros.simulation.psf import Optics, stamp
from toros.simulation.sky import Scene

IMAGETYP = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "light": "LIGHT"}
SKY_ELECTRONS_PER_SECOND = {"clear": 40.0, "g": 15.0, "r": 25.0, "i": 35.0, "z": 45.0}
FLAT_TARGET_ELECTRONS = 30000.0


@dataclass(frozen=True)
class Sensor:
    """What is fixed for one chip. Gains in e-/ADU, noise in e-, rates in e-/s."""

    width: int = 512
    height: int = 512
    overscan: int = 16
    bias_level: float = 1000.0
    column_pattern: float = 4.0
    gain: float = 1.5
    read_noise: float = 6.0
    dark_current: float = 0.05
    hot_pixel_fraction: float = 2e-4
    hot_pixel_current: float = 40.0
    pixel_response_spread: float = 0.015
    vignetting: float = 0.12
    saturation: int = 65535
    seed: int = 1600

    @cached_property
    def _fixed(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        columns = (self.bias_level + self.column_pattern * rng.standard_normal(self.width + self.overscan)).astype(
            np.float32
        )
        hot = rng.random((self.height, self.width), dtype=np.float32) < self.hot_pixel_fraction
        response = 1.0 + self.pixel_response_spread * rng.standard_normal((self.height, self.width), dtype=np.float32)
        y, x = np.ogrid[-1.0 : 1.0 : self.height * 1j, -1.0 : 1.0 : self.width * 1j]
        illumination = (1.0 - self.vignetting * (x**2 + y**2) / 2.0).astype(np.float32)
        return {"columns": columns, "hot": hot, "response": response, "illumination": illumination}

    @property
    def bias_columns(self) -> np.ndarray:
        """Bias level of each column of the raw frame (ADU), overscan included."""
        return self._fixed["columns"]

    @property
    def hot_pixels(self) -> np.ndarray:
        return self._fixed["hot"]

    @cached_property
    def flat_field(self) -> np.ndarray:
        """The true relative response of each pixel: pixel-to-pixel variation times vignetting."""
        return np.asarray(self._fixed["response"] * self._fixed["illumination"])

    @cached_property
    def _dark_rate(self) -> np.ndarray:
        return np.where(self.hot_pixels, self.hot_pixel_current, self.dark_current).astype(np.float32)

    def dark_rate(self) -> np.ndarray:
        """Dark current of each pixel in e-/s."""
        return self._dark_rate


@dataclass
class Frame:
    """A raw frame and its header."""

    data: np.ndarray
    header: fits.Header = field(default_factory=fits.Header)

    def write(self, path: str) -> None:
        fits.PrimaryHDU(self.data, self.header).writeto(path, overwrite=True)


NOISE_ROWS = 256  # rows drawn at a time: the work stays in the cache


def _add_noise(rng: np.random.Generator, electrons: np.ndarray, read_noise: float) -> None:
    """Photon and read noise in one normal draw (variance: the electrons plus the read noise squared; the normal
    approximation of Poisson noise is exact enough above a few electrons), in place, in row bands."""
    variance = np.float32(read_noise**2)
    for start in range(0, electrons.shape[0], NOISE_ROWS):
        band = electrons[start : start + NOISE_ROWS]
        noise = rng.standard_normal(band.shape, dtype=np.float32)
        noise *= np.sqrt(np.maximum(band, 0.0, dtype=np.float32) + variance)
        band += noise


def _digitise(rng: np.random.Generator, sensor: Sensor, electrons: np.ndarray) -> np.ndarray:
    """ADU with the bias columns and an overscan strip of read noise, rounded and clipped to uint16, in bands."""
    width = sensor.width
    data = np.empty((sensor.height, width + sensor.overscan), dtype=np.uint16)
    raw = np.empty((NOISE_ROWS, width + sensor.overscan), dtype=np.float32)
    for start in range(0, sensor.height, NOISE_ROWS):
        rows = min(NOISE_ROWS, sensor.height - start)
        band = raw[:rows]
        np.multiply(electrons[start : start + rows], np.float32(1.0 / sensor.gain), out=band[:, :width])
        band[:, width:] = rng.standard_normal((rows, sensor.overscan), dtype=np.float32)
        band[:, width:] *= np.float32(sensor.read_noise / sensor.gain)
        band += sensor.bias_columns
        np.rint(band, out=band)
        np.clip(band, 0, sensor.saturation, out=band)
        data[start : start + rows] = band
    return data


def make_frame(
    sensor: Sensor,
    kind: str,
    *,
    exposure_time: float = 0.0,
    filter: str = "r",
    seed: int = 0,
    flat_level: float = FLAT_TARGET_ELECTRONS,
    sky_rate: float | None = None,
    stars: int = 0,
    cosmic_rays: int = 0,
    date_obs: datetime | None = None,
    object_name: str = "",
    scene: Scene | None = None,
    transmission: float = 1.0,
) -> Frame:
    """A raw frame of ``kind`` bias, dark, flat or light (uint16, with an overscan strip and a header).

    Flats are an evenly lit screen or sky of ``flat_level`` electrons at the centre; lights see the sky
    (``sky_rate`` e-/s, by default from the filter) and either the simulated sky's sources through a
    ``scene`` (where the telescope truly points) or ``stars`` stars at random places.
    """
    if kind not in IMAGETYP:
        raise ValueError(f"kind must be one of {', '.join(IMAGETYP)}, not {kind!r}")
    rng = np.random.default_rng([sensor.seed, seed])
    electrons = np.zeros((sensor.height, sensor.width), dtype=np.float32)
    if kind != "bias":
        electrons += sensor.dark_rate() * exposure_time
    if kind == "flat":
        electrons += flat_level * sensor.flat_field
    elif kind == "light":
        rate = SKY_ELECTRONS_PER_SECOND.get(filter, 25.0) if sky_rate is None else sky_rate
        light = np.full_like(electrons, rate * exposure_time)
        if scene is not None:
            scene.render(light, exposure_time)
        else:
            _add_stars(rng, light, stars, exposure_time)
        electrons += light * (sensor.flat_field * transmission)  # transmission: what the dome's slit let through
    _add_noise(rng, electrons, sensor.read_noise)
    if cosmic_rays:
        _add_cosmic_rays(rng, electrons, cosmic_rays)

    data = _digitise(rng, sensor, electrons)

    header = fits.Header()
    header["IMAGETYP"] = IMAGETYP[kind]
    header["EXPTIME"] = (float(exposure_time), "exposure time [s]")
    header["FILTER"] = filter
    header["OBJECT"] = object_name or kind
    header["DATE-OBS"] = (date_obs or datetime(2026, 11, 23, 2, 0, tzinfo=UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    header["GAIN"] = (sensor.gain, "[e-/ADU]")
    header["RDNOISE"] = (sensor.read_noise, "[e-]")
    header["SATURATE"] = sensor.saturation
    header["XBINNING"] = 1
    header["YBINNING"] = 1
    if sensor.overscan:
        w, o, h = sensor.width, sensor.overscan, sensor.height
        header["BIASSEC"] = (f"[{w + 1}:{w + o},1:{h}]", "overscan region")
        header["TRIMSEC"] = (f"[1:{w},1:{h}]", "image region")
    return Frame(data, header)


def _add_stars(rng: np.random.Generator, light: np.ndarray, count: int, exposure_time: float) -> None:
    """Stars of random brightness where no scene is given (the calibration's own frames): the default optics'
    Moffat PSF of 3 pixels FWHM, the same everywhere."""
    if count <= 0:
        return
    height, width = light.shape
    optics = Optics()
    x, y = rng.uniform(7, width - 7, count), rng.uniform(7, height - 7, count)
    flux = 10 ** rng.uniform(2.0, 4.5, count) * exposure_time
    stamp(light, x, y, flux, optics.shape_at(3.0, np.zeros(count), np.zeros(count)), optics)


def _add_cosmic_rays(rng: np.random.Generator, electrons: np.ndarray, count: int) -> None:
    """Sharp hits of one to three pixels, far brighter than the PSF allows."""
    height, width = electrons.shape
    for _ in range(count):
        y, x = int(rng.integers(1, height - 1)), int(rng.integers(1, width - 1))
        length = int(rng.integers(1, 4))
        electrons[y, x : min(width, x + length)] += float(rng.uniform(2000, 20000))


def write_night(
    folder: Path,
    sensor: Sensor,
    *,
    biases: int = 5,
    darks: int = 5,
    flats: int = 5,
    lights: int = 3,
    dark_time: float = 30.0,
    light_time: float = 30.0,
    filter: str = "r",
    stars: int = 40,
    cosmic_rays: int = 10,
    seed: int = 0,
    date: datetime | None = None,
) -> list[Path]:
    """Writes a simulated night of raw frames (as the camera simulator names them) and returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    start = date or datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    plan = (
        [("bias", 0.0)] * biases
        + [("dark", dark_time)] * darks
        + [("flat", 5.0)] * flats
        + [("light", light_time)] * lights
    )
    paths = []
    for index, (kind, exposure) in enumerate(plan):
        frame = make_frame(
            sensor,
            kind,
            exposure_time=exposure,
            filter=filter,
            seed=seed * 1000 + index,
            stars=stars if kind == "light" else 0,
            cosmic_rays=cosmic_rays if kind == "light" else 0,
            date_obs=start + timedelta(minutes=5 * index),
            object_name=f"field{index}" if kind == "light" else "",
        )
        path = folder / f"{kind}-{index:04d}.fits"
        frame.write(str(path))
        paths.append(path)
    return paths
