"""Transient discovery on one science frame: the reference onto its grid, ZOGY, the detections measured.

The steps, in order: read and measure both images (``sides.py``: background, stars, FWHM from Moffat fits),
bring the reference onto the science grid (a pure shift when the two grids differ by one — the usual case of a
telescope's own reference — else resampled), refine the registration with the stars both images share, measure
each PSF on its stars with its wings (``psf.py``; a model across the frame), scale the fluxes by the zero
points (by the common stars, or the host's light, when a header has none), subtract (``subtraction.py``), then
measure every peak of |S_corr| ≥ the threshold: position, PSF-fit flux and magnitude (the science PSF of its
own place), shape on D, negative and masked pixels nearby, what lies under it in the reference (a star, or a
galaxy's centre), and the real/bogus score (``vetting.py``).

An image with nothing to measure its PSF on (a survey cut-out of a supernova on its host) takes the header's
``FWHM`` or the reference's PSF to begin with; the transient itself, on the difference, then says the science
PSF, and the subtraction is made again with it.

The same function serves the pipeline (``find_transients``) and ``toros difference`` on any two FITS files.
"""

from __future__ import annotations

import csv
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import fft
from scipy.spatial import cKDTree

from toros.floor.fitsfiles import write_fits_image
from toros.preprocessor import subtraction, vetting
from toros.preprocessor.psf import Moffat, UniformPsf, fit_moffat
from toros.preprocessor.sides import (
    MIN_PSF_STARS,
    DiscoveryFailed,
    Side,
    measure_psf,
    psf_of,
    psf_size,
    read_side,
    register_reference,
)
from toros.preprocessor.subtraction import PSF_SIZE, Difference, Image
from toros.runtime.files import atomic_write

log = logging.getLogger(__name__)

__all__ = ["Candidate", "DiscoveryFailed", "DiscoveryResult", "DiscoverySettings", "discover", "write_products"]

# S_corr this close to the frame's border sees the tile's wrap-around: S at a pixel sums D over a PSF stamp,
# and D there sums the images over another, so the far edge reaches two half-stamps in (at one half-stamp, the
# demo's 512² frames had one-detection "candidates" 16 px from the border).
EDGE_PX = 2 * (PSF_SIZE // 2)
BRIGHT_STAR_SNR = 500.0  # a detection on a reference star this bright is its residual (flagged, never vetted)…
RESIDUAL_FRACTION = 0.15  # …unless it holds this share of the star's light: a star that changed (a variable)
NOT_VETTED = frozenset({"edge", "bright_star"})  # flags that keep a detection from being a candidate
TRANSIENT_PSF_SNR = 15.0  # a transient this significant on D measures the science PSF of a cut-out
REFINEMENTS = 3  # subtractions of a cut-out whose PSF or flux scale the transient itself refines
POINT_LIKE = 0.85  # a source's light within 1 FWHM over 3 FWHM, against the PSF's: below this, extended
CANDIDATE_COLUMNS = (
    "ra_deg", "dec_deg", "x", "y", "mag", "mag_err", "snr", "score", "flux", "flux_err", "fwhm_px", "elongation",
    "negative_pixels", "masked_pixels", "star_offset_arcsec", "negative", "flags", "candidate",
    "position_error_arcsec", "reference_mag", "star_galaxy", "catalog_star_arcsec",
)  # fmt: skip


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
    position_error_arcsec: float = math.nan  # per axis, 1σ: the fit's, the registration's and the WCS's
    reference_mag: float | None = None  # the nearest reference source's total light, AB (ZTF's magnr)
    star_galaxy: float = 0.5  # what lies under it: 1 a point source a catalog calls a star, 0 extended, 0.5 none
    catalog_star_arcsec: float = math.inf  # nearest star of the reference catalog (ZTF's distpsnr1)

    def row(self, candidate: bool) -> dict[str, object]:
        """The CSV row: floats rounded to what they are worth, no infinity; ``candidate``: whether it passes the
        daemon's vetting rules."""
        record = asdict(self)
        record["flags"] = " ".join(self.flags)
        record["candidate"] = "true" if candidate else "false"
        for name, digits in (("ra_deg", 7), ("dec_deg", 7), ("x", 2), ("y", 2), ("mag", 4), ("mag_err", 4),
                             ("snr", 2), ("score", 3), ("flux", 2), ("flux_err", 2), ("fwhm_px", 2),
                             ("elongation", 2), ("star_offset_arcsec", 2), ("position_error_arcsec", 3),
                             ("reference_mag", 3), ("star_galaxy", 2), ("catalog_star_arcsec", 2)):  # fmt: skip
            value = record[name]
            record[name] = "" if value is None or not math.isfinite(value) else round(float(value), digits)
        return {name: record[name] for name in CANDIDATE_COLUMNS}


@dataclass
class DiscoverySettings:
    threshold: float = 5.0  # |S_corr|
    tile: int = 1024
    apron: int = 64
    star_flag_arcsec: float = 1.0  # a detection this close to a reference star: "on_star" (a variable?)
    max_candidates: int = 2000  # a frame with more is a failed subtraction: the rest are not measured
    refine: bool = True  # False: trust the WCS alone (the vetting's training data for misregistration)
    vet: bool = True  # False: no real/bogus score (the vetting's training data)
    min_score: float = 0.7  # the daemon's vetting rules, for the candidates table's ``candidate`` column
    min_snr: float = 6.0


def is_candidate(candidate: Candidate, min_score: float, min_snr: float) -> bool:
    """The daemon's vetting rule: a new (positive) source, scored real enough, significant enough, and neither
    at the frame's edge nor a bright star's residual."""
    return (
        not candidate.negative
        and candidate.score >= min_score
        and candidate.snr >= min_snr
        and not NOT_VETTED.intersection(candidate.flags)
    )


@dataclass(frozen=True)
class StarCatalog:
    """Positions of known stars (the science step's reference catalog): a source under a detection is a star
    only if one of these is there."""

    ra_deg: np.ndarray
    dec_deg: np.ndarray


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
    settings: DiscoverySettings = field(default_factory=DiscoverySettings)


def discover(
    science_path: Path,
    reference_path: Path,
    settings: DiscoverySettings | None = None,
    stars: StarCatalog | None = None,
) -> DiscoveryResult:
    """Subtracts the reference from the science frame and measures what is new (or gone)."""
    settings = settings or DiscoverySettings()
    # sep and numpy release the GIL: both images at once (reading one takes 2.4 times its pixels' memory at
    # most: 2.2 GiB for two TOROS frames, below the subtraction's peak).
    with ThreadPoolExecutor(max_workers=2) as pool:
        reading = pool.submit(read_side, reference_path, "reference")
        science = read_side(science_path, "science")
        reference = reading.result()
    notes = [*science.notes, *reference.notes]
    science_filter = str(science.header.get("FILTER", "")).strip()
    reference_filter = str(reference.header.get("FILTER", "")).strip()
    if science_filter and reference_filter and science_filter != reference_filter:
        notes.append(f"filters differ: science {science_filter}, reference {reference_filter}")
    registered, shift, how = register_reference(science, reference)
    del reference  # its pixels: half a GiB of a TOROS frame
    if not np.isfinite(registered.data).any():
        raise DiscoveryFailed(f"the reference {reference_path.name} does not cover the science frame")
    # The registration, refined by the stars both images show (an imperfect WCS moves a reference by a pixel).
    radius = max(2.0, 1.5 * max(science.fwhm, registered.fwhm, 1.0))
    error = (0.1, 0.1)
    if settings.refine:
        shift, pairs, error = subtraction.residual_shift(
            science.stars_xy, registered.stars_xy, shift, radius, min_pairs=3,
            weights=(science.stars_flux, registered.stars_flux),
        )  # fmt: skip
        if len(pairs) < 3:
            notes.append(f"{len(pairs)} stars in common: registration from the WCS alone")
    else:
        pairs = subtraction.matched_stars(science.stars_xy, registered.stars_xy, shift, radius)
    if max(abs(shift[0]), abs(shift[1])) > 20:
        raise DiscoveryFailed(f"registration failed: the stars disagree with the WCS by {shift} px")
    tiles = math.ceil(science.data.shape[0] / settings.tile) * math.ceil(science.data.shape[1] / settings.tile)
    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy's stacking and least squares release the GIL
        measuring = pool.submit(measure_psf, registered, tiles)  # on its own grid: ZOGY shifts its pixels
        measure_psf(science, tiles)
        measuring.result()
    notes += registered.notes
    registered.stars_xy = registered.stars_xy + shift
    registered.sources_xy = registered.sources_xy + shift
    astrometric_sigma = _registration_noise(science, registered, pairs, error, translation=how.startswith("shift"))
    guessed = _borrow_psf(science, registered)
    scales = _flux_scales(science, registered, pairs)
    for attempt in range(REFINEMENTS if guessed is not None or scales.from_light else 1):
        assert science.psf is not None and registered.psf is not None, "measured or borrowed"
        new = Image(science.data, science.psf, scales.science, science.sigma, science.gain)
        ref = Image(registered.data, registered.psf, scales.reference, registered.sigma, registered.gain)
        difference = subtraction.subtract(
            new, ref, tile=settings.tile, apron=settings.apron, shift=shift, astrometric_sigma=astrometric_sigma
        )
        found = subtraction.detections(difference, settings.threshold, separation=max(2, round(science.fwhm / 2)))
        if attempt == REFINEMENTS - 1 or not _refine(science, registered, scales, difference, found, guessed):
            break
    notes.append(f"science PSF: {science.psf_source}; reference PSF: {registered.psf_source}")
    if scales.note:
        notes.append(scales.note)
    if len(found) > settings.max_candidates:
        notes.append(f"{len(found)} detections: only the {settings.max_candidates} most significant measured")
        found = found[: settings.max_candidates]
    located = _Located(astrometric_sigma, _wcs_error_arcsec(science), scales)
    candidates, features = _measure(found, difference, science, registered, settings, stars, located)
    log.info("%s − %s: %s, %d common stars, %d detections", science_path.name, reference_path.name, how,
             len(pairs), len(candidates))  # fmt: skip
    return DiscoveryResult(science, registered, difference, shift, len(pairs), candidates, features, notes, settings)


@dataclass(frozen=True)
class _Located:
    """What a detection's position error and its reference magnitude need besides the detection."""

    registration_px: tuple[float, float]  # per axis
    wcs_arcsec: float  # the science WCS's own error
    scales: FluxScales


def _wcs_error_arcsec(science: Side) -> float:
    """The error of the science frame's WCS as a whole: the fit's rms over the square root of its stars (0.1"
    when the header does not say: a WCS nobody fitted here)."""
    rms, stars = science.header.get("ASTRRMS"), science.header.get("ASTRNSTR")
    try:
        return float(rms) / math.sqrt(max(int(stars), 1)) if rms is not None and stars is not None else 0.1
    except (TypeError, ValueError):
        return 0.1


def _registration_noise(
    science: Side, registered: Side, pairs: np.ndarray, error: tuple[float, float], translation: bool
) -> tuple[float, float]:
    """The registration's noise per axis, at least 0.01 px: for a reference that is only shifted (one offset
    over the whole frame), the error of that offset; for a resampled one (its distortions matched by the WCSs
    alone), the scatter of the brighter half of the common stars about it; 0.1 px when fewer than 3 stars
    say."""
    if len(pairs) < 3:
        return 0.1, 0.1
    if translation:
        return float(np.clip(error[0], 0.01, 0.5)), float(np.clip(error[1], 0.01, 0.5))
    if len(pairs) >= 2 * MIN_PSF_STARS:
        pairs = pairs[np.argsort(-science.stars_flux[pairs[:, 0]])[: len(pairs) // 2]]
    offsets = science.stars_xy[pairs[:, 0]] - registered.stars_xy[pairs[:, 1]]
    spread = 1.4826 * np.median(np.abs(offsets - np.median(offsets, axis=0)), axis=0)
    return float(np.clip(spread[0], 0.01, 0.5)), float(np.clip(spread[1], 0.01, 0.5))


@dataclass
class FluxScales:
    """(F_n, F_r): fluxes come out in the science frame's counts (F_n = 1); and how F_r was found."""

    science: float
    reference: float
    note: str = ""
    from_light: bool = False  # from the images' light (a host), refined once the transient is known


def _flux_scales(science: Side, reference: Side, pairs: np.ndarray) -> FluxScales:
    """Each image's own MAGZP; else the common stars' flux ratio; else the ratio of the light both images show
    (a survey template scaled to its science image holds its host's light alike)."""
    if science.magzp is not None and reference.magzp is not None:
        return FluxScales(1.0, 10 ** (0.4 * (reference.magzp - science.magzp)) * reference.counts_factor)
    missing = " and ".join(side.label for side in (science, reference) if side.magzp is None)
    if len(pairs):
        # Each star's light in an aperture 2.5 times the wider FWHM, corrected by each PSF's share of the light
        # within it: isophotal fluxes would depend on the seeing.
        radius = 2.5 * max(science.fwhm, reference.fwhm, 1.0)
        ratio = _total_light(reference, pairs[:, 1], radius) / _total_light(science, pairs[:, 0], radius)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        if len(ratio):
            return FluxScales(
                1.0, float(np.median(ratio)),
                f"no MAGZP in the {missing}: flux scale from {len(ratio)} common star{'s' if len(ratio) > 1 else ''}",
            )  # fmt: skip
    ratio = _light_ratio(science, reference, exclude=None)
    if ratio is None:
        raise DiscoveryFailed(
            f"no MAGZP in the {missing} and no common source to scale the fluxes by: the magnitudes would be wrong"
        )
    return FluxScales(1.0, ratio, f"no MAGZP in the {missing} and no common star: flux scale from the light both "
                      "images show (a host galaxy)", from_light=True)  # fmt: skip


def _total_light(side: Side, stars: np.ndarray, radius: float) -> np.ndarray:
    """The total light of stars (indexes into ``side.stars_xy``): aperture sums over the PSF's share of the
    light within the aperture."""
    import sep

    xy = side.stars_xy[stars]
    pixels = np.nan_to_num(side.data).astype(np.float32)
    flux, _, flags = sep.sum_circle(pixels, xy[:, 0], xy[:, 1], radius, subpix=5)
    shares = []
    for x, y in xy:
        shares.append(_share_within(side.psf_at(float(x), float(y)).stamp, radius))
    return np.where(flags == 0, flux / np.maximum(np.array(shares), 1e-6), np.nan)


def _share_within(stamp: np.ndarray, radius: float) -> float:
    """The share of a centred PSF stamp's light within ``radius`` pixels of its centre."""
    centre = stamp.shape[0] // 2
    yy, xx = np.indices(stamp.shape)
    return float(stamp[np.hypot(xx - centre, yy - centre) <= radius].sum())


def _light_ratio(science: Side, reference: Side, exclude: tuple[float, float] | None) -> float | None:
    """The reference's light over the science image's where both show a source (above 5σ after smoothing to a
    common resolution), but within 3 FWHM of ``exclude`` (the transient); None when nothing is bright in both."""
    from scipy import ndimage

    width = max(science.fwhm, reference.fwhm, 1.0)
    smooth_n = ndimage.gaussian_filter(np.nan_to_num(science.data), width)
    smooth_r = ndimage.gaussian_filter(np.nan_to_num(reference.data), width)
    noise = 1.0 / (2.0 * math.sqrt(math.pi) * width)  # a Gaussian filter's effect on white noise
    bright = (smooth_n > 5 * science.sigma * noise) & (smooth_r > 5 * reference.sigma * noise)
    bright &= np.isfinite(science.data) & np.isfinite(reference.data)
    if exclude is not None:
        yy, xx = np.indices(bright.shape)
        bright &= np.hypot(xx - exclude[0], yy - exclude[1]) > 3.0 * width
    if bright.sum() < 10:
        return None
    light_n, light_r = float(science.data[bright].sum()), float(reference.data[bright].sum())
    # The light in common must be measured well in both: 50σ (a 2% scale), not a faint star's wings.
    area = math.sqrt(float(bright.sum()))
    if light_n < 50 * science.sigma * area or light_r < 50 * reference.sigma * area:
        return None
    return light_r / light_n


def _borrow_psf(science: Side, reference: Side) -> Side | None:
    """An image with nothing to measure its PSF on (a cut-out of a supernova on its host, a template without a
    star) starts with the other's; the transient itself then says better (``_refine``). Returns that image."""
    if science.psf is None and reference.psf is None:
        raise DiscoveryFailed(
            f"neither {science.name} nor {reference.name} has a point source to measure a PSF on or a FWHM in its "
            "header"
        )
    for lacking, other in ((science, reference), (reference, science)):
        if lacking.psf is None:
            lacking.psf, lacking.fwhm, lacking.beta = other.psf, other.fwhm, other.beta
            lacking.psf_source = f"the {other.label}'s, until the transient says better"
            return lacking
    return None


def _refine(
    science: Side, reference: Side, scales: FluxScales, difference: Difference,
    found: list[subtraction.Detection], guessed: Side | None,
) -> bool:  # fmt: skip
    """The transient itself on D says what a cut-out did not: the PSF of the image that had none (from its
    width on D: a new source for the science image, a vanished one for the reference) and the flux scale (from
    the host's light without it). True when either changed enough to subtract again."""
    strongest = [d for d in found if abs(d.score) >= TRANSIENT_PSF_SNR]
    changed = False
    if strongest and scales.from_light:
        ratio = _light_ratio(science, reference, exclude=(strongest[0].x, strongest[0].y))
        if ratio is not None and abs(ratio / scales.reference - 1.0) > 0.01:
            scales.reference, changed = ratio, True
    if guessed is None:
        return changed
    sign = 1.0 if guessed is science else -1.0
    own = [d for d in strongest if d.score * sign > 0]
    if not own:
        if "no transient" not in guessed.psf_source:
            guessed.psf_source += (
                f" (no {'new' if sign > 0 else 'vanished'} source significant enough to measure it on)"
            )
        return changed
    fwhm = _fwhm_from_transient(science, reference, guessed, scales, difference, own[0])
    if fwhm is None:
        return changed
    moffat = Moffat(fwhm, fwhm, 0.0, guessed.beta)
    guessed.psf = UniformPsf(psf_of(moffat, psf_size(fwhm)))
    guessed.psf_source = f"from the transient on the difference (FWHM {fwhm:.2f} px)"
    changed = changed or abs(fwhm / max(guessed.fwhm, 1e-6) - 1.0) > 0.02
    guessed.fwhm = fwhm
    return changed


def _fwhm_from_transient(
    science: Side, reference: Side, guessed: Side, scales: FluxScales, difference: Difference,
    transient: subtraction.Detection,
) -> float | None:  # fmt: skip
    """The FWHM of ``guessed``'s PSF that makes a point source in it look on D as the transient does: D shows
    such a source through the kernels of the PSFs assumed, so the width it has there is predicted for trial
    widths (Moffats of its β) and the observed one interpolated among them."""
    observed = fit_moffat(difference.difference * np.sign(transient.score), transient.x, transient.y,
                          max(guessed.fwhm, 1.0), 1.0)  # fmt: skip
    if observed is None:
        return None
    assert science.psf is not None and reference.psf is not None
    x, y = transient.x, transient.y
    new_psf, ref_psf = science.psf.at(x, y), reference.psf.at(x, y)
    size = psf_size(max(science.fwhm, reference.fwhm) * 2)
    small = (fft.next_fast_len(4 * size),) * 2
    kernels = subtraction.Kernels.of(
        Image(np.empty(0), UniformPsf(new_psf), scales.science, science.sigma),
        Image(np.empty(0), UniformPsf(ref_psf), scales.reference, reference.sigma),
        new_psf, ref_psf, small,
    )  # fmt: skip
    factor = (kernels.new_factor if guessed is science else kernels.ref_factor).astype(np.complex128)
    trials = guessed.fwhm * np.geomspace(0.4, 3.0, 15)
    widths = []
    for trial in trials:
        candidate = psf_of(Moffat(trial, trial, 0.0, guessed.beta), size)
        profile = fft.fftshift(fft.irfft2(factor * subtraction.padded_psf_hat(candidate.stamp, small), s=small))
        shown = fit_moffat(profile, small[1] // 2, small[0] // 2, trial, 1e-6, gain=math.inf)
        widths.append(shown.moffat.fwhm if shown is not None else np.nan)
    widths_array = np.array(widths)
    good = np.isfinite(widths_array)
    if good.sum() < 3 or not np.all(np.diff(widths_array[good]) > 0):
        return None
    if not widths_array[good][0] <= observed.moffat.fwhm <= widths_array[good][-1]:
        return None
    return float(np.interp(observed.moffat.fwhm, widths_array[good], trials[good]))


def _measure(
    found: list[subtraction.Detection],
    difference: Difference,
    science: Side,
    reference: Side,
    settings: DiscoverySettings,
    stars: StarCatalog | None,
    located: _Located,
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
    known = _catalog_stars(stars, science) if stars is not None else None
    catalog_offsets = np.full(len(found), np.inf)
    if known is not None:
        catalog_offsets = known.query(np.column_stack([xs, ys]))[0] * science.pixel_scale_arcsec
    nearest = np.full(len(found), -1)
    if len(reference.sources_xy):
        nearest = cKDTree(reference.sources_xy).query(np.column_stack([xs, ys]))[1]
    candidates = []
    for i, detection in enumerate(found):
        shape = vetting.Shape.of(features[i], fwhm)
        correction = _flux_correction(difference, science, detection)
        at_peak = difference.flux_at(detection.x, detection.y)
        flux = abs(at_peak if at_peak is not None else detection.flux) * correction
        flux_error = detection.flux_error * correction
        mag = mag_err = None
        if science.magzp is not None and flux > 0:
            mag = science.magzp - 2.5 * math.log10(flux)
            mag_err = 1.0857 * flux_error / flux
        flags = []
        under = _under(reference, detection, settings.star_flag_arcsec / science.pixel_scale_arcsec, known)
        if under == "star":
            flags.append("on_star")
            snr, light = _reference_light(reference, detection, fwhm)
            if science.magzp is not None and reference.magzp is not None:
                light *= 10 ** (0.4 * (science.magzp - reference.magzp))  # in the science frame's ADU
            if snr >= BRIGHT_STAR_SNR and flux < RESIDUAL_FRACTION * light:
                flags.append("bright_star")
        elif under == "nucleus":
            flags.append("nuclear")
        star_galaxy = {"star": 1.0, "nucleus": 0.0, None: 0.5}[under]
        if shape.masked_pixels:
            flags.append("near_masked")
        if _at_edge(difference.score, detection, fwhm):
            flags.append("edge")
        if science.psf_varies or reference.psf_varies:
            flags.append("psf_varies")
        candidates.append(
            Candidate(
                round(detection.x, 2),
                round(detection.y, 2),
                float(ra[i]),
                float(dec[i]),
                flux,
                flux_error,
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
                _position_error(detection.score, science, located),
                _reference_mag(reference, science, located.scales, int(nearest[i])),
                star_galaxy,
                float(catalog_offsets[i]),
            )  # fmt: skip
        )
    order = sorted(range(len(candidates)), key=lambda i: -candidates[i].snr)
    return [candidates[i] for i in order], features[order]


def _position_error(snr: float, science: Side, located: _Located) -> float:
    """The 1σ error of a position per axis, in arcsec: a PSF fit's at this S/N (√2·σ_PSF/SNR, the Cramér–Rao
    bound on a background-limited image), the registration's and the WCS's, in quadrature."""
    sigma_px = max(science.fwhm, 1.0) / 2.3548
    fit_px = math.sqrt(2.0) * sigma_px / max(abs(snr), 1.0)
    registration_px = math.hypot(*located.registration_px) / math.sqrt(2.0)
    scale = science.pixel_scale_arcsec
    return math.sqrt((fit_px * scale) ** 2 + (registration_px * scale) ** 2 + located.wcs_arcsec**2)


def _reference_mag(reference: Side, science: Side, scales: FluxScales, source: int) -> float | None:
    """The AB magnitude of a reference source (its total light: an aperture of 2.5 FWHM over the PSF's share
    of the light within it), on the science frame's zero point; None without one or without a source."""
    if source < 0 or science.magzp is None or reference.psf is None:
        return None
    import sep

    x, y = (float(v) for v in reference.sources_xy[source])
    radius = 2.5 * max(reference.fwhm, 1.0)
    half = int(math.ceil(radius)) + 2
    x0, y0 = max(0, int(x) - half), max(0, int(y) - half)
    cut = np.nan_to_num(reference.data[y0 : int(y) + half + 1, x0 : int(x) + half + 1]).astype(np.float32)
    if cut.size == 0:
        return None
    flux, _, _ = sep.sum_circle(np.ascontiguousarray(cut), np.array([x - x0]), np.array([y - y0]), radius, subpix=5)
    share = _share_within(reference.psf.at(x, y).stamp, radius)
    total = float(flux[0]) / max(share, 1e-6) / scales.reference
    if total <= 0 or not math.isfinite(total):
        return None
    return science.magzp - 2.5 * math.log10(total)


FORCED_EDGE_PX = 10  # forced photometry this far inside the frame at least
FORCED_DETECTION_SIGMAS = 3.0  # a forced flux this significant is a magnitude; below, only the limit counts


@dataclass(frozen=True)
class ForcedMeasurement:
    flux: float  # science-frame counts (ADU); negative when fainter than in the reference
    flux_err: float
    mag: float  # NaN below FORCED_DETECTION_SIGMAS
    mag_err: float
    limmag: float  # the 5σ limit at the position (NaN without a zero point)


def forced_photometry(result: DiscoveryResult, ra_deg: float, dec_deg: float) -> ForcedMeasurement | None:
    """A point source's flux on the difference image at a sky position (the same PSF fit as a detection's, made
    right for the science PSF there), or None off the frame, near its edges or where it is blind."""
    science, difference = result.science, result.difference
    x, y = (float(v) for v in science.wcs.world_to_pixel_values(ra_deg, dec_deg))
    height, width = difference.score.shape
    if not (FORCED_EDGE_PX <= x < width - FORCED_EDGE_PX and FORCED_EDGE_PX <= y < height - FORCED_EDGE_PX):
        return None
    flux = difference.flux_at(x, y)
    error = float(difference.flux_error[int(round(y)), int(round(x))])
    if flux is None or not (math.isfinite(error) and error > 0):
        return None
    correction = _flux_correction(difference, science, subtraction.Detection(x, y, 0.0, flux, error))
    flux, error = flux * correction, error * correction
    magzp = science.magzp
    mag = mag_err = limmag = math.nan
    if magzp is not None:
        limmag = magzp - 2.5 * math.log10(5.0 * error)
        if flux >= FORCED_DETECTION_SIGMAS * error:
            mag, mag_err = magzp - 2.5 * math.log10(flux), 1.0857 * error / flux
    return ForcedMeasurement(round(flux, 3), round(error, 3), mag, mag_err, limmag)


def _flux_correction(difference: Difference, science: Side, detection: subtraction.Detection) -> float:
    """The tile's flux of a source made right for the science PSF of the source's own place (a wide field's PSF
    widens toward the corners, within a tile too)."""
    tile = difference.tile_at(detection.x, detection.y)
    if tile is None or science.psf is None:
        return 1.0
    local = science.psf.near(detection.x, detection.y, tile.centre, tile.science_psf)
    return tile.flux_correction(local)


def _catalog_stars(stars: StarCatalog, science: Side) -> cKDTree | None:
    """The catalog's stars on the science grid (a tree of pixel positions)."""
    px, py = science.wcs.world_to_pixel_values(stars.ra_deg, stars.dec_deg)
    height, width = science.data.shape
    inside = np.isfinite(px) & np.isfinite(py) & (px > -10) & (px < width + 10) & (py > -10) & (py < height + 10)
    if not inside.any():
        return None
    return cKDTree(np.column_stack([px[inside], py[inside]]))


def _under(reference: Side, detection: subtraction.Detection, radius_px: float, known: cKDTree | None) -> str | None:
    """What the reference shows under a detection: "star" (a point source — and a catalog star when there is a
    catalog), "nucleus" (the centre of a galaxy: light more extended than the PSF, or a point source no catalog
    calls a star), or None (nothing significant, or not centred on it). Decided from the source's shape against
    the PSF, not from its brightness: a bright nucleus is not a star."""
    fwhm = max(reference.fwhm, 1.0)
    x, y = detection.x, detection.y
    half = int(math.ceil(3.0 * fwhm)) + 1
    ix, iy = int(round(x)), int(round(y))
    cut = reference.data[max(0, iy - half) : iy + half + 1, max(0, ix - half) : ix + half + 1]
    if cut.size == 0 or not np.isfinite(cut).any():
        return None
    yy, xx = np.indices(cut.shape)
    xx, yy = xx + max(0, ix - half), yy + max(0, iy - half)
    values = np.nan_to_num(cut)
    # A source under it is a local maximum of the reference's light within the radius (a galaxy's disc only
    # slopes under a detection beside its nucleus).
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(values, 0.5)
    maxima = (smooth == ndimage.maximum_filter(smooth, size=3)) & (
        np.hypot(xx - x, yy - y) <= max(radius_px, 0.5 * fwhm) + 0.5
    )
    if not maxima.any():
        return None
    peak = int(np.argmax(np.where(maxima, smooth, -np.inf)))
    px, py = float(xx.flat[peak]), float(yy.flat[peak])
    distance = np.hypot(xx - px, yy - py)
    inner, outer = values[distance <= fwhm].sum(), values[distance <= 3.0 * fwhm].sum()
    signal = inner / (reference.sigma * math.sqrt(max(int((distance <= fwhm).sum()), 1)))
    if signal < 5.0 or outer <= 0:
        return None
    assert reference.psf is not None
    psf = reference.psf.at(px, py).stamp
    expected = _share_within(psf, fwhm) / _share_within(psf, 3.0 * fwhm)
    point_like = inner / outer >= POINT_LIKE * expected
    stellar = known is None or bool(known.query([px, py], distance_upper_bound=max(radius_px, 1.0))[0] < np.inf)
    return "star" if point_like and stellar else "nucleus"


def _at_edge(score: np.ndarray, detection: subtraction.Detection, fwhm: float) -> bool:
    """Near the frame's border (S_corr there sees the tile's wrap-around), or with S_corr blind within half a
    FWHM: at the edge of the two images' common footprint a source's peak is cut, and so are its position and
    flux."""
    height, width = score.shape
    if min(detection.x, detection.y, width - 1 - detection.x, height - 1 - detection.y) < EDGE_PX:
        return True
    x, y, radius = int(round(detection.x)), int(round(detection.y)), max(2, int(math.ceil(fwhm / 2)))
    return not np.isfinite(score[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]).all()


def _reference_light(reference: Side, detection: subtraction.Detection, fwhm: float) -> tuple[float, float]:
    """The reference's light within 1 FWHM of a detection: its S/N (a star whose 1% PSF mismatch is 5σ at
    ``BRIGHT_STAR_SNR``) and its sum (ADU)."""
    x, y, radius = int(round(detection.x)), int(round(detection.y)), max(1, int(round(fwhm)))
    cut = reference.data[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
    finite = cut[np.isfinite(cut)]
    if finite.size == 0:
        return 0.0, 0.0
    return float(finite.sum() / (reference.sigma * math.sqrt(finite.size))), float(finite.sum())


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
    with ThreadPoolExecutor(max_workers=2) as pool:  # byte-swapping and hashing release the GIL
        for written in [
            pool.submit(write_fits_image, path, header, image)
            for path, image in ((diff_path, result.difference.difference), (scorr_path, result.difference.score))
        ]:
            written.result()
    csv_path = folder / f"{stem}_candidates.csv"
    # A temporary created exclusively in the folder (mkstemp), never a name a planted link could stand at.
    with atomic_write(csv_path, "w") as stream:
        writer = csv.DictWriter(stream, CANDIDATE_COLUMNS)
        writer.writeheader()
        for candidate in result.candidates:
            rule = result.settings
            writer.writerow(candidate.row(is_candidate(candidate, rule.min_score, rule.min_snr)))
    return diff_path, scorr_path, csv_path
