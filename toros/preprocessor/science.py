"""The science step: a calibrated science frame made science-ready — where it points, how deep it is, what
it contains.

Sources are extracted with ``sep`` (SExtractor's algorithms as a library); the brightest are matched to the
reference catalog's stars projected through the frame's first WCS (the mount's pointing) with ``astroalign``'s
asterism matcher, then every source is matched and a TAN (+SIP on wide fields) WCS fitted with astropy's
``fit_wcs_from_points``, twice, outliers clipped. Stars are Moffat profiles whose wings hold several percent of
their light beyond 2 FWHM, so everything photometric is measured to where the light is: the FWHM is a Moffat
fit to the brightest isolated stars (``psf.fit_moffat``: the true width, not a half-light diameter), aperture
fluxes are corrected by the curve of growth measured on the bright stars out to 5 FWHM (the light beyond from
the fitted Moffat), across the frame (a wide field's PSF widens toward the corners). The zero point comes from
the matched stars' corrected fluxes (sigma-clipped); the limiting magnitude is a PSF fit's 5σ on the sky's noise
(``LIMMAG``; an aperture's, shallower, under ``LIMMAGAP``). The frame's header gets the WCS and ``MAGZP``,
``MAGZPERR``, ``FWHM``, ``PSFBETA``, ``LIMMAG``, ``SKYLEV``, ``ASTRRMS``, ``ASTRNSTR``; its sources go to a FITS
table beside it (``<stem>_cat.fits``).

A frame that cannot be made science-ready says why (``ScienceFailed``) and stays calibrated.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import fit_wcs_from_points, proj_plane_pixel_scales
from scipy.spatial import cKDTree

from toros.floor.fitsfiles import write_fits
from toros.floor.sky_geometry import separation_deg
from toros.generated import toros_pb2 as pb
from toros.preprocessor.psf import BETA_RANGE, CurveOfGrowth, Moffat, fit_moffat
from toros.preprocessor.settings import ScienceConfig
from toros.runtime.files import sha256_of

log = logging.getLogger(__name__)

CATALOG_SUFFIX = "_cat.fits"
MASK_UNUSABLE = 1 | 2 | 4  # hot, bad flat, saturated (the calibrated frame's MASK bits)
MASK_SATURATED = 4
APERTURE_FWHMS = 2.0  # zero-point aperture radius (corrected to all of a star's light by the curve of growth)
GROWTH_FWHMS = 5.0  # the curve of growth is measured out to this radius on bright stars; the Moffat says beyond
MOFFAT_STARS = 40  # the brightest isolated stars fitted for the FWHM and β
FIT_BRIGHTEST_FRACTION = 0.4
SIP_GAIN = 0.9
ZERO_POINT_MIN_SNR = 10.0
ZERO_POINT_MIN_STARS = 3
BACKGROUND_ANNULUS = (6.0, 9.0)  # FWHMs: the local sky around each aperture, beyond all but 0.1% of the wings
WCS_KEYWORDS = ("WCSAXES", "CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1",
                "CD2_2", "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2", "CUNIT1", "CUNIT2", "LONPOLE",
                "LATPOLE", "RADESYS", "EQUINOX", "MJDREF", "A_ORDER", "B_ORDER", "AP_ORDER", "BP_ORDER")  # fmt: skip
CATALOG_COLUMNS = (
    "x (0-based column), y (0-based row), ra_deg, dec_deg, flux and flux_err (ADU: an aperture of radius FWHM, "
    "corrected by the curve of growth), mag and mag_err (AB, from MAGZP), snr, fwhm_px, ellipticity (1 - b/a), flags (sep's "
    "extraction flags), mask (OR of the frame's MASK bits under the source)"
)


def catalog_path_of(frame: Path) -> Path:
    """Where a calibrated frame's source catalog lies: beside it, ``<stem>_cat.fits``."""
    return frame.with_name(frame.name.removesuffix(".fits") + CATALOG_SUFFIX)


class ScienceFailed(Exception):
    """The frame cannot be made science-ready; the message says why."""


class BadReferenceCatalog(ValueError):
    """A reference catalog that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class ReferenceCatalog:
    """Reference stars: RA, Dec (degrees, ICRS) and AB magnitudes per filter."""

    ra: np.ndarray
    dec: np.ndarray
    mags: dict[str, np.ndarray]
    source: str

    @classmethod
    def read(cls, path: Path) -> ReferenceCatalog:
        """A CSV or FITS table with columns ``ra_deg``, ``dec_deg`` and one magnitude column per filter
        (named as the frames' FILTER: g, r, i, z, clear…)."""
        try:
            table = Table.read(path, format="fits" if path.suffix.lower() in (".fits", ".fit", ".fts") else "csv")
        except (OSError, ValueError, TypeError) as exc:
            raise BadReferenceCatalog(f"{path}: cannot read as a table: {exc}") from None
        names = {name.lower(): name for name in table.colnames}
        missing = [c for c in ("ra_deg", "dec_deg") if c not in names]
        if missing:
            raise BadReferenceCatalog(f"{path}: missing column(s) {', '.join(missing)} (see the README)")
        mags = {
            key: np.asarray(table[name], dtype=float) for key, name in names.items() if key not in ("ra_deg", "dec_deg")
        }
        if not mags:
            raise BadReferenceCatalog(f"{path}: no magnitude column (one per filter, e.g. r)")
        ra, dec = np.asarray(table[names["ra_deg"]], dtype=float), np.asarray(table[names["dec_deg"]], dtype=float)
        good = np.isfinite(ra) & np.isfinite(dec)
        return cls(ra[good], dec[good], {k: v[good] for k, v in mags.items()}, str(path))

    def magnitudes(self, filter: str) -> np.ndarray:
        """The column of ``filter`` (clear falls back on r); ScienceFailed when there is none."""
        for name in (filter.lower(), "r" if filter.lower() in ("clear", "") else None):
            if name and name in self.mags:
                return self.mags[name]
        raise ScienceFailed(f"the reference catalog has no magnitudes for filter {filter!r}")


@dataclass(frozen=True)
class ScienceResult:
    magzp: float
    magzp_err: float
    zero_point_stars: int
    fwhm_px: float
    limmag: float
    sky_level: float
    astrometry_rms_arcsec: float
    astrometry_stars: int
    sources: int
    catalog_path: Path
    frame_sha256: str  # the rewritten frame's
    catalog_sha256: str
    psf_beta: float = math.nan

    @classmethod
    def from_frame(cls, path: Path) -> ScienceResult | None:
        """What an earlier science step wrote into a frame's header (None: it has not been made ready)."""
        header = fits.getheader(path)
        catalog = catalog_path_of(path)
        if "MAGZP" not in header or not catalog.exists():
            return None
        with fits.open(catalog) as hdus:
            sources = len(hdus[1].data)
        return cls(
            float(header["MAGZP"]),
            float(header["MAGZPERR"]),
            int(header.get("MAGZPN", 0)),
            float(header["FWHM"]),
            float(header["LIMMAG"]),
            float(header["SKYLEV"]),
            float(header["ASTRRMS"]),
            int(header["ASTRNSTR"]),
            sources,
            catalog,
            sha256_of(path),
            sha256_of(catalog),
            float(header.get("PSFBETA", math.nan)),
        )

    def proto_fields(self) -> dict[str, object]:
        """As the proto's FrameScience message: the fields of the same names."""
        return {
            field.name: str(value) if isinstance(value := getattr(self, field.name), Path) else value
            for field in pb.FrameScience.DESCRIPTOR.fields
        }


@dataclass
class _Sources:
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    peak: np.ndarray
    a: np.ndarray
    b: np.ndarray
    flags: np.ndarray

    def take(self, keep: np.ndarray) -> _Sources:
        return _Sources(*(getattr(self, f)[keep] for f in ("x", "y", "flux", "peak", "a", "b", "flags")))


class MeasuresFrames(Protocol):
    """What makes a frame science-ready: the step itself, or the step on the compute engine."""

    def run(self, path: Path) -> ScienceResult: ...


class ScienceStep:
    """Makes calibrated science frames science-ready against one reference catalog."""

    def __init__(self, settings: ScienceConfig, catalog: ReferenceCatalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self._scale = 1.0  # arcsec per pixel of the frame being solved

    def run(self, path: Path) -> ScienceResult:
        """Measures the frame, rewrites it atomically with the new header and writes its catalog."""
        import sep

        with fits.open(path, memmap=True) as hdus:
            header = hdus[0].header.copy()
            data = np.array(hdus[0].data, dtype=np.float32)
            mask = np.array(hdus["MASK"].data, dtype=np.uint8) if "MASK" in hdus else np.zeros(data.shape, np.uint8)
        self.catalog.magnitudes(str(header.get("FILTER", "")))  # a catalog without the frame's filter: say so first
        unusable = ~np.isfinite(data) | ((mask & MASK_UNUSABLE) != 0)
        if unusable.all():
            raise ScienceFailed("no usable pixel (all masked or not finite)")
        data[~np.isfinite(data)] = 0.0
        first_wcs = _celestial_wcs(header)
        background = sep.Background(data, mask=unusable)
        background.subfrom(data)
        rms = float(background.globalrms)
        sep.set_extract_pixstack(max(300_000, data.size // 20))
        sep.set_sub_object_limit(4096)
        try:
            found = sep.extract(
                data, self.settings.detection_sigma, err=rms, mask=unusable, minarea=5, deblend_cont=0.005
            )
        except Exception as exc:  # sep raises plain Exceptions ("internal pixel buffer full", …)
            raise ScienceFailed(f"source extraction failed: {exc}") from None
        sources = _Sources(found["x"], found["y"], found["flux"], found["peak"], found["a"], found["b"], found["flag"])
        saturation = float(header.get("SATURATE", np.inf))
        gain = float(header.get("GAIN", 1.0)) if not header.get("GAINCORR", False) else 1.0
        stars = self._point_sources(sources, data, unusable, saturation - float(background.globalback))
        if len(stars.x) < self.settings.min_matches:
            raise ScienceFailed(
                f"{len(stars.x)} point sources detected, {self.settings.min_matches} needed "
                "(clouds, a closed dome or an empty field?)"
            )
        half_light = float(np.median(2.0 * sep.flux_radius(data, stars.x, stars.y, 6.0 * stars.a, 0.5, subpix=5)[0]))
        stars.x, stars.y, _ = sep.winpos(data, stars.x, stars.y, max(half_light, 1.0) / 2.3548)
        profile = self._profile(data, rms, gain, stars, half_light)
        fwhm = profile.fwhm
        wcs, matched_sources, matched_refs, rms_arcsec = self._astrometry(first_wcs, stars, data.shape)
        growth = CurveOfGrowth.measure(
            data, stars.x, stars.y, profile, (1.0, APERTURE_FWHMS), GROWTH_FWHMS, BACKGROUND_ANNULUS
        )
        magzp, magzp_err, zp_stars = self._zero_point(
            data, rms, gain, stars.take(matched_sources), matched_refs, growth, str(header.get("FILTER", ""))
        )
        # A PSF fit's flux error on the sky's noise: sigma / sqrt(sum P²) (P the PSF normalised to all its light).
        pixels = profile.pixels((65, 65), 32, 32)
        limmag = magzp - 2.5 * math.log10(5.0 * rms / math.sqrt(float(np.sum(pixels**2))))
        aperture_noise = rms * math.sqrt(math.pi) * fwhm * growth.at(1.0, np.array([data.shape[1] / 2]),
                                                                     np.array([data.shape[0] / 2]))[0]  # fmt: skip
        limmag_aperture = magzp - 2.5 * math.log10(5.0 * aperture_noise)
        catalog_path = catalog_path_of(path)
        count, catalog_sha = self._write_catalog(
            catalog_path, data, rms, gain, mask, sources, wcs, fwhm, magzp, header, growth
        )
        for keyword in WCS_KEYWORDS:
            header.remove(keyword, ignore_missing=True, remove_all=True)
        for keyword in [k for k in header if k[:2] in ("A_", "B_") or k[:3] in ("AP_", "BP_")]:
            header.remove(keyword, ignore_missing=True, remove_all=True)
        header.update(wcs.to_header(relax=True))
        header["WCSSRC"] = ("fit", "WCS fitted to the reference catalog")
        header["ASTRRMS"] = (round(rms_arcsec, 4), "[arcsec] rms of the astrometric fit")
        header["ASTRNSTR"] = (len(matched_sources), "stars the WCS was fitted to")
        header["MAGZP"] = (round(magzp, 4), "AB mag of 1 ADU in total")
        header["MAGZPERR"] = (round(magzp_err, 4), "[mag] error of MAGZP")
        header["MAGZPN"] = (zp_stars, "stars the zero point was measured on")
        header["FWHM"] = (round(fwhm, 3), "[pixel] FWHM of a Moffat fitted to the stars")
        header["PSFBETA"] = (round(profile.beta, 3), "Moffat beta of the stars")
        header["PSFELL"] = (round(profile.ellipticity, 3), "1 - b/a of the stars")
        header["LIMMAG"] = (round(limmag, 3), "5-sigma point source, PSF fit")
        header["LIMMAGAP"] = (round(limmag_aperture, 3), "5-sigma point source, aperture radius FWHM")
        header["SKYLEV"] = (round(float(background.globalback), 3), "[ADU] sky level")
        header["REFCAT"] = (Path(self.catalog.source).name[:60], "reference catalog")
        header["SRCCAT"] = (catalog_path.name[:60], "source catalog beside this frame")
        frame_sha = _rewrite_header(path, header)
        return ScienceResult(
            magzp,
            magzp_err,
            zp_stars,
            fwhm,
            limmag,
            float(background.globalback),
            rms_arcsec,
            len(matched_sources),
            count,
            catalog_path,
            frame_sha,
            catalog_sha,
            profile.beta,
        )

    def _profile(self, data: np.ndarray, rms: float, gain: float, stars: _Sources, half_light: float) -> Moffat:
        """The stars' Moffat: the median of fits to the brightest isolated stars (their FWHM, β, axis ratio)."""
        xy = np.column_stack([stars.x, stars.y])
        neighbours = cKDTree(xy).query(xy, k=2)[0][:, 1] if len(xy) > 1 else np.full(len(xy), np.inf)
        guess = max(half_light / 1.2, 1.0)  # a Moffat's half-light diameter is about 1.2 FWHM
        isolated = np.flatnonzero(neighbours > 4.0 * guess)
        fitted = []
        for index in isolated[np.argsort(-stars.flux[isolated])][: 2 * MOFFAT_STARS]:
            fit = fit_moffat(data, float(stars.x[index]), float(stars.y[index]), guess, rms, gain)
            if fit is not None and fit.moffat.fwhm_minor >= 1.0 and fit.flux > 50.0 * rms:
                fitted.append(fit.moffat)
            if len(fitted) == MOFFAT_STARS:
                break
        if not fitted:
            raise ScienceFailed("no star could be fitted for the PSF (all blended, saturated or too faint)")
        fwhm = float(np.median([m.fwhm for m in fitted]))
        ellipticity = float(np.median([m.ellipticity for m in fitted]))
        beta = float(np.clip(np.median([m.beta for m in fitted]), *BETA_RANGE))
        stretch = 1.0 / math.sqrt(1.0 - min(ellipticity, 0.9))
        return Moffat(fwhm * stretch, fwhm / stretch, 0.0, beta)

    def _point_sources(self, sources: _Sources, data: np.ndarray, unusable: np.ndarray, saturation: float) -> _Sources:
        """Unflagged, unsaturated, round sources away from the edges: the stars to match and calibrate with."""
        height, width = data.shape
        elongation = sources.a / np.maximum(sources.b, 1e-3)
        edge = 10
        keep = (
            (sources.flags == 0)
            & (sources.peak < 0.8 * saturation)
            & (elongation < 1.6)
            & (sources.x > edge)
            & (sources.x < width - edge)
            & (sources.y > edge)
            & (sources.y < height - edge)
        )
        if keep.sum() >= 5:  # as wide as the stars: cosmic rays and hot pixels are narrower
            keep &= sources.a >= 0.5 * float(np.median(sources.a[keep]))
        return sources.take(np.flatnonzero(keep))

    def _astrometry(
        self, first: WCS, stars: _Sources, shape: tuple[int, int]
    ) -> tuple[WCS, np.ndarray, np.ndarray, float]:
        """(fitted WCS, indexes of the matched stars, indexes of their reference stars, rms in arcsec)."""
        import astroalign

        height, width = shape
        scale = self._scale = float(np.mean(proj_plane_pixel_scales(first))) * 3600.0
        centre = first.pixel_to_world_values((width - 1) / 2.0, (height - 1) / 2.0)
        radius = math.hypot(width, height) / 2.0 * scale / 3600.0 * 1.3 + self.settings.search_margin_arcmin / 60.0
        near = np.flatnonzero(
            separation_deg(self.catalog.ra, self.catalog.dec, float(centre[0]), float(centre[1])) <= radius
        )
        if len(near) < self.settings.min_matches:
            raise ScienceFailed(
                f"{len(near)} reference stars within {radius * 60:.0f} arcmin of the header's pointing, "
                f"{self.settings.min_matches} needed (is the reference catalog for this field?)"
            )
        ref_x, ref_y = first.world_to_pixel_values(self.catalog.ra[near], self.catalog.dec[near])
        order = np.argsort(-stars.flux)[: self.settings.sources_for_matching]
        inside = (ref_x > -0.1 * width) & (ref_x < 1.1 * width) & (ref_y > -0.1 * height) & (ref_y < 1.1 * height)
        in_field = near[inside]
        mags = self.catalog.mags.get("r", next(iter(self.catalog.mags.values())))
        by_brightness = in_field[np.argsort(mags[in_field])]
        detected = np.column_stack([stars.x[order], stars.y[order]])
        failure = ""
        # As many reference stars as detections and then some (the faintest are not detected): tried with more
        # when the asterisms do not match.
        for ratio in (1.5, 2.5, 4.0):
            brightest = by_brightness[: max(int(ratio * len(order)), 12)]
            reference = np.column_stack(
                first.world_to_pixel_values(self.catalog.ra[brightest], self.catalog.dec[brightest])
            )
            try:
                transform, _ = astroalign.find_transform(detected, reference, max_control_points=50)
                break
            except (astroalign.MaxIterError, ValueError, TypeError) as exc:
                failure = str(exc)
        else:
            raise ScienceFailed(
                f"no match between the {len(order)} brightest sources and the reference stars around the "
                f"header's pointing ({failure}): is the pointing far off?"
            )
        # All stars through the transform, matched to their nearest reference star within 3 pixels.
        moved = transform(np.column_stack([stars.x, stars.y]))
        tree = cKDTree(np.column_stack([ref_x, ref_y]))
        distance, nearest = tree.query(moved, distance_upper_bound=3.0)
        matched = np.flatnonzero(np.isfinite(distance))
        refs = near[nearest[matched]]
        wcs = first
        radius_px = self.settings.match_radius_arcsec / scale
        for _ in range(3):
            if len(matched) < self.settings.min_matches:
                raise ScienceFailed(f"{len(matched)} stars matched, {self.settings.min_matches} needed")
            wcs = self._fit(stars, matched, refs, shape)
            predicted_x, predicted_y = wcs.world_to_pixel_values(self.catalog.ra[near], self.catalog.dec[near])
            tree = cKDTree(np.column_stack([predicted_x, predicted_y]))
            distance, nearest = tree.query(np.column_stack([stars.x, stars.y]), distance_upper_bound=radius_px)
            matched = np.flatnonzero(np.isfinite(distance))
            refs = near[nearest[matched]]
            residual = self._residuals(wcs, stars, matched, refs)
            _, median, spread = sigma_clipped_stats(residual, sigma=3.0)
            good = residual <= median + 3.0 * max(spread, 1e-3)
            matched, refs = matched[good], refs[good]
        if len(matched) < self.settings.min_matches:
            raise ScienceFailed(f"{len(matched)} stars matched, {self.settings.min_matches} needed")
        # The final fit on the best-measured stars: faint ones' centroids add noise (and blends, bias).
        keep = max(self.settings.min_matches, int(len(matched) * FIT_BRIGHTEST_FRACTION))
        brightest = np.argsort(-stars.flux[matched])[:keep]
        matched, refs = matched[brightest], refs[brightest]
        wcs = self._fit(stars, matched, refs, shape, final=True)
        residual = self._residuals(wcs, stars, matched, refs)
        return wcs, matched, refs, float(np.sqrt(np.mean(residual**2)))

    def _fit(
        self, stars: _Sources, matched: np.ndarray, refs: np.ndarray, shape: tuple[int, int], final: bool = False
    ) -> WCS:
        """TAN; for the final fit of a wide field also TAN+SIP, kept only when the distortion terms earn their keep (the rms
        falls by ``SIP_GAIN``): on an undistorted field they would only add noise."""
        height, width = shape
        world = SkyCoord(self.catalog.ra[refs] * u.deg, self.catalog.dec[refs] * u.deg, frame="icrs")
        points = (stars.x[matched], stars.y[matched])
        wcs = fit_wcs_from_points(points, world, proj_point="center", projection="TAN")
        wcs.pixel_shape = (width, height)
        span = float(np.ptp(stars.x[matched]) + np.ptp(stars.y[matched])) / 2.0 * self._scale / 60.0  # arcmin
        if final and span >= self.settings.sip_above_arcmin and len(matched) >= 4 * self.settings.min_matches:
            distorted = fit_wcs_from_points(
                points, world, proj_point="center", projection="TAN", sip_degree=self.settings.sip_degree
            )
            distorted.pixel_shape = (width, height)
            plain_rms = np.sqrt(np.mean(self._residuals(wcs, stars, matched, refs) ** 2))
            sip_rms = np.sqrt(np.mean(self._residuals(distorted, stars, matched, refs) ** 2))
            if sip_rms < SIP_GAIN * plain_rms:
                return distorted
        return wcs

    def _residuals(self, wcs: WCS, stars: _Sources, matched: np.ndarray, refs: np.ndarray) -> np.ndarray:
        ra, dec = wcs.pixel_to_world_values(stars.x[matched], stars.y[matched])
        return separation_deg(ra, dec, self.catalog.ra[refs], self.catalog.dec[refs]) * 3600.0

    def _zero_point(
        self,
        data: np.ndarray,
        rms: float,
        gain: float,
        stars: _Sources,
        refs: np.ndarray,
        growth: CurveOfGrowth,
        filter: str,
    ) -> tuple[float, float, int]:
        import sep

        catalog_mags = self.catalog.magnitudes(filter)[refs]
        fwhm = growth.fwhm
        flux, flux_err, flags = sep.sum_circle(
            data,
            stars.x,
            stars.y,
            APERTURE_FWHMS * fwhm,
            err=rms,
            gain=gain if gain > 0 else None,
            subpix=5,
            bkgann=(BACKGROUND_ANNULUS[0] * fwhm, BACKGROUND_ANNULUS[1] * fwhm),
        )
        flux = flux * growth.at(APERTURE_FWHMS, stars.x, stars.y)
        usable = (flux > 0) & (flags == 0) & np.isfinite(catalog_mags) & (flux > ZERO_POINT_MIN_SNR * flux_err)
        if usable.sum() < ZERO_POINT_MIN_STARS:
            raise ScienceFailed(
                f"{int(usable.sum())} stars bright enough for the zero point (S/N > {ZERO_POINT_MIN_SNR:g}), "
                f"{ZERO_POINT_MIN_STARS} needed"
            )
        points = catalog_mags[usable] + 2.5 * np.log10(flux[usable])
        clipped = sigma_clipped_stats(points, sigma=3.0)
        kept = np.abs(points - clipped[1]) <= 3.0 * max(clipped[2], 1e-3)
        mean = float(np.mean(points[kept]))
        error = float(np.std(points[kept], ddof=1) / math.sqrt(kept.sum())) if kept.sum() > 1 else math.nan
        return mean, error, int(kept.sum())

    def _write_catalog(
        self,
        path: Path,
        data: np.ndarray,
        rms: float,
        gain: float,
        mask: np.ndarray,
        sources: _Sources,
        wcs: WCS,
        fwhm: float,
        magzp: float,
        header: fits.Header,
        growth: CurveOfGrowth,
    ) -> tuple[int, str]:
        import sep

        radius = fwhm
        flux, flux_err, _ = sep.sum_circle(
            data,
            sources.x,
            sources.y,
            radius,
            err=rms,
            gain=gain if gain > 0 else None,
            subpix=5,
            bkgann=(BACKGROUND_ANNULUS[0] * radius, BACKGROUND_ANNULUS[1] * radius),
        )
        correction = growth.at(radius / growth.fwhm, sources.x, sources.y)
        flux, flux_err = flux * correction, flux_err * correction
        ra, dec = wcs.pixel_to_world_values(sources.x, sources.y)
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = np.where(flux > 0, magzp - 2.5 * np.log10(flux), np.nan)
            mag_err = np.where(flux > 0, 1.0857 * flux_err / flux, np.nan)
            snr = flux / flux_err
        sizes = np.clip(2.0 * sep.flux_radius(data, sources.x, sources.y, 6.0 * sources.a, 0.5, subpix=5)[0], 0, None)
        rows = np.clip(np.rint(sources.y).astype(int), 0, data.shape[0] - 1)
        cols = np.clip(np.rint(sources.x).astype(int), 0, data.shape[1] - 1)
        bits = np.zeros(len(rows), np.uint8)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                bits |= mask[np.clip(rows + dy, 0, data.shape[0] - 1), np.clip(cols + dx, 0, data.shape[1] - 1)]
        keep = np.isfinite(snr) & (snr >= self.settings.catalog_min_snr)
        table = Table(
            {
                "x": sources.x,
                "y": sources.y,
                "ra_deg": ra,
                "dec_deg": dec,
                "flux": flux,
                "flux_err": flux_err,
                "mag": mag,
                "mag_err": mag_err,
                "snr": snr,
                "fwhm_px": sizes,
                "ellipticity": 1.0 - sources.b / np.maximum(sources.a, 1e-6),
                "flags": sources.flags.astype(np.int16),
                "mask": bits,
            }
        )[keep]
        hdu = fits.BinTableHDU(table, name="SOURCES")
        hdu.header["MAGZP"] = (round(magzp, 4), "AB mag of 1 ADU in total")
        hdu.header["FRAME"] = (header.get("RAWFILE", ""), "raw frame")
        for keyword in ("FILTER", "DATE-OBS", "EXPTIME", "NIGHT", "OBJECT"):
            if keyword in header:
                hdu.header[keyword] = header[keyword]
        hdu.header["COLUMNS"] = CATALOG_COLUMNS[:68]
        sha = write_fits(path, [fits.PrimaryHDU(), hdu])
        return len(table), sha


def _celestial_wcs(header: fits.Header) -> WCS:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2)
        except Exception as exc:  # astropy raises many kinds for a broken WCS
            raise ScienceFailed(f"the header's WCS cannot be read: {exc}") from None
    if not wcs.has_celestial:
        raise ScienceFailed("no WCS in the header (the raw frame carried no pointing)")
    return wcs.celestial


def _rewrite_header(path: Path, header: fits.Header) -> str:
    """The frame again, atomically, with ``header``; returns its sha256."""
    with fits.open(path, memmap=True) as hdus:
        others = [hdu.copy() for hdu in hdus[1:]]
        return write_fits(path, [fits.PrimaryHDU(hdus[0].data, header), *others])
