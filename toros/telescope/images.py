"""Raw images as FITS files with the TOROS header contract, stored atomically under the night's folder.

The header is what the preprocessor and archives rely on: IMAGETYP, DATE-OBS (UTC, ISO), EXPTIME, FILTER,
OBJECT, RA, DEC, AIRMASS, ALTITUDE, TELESCOP, INSTRUME, OBSERVAT, SITELAT, SITELONG, SITEELEV, CCD-TEMP,
GAIN, RDNOISE, BIASSEC/TRIMSEC when the frame has an overscan, and the work order id. Files go to
``storage.root/<night>/`` with names that sort by time and never collide (a durable counter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from astropy.io import fits

from toros import __version__
from toros.floor.fitsfiles import write_fits
from toros.floor.site import Site
from toros.floor.sky_geometry import tan_wcs
from toros.generated import toros_pb2 as pb
from toros.runtime.files import path_inside, safe_name

IMAGETYP: dict[int, str] = {
    pb.IMAGE_TYPE_BIAS: "BIAS",
    pb.IMAGE_TYPE_DARK: "DARK",
    pb.IMAGE_TYPE_FLAT: "FLAT",
    pb.IMAGE_TYPE_LIGHT: "LIGHT",
}


@dataclass(frozen=True)
class FollowUp:
    """The alert an image follows up: written into its header (ALERTID, EVENTT) for the preprocessor, whose
    transient search subtracts only references taken before the event."""

    alert_id: str
    event_time: datetime | None = None


@dataclass(frozen=True)
class Exposure:
    """What was exposed: the request and the state of the telescope at the start."""

    image_type: pb.ImageType
    exposure_s: float
    filter: str
    object: str
    date_obs: datetime
    work_order_id: str
    ra_deg: float | None = None
    dec_deg: float | None = None
    altitude_deg: float | None = None
    ccd_temperature: float | None = None
    gain: float | None = None
    read_noise: float | None = None
    drill: bool = False
    flat_source: str = ""
    mount_position: tuple[float, float] | None = None  # (RA, Dec) the mount reported at the start: the WCS centre
    pixel_scale_arcsec: float | None = None
    follow_up: FollowUp | None = None
    aborted: bool = False  # stopped early for an alert's target: EXPTIME is the true one, stored under aborted/
    binning: int = 1
    device_cards: tuple[fits.Card, ...] = ()  # the camera's own header (INDI), kept beside the contract


@dataclass(frozen=True)
class StoredImage:
    path: Path
    sha256: str
    size_bytes: int
    night: str


def header_for(
    exposure: Exposure, site: Site, telescope: str, instrument: str, shape: tuple[int, int], overscan: int
) -> fits.Header:
    header = fits.Header()
    header["IMAGETYP"] = IMAGETYP[exposure.image_type]
    header["DATE-OBS"] = (exposure.date_obs.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], "UTC start of the exposure")
    header["EXPTIME"] = (float(exposure.exposure_s), "[s] exposure time")
    header["FILTER"] = exposure.filter
    header["OBJECT"] = exposure.object
    if exposure.ra_deg is not None and exposure.dec_deg is not None:
        header["RA"] = (round(exposure.ra_deg, 6), "[deg] ICRS pointing")
        header["DEC"] = (round(exposure.dec_deg, 6), "[deg] ICRS pointing")
    if exposure.altitude_deg is not None:
        header["ALTITUDE"] = (round(exposure.altitude_deg, 4), "[deg] at the start")
        if exposure.altitude_deg > 0:
            header["AIRMASS"] = (round(1.0 / np.sin(np.deg2rad(exposure.altitude_deg)), 4), "sec(z) at the start")
    header["TELESCOP"] = telescope
    header["INSTRUME"] = instrument
    header["OBSERVAT"] = site.name
    header["SITELAT"] = (site.latitude, "[deg] geodetic latitude")
    header["SITELONG"] = (site.longitude, "[deg] east longitude")
    header["SITEELEV"] = (site.elevation, "[m] elevation")
    if exposure.ccd_temperature is not None:
        header["CCD-TEMP"] = (round(exposure.ccd_temperature, 2), "[C] CCD temperature")
    if exposure.gain is not None:
        header["GAIN"] = (exposure.gain, "[e-/ADU]")
    if exposure.read_noise is not None:
        header["RDNOISE"] = (exposure.read_noise, "[e-] read noise")
    header["XBINNING"] = exposure.binning
    header["YBINNING"] = exposure.binning
    height, width = shape
    if overscan:
        header["BIASSEC"] = (f"[{width - overscan + 1}:{width},1:{height}]", "overscan region")
        header["TRIMSEC"] = (f"[1:{width - overscan},1:{height}]", "image region")
    if exposure.mount_position is not None and exposure.pixel_scale_arcsec:
        ra, dec = exposure.mount_position
        wcs = tan_wcs(ra, dec, width - overscan, height, exposure.pixel_scale_arcsec * exposure.binning)
        header.update(wcs.to_header())
        header["WCSSRC"] = ("mount", "the reported pointing, not fitted")
    if exposure.flat_source:
        header["FLATSRC"] = (exposure.flat_source, "flat-field light source")
    header["WORKORD"] = (exposure.work_order_id, "TOROS work order")
    header["DRILL"] = (exposure.drill, "taken for a drill or test alert")
    if exposure.follow_up is not None:
        header["ALERTID"] = (exposure.follow_up.alert_id[:68], "the alert (superevent) followed up")
        if exposure.follow_up.event_time is not None:
            header["EVENTT"] = (
                exposure.follow_up.event_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
                "UTC time of the alert's event",
            )
    if exposure.aborted:
        header["ABORTED"] = (True, "stopped early for an alert; true EXPTIME")
    header["SOFTWARE"] = f"toros {__version__}"
    _keep_device_cards(header, exposure.device_cards)
    return header


_WCS_KEYWORD = re.compile(
    r"^(CTYPE|CRVAL|CRPIX|CDELT|CROTA|CUNIT|CD\d_|PC\d_|PV\d_|[AB]P?_|LONPOLE|LATPOLE|RADESYS|EQUINOX|WCSAXES)"
)


def _keep_device_cards(header: fits.Header, cards: tuple[fits.Card, ...]) -> None:
    """Adds the camera's own keywords. The contract wins where both have a keyword with different values (or
    the keyword describes the WCS, which is the contract's): the camera's card is then kept as
    ``HIERARCH CAMERA <keyword>``, so neither is lost."""
    for card in cards:
        keyword = card.keyword
        if keyword in ("HISTORY", "COMMENT"):  # commentary: every one is kept, in order
            header.append(fits.Card(keyword, str(card.value)))
        elif keyword in header and header[keyword] == card.value:
            continue
        elif keyword in header or _WCS_KEYWORD.match(keyword):
            bare = fits.Card(f"HIERARCH CAMERA {keyword}", card.value)
            room = fits.Card.length - len(bare.image.rstrip()) - 3  # the comment is shortened to fit the card
            header.append(fits.Card(f"HIERARCH CAMERA {keyword}", card.value, card.comment[: max(room, 0)]))
        else:
            header.append(fits.Card(keyword, card.value, card.comment))


def file_name(exposure: Exposure, number: int) -> str:
    kind = IMAGETYP[exposure.image_type].lower()
    name = safe_name(exposure.object, kind, max_length=40)
    return f"{exposure.date_obs:%Y%m%dT%H%M%S}-{number:06d}-{kind}-{name}.fits"


def store(
    root: Path,
    night: str,
    pixels: np.ndarray,
    exposure: Exposure,
    number: int,
    *,
    site: Site,
    telescope: str,
    instrument: str,
    overscan: int,
) -> StoredImage:
    """Writes the image atomically (no partial file survives a full disk or a crash) and returns where."""
    path = path_inside(root, night, *(("aborted",) if exposure.aborted else ()), file_name(exposure, number))
    header = header_for(exposure, site, telescope, instrument, pixels.shape, overscan)
    hdu = fits.PrimaryHDU(pixels, header)
    sha256 = write_fits(path, [hdu])
    return StoredImage(path, sha256, path.stat().st_size, night)
