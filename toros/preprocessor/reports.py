"""What people and brokers read about candidates: per detection a PNG triplet and a JSON record; per alert
event a draft GCN circular, a TNS AT report (JSON, ready to send, never sent) and ZTF-style Avro alert
packets with gzipped FITS cutouts (schema ``toros/data/toros_alert.avsc``). Every file is written atomically.
"""

from __future__ import annotations

import gzip
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from toros import __version__
from toros.floor.pictures import zscaled
from toros.preprocessor.candidates import Candidate, Search
from toros.runtime.files import atomic_write

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "data" / "toros_alert.avsc"
CUTOUT_PIXELS = 63  # as ZTF's


@dataclass(frozen=True)
class Stamps:
    """Cut-outs of the three images around one detection, on the science grid."""

    science: np.ndarray
    reference: np.ndarray
    difference: np.ndarray
    wcs: WCS  # of the stamps
    x: float  # the detection within the stamps
    y: float


def stamps(
    science: np.ndarray, reference: np.ndarray, difference: np.ndarray, wcs: WCS, x: float, y: float, size: int
) -> Stamps:
    """Square cut-outs of ``size`` pixels centred on (x, y); NaN beyond the images' edges."""
    half = size // 2
    ix, iy = int(round(x)), int(round(y))
    cuts = []
    for image in (science, reference, difference):
        cut = np.full((2 * half + 1, 2 * half + 1), np.nan, dtype=np.float32)
        y0, y1 = max(0, iy - half), min(image.shape[0], iy + half + 1)
        x0, x1 = max(0, ix - half), min(image.shape[1], ix + half + 1)
        if y1 > y0 and x1 > x0:
            cut[y0 - (iy - half) : y1 - (iy - half), x0 - (ix - half) : x1 - (ix - half)] = image[y0:y1, x0:x1]
        cuts.append(cut)
    return Stamps(
        cuts[0], cuts[1], cuts[2], wcs[iy - half : iy + half + 1, ix - half : ix + half + 1], x - (ix - half),
        y - (iy - half),
    )  # fmt: skip


def write_triplet(path: Path, cut: Stamps, title: str) -> Path:
    """Science, reference and difference side by side, each on its own ZScale, north up as the pixels lie
    (row 0 at the bottom), the detection circled and the title above; a PNG drawn with Pillow (a few
    milliseconds: a frame with hundreds of candidates does not wait for a plotting library)."""
    from PIL import Image, ImageDraw

    zoom = max(1, 200 // cut.science.shape[0])
    gap, title_height, label_height = 8, 18, 14
    panels = [
        np.kron(zscaled(image), np.ones((zoom, zoom), dtype=np.uint8))
        for image in (cut.science, cut.reference, cut.difference)
    ]
    height, width = panels[0].shape
    canvas = Image.new("RGB", (3 * width + 4 * gap, height + title_height + label_height + 2 * gap), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, 3), title, fill="black")
    radius = max(3.0, cut.science.shape[0] / 12) * zoom
    centre_x, centre_y = (cut.x + 0.5) * zoom, (cut.science.shape[0] - 0.5 - cut.y) * zoom
    for index, (panel, label) in enumerate(zip(panels, ("science", "reference", "difference"), strict=True)):
        left, top = gap + index * (width + gap), title_height + label_height + gap
        draw.text((left, title_height + 2), label, fill="black")
        canvas.paste(Image.fromarray(panel, mode="L").convert("RGB"), (left, top))
        box = (left + centre_x - radius, top + centre_y - radius, left + centre_x + radius, top + centre_y + radius)
        draw.ellipse(box, outline=(232, 89, 12), width=2)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1)
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())
    return path


def write_triplets(jobs: list[tuple[Path, Stamps, str]]) -> list[Path]:
    """``write_triplet`` for each (path, cut-outs, title), on every core (a frame may have hundreds: PNG
    compression and numpy release the GIL)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    if len(jobs) < 2:
        return [write_triplet(*job) for job in jobs]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: write_triplet(*job), jobs))


def write_json(path: Path, record: dict[str, object]) -> Path:
    with atomic_write(path) as stream:
        stream.write((json.dumps(record, indent=2, sort_keys=True, default=str) + "\n").encode())
    return path


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def gcn_circular(
    alert_id: str, event_time: float | None, observed: list[Search], found: list[Candidate], *, site: str,
    drill: bool, min_score: float, min_snr: float,
) -> str:  # fmt: skip
    """A draft circular in the usual style: what was observed, how deep, and the candidates."""
    searched = [s for s in observed if s.reference]
    lines = [
        "TITLE:   GCN CIRCULAR",
        f"SUBJECT: LIGO/Virgo/KAGRA {alert_id}: TOROS optical follow-up"
        + (f" and {len(found)} candidate{'s' if len(found) != 1 else ''}" if found else ", no candidate"),
        "FROM:    TOROS Collaboration",
        "",
    ]
    if drill:
        lines += ["*** DRILL: this event is a test or mock alert; do not send. ***", ""]
    start = min((s.date_obs for s in observed), default=None)
    after = f" ({(start - event_time) / 3600:.2f} h after the event)" if start and event_time else ""
    filters = ", ".join(sorted({s.filter for s in observed})) or "-"
    lines.append(
        f"We observed {len({s.frame.name for s in observed})} fields of candidate host galaxies of the "
        f"gravitational-wave event {alert_id} with the TOROS telescope at {site}, starting {_iso(start) if start else '-'} "
        f"UTC{after}, in {filters}. The images were calibrated, astrometrically and photometrically "
        "calibrated, and subtracted (ZOGY, Zackay, Ofek & Gal-Yam 2016) against reference images taken before the "
        "event; detections were vetted by a real/bogus classifier."
    )
    lines += ["", "Observations (5-sigma limiting magnitudes, AB):", ""]
    lines.append(f"{'Start (UTC)':19s}  {'Filter':6s}  {'Exp (s)':>7s}  {'Limit':>5s}  Field")
    for s in observed:
        limit = f"{s.limmag:5.2f}" if s.limmag is not None else "  -  "
        exposure = f"{s.exposure_s:7.0f}" if s.exposure_s else "      -"
        lines.append(f"{_iso(s.date_obs)}  {s.filter:6s}  {exposure}  {limit}  {s.ra_deg:8.4f} {s.dec_deg:+8.4f}")
    if len(searched) < len(observed):
        lines.append(f"({len(observed) - len(searched)} fields had no reference image yet and were not searched.)")
    lines += [""]
    if found:
        lines += [f"Candidates (real/bogus score >= {min_score:.2f}, S/N >= {min_snr:g}):", ""]
        lines.append(
            f"{'Name':16s} {'RA (J2000)':>11s} {'Dec (J2000)':>11s} {'T-T0 (h)':>8s} {'Mag':>6s} {'Err':>5s} "
            f"{'Filt':4s} {'Host':18s} {'Off(as)':>7s} {'Off(kpc)':>8s} {'Score':>5s}"
        )
        for c in found:
            best = c.best
            since = f"{(best.date_obs - event_time) / 3600:8.2f}" if event_time else "       -"
            mag = f"{best.mag:6.2f}" if best.mag is not None else "     -"
            error = f"{best.mag_err:5.2f}" if best.mag_err is not None else "    -"
            host = c.host.name if c.host else "-"
            offset = f"{c.host.offset_arcsec:7.1f}" if c.host else "      -"
            kpc = f"{c.host.offset_kpc:8.1f}" if c.host and c.host.offset_kpc is not None else "       -"
            lines.append(
                f"{c.name:16s} {c.ra_deg:11.5f} {c.dec_deg:+11.5f} {since} {mag} {error} {best.filter:4s} "
                f"{host[:18]:18s} {offset} {kpc} {best.score:5.2f}"
                + (f"  [{', '.join(sorted(c.flags))}]" if c.flags else "")
            )
    else:
        lines.append("No candidate passed the vetting in the searched fields.")
    lines += [
        "",
        "Magnitudes are PSF fits on the difference images, in the AB system, not corrected for Galactic extinction.",
        f"(Draft written by toros {__version__}; review before sending.)",
    ]
    return "\n".join(lines) + "\n"


def tns_report(found: list[Candidate], *, reporter: str, group_id: str, instrument_id: str) -> dict[str, object]:
    """A TNS bulk AT report (the ``at_report`` JSON of the TNS API), one entry per candidate."""
    reports: dict[str, object] = {}
    for index, c in enumerate(found):
        first = min(c.history, key=lambda d: d.date_obs)
        photometry = {
            str(i): {
                "obsdate": _iso(d.date_obs),
                "flux": round(d.mag, 3) if d.mag is not None else None,
                "flux_error": round(d.mag_err, 3) if d.mag_err is not None else None,
                "flux_units": "1",  # AB mag
                "filter_value": d.filter,
                "instrument_value": instrument_id,
                "comments": f"S/N {d.snr:.1f}, real/bogus {d.score:.2f}",
            }
            for i, d in enumerate(c.history)
        }
        reports[str(index)] = {
            "ra": {"value": round(c.ra_deg, 6), "error": 0.3, "units": "arcsec"},
            "dec": {"value": round(c.dec_deg, 6), "error": 0.3, "units": "arcsec"},
            "reporting_group_id": group_id,
            "discovery_data_source_id": group_id,
            "reporter": reporter,
            "discovery_datetime": _iso(first.date_obs),
            "at_type": "1",  # PSN
            "internal_name": c.name,
            "host_name": c.host.name if c.host else "",
            "remarks": f"TOROS follow-up of {c.alert_id}"
            + (f"; flags: {', '.join(sorted(c.flags))}" if c.flags else ""),
            "photometry": {"photometry_group": photometry},
        }
    return {"at_report": reports}


def cutout_bytes(image: np.ndarray, wcs: WCS) -> bytes:
    """A gzipped FITS cut-out with its WCS, as ZTF packets carry."""
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(image, dtype=np.float32), wcs.to_header()).writeto(buffer)
    return gzip.compress(buffer.getvalue(), mtime=0)


def avro_packet(
    candidate: Candidate, cut: Stamps, *, alert_id: str, candid: int, magzp: float | None
) -> dict[str, Any]:
    """One alert packet (schema ``toros_alert.avsc``) for the candidate's latest detection."""
    latest = max(candidate.history, key=lambda d: d.date_obs)
    return {
        "schemavsn": "1.0",
        "publisher": f"TOROS {__version__}",
        "objectId": candidate.name,
        "candid": candid,
        "alertId": alert_id,
        "candidate": {
            "jd": latest.date_obs / 86400.0 + 2440587.5,
            "ra": candidate.ra_deg,
            "dec": candidate.dec_deg,
            "filter": latest.filter,
            "magpsf": latest.mag if latest.mag is not None else math.nan,
            "sigmapsf": latest.mag_err if latest.mag_err is not None else math.nan,
            "magzpsci": magzp if magzp is not None else math.nan,
            "snr": latest.snr,
            "rb": latest.score,
            "xpos": latest.x,
            "ypos": latest.y,
            "isdiffpos": "t",
            "host": candidate.host.name if candidate.host else None,
            "host_offset_arcsec": candidate.host.offset_arcsec if candidate.host else None,
            "host_offset_kpc": candidate.host.offset_kpc if candidate.host else None,
            "flags": sorted(candidate.flags),
        },
        "prv_candidates": [
            {
                "jd": d.date_obs / 86400.0 + 2440587.5,
                "filter": d.filter,
                "magpsf": d.mag,
                "sigmapsf": d.mag_err,
                "snr": d.snr,
                "rb": d.score,
            }  # fmt: skip
            for d in candidate.history
            if d is not latest
        ],
        "cutoutScience": {
            "fileName": f"{candidate.name}_science.fits.gz",
            "stampData": cutout_bytes(cut.science, cut.wcs),
        },
        "cutoutTemplate": {
            "fileName": f"{candidate.name}_template.fits.gz",
            "stampData": cutout_bytes(cut.reference, cut.wcs),
        },
        "cutoutDifference": {
            "fileName": f"{candidate.name}_difference.fits.gz",
            "stampData": cutout_bytes(cut.difference, cut.wcs),
        },
    }


def write_avro(path: Path, packets: list[dict[str, Any]]) -> Path:
    import fastavro

    schema = fastavro.parse_schema(json.loads(SCHEMA_FILE.read_text()))
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, packets, codec="null")
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())
    return path


def read_avro(path: Path) -> list[dict[str, Any]]:
    import fastavro

    with open(path, "rb") as stream:
        return [record for record in fastavro.reader(stream) if isinstance(record, dict)]
