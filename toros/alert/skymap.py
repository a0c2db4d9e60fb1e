"""Gravitational-wave sky maps as one multi-order (NUNIQ) representation.

Reads multi-order maps (UNIQ, PROBDENSITY, DISTMU, DISTSIGMA, DISTNORM) and flat HEALPix maps (PROB and the
distance columns, NESTED or RING ordering), plain or gzipped. Pixel arithmetic is astropy-healpix's.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy_healpix import (
    HEALPix,
    healpix_to_lonlat,
    level_to_nside,
    nside_to_pixel_area,
    uniq_to_level_ipix,
)

from toros.alert.settings import SkymapDownload
from toros.floor.catalogs import ORDER
from toros.runtime.files import GZIP_MAGIC, TooLarge, gunzip_chunks

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
        level, ipix = uniq_to_level_ipix(self.uniq)
        return np.asarray(level), np.asarray(ipix)

    @functools.cached_property
    def starts_order29(self) -> tuple[np.ndarray, np.ndarray]:
        """(the pixels sorted by where they start on the order-29 nested grid, those starts): kept, so that
        looking places up in the map sorts it once."""
        level, ipix = self.level_ipix
        starts = ipix.astype(np.int64) << (2 * (ORDER - level.astype(np.int64)))
        order = np.argsort(starts)
        return order, starts[order]

    def pixel_area(self) -> np.ndarray:
        """Area of each pixel in steradians."""
        level, _ = self.level_ipix
        return np.asarray(nside_to_pixel_area(level_to_nside(level)).to_value(u.sr))

    def probability(self) -> np.ndarray:
        return np.asarray(self.probdensity * self.pixel_area())

    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """The pixels from the densest down, and the probability held by each and the denser ones (0..1)."""
        order = np.argsort(self.probdensity)[::-1]
        cumulative = np.cumsum(self.probability()[order])
        cumulative /= cumulative[-1]
        return order, cumulative

    def credible_region(self, level: float) -> np.ndarray:
        """Which pixels belong to the smallest region holding ``level`` of the probability."""
        order, cumulative = self._cumulative()
        inside = np.zeros(len(self.uniq), dtype=bool)
        inside[order[: int(np.searchsorted(cumulative, level)) + 1]] = True
        return inside

    def credible_levels(self) -> np.ndarray:
        """Each pixel's credible level: the probability of the denser pixels, itself included (0..1)."""
        order, cumulative = self._cumulative()
        levels = np.empty(len(order))
        levels[order] = cumulative
        return levels

    def most_probable(self) -> tuple[float, float]:
        """RA and Dec (degrees) of the pixel of highest probability density."""
        level, ipix = self.level_ipix
        best = int(np.argmax(self.probdensity))
        lon, lat = healpix_to_lonlat(ipix[best], level_to_nside(level[best]), order="nested")
        return float(lon.to_value(u.deg)), float(lat.to_value(u.deg))


def read_skymap(data: bytes | bytearray, max_bytes: int = SkymapDownload().max_bytes) -> SkyMap:
    """A sky map from the bytes of a FITS file (gzipped or not, at most ``max_bytes`` once decompressed)."""
    if data[:2] == GZIP_MAGIC:
        unzipped = bytearray()  # grown in place: the peak is the map's size, not twice it
        try:
            for chunk in gunzip_chunks(io.BytesIO(data), max_bytes):
                unzipped += chunk
        except TooLarge as exc:
            raise BadSkymap(f"gzipped sky map of {exc} (alert.skymap.max_bytes)") from None
        except (OSError, EOFError) as exc:
            raise BadSkymap(f"corrupt gzip data: {exc}") from None
        data = unzipped
    if len(data) > max_bytes:
        raise BadSkymap(f"sky map of {len(data)} bytes is more than alert.skymap.max_bytes ({max_bytes})")
    try:
        with fits.open(io.BytesIO(data), memmap=False) as hdul:
            table_hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
            if table_hdu is None:
                raise BadSkymap("no binary table HDU: not a HEALPix sky map")
            columns = {name.upper(): name for name in table_hdu.columns.names}
            table = table_hdu.data
            header = table_hdu.header
            meta = {
                key: header[key] for key in ("OBJECT", "DISTMEAN", "DISTSTD", "DATE-OBS", "INSTRUME") if key in header
            }
            if "UNIQ" in columns:
                return _multi_order(table, columns, meta)
            if "PROB" in columns or "PROBABILITY" in columns:
                return _flat(table, columns, header, meta)
            raise BadSkymap(f"neither UNIQ nor PROB columns (found {', '.join(columns)})")
    except BadSkymap:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise BadSkymap(f"unreadable FITS: {exc}") from None


def _column(table: fits.FITS_rec, columns: dict[str, str], name: str) -> np.ndarray:
    return np.asarray(table[columns[name]], dtype=np.float64).ravel()


def _distance(table: fits.FITS_rec, columns: dict[str, str]) -> dict[str, np.ndarray]:
    """The distance columns as SkyMap's keyword arguments, when the map has all three (else none)."""
    if not all(name in columns for name in DISTANCE_COLUMNS):
        return {}
    return {name.lower(): _column(table, columns, name) for name in DISTANCE_COLUMNS}


def _multi_order(table: fits.FITS_rec, columns: dict[str, str], meta: dict[str, Any]) -> SkyMap:
    if "PROBDENSITY" not in columns:
        raise BadSkymap("multi-order map without a PROBDENSITY column")
    return SkyMap(
        np.asarray(table[columns["UNIQ"]], dtype=np.int64),
        _column(table, columns, "PROBDENSITY"),
        **_distance(table, columns),
        meta=meta,
    )


def _flat(table: fits.FITS_rec, columns: dict[str, str], header: fits.Header, meta: dict[str, Any]) -> SkyMap:
    prob = _column(table, columns, "PROB" if "PROB" in columns else "PROBABILITY")
    npix = len(prob)
    nside = int(header.get("NSIDE") or np.sqrt(npix / 12))
    if 12 * nside * nside != npix:
        raise BadSkymap(f"{npix} pixels is not a full HEALPix map of NSIDE {nside}")
    ordering = str(header.get("ORDERING", "NESTED")).upper()
    if ordering not in ("NESTED", "RING"):
        raise BadSkymap(f"unknown ORDERING {ordering!r}")
    nested = (
        np.arange(npix) if ordering == "NESTED" else HEALPix(nside=nside, order="ring").ring_to_nested(np.arange(npix))
    )
    level = int(np.log2(nside))
    uniq = 4 * nside * nside + nested.astype(np.int64)
    area = nside_to_pixel_area(nside).to_value(u.sr)
    skymap = SkyMap(uniq, prob / area, **_distance(table, columns), meta=meta)
    skymap.meta["flat_order"] = level
    return skymap


MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Refused(Exception):
    """A download that trying again would not change: a URL or a server the policy refuses, a map too big."""


def download(url: str, settings: SkymapDownload, wait: Callable[[float], None]) -> bytearray:
    """The bytes at ``url``, within the limits of ``settings`` (alert.skymap): https only (http when allowed),
    no server on a private, loopback or link-local address (unless allowed), at most ``max_bytes``, all attempts within
    ``deadline_s``. A URL that matches a configured mirror rewrite is the operator's own and may be any http(s)
    server. Failures that may pass are retried with backoff; ``wait(seconds)`` sleeps between tries (and may
    raise to abandon them)."""
    trusted = ""
    for prefix, replacement in settings.rewrite.items():
        if url.startswith(prefix):
            url = trusted = replacement + url[len(prefix) :]
            break
    deadline = time.monotonic() + settings.deadline_s
    delay = 1.0
    for attempt in range(settings.retries + 1):
        try:
            return _fetch(url, settings, deadline, trusted=bool(trusted))
        except _Refused as exc:
            raise BadSkymap(f"cannot download {url}: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            failure = exc
        if attempt == settings.retries or time.monotonic() + delay >= deadline:
            break
        wait(delay)
        delay *= 2
    if time.monotonic() >= deadline:
        raise BadSkymap(f"cannot download {url}: not done within alert.skymap.deadline_s ({settings.deadline_s:g} s)")
    raise BadSkymap(f"cannot download {url}: {failure}")


def _fetch(url: str, settings: SkymapDownload, deadline: float, *, trusted: bool) -> bytearray:
    """One attempt, redirects followed (each target checked as a notice's URL would be)."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        allowed = ("https", "http") if trusted or settings.allow_http else ("https",)
        if parts.scheme not in allowed:
            raise _Refused(
                f"the {parts.scheme or 'missing'} scheme is not allowed (only {' and '.join(allowed)}"
                + ("" if "http" in allowed else "; alert.skymap.allow_http allows http")
                + ")"
            )
        try:
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise _Refused(f"bad URL: {exc}") from None
        if not host:
            raise _Refused("the URL names no host")
        local = not (trusted or settings.allow_local_hosts)
        if local and (address := _local_address(host, port or 443)):
            raise _Refused(
                f"{host} is a private, loopback or link-local address ({address}); alert.skymap.allow_local_hosts allows it"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline reached")
        timeout = min(settings.timeout_s, remaining)
        connection = (
            http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
            if parts.scheme == "https"
            else http.client.HTTPConnection(host, port, timeout=timeout)
        )
        # The deadline holds however slowly the server sends (a TLS handshake, headers or the body): when it
        # passes, the connection's socket is shut down and the blocked read returns.
        cut = threading.Timer(remaining, _shut, (connection,))
        cut.start()
        try:
            connection.connect()
            # The address actually connected to is checked again, so a name that resolves differently the
            # second time (DNS rebinding) gains nothing.
            peer = ipaddress.ip_address(connection.sock.getpeername()[0].split("%")[0])
            if local and _local(peer):
                raise _Refused(
                    f"{host} is a private, loopback or link-local address ({peer}); alert.skymap.allow_local_hosts allows it"
                )
            connection.request(
                "GET",
                urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")),
                headers={"User-Agent": "toros", "Accept-Encoding": "identity"},
            )
            response = connection.getresponse()
            if response.status in REDIRECTS and response.getheader("Location"):
                url = urllib.parse.urljoin(url, response.getheader("Location"))
                trusted = trusted and urllib.parse.urlsplit(url).netloc == parts.netloc
                continue
            if response.status != 200:
                problem = f"HTTP {response.status} {response.reason}"
                if 400 <= response.status < 500 and response.status != 429:
                    raise _Refused(problem)
                raise http.client.HTTPException(problem)
            return _body(response, settings.max_bytes, deadline)
        finally:
            cut.cancel()
            connection.close()
    raise _Refused(f"more than {MAX_REDIRECTS} redirects")


def _body(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytearray:
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _Refused(f"{declared} bytes is more than alert.skymap.max_bytes ({max_bytes})")
    body = bytearray()
    while chunk := response.read(1 << 16):
        body += chunk
        if len(body) > max_bytes:
            raise _Refused(f"more than alert.skymap.max_bytes ({max_bytes}) bytes")
    if time.monotonic() >= deadline:
        raise TimeoutError("deadline reached while reading")
    if declared.isdigit() and len(body) != int(declared):
        raise http.client.IncompleteRead(bytes(body[-16:]), int(declared) - len(body))
    return body


def _local_address(host: str, port: int) -> str:
    """The first address of this site's networks (private, loopback, link-local…) the host name resolves to
    ("" when none does)."""
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if _local(ipaddress.ip_address(str(sockaddr[0]).split("%")[0])):
            return str(sockaddr[0])
    return ""


def _local(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Not a public internet address: loopback, link-local (cloud metadata), RFC 1918 and ULA private networks,
    carrier-grade NAT, reserved and documentation ranges, multicast. A notice from the network must not make the
    alert daemon reach into the site's own networks."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def _shut(connection: http.client.HTTPConnection) -> None:
    if connection.sock is not None:
        with contextlib.suppress(OSError):
            connection.sock.shutdown(socket.SHUT_RDWR)
