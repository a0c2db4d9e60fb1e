"""Gravitational-wave sky maps as one multi-order (NUNIQ) representation.

Reads multi-order maps (UNIQ, PROBDENSITY, DISTMU, DISTSIGMA, DISTNORM) and flat HEALPix maps (PROB and the
distance columns, NESTED or RING ordering), plain or gzipped. Pixel arithmetic is astropy-healpix's.
"""

from __future__ import annotations

import gzip
import io
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy_healpix import HEALPix, healpix_to_lonlat, level_to_nside, nside_to_pixel_area, uniq_to_level_ipix

DISTANCE_COLUMNS = ("DISTMU", "DISTSIGMA", "DISTNORM")


class BadSkymap(ValueError):
    """A sky map that cannot be read, with the reason."""


@dataclass
class SkyMap:
    uniq: np.ndarray
    probdensity: np.ndarray  # per steradian
    distmu: np.ndarray | None = None
    distsigma: np.ndarray | None = None
    distnorm: np.ndarray | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def has_distance(self) -> bool:
        return self.distmu is not None

    @property
    def level_ipix(self) -> tuple[np.ndarray, np.ndarray]:
        return uniq_to_level_ipix(self.uniq)

    def pixel_area(self) -> np.ndarray:
        """Area of each pixel in steradians."""
        level, _ = self.level_ipix
        return nside_to_pixel_area(level_to_nside(level)).to_value(u.sr)

    def probability(self) -> np.ndarray:
        return self.probdensity * self.pixel_area()

    def credible_region(self, level: float) -> np.ndarray:
        """Which pixels belong to the smallest region holding ``level`` of the probability."""
        order = np.argsort(self.probdensity)[::-1]
        cumulative = np.cumsum(self.probability()[order])
        cumulative /= cumulative[-1]
        inside = np.zeros(len(self.uniq), dtype=bool)
        inside[order[: int(np.searchsorted(cumulative, level)) + 1]] = True
        return inside

    def most_probable(self) -> tuple[float, float]:
        """RA and Dec (degrees) of the pixel of highest probability density."""
        level, ipix = self.level_ipix
        best = int(np.argmax(self.probdensity))
        lon, lat = healpix_to_lonlat(ipix[best], level_to_nside(level[best]), order="nested")
        return float(lon.to_value(u.deg)), float(lat.to_value(u.deg))


def read_skymap(data: bytes) -> SkyMap:
    """A sky map from the bytes of a FITS file (gzipped or not)."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise BadSkymap(f"corrupt gzip data: {exc}") from None
    try:
        with fits.open(io.BytesIO(data), memmap=False) as hdul:
            table_hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
            if table_hdu is None:
                raise BadSkymap("no binary table HDU: not a HEALPix sky map")
            columns = {name.upper(): name for name in table_hdu.columns.names}
            table = table_hdu.data
            header = table_hdu.header
            meta = {key: header[key] for key in ("OBJECT", "DISTMEAN", "DISTSTD", "DATE-OBS", "INSTRUME") if key in header}
            if "UNIQ" in columns:
                return _multi_order(table, columns, meta)
            if "PROB" in columns or "PROBABILITY" in columns:
                return _flat(table, columns, header, meta)
            raise BadSkymap(f"neither UNIQ nor PROB columns (found {', '.join(columns)})")
    except BadSkymap:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise BadSkymap(f"unreadable FITS: {exc}") from None


def _column(table: fits.FITS_rec, columns: dict[str, str], name: str) -> np.ndarray | None:
    return np.asarray(table[columns[name]], dtype=np.float64).ravel() if name in columns else None


def _multi_order(table: fits.FITS_rec, columns: dict[str, str], meta: dict) -> SkyMap:
    if "PROBDENSITY" not in columns:
        raise BadSkymap("multi-order map without a PROBDENSITY column")
    distance = [_column(table, columns, name) for name in DISTANCE_COLUMNS]
    return SkyMap(
        np.asarray(table[columns["UNIQ"]], dtype=np.int64), _column(table, columns, "PROBDENSITY"),
        *(distance if all(d is not None for d in distance) else (None, None, None)), meta=meta,
    )


def _flat(table: fits.FITS_rec, columns: dict[str, str], header: fits.Header, meta: dict) -> SkyMap:
    prob = _column(table, columns, "PROB" if "PROB" in columns else "PROBABILITY")
    npix = len(prob)
    nside = int(header.get("NSIDE") or np.sqrt(npix / 12))
    if 12 * nside * nside != npix:
        raise BadSkymap(f"{npix} pixels is not a full HEALPix map of NSIDE {nside}")
    ordering = str(header.get("ORDERING", "NESTED")).upper()
    if ordering not in ("NESTED", "RING"):
        raise BadSkymap(f"unknown ORDERING {ordering!r}")
    nested = np.arange(npix) if ordering == "NESTED" else HEALPix(nside=nside, order="ring").ring_to_nested(np.arange(npix))
    level = int(np.log2(nside))
    uniq = 4 * nside * nside + nested.astype(np.int64)
    area = nside_to_pixel_area(nside).to_value(u.sr)
    distance = [_column(table, columns, name) for name in DISTANCE_COLUMNS]
    skymap = SkyMap(uniq, prob / area, *(distance if all(d is not None for d in distance) else (None, None, None)), meta=meta)
    skymap.meta["flat_order"] = level
    return skymap


def download(url: str, *, timeout_s: float, retries: int, rewrite: dict[str, str], wait) -> bytes:
    """The bytes at ``url`` (after the configured prefix rewrites for offline mirrors), retried with backoff.

    ``wait(seconds)`` sleeps between tries (and may raise to abandon them)."""
    for prefix, replacement in rewrite.items():
        if url.startswith(prefix):
            url = replacement + url[len(prefix):]
            break
    delay = 1.0
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return response.read()
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            if attempt == retries or (isinstance(exc, urllib.error.HTTPError) and 400 <= exc.code < 500 and exc.code != 429):
                raise BadSkymap(f"cannot download {url}: {exc}") from None
        wait(delay)
        delay *= 2
    raise AssertionError("unreachable")
