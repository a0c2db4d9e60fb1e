"""One image of a subtraction pair, read and measured: its pixels (background subtracted, unusable ones NaN), its
noise, its point sources, the PSF measured on them, and the reference brought onto the science image's grid.

Everything is measured from the image's own pixels whenever it has something to measure: the FWHM from
Moffat fits to its stars (a header's ``FWHM`` that contradicts them by more than 30% is named and overridden),
the PSF as a model across the frame (``psf.PsfModel``), or one star's fitted Moffat; only an image with no
point source at all falls back on its header's ``FWHM`` (and ``PSFBETA`` when it is a seeing profile's), and the
output says which.
"""

from __future__ import annotations

import gzip
import math
import warnings
from dataclasses import dataclass, field, replace
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
)
from toros.preprocessor import subtraction
from toros.preprocessor.psf import (
    BETA_RANGE,
    Moffat,
    Psf,
    PsfField,
    PsfModel,
    UniformPsf,
    fit_moffat,
    moffat_psf,
)
from toros.preprocessor.settings import MAX_FRAME_BYTES

MASK_UNUSABLE = 1 | 2 | 4  # hot, bad flat, saturated: NaN for the subtraction
MASK_COSMIC_RAY = 8  # cleaned by the calibration: usable, but counted as masked near a candidate
MIN_PSF_STARS = 5
FWHM_FIT_STARS = 15  # the brightest isolated stars fitted for the FWHM
HEADER_FWHM_TOLERANCE = 0.3  # a header FWHM this far from the stars' is overridden
DEFAULT_BETA = 3.0  # a seeing profile's β when nothing says better
EXTENDED_WIDTH = 1.3  # a source this much wider than the stars is extended (a galaxy)
PSF_SCATTER_LIMIT = 0.10  # star widths scattering more about a smooth surface: the PSF varies too fast
SAMPLED_FWHM = 2.5  # pixels: a reference resampled onto another grid is smoothed to this first
PICTURE_FORMATS = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF8": "GIF"}


class DiscoveryFailed(Exception):
    """The pair cannot be subtracted; the message says why, for the operator."""


@dataclass
class Side:
    """One image, measured: background-subtracted pixels (NaN where unusable) and what ZOGY needs of it."""

    path: Path
    label: str  # "science" or "reference", for messages
    header: fits.Header
    wcs: WCS
    data: np.ndarray  # float32
    cleaned: np.ndarray  # bool: pixels the calibration repaired (cosmic rays)
    sigma: float
    gain: float
    magzp: float | None
    fwhm: float  # pixels; 0: unknown
    saturation: float  # above the background
    beta: float = DEFAULT_BETA
    fwhm_source: str = "the header"
    stars_xy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))  # point sources, 0-based
    stars_flux: np.ndarray = field(default_factory=lambda: np.empty(0))
    stars_width: np.ndarray = field(default_factory=lambda: np.empty(0))  # 2 × half-light radius, pixels
    sources_xy: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))  # every source, saturated ones too
    sources_extended: np.ndarray = field(default_factory=lambda: np.empty(0, bool))  # wider than the stars
    psf: PsfField | None = None
    psf_source: str = ""  # how the PSF was found, for the output
    psf_varies: bool = False  # faster than the model follows
    counts_factor: float = 1.0  # counts here per count of the file (a resampling to larger pixels: below 1)
    notes: list[str] = field(default_factory=list)

    @property
    def pixel_scale_arcsec(self) -> float:
        return float(np.mean(proj_plane_pixel_scales(self.wcs)) * 3600.0)

    @property
    def name(self) -> str:
        return f"{self.label} {self.path.name}"

    def psf_at(self, x: float, y: float) -> Psf:
        if self.psf is None:
            raise DiscoveryFailed(f"{self.name}: no point source to measure a PSF on and no FWHM in the header")
        return self.psf.at(x, y)


def celestial_wcs(header: fits.Header, label: str) -> WCS:
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


def _refuse_pictures(path: Path, label: str) -> None:
    """A JPEG or PNG cut-out (survey previews, some alert packets) holds display levels, not counts."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as stream:
                head = stream.read(16)
    except (OSError, EOFError):
        return  # the FITS reader says what is wrong with it
    for magic, kind in PICTURE_FORMATS.items():
        if head.startswith(magic):
            raise DiscoveryFailed(
                f"{label} {path.name}: a {kind} picture, not a FITS image: its pixels are display levels, not "
                "counts, and cannot be measured (use the survey's FITS cut-out)"
            )


def read_side(path: Path, label: str, *, fwhm_fallback: float | None = None, max_bytes: int = MAX_FRAME_BYTES) -> Side:
    """Reads and measures one image; a clear ``DiscoveryFailed`` for a file that cannot serve."""
    import sep

    _refuse_pictures(path, label)
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
        beta = header_number(header, "PSFBETA")
    except BadImage as exc:
        raise DiscoveryFailed(f"{label} {path.name}: {exc}") from None
    except (OSError, ValueError, TypeError, MemoryError) as exc:
        raise DiscoveryFailed(f"{label} {path.name}: not a readable FITS image ({exc})") from None
    assert saturate is not None and gain is not None and fwhm is not None, "given defaults"
    wcs = celestial_wcs(header, f"{label} {path.name}")
    notes = []
    if beta is not None and not BETA_RANGE[0] <= beta <= BETA_RANGE[1]:
        notes.append(
            f"{label} {path.name}: PSFBETA {beta:g} is not a seeing profile's ({BETA_RANGE[0]:g}-{BETA_RANGE[1]:g}): "
            "ignored"
        )
        beta = None
    if fwhm < 0 or fwhm > 100:
        notes.append(f"{label} {path.name}: header FWHM {fwhm:g} px is not a PSF's: ignored")
        fwhm = 0.0
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
    data[unusable] = 0.0
    side = Side(
        path, label, header, wcs, data, cleaned, float(background.globalrms), gain if gain > 0 else 1.0, magzp,
        fwhm, saturate - float(background.globalback), beta or DEFAULT_BETA, notes=notes,
    )  # fmt: skip
    find_stars(side, unusable)
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


def find_stars(side: Side, unusable: np.ndarray) -> None:
    """The image's sources, which of them are stars (for registration, the PSF and the flux ratio) and which
    are extended, and its FWHM from Moffat fits to its brightest isolated point sources. ``side.data`` comes
    with 0 where ``unusable`` (sep's filter must not meet a NaN) and leaves with NaN there: the frame's one
    copy serves both (a second took a third of a GiB of a TOROS frame, and its time)."""
    import sep

    pixels = side.data
    sep.set_extract_pixstack(max(300_000, pixels.size // 20))
    sep.set_sub_object_limit(4096)
    try:
        found = sep.extract(pixels, 5.0, err=side.sigma, mask=unusable, minarea=5)
        if len(found):
            all_widths = 2.0 * sep.flux_radius(pixels, found["x"], found["y"], 6.0 * found["a"], 0.5, subpix=5)[0]
    except Exception as exc:  # sep raises plain Exceptions
        raise DiscoveryFailed(f"{side.name}: source extraction failed: {exc}") from None
    finally:
        pixels[unusable] = np.nan
    if len(found) == 0:
        return
    side.sources_xy = np.column_stack([found["x"], found["y"]])
    side.sources_extended = np.zeros(len(found), bool)
    height, width = pixels.shape
    edge = 6
    keep = (found["flag"] == 0) & (found["peak"] < 0.8 * side.saturation)
    keep &= (found["x"] > edge) & (found["x"] < width - edge) & (found["y"] > edge) & (found["y"] < height - edge)
    keep &= found["a"] / np.maximum(found["b"], 1e-3) < 1.5
    # sep's detection filter makes a cosmic ray or a hot pixel a source: stars are as wide as the seeing, and
    # when there are many, the narrowest are not stars.
    if keep.sum() >= 5:
        keep &= all_widths > 0.6 * float(np.median(all_widths[keep]))
    chosen = np.flatnonzero(keep)
    measured = _fitted_fwhm(side, found, chosen)
    if measured is not None:
        fwhm, beta, count = measured
        if side.fwhm > 0 and abs(fwhm / side.fwhm - 1.0) > HEADER_FWHM_TOLERANCE:
            side.notes.append(
                f"{side.name}: the header's FWHM {side.fwhm:.2f} px contradicts its stars' {fwhm:.2f} px "
                f"({count} fitted): overridden"
            )
        side.fwhm, side.beta = fwhm, beta
        side.fwhm_source = f"{count} star{'s' if count > 1 else ''} fitted"
    if len(chosen) == 0 or side.fwhm <= 0:
        return
    # Stars are as wide as the PSF (half-light diameters: a Moffat's is about 1.2 FWHM); galaxies wider, cosmic
    # rays narrower.
    typical = float(np.median(all_widths[chosen])) if len(chosen) >= 3 else 1.2 * side.fwhm
    side.sources_extended = all_widths > EXTENDED_WIDTH * typical
    stars = chosen[(all_widths[chosen] > 0.6 * typical) & (all_widths[chosen] < EXTENDED_WIDTH * typical)]
    stars = stars[all_widths[stars] > 0.7 * side.fwhm]
    # Windowed centroids (SExtractor's XWIN): ten times steadier than isophotal barycentres, for registration.
    x, y = windowed_centroids(pixels, np.column_stack([found["x"][stars], found["y"][stars]]), side.fwhm / 2.3548)
    side.stars_xy = np.column_stack([x, y])
    side.stars_flux = np.asarray(found["flux"][stars], dtype=np.float64)
    side.stars_width = np.asarray(all_widths[stars], dtype=np.float64)


def _fitted_fwhm(side: Side, found: np.ndarray, chosen: np.ndarray) -> tuple[float, float, int] | None:
    """(FWHM, β, stars) of Moffat fits to the brightest isolated point sources: a star's width, not its
    half-light diameter (a Moffat's is 20% larger). One star is enough: a cut-out may hold no more. A fit
    narrower than a pixel is a cosmic ray or a hot pixel, not a star."""
    if len(chosen) == 0:
        return None
    xy = np.column_stack([found["x"], found["y"]])
    neighbours = cKDTree(xy).query(xy[chosen], k=2)[0][:, 1] if len(xy) > 1 else np.full(len(chosen), np.inf)
    guess = side.fwhm if side.fwhm > 0 else max(float(np.median(found["a"][chosen])) * 2.35, 1.5)
    isolated = chosen[neighbours > 3.0 * guess]
    fits_ = []
    for index in isolated[np.argsort(-found["flux"][isolated])][: 2 * FWHM_FIT_STARS]:
        fit = fit_moffat(side.data, float(found["x"][index]), float(found["y"][index]), guess, side.sigma, side.gain)
        if fit is None or fit.flux < 20.0 * side.sigma or fit.moffat.fwhm_minor < 1.0:
            continue
        if fit.moffat.fwhm < 0.3 * min(side.data.shape):
            fits_.append(fit)
        if len(fits_) == FWHM_FIT_STARS:
            break
    if not fits_:
        return None
    fwhm = float(np.median([f.moffat.fwhm for f in fits_]))
    beta = float(np.clip(np.median([f.moffat.beta for f in fits_]), *BETA_RANGE))
    return fwhm, beta, len(fits_)


def psf_size(fwhm: float) -> int:
    """A PSF stamp's side: 8 FWHM (odd), at least 15 pixels and at most 63."""
    return int(min(63, max(15, 2 * math.ceil(4 * fwhm) + 1)))


MAX_PSF_STARS = 400  # a quadratic model's 6 terms per pixel are well fitted by far fewer (PSFEx takes ~hundreds)


def measure_psf(side: Side, tiles: int = 1) -> None:
    """The PSF from the image's isolated stars of the typical width, as a model across the frame (up to
    quadratic, with the stars there are: ``tiles`` of the subtraction want 25 stars each); else a Moffat fitted to
    its one star; else the header's FWHM; else none (``side.psf`` stays None)."""
    size = psf_size(side.fwhm)
    if len(side.stars_xy) and side.fwhm > 0:
        everything = cKDTree(side.sources_xy)
        neighbours = everything.query(side.stars_xy, k=2)[0][:, 1] if len(side.sources_xy) > 1 else np.inf
        typical = float(np.median(side.stars_width))
        chosen = (neighbours > size / 2) & (np.abs(side.stars_width / typical - 1) < 0.3)
        order = np.argsort(-side.stars_flux[chosen])[: min(max(60, 25 * tiles), MAX_PSF_STARS)]
        xy = side.stars_xy[chosen][order]
        if len(xy):
            x, y = windowed_centroids(side.data, xy, max(side.fwhm, 1.0) / 2.3548)
            model = PsfModel.from_stars(side.data, x, y, side.fwhm, size)
            if model is not None:
                side.psf = model
                side.psf_source = f"measured on {model.stars} stars"
                _check_variation(side, side.stars_xy[chosen][order], side.stars_width[chosen][order])
                return
            fit = fit_moffat(side.data, float(x[0]), float(y[0]), side.fwhm, side.sigma, side.gain)
            if fit is not None:
                side.psf = UniformPsf(psf_of(fit.moffat, size))
                side.psf_source = f"a Moffat fitted to {min(len(xy), 1)} star (FWHM {fit.moffat.fwhm:.2f} px)"
                return
    if side.fwhm > 0:
        side.psf = UniformPsf(moffat_psf(side.fwhm, side.beta, size))
        side.psf_source = (
            f"a Moffat of the FWHM from {side.fwhm_source}, {side.fwhm:.2f} px (no isolated star for a PSF)"
        )


def windowed_centroids(data: np.ndarray, xy: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """SExtractor's windowed centroids (``sep.winpos``) of sources at ``xy``, each on a stamp around it with its
    NaNs as 0: a frame-sized NaN-free copy for a few hundred stars took a tenth of a 10560² search."""
    import sep

    half = math.ceil(4.0 * sigma) + 4  # the window (4σ) and room for the centroid to move
    height, width = data.shape
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    for index in range(len(xy)):
        column, row = int(round(x[index])), int(round(y[index]))
        x0, y0 = max(0, column - half), max(0, row - half)
        stamp = data[y0 : min(height, row + half + 1), x0 : min(width, column + half + 1)]
        if stamp.size == 0:
            continue
        stamp = np.nan_to_num(stamp).astype(np.float32)
        wx, wy, flag = sep.winpos(stamp, x[index] - x0, y[index] - y0, sigma)
        if flag == 0:  # else the first guess stays
            x[index], y[index] = float(wx) + x0, float(wy) + y0
    return x, y


def psf_of(moffat: Moffat, size: int) -> Psf:
    """A fitted Moffat as a PSF stamp."""
    stamp = moffat.pixels((size, size), size // 2, size // 2)
    return Psf(stamp, float(stamp.sum()), moffat)


def _check_variation(side: Side, xy: np.ndarray, widths: np.ndarray) -> None:
    """Whether the stars' widths scatter about a smooth (quadratic) surface more than their measurement does:
    then the PSF varies faster than the model (and the tiles) follow, and fluxes are uncertain by about twice
    that scatter."""
    bright = slice(0, max(len(xy) // 2, 0))
    xy, widths = xy[bright], widths[bright]
    if len(widths) < 12:
        return
    u, v = (xy[:, 0] / side.data.shape[1] - 0.5), (xy[:, 1] / side.data.shape[0] - 0.5)
    design = np.column_stack([np.ones_like(u), u, v, u * u, u * v, v * v])
    surface = design @ np.linalg.lstsq(design, widths, rcond=None)[0]
    scatter = float(1.4826 * np.median(np.abs(widths / surface - 1.0)))
    if scatter > PSF_SCATTER_LIMIT:
        side.psf_varies = True
        side.notes.append(
            f"{side.name}: the PSF varies faster than a smooth model follows (star widths scatter {100 * scatter:.0f}% "
            f"about one): fluxes uncertain by about {200 * scatter:.0f}%; detections flagged psf_varies"
        )


def register_reference(science: Side, reference: Side) -> tuple[Side, tuple[float, float], str]:
    """The reference on the science grid, the sub-pixel shift still to apply (ZOGY does it in Fourier
    space), and how: a whole-pixel cut when the two grids differ by a translation, else resampled (which spends
    the reference's pixels: they are left empty)."""
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
        moved = replace(
            reference, wcs=science.wcs, data=cut, cleaned=cleaned, stars_xy=reference.stars_xy - [ix, iy],
            sources_xy=reference.sources_xy - [ix, iy], psf=None, notes=[],
        )  # fmt: skip
        return moved, (ix - dx, iy - dy), f"shift ({dx:+.2f}, {dy:+.2f}) px"
    pixels = reference.data
    if 0 < reference.fwhm < SAMPLED_FWHM:
        # An undersampled image resampled by a spline aliases: its PSF would change with each source's place on
        # the pixel grid. Smoothed first to 2.5 pixels FWHM (its PSF is measured after, on its stars).
        from scipy import ndimage

        width = math.sqrt(SAMPLED_FWHM**2 - reference.fwhm**2) / 2.3548
        blind = ~np.isfinite(pixels)
        pixels = ndimage.gaussian_filter(np.where(blind, np.float32(0.0), pixels), width).astype(np.float32)
        pixels[ndimage.binary_dilation(blind, iterations=int(math.ceil(3 * width)))] = np.nan
    data = subtraction.register(pixels, reference.wcs, science.wcs, shape)  # spends the reference's pixels
    reference.data = np.empty((0, 0), np.float32)

    def onto_science(xy: np.ndarray) -> np.ndarray:
        if len(xy) == 0:
            return np.empty((0, 2))
        x, y = science.wcs.world_to_pixel_values(*reference.wcs.pixel_to_world_values(xy[:, 0], xy[:, 1]))
        return np.column_stack([x, y])

    scale = science.pixel_scale_arcsec / reference.pixel_scale_arcsec
    counts_factor = 1.0 / scale**2  # the resampling keeps a pixel's value: a star's sum scales with the pixel area
    moved = replace(
        reference, wcs=science.wcs, data=data, cleaned=np.zeros(shape, bool), sigma=_rms(data),
        fwhm=reference.fwhm / scale, stars_xy=onto_science(reference.stars_xy),
        stars_flux=reference.stars_flux * counts_factor, stars_width=reference.stars_width / scale,
        sources_xy=onto_science(reference.sources_xy), counts_factor=counts_factor, psf=None, notes=[],
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
