"""Transient discovery on one science frame: the reference onto its grid, ZOGY, the detections measured.

The steps, in order: read both images (background subtracted, unusable pixels NaN), bring the reference onto
the science grid (a pure shift when the two grids differ by one — the usual case of a telescope's own
reference — else ``reproject``), refine the registration with the stars both images share, measure each PSF on
its stars (a Gaussian of the header's ``FWHM`` when too few), scale the fluxes by the zero points (by the
common stars' flux ratio when a header has none), subtract (``subtraction.py``), then measure every peak of
|S_corr| ≥ the threshold: position, PSF-fit flux and magnitude, shape on D, negative and masked pixels nearby,
the nearest star of the reference, and the real/bogus score (``vetting.py``).

The same function serves the pipeline (``find_transients``) and ``toros difference`` on any two FITS files.
"""

from __future__ import annotations

import csv
import logging
import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy.spatial import cKDTree

from toros.floor.fitsfiles import (
    BadImage,
    check_declared_size,
    check_finite,
    decompressed_size,
    header_number,
    image_index,
    write_fits,
)
from toros.preprocessor import subtraction, vetting
from toros.preprocessor.settings import MAX_FRAME_BYTES
from toros.preprocessor.subtraction import PSF_SIZE, Difference, Image
from toros.runtime.files import atomic_write

log = logging.getLogger(__name__)

MASK_UNUSABLE = 1 | 2 | 4  # hot, bad flat, saturated: NaN for the subtraction
MASK_COSMIC_RAY = 8  # cleaned by the calibration: usable, but counted as masked near a candidate
MIN_PSF_STARS = 5
EDGE_PX = PSF_SIZE // 2  # S_corr this close to the frame's border sees the tile's wrap-around
BRIGHT_STAR_SNR = 500.0  # a detection on a reference star this bright is its residual (flagged, never vetted)
PARALLEL_READ_PIXELS = 6000 * 6000
NOT_VETTED = frozenset({"edge", "bright_star"})  # flags that keep a detection from being a candidate
CANDIDATE_COLUMNS = (
    "ra_deg", "dec_deg", "x", "y", "mag", "mag_err", "snr", "score", "flux", "flux_err", "fwhm_px", "elongation",
    "negative_pixels", "masked_pixels", "star_offset_arcsec", "negative", "flags",
)  # fmt: skip


class DiscoveryFailed(Exception):
    """The pair cannot be subtracted; the message says why, for the operator."""


@dataclass
class Side:
    """One image, measured: background-subtracted pixels (NaN where unusable) and what ZOGY needs of it."""

    path: Path
    header: fits.Header
    wcs: WCS
    data: np.ndarray  # float32
    cleaned: np.ndarray  # bool: pixels the calibration repaired (cosmic rays)
    sigma: float
    gain: float
    magzp: float | None
    fwhm: float  # pixels
    saturation: float  # above the background
    stars_xy: np.ndarray  # (n, 2) point sources, 0-based
    stars_flux: np.ndarray
    stars_width: np.ndarray = field(default_factory=lambda: np.empty(0))  # 2 × half-light radius, pixels
    sources_xy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))  # every source, saturated ones too
    psf: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((PSF_SIZE, PSF_SIZE)))
    psf_measured: bool = False
    counts_factor: float = 1.0  # counts here per count of the file (a resampling to larger pixels: below 1)

    @property
    def pixel_scale_arcsec(self) -> float:
        return float(np.mean(proj_plane_pixel_scales(self.wcs)) * 3600.0)


@dataclass(frozen=True)
class Candidate:
    """One peak of |S_corr| on the science frame, measured."""

    x: float  # 0-based column of the science image
    y: float
    ra_deg: float
    dec_deg: float
    flux: float  # science counts (PSF fit on D)
    flux_err: float
    mag: float | None  # AB, from the science frame's MAGZP
    mag_err: float | None
    snr: float  # |S_corr| at the peak
    fwhm_px: float  # on D
    elongation: float
    negative_pixels: int  # D below -3σ within 2 FWHM
    masked_pixels: int  # unusable or repaired pixels within 2 FWHM
    star_offset_arcsec: float  # nearest point source of the reference image (inf: none)
    negative: bool  # the source faded (or is in the reference only)
    score: float  # real/bogus, 0..1
    flags: tuple[str, ...] = ()

    def row(self) -> dict[str, object]:
        """The CSV row: floats rounded to what they are worth, no infinity."""
        record = asdict(self)
        record["flags"] = " ".join(self.flags)
        for name, digits in (("ra_deg", 7), ("dec_deg", 7), ("x", 2), ("y", 2), ("mag", 4), ("mag_err", 4),
                             ("snr", 2), ("score", 3), ("flux", 2), ("flux_err", 2), ("fwhm_px", 2),
                             ("elongation", 2), ("star_offset_arcsec", 2)):  # fmt: skip
            value = record[name]
            record[name] = "" if value is None or not math.isfinite(value) else round(float(value), digits)
        return {name: record[name] for name in CANDIDATE_COLUMNS}


@dataclass
class DiscoverySettings:
    threshold: float = 5.0  # |S_corr|
    tile: int = 1024
    apron: int = 64
    star_flag_arcsec: float = 1.0  # a candidate this close to a reference star: "on_star" (a variable?)
    max_candidates: int = 2000  # a frame with more is a failed subtraction: the rest are not measured
    refine: bool = True  # False: trust the WCS alone (the vetting's training data for misregistration)
    vet: bool = True  # False: no real/bogus score (the vetting's training data)


@dataclass
class DiscoveryResult:
    science: Side
    reference: Side
    difference: Difference
    shift_px: tuple[float, float]
    common_stars: int
    candidates: list[Candidate]
    features: np.ndarray  # vetting.FEATURES of each candidate, in the same order
    notes: list[str]


def _celestial_wcs(header: fits.Header, label: str) -> WCS:
    """The header's celestial WCS, checked to map pixels to the sky and back (a singular matrix, a broken
    projection: DiscoveryFailed naming the image)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
            if not wcs.has_celestial:
                raise DiscoveryFailed(f"{label}: no celestial WCS in the header")
            ra, dec = wcs.celestial.pixel_to_world_values(0.0, 0.0)
            x, y = wcs.celestial.world_to_pixel_values(ra, dec)
        except DiscoveryFailed:
            raise
        except Exception as exc:  # astropy's WCS raises many kinds for a header it cannot use
            # wcslib's messages come as "ERROR n in f() at line …:" lines, each followed by the reason
            reasons = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("ERROR")]
            raise DiscoveryFailed(
                f"{label}: the WCS cannot be used: {' '.join(reasons) or type(exc).__name__}"
            ) from None
    if not np.all(np.isfinite([ra, dec, x, y])) or abs(float(x)) > 1e-3 or abs(float(y)) > 1e-3:
        raise DiscoveryFailed(f"{label}: the WCS does not map pixels to the sky and back (a singular matrix?)")
    return wcs


def read_side(path: Path, label: str, *, fwhm_fallback: float | None = None, max_bytes: int = MAX_FRAME_BYTES) -> Side:
    """Reads and measures one image; a clear ``DiscoveryFailed`` for a file that cannot serve."""
    import sep

    try:
        # Checked as a raw frame is, before a pixel is read: the size (gzip decompressed in a stream) and the
        # declared image within the cap, the declared pixels held by the file, half of them finite at least.
        size = decompressed_size(path, max_bytes, "calibration.max_frame_bytes")
        with fits.open(path, memmap=True) as hdus:
            index = image_index(hdus)
            check_declared_size(hdus[index], size, max_bytes, "calibration.max_frame_bytes")
            header = hdus[index].header.copy()
            data = np.array(hdus[index].data, dtype=np.float32)
            mask = np.array(hdus["MASK"].data, dtype=np.uint8) if "MASK" in hdus else None
        check_finite(data)
        saturate = header_number(header, "SATURATE", np.inf)
        gain = header_number(header, "GAIN", 1.0)
        magzp = header_number(header, "MAGZP")
        fwhm = header_number(header, "FWHM", fwhm_fallback or 0.0)
    except BadImage as exc:
        raise DiscoveryFailed(f"{label} {path.name}: {exc}") from None
    except (OSError, ValueError, TypeError, MemoryError) as exc:
        raise DiscoveryFailed(f"{label} {path.name}: not a readable FITS image ({exc})") from None
    assert saturate is not None and gain is not None and fwhm is not None, "given defaults"
    wcs = _celestial_wcs(header, f"{label} {path.name}")
    unusable = ~np.isfinite(data) | (data >= saturate)
    if mask is not None and mask.shape == data.shape:
        unusable |= (mask & MASK_UNUSABLE) != 0
        cleaned = (mask & MASK_COSMIC_RAY) != 0
    else:
        cleaned = np.zeros(data.shape, bool)
    if unusable.all():
        raise DiscoveryFailed(f"{label} {path.name}: no usable pixel")
    _repair_specks(data, unusable & (data < saturate), cleaned)
    unusable &= ~cleaned
    data[unusable] = 0.0
    background = sep.Background(data, mask=unusable)
    background.subfrom(data)
    data[unusable] = np.nan
    side = Side(
        path, header, wcs, data, cleaned, float(background.globalrms), gain if gain > 0 else 1.0, magzp,
        max(fwhm, 0.0), saturate - float(background.globalback), np.empty((0, 2)), np.empty(0),
    )  # fmt: skip
    _find_stars(side)
    return side


def _repair_specks(data: np.ndarray, bad: np.ndarray, cleaned: np.ndarray, largest: int = 4) -> None:
    """Unusable specks of at most ``largest`` pixels (hot pixels) take the median of the usable pixels around
    them and are marked ``cleaned``: a NaN would blind the subtraction for a PSF's width around it. Larger
    regions (and saturated cores) stay unusable. The regions are found among the unusable pixels alone (a
    graph of side-by-side neighbours), not by labelling the whole frame: a 10560² frame has a few thousand."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    flat = np.flatnonzero(bad)
    if flat.size == 0:
        return
    width = bad.shape[1]
    edges = []
    for step, beside in ((1, flat % width != width - 1), (width, np.ones(flat.size, bool))):
        position = np.minimum(np.searchsorted(flat, flat + step), flat.size - 1)
        linked = beside & (flat[position] == flat + step)
        edges.append((np.flatnonzero(linked), position[linked]))
    rows = np.concatenate([e[0] for e in edges])
    columns = np.concatenate([e[1] for e in edges])
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, columns)), shape=(flat.size, flat.size))
    _, labels = connected_components(graph, directed=False)
    small = np.bincount(labels)[labels] <= largest
    order = np.argsort(labels[small], kind="stable")
    members, member_labels = flat[small][order], labels[small][order]
    starts = np.flatnonzero(np.r_[True, member_labels[1:] != member_labels[:-1]])
    for speck_pixels in np.split(members, starts[1:]):
        ys, xs = np.divmod(speck_pixels, width)
        y0, x0 = max(0, int(ys.min()) - 2), max(0, int(xs.min()) - 2)
        window = data[y0 : int(ys.max()) + 3, x0 : int(xs.max()) + 3]
        usable = ~bad[y0 : y0 + window.shape[0], x0 : x0 + window.shape[1]] & np.isfinite(window)
        if usable.sum() < 4:
            continue
        data[ys, xs] = np.median(window[usable])
        cleaned[ys, xs] = True


def _find_stars(side: Side) -> None:
    """The image's point sources (for registration, the PSF and the flux ratio) and its FWHM when unknown."""
    import sep

    usable = np.isfinite(side.data)
    pixels = np.where(usable, side.data, np.float32(0.0))  # one float32 copy
    sep.set_extract_pixstack(max(300_000, pixels.size // 20))
    sep.set_sub_object_limit(4096)
    try:
        found = sep.extract(pixels, 5.0, err=side.sigma, mask=~usable, minarea=5)
    except Exception as exc:  # sep raises plain Exceptions
        raise DiscoveryFailed(f"{side.path.name}: source extraction failed: {exc}") from None
    if len(found) == 0:
        return
    side.sources_xy = np.column_stack([found["x"], found["y"]])
    height, width = pixels.shape
    edge = PSF_SIZE // 2 + 1
    keep = (found["flag"] == 0) & (found["peak"] < 0.8 * side.saturation)
    keep &= (found["x"] > edge) & (found["x"] < width - edge) & (found["y"] > edge) & (found["y"] < height - edge)
    keep &= found["a"] / np.maximum(found["b"], 1e-3) < 1.5
    stars = found[keep]
    if len(stars) == 0:
        return
    # sep's detection filter makes a cosmic ray or a hot pixel a source: stars are as wide as the seeing.
    width, _ = sep.flux_radius(pixels, stars["x"], stars["y"], 6.0 * stars["a"], 0.5, subpix=5)
    width = 2.0 * width
    if side.fwhm <= 0:
        wide = width[width > 1.5]
        if len(wide) == 0:
            return
        side.fwhm = float(np.median(wide))
    round_enough = (width > 0.6 * side.fwhm) & (width < 1.6 * side.fwhm)
    stars, width = stars[round_enough], width[round_enough]
    side.stars_xy = np.column_stack([stars["x"], stars["y"]])
    side.stars_flux = np.asarray(stars["flux"], dtype=np.float64)
    side.stars_width = np.asarray(width, dtype=np.float64)


def _measure_psf(side: Side) -> None:
    """The PSF from the brightest isolated stars of the typical width (a galaxy or a blend in the stack
    widens the PSF, and a matched filter wider than the truth overestimates every flux), else a Gaussian of
    the FWHM."""
    import sep

    if len(side.stars_xy) >= MIN_PSF_STARS:
        tree = cKDTree(side.stars_xy)
        neighbours = tree.query(side.stars_xy, k=2)[0][:, 1]
        typical = float(
            np.median(side.stars_width[np.argsort(-side.stars_flux)[: max(MIN_PSF_STARS, len(side.stars_flux) // 2)]])
        )
        chosen = (neighbours > PSF_SIZE / 2) & (np.abs(side.stars_width / typical - 1) < 0.2)
        order = np.argsort(-side.stars_flux[chosen])[:60]
        xy = side.stars_xy[chosen][order]
        if len(xy) >= MIN_PSF_STARS:
            pixels = np.nan_to_num(side.data).astype(np.float32)
            x, y, _ = sep.winpos(pixels, xy[:, 0], xy[:, 1], max(typical, 1.0) / 2.3548)
            psf = subtraction.psf_from_stars(side.data, x, y, fwhm=side.fwhm)
            if psf is not None:
                side.psf, side.psf_measured = psf, True
                return
    if side.fwhm <= 0:
        raise DiscoveryFailed(f"{side.path.name}: too few stars for a PSF and no FWHM in the header")
    side.psf = subtraction.gaussian_psf(side.fwhm)


def register_reference(science: Side, reference: Side) -> tuple[Side, tuple[float, float], str]:
    """The reference on the science grid, the sub-pixel shift still to apply (ZOGY does it in Fourier
    space), and how: a whole-pixel cut when the two grids differ by a translation, else ``reproject``."""
    shape = science.data.shape
    ys = np.array([0, 0, shape[0] - 1, shape[0] - 1, shape[0] // 2])
    xs = np.array([0, shape[1] - 1, 0, shape[1] - 1, shape[1] // 2])
    ra, dec = science.wcs.pixel_to_world_values(xs, ys)
    rx, ry = reference.wcs.world_to_pixel_values(ra, dec)
    offset_x, offset_y = rx - xs, ry - ys
    translation = np.ptp(offset_x) < 0.05 and np.ptp(offset_y) < 0.05
    if translation:
        dx, dy = float(np.mean(offset_x)), float(np.mean(offset_y))
        ix, iy = int(round(dx)), int(round(dy))
        cut = np.full(shape, np.nan, dtype=np.float32)
        cleaned = np.zeros(shape, bool)
        src_y0, src_x0 = max(0, iy), max(0, ix)
        src_y1 = min(reference.data.shape[0], iy + shape[0])
        src_x1 = min(reference.data.shape[1], ix + shape[1])
        if src_y1 > src_y0 and src_x1 > src_x0:
            cut[src_y0 - iy : src_y1 - iy, src_x0 - ix : src_x1 - ix] = reference.data[src_y0:src_y1, src_x0:src_x1]
            cleaned[src_y0 - iy : src_y1 - iy, src_x0 - ix : src_x1 - ix] = reference.cleaned[
                src_y0:src_y1, src_x0:src_x1
            ]
        moved = Side(
            reference.path, reference.header, science.wcs, cut, cleaned, reference.sigma, reference.gain,
            reference.magzp, reference.fwhm, reference.saturation,
            reference.stars_xy - [ix, iy], reference.stars_flux, reference.stars_width,
            sources_xy=reference.sources_xy - [ix, iy],
        )  # fmt: skip
        return moved, (ix - dx, iy - dy), f"shift ({dx:+.2f}, {dy:+.2f}) px"
    data = subtraction.register(reference.data, reference.wcs, science.wcs, shape)

    def onto_science(xy: np.ndarray) -> np.ndarray:
        if len(xy) == 0:
            return np.empty((0, 2))
        x, y = science.wcs.world_to_pixel_values(*reference.wcs.pixel_to_world_values(xy[:, 0], xy[:, 1]))
        return np.column_stack([x, y])

    scale = science.pixel_scale_arcsec / reference.pixel_scale_arcsec
    counts_factor = 1.0 / scale**2  # reproject keeps a pixel's value: a star's sum scales with the pixel area
    moved = Side(
        reference.path, reference.header, science.wcs, data, np.zeros(shape, bool), _rms(data),
        reference.gain, reference.magzp, reference.fwhm / scale, reference.saturation,
        onto_science(reference.stars_xy), reference.stars_flux * counts_factor, reference.stars_width / scale,
        sources_xy=onto_science(reference.sources_xy), counts_factor=counts_factor,
    )  # fmt: skip
    return moved, (0.0, 0.0), f"resampled (pixel scale ratio {scale:.3f})"


def _rms(data: np.ndarray) -> float:
    """The background noise of a resampled image (resampling correlates and lowers the pixel noise)."""
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 1.0
    sample = finite[:: max(1, finite.size // 1_000_000)]
    median = np.median(sample)
    return float(1.4826 * np.median(np.abs(sample - median)))


def discover(science_path: Path, reference_path: Path, settings: DiscoverySettings | None = None) -> DiscoveryResult:
    """Subtracts the reference from the science frame and measures what is new (or gone)."""
    settings = settings or DiscoverySettings()
    notes: list[str] = []
    # sep and numpy release the GIL: both images at once, unless they are large (reading one takes 3 times its
    # pixels' memory for a moment: two TOROS frames at once would pass 4 GiB).
    with ThreadPoolExecutor(max_workers=2 if _pixels(science_path) <= PARALLEL_READ_PIXELS else 1) as pool:
        reading = pool.submit(read_side, reference_path, "reference")
        science = read_side(science_path, "science")
        reference = reading.result()
    science_filter = str(science.header.get("FILTER", "")).strip()
    reference_filter = str(reference.header.get("FILTER", "")).strip()
    if science_filter and reference_filter and science_filter != reference_filter:
        notes.append(f"filters differ: science {science_filter}, reference {reference_filter}")
    registered, shift, how = register_reference(science, reference)
    del reference  # its pixels: half a GiB of a TOROS frame
    if not np.isfinite(registered.data).any():
        raise DiscoveryFailed(f"the reference {reference_path.name} does not cover the science frame")
    # The registration, refined by the stars both images show (an imperfect WCS moves a reference by a pixel).
    radius = max(2.0, 1.5 * max(science.fwhm, 1.0))
    if settings.refine:
        shift, pairs = subtraction.residual_shift(
            science.stars_xy, registered.stars_xy, shift, radius, min_pairs=MIN_PSF_STARS
        )
        if len(pairs) < MIN_PSF_STARS:
            notes.append(f"{len(pairs)} stars in common: registration from the WCS alone")
    else:
        pairs = subtraction.matched_stars(science.stars_xy, registered.stars_xy, shift, radius)
    if max(abs(shift[0]), abs(shift[1])) > 20:
        raise DiscoveryFailed(f"registration failed: the stars disagree with the WCS by {shift} px")
    _measure_psf(science)
    _measure_psf(registered)  # on its own grid: ZOGY shifts its pixels and its PSF stays centred
    registered.stars_xy = registered.stars_xy + shift
    registered.sources_xy = registered.sources_xy + shift
    astrometric_sigma = _registration_noise(science, registered, pairs)
    if not science.psf_measured or not registered.psf_measured:
        notes.append("too few stars: a Gaussian PSF of the header's FWHM")
    science_scale, reference_scale = _flux_scales(science, registered, pairs, notes)
    new = Image(science.data, science.psf, science_scale, science.sigma, science.gain)
    ref = Image(registered.data, registered.psf, reference_scale, registered.sigma, registered.gain)
    difference = subtraction.subtract(
        new, ref, tile=settings.tile, apron=settings.apron, shift=shift, astrometric_sigma=astrometric_sigma
    )
    found = subtraction.detections(difference, settings.threshold, separation=max(2, round(science.fwhm / 2)))
    if len(found) > settings.max_candidates:
        notes.append(f"{len(found)} detections: only the {settings.max_candidates} most significant measured")
        found = found[: settings.max_candidates]
    candidates, features = _measure(found, difference, science, registered, settings)
    log.info("%s − %s: %s, %d common stars, %d detections", science_path.name, reference_path.name, how,
             len(pairs), len(candidates))  # fmt: skip
    return DiscoveryResult(science, registered, difference, shift, len(pairs), candidates, features, notes)


def _registration_noise(science: Side, registered: Side, pairs: np.ndarray) -> tuple[float, float]:
    """The registration's rms per axis, from the brighter half of the common stars (whose centroids are
    good to a few hundredths of a pixel); at least 0.02 px, and 0.1 px when too few stars say."""
    if len(pairs) < 2 * MIN_PSF_STARS:
        return 0.1, 0.1
    bright = pairs[np.argsort(-science.stars_flux[pairs[:, 0]])[: len(pairs) // 2]]
    offsets = science.stars_xy[bright[:, 0]] - registered.stars_xy[bright[:, 1]]
    spread = 1.4826 * np.median(np.abs(offsets - np.median(offsets, axis=0)), axis=0)
    return float(np.clip(spread[0], 0.02, 0.5)), float(np.clip(spread[1], 0.02, 0.5))


def _pixels(path: Path) -> int:
    """The pixels of a file's first image, from its header (0 when it cannot say)."""
    try:
        with fits.open(path) as hdus:
            for hdu in hdus:
                if hdu.header.get("NAXIS", 0) == 2:
                    return int(hdu.header["NAXIS1"]) * int(hdu.header["NAXIS2"])
    except (OSError, ValueError, KeyError):
        return 0
    return 0


def _flux_scales(science: Side, reference: Side, pairs: np.ndarray, notes: list[str]) -> tuple[float, float]:
    """(F_n, F_r): fluxes come out in the science frame's counts (F_n = 1)."""
    if science.magzp is not None and reference.magzp is not None:
        return 1.0, 10 ** (0.4 * (reference.magzp - science.magzp)) * reference.counts_factor
    if len(pairs) >= MIN_PSF_STARS:
        ratio = reference.stars_flux[pairs[:, 1]] / science.stars_flux[pairs[:, 0]]
        notes.append("no zero point in a header: flux scale from the common stars")
        return 1.0, float(np.median(ratio[np.isfinite(ratio) & (ratio > 0)]))
    raise DiscoveryFailed("no zero point (MAGZP) and too few common stars to scale the fluxes")


def _measure(
    found: list[subtraction.Detection],
    difference: Difference,
    science: Side,
    reference: Side,
    settings: DiscoverySettings,
) -> tuple[list[Candidate], np.ndarray]:
    if not found:
        return [], np.empty((0, len(vetting.FEATURES)))
    xs = np.array([d.x for d in found])
    ys = np.array([d.y for d in found])
    ra, dec = science.wcs.pixel_to_world_values(xs, ys)
    offsets_px = np.full(len(found), np.inf)
    if len(reference.sources_xy):
        offsets_px, _ = cKDTree(reference.sources_xy).query(np.column_stack([xs, ys]))
    star_offsets = offsets_px * science.pixel_scale_arcsec
    fwhm = max(science.fwhm, reference.fwhm, 1.0)
    features = np.array([
        vetting.features(difference, science, reference, detection, fwhm, float(offset))
        for detection, offset in zip(found, offsets_px, strict=True)
    ])  # fmt: skip
    scores = vetting.score(features) if settings.vet else np.full(len(found), np.nan)
    candidates = []
    for i, detection in enumerate(found):
        shape = vetting.Shape.of(features[i], fwhm)
        flux = abs(detection.flux)
        mag = mag_err = None
        if science.magzp is not None and flux > 0:
            mag = science.magzp - 2.5 * math.log10(flux)
            mag_err = 1.0857 * detection.flux_error / flux
        flags = []
        if star_offsets[i] < settings.star_flag_arcsec:
            flags.append("on_star")
            if _reference_snr(reference, detection, fwhm) >= BRIGHT_STAR_SNR:
                flags.append("bright_star")
        if shape.masked_pixels:
            flags.append("near_masked")
        if _at_edge(difference.score, detection, fwhm):
            flags.append("edge")
        candidates.append(
            Candidate(
                round(detection.x, 2),
                round(detection.y, 2),
                float(ra[i]),
                float(dec[i]),
                flux,
                detection.flux_error,
                mag,
                mag_err,
                abs(detection.score),
                shape.fwhm_px,
                shape.elongation,
                shape.negative_pixels,
                shape.masked_pixels,
                float(star_offsets[i]),
                detection.score < 0,
                float(scores[i]),
                tuple(flags),
            )  # fmt: skip
        )
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].snr)
    return [candidates[i] for i in order], features[order]


def _at_edge(score: np.ndarray, detection: subtraction.Detection, fwhm: float) -> bool:
    """Near the frame's border (S_corr there sees the tile's wrap-around), or with S_corr blind within half a
    FWHM: at the edge of the two images' common footprint a source's peak is cut, and so are its position and
    flux."""
    height, width = score.shape
    if min(detection.x, detection.y, width - 1 - detection.x, height - 1 - detection.y) < EDGE_PX:
        return True
    x, y, radius = int(round(detection.x)), int(round(detection.y)), max(2, int(math.ceil(fwhm / 2)))
    return not np.isfinite(score[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]).all()


def _reference_snr(reference: Side, detection: subtraction.Detection, fwhm: float) -> float:
    """The S/N of the reference's light within 1 FWHM of a detection: a star whose 1% PSF mismatch is 5σ."""
    x, y, radius = int(round(detection.x)), int(round(detection.y)), max(1, int(round(fwhm)))
    cut = reference.data[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
    finite = cut[np.isfinite(cut)]
    if finite.size == 0:
        return 0.0
    return float(finite.sum() / (reference.sigma * math.sqrt(finite.size)))


def write_products(result: DiscoveryResult, folder: Path) -> tuple[Path, Path, Path]:
    """``<stem>_diff.fits``, ``<stem>_scorr.fits`` (with the science WCS) and ``<stem>_candidates.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = result.science.path.name.removesuffix(".gz").removesuffix(".fits").removesuffix(".fit")
    header = result.science.wcs.to_header(relax=True)
    for keyword in ("DATE-OBS", "FILTER", "EXPTIME", "MAGZP"):
        if keyword in result.science.header:
            header[keyword] = result.science.header[keyword]
    header["REFIMAGE"] = (result.reference.path.name[:60], "reference subtracted")
    header["REGSHFTX"] = (round(result.shift_px[0], 3), "[pixel] residual registration shift")
    header["REGSHFTY"] = (round(result.shift_px[1], 3), "[pixel] residual registration shift")
    diff_path, scorr_path = folder / f"{stem}_diff.fits", folder / f"{stem}_scorr.fits"
    header["BUNIT"] = "sigma"
    write_fits(diff_path, [fits.PrimaryHDU(result.difference.difference, header)])
    write_fits(scorr_path, [fits.PrimaryHDU(result.difference.score, header)])
    csv_path = folder / f"{stem}_candidates.csv"
    # A temporary created exclusively in the folder (mkstemp), never a name a planted link could stand at.
    with atomic_write(csv_path, "w") as stream:
        writer = csv.DictWriter(stream, CANDIDATE_COLUMNS)
        writer.writeheader()
        for candidate in result.candidates:
            writer.writerow(candidate.row())
    return diff_path, scorr_path, csv_path
