"""What people and brokers read about candidates: per detection a PNG triplet and a JSON record; per alert
event a draft GCN circular, a TNS AT report (JSON, ready to send, never sent) and ZTF-style Avro alert
packets with gzipped FITS cutouts (schema ``toros/data/toros_alert.avsc``). Every file is written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
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
from toros.floor.sky_geometry import separation_deg
from toros.preprocessor.candidates import Candidate, Detection, Search
from toros.preprocessor.settings import TnsReporting
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


def _jd(seconds: float) -> float:
    return seconds / 86400.0 + 2440587.5


def covering(candidate: Candidate, observed: list[Search]) -> list[Search]:
    """The searched frames (a reference subtracted) whose footprint holds the candidate's place, in time order."""
    return [
        s
        for s in observed
        if s.reference
        and separation_deg(np.array([s.ra_deg]), np.array([s.dec_deg]), candidate.ra_deg, candidate.dec_deg)[0]
        < s.radius_deg
    ]


def non_detections(candidate: Candidate, observed: list[Search]) -> list[Search]:
    """Searched frames that covered the candidate's place and did not detect it."""
    seen = {d.frame for d in candidate.history}
    return [s for s in covering(candidate, observed) if str(s.frame) not in seen]


def gcn_circular(
    alert_id: str, observed: list[Search], found: list[Candidate], *, author: str, site: str, min_score: float,
    min_snr: float,
) -> str:  # fmt: skip
    """A draft circular in the usual style: who, what was observed against which references and how deep, the
    fields that were not searched and why, and the candidates with their TNS names once reported."""
    searched = [s for s in observed if s.reference]
    event_time = next((s.event_time for s in observed if s.event_time), None)
    drill = any(s.drill for s in observed)
    lines = [
        "TITLE:   GCN CIRCULAR",
        f"SUBJECT: LIGO/Virgo/KAGRA {alert_id}: TOROS optical follow-up"
        + (f" and {len(found)} candidate{'s' if len(found) != 1 else ''}" if found else ", no candidate"),
        f"FROM:    {author}",
        "",
    ]
    if drill:
        lines += ["*** DRILL: this event is a test or mock alert; do not send. ***", ""]
    start = min((s.date_obs for s in observed), default=None)
    after = f" ({(start - event_time) / 3600:.2f} h after the event)" if start and event_time else ""
    filters = ", ".join(sorted({s.filter for s in observed})) or "-"
    catalogs = ", ".join(sorted({s.catalog for s in observed if s.catalog})) or "the site's reference catalog"
    references = sorted({Path(s.reference).name: s.reference_epoch for s in searched}.items())
    fields = len({s.frame.name for s in observed})
    lines.append(
        f"{author} observed {fields} field{'s' if fields != 1 else ''} of candidate host galaxies of the "
        f"gravitational-wave event {alert_id} with the TOROS telescope at {site}, starting "
        f"{_iso(start) if start else '-'} UTC{after}, in {filters}. The images were bias-, dark- and "
        f"flat-field-corrected, astrometrically and photometrically calibrated against {catalogs}, and "
        "reference images taken before the event were subtracted (ZOGY, Zackay, Ofek & Gal-Yam 2016); "
        "detections were vetted by a real/bogus classifier."
    )
    lines += ["", "Observations (5-sigma limiting magnitudes of a PSF fit, AB):", ""]
    lines.append(f"{'Start (UTC)':19s}  {'Filter':6s}  {'Exp (s)':>7s}  {'Limit':>5s}  {'Field (deg)':18s}  Reference")
    for s in searched:
        limit = f"{s.limmag:5.2f}" if s.limmag is not None else "  -  "
        exposure = f"{s.exposure_s:7.0f}" if s.exposure_s else "      -"
        taken = f" ({_iso(s.reference_epoch)[:10]})" if s.reference_epoch else ""
        lines.append(
            f"{_iso(s.date_obs)}  {s.filter:6s}  {exposure}  {limit}  {s.ra_deg:8.4f} {s.dec_deg:+8.4f}  "
            f"{Path(s.reference).name}{taken}"
        )
    unsearched = [s for s in observed if not s.reference]
    if unsearched:
        lines += ["", "Fields observed but not searched:", ""]
        for s in unsearched:
            lines.append(f"{_iso(s.date_obs)}  {s.filter:6s}  {s.ra_deg:8.4f} {s.dec_deg:+8.4f}  {s.message}")
    if references:
        lines += ["", f"Reference images: {', '.join(name for name, _ in references)}."]
    lines += [""]
    if found:
        lines += [f"Candidates (real/bogus score >= {min_score:.2f}, S/N >= {min_snr:g}):", ""]
        lines.append(
            f"{'Name':16s} {'TNS':12s} {'RA (J2000)':>11s} {'Dec (J2000)':>11s} {'T-T0 (h)':>8s} {'Mag':>6s} "
            f"{'Err':>5s} {'Filt':4s} {'Host':18s} {'Off(as)':>7s} {'Off(kpc)':>8s} {'Score':>5s}"
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
                f"{c.name:16s} {c.tns_name or '-':12s} {c.ra_deg:11.5f} {c.dec_deg:+11.5f} {since} {mag} {error} "
                f"{best.filter:4s} {host[:18]:18s} {offset} {kpc} {best.score:5.2f}"
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


def _tns_date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _id(value: int | None) -> str:
    return "" if value is None else str(value)


def tns_report(
    found: list[Candidate], observed: list[Search], tns: TnsReporting
) -> tuple[dict[str, object], list[str]]:
    """A TNS bulk AT report (the ``at_report`` JSON of the TNS API), one entry per candidate: its position with
    the fit's error, its photometry with each frame's limit and exposure, the last non-detection before it (a
    searched frame without it, else the reference image with its date and limit), the site's ids. Returns the
    report and what is missing for the TNS to accept it (ids the config does not give)."""
    missing = sorted(
        {
            f"preprocessor.reports.tns.{name}"
            for name, value in (("group_id", tns.group_id), ("instrument_id", tns.instrument_id))
            if value is None
        }  # fmt: skip
        | {
            f"preprocessor.reports.tns.filter_ids[{d.filter}]"
            for c in found
            for d in c.history
            if d.filter not in tns.filter_ids
        }
    )
    by_frame = {str(s.frame): s for s in observed}
    group = _id(tns.group_id)
    reports: dict[str, object] = {}
    for index, c in enumerate(found):
        first = min(c.history, key=lambda d: d.date_obs)
        photometry = {}
        for i, d in enumerate(sorted(c.history, key=lambda d: d.date_obs)):
            search = by_frame.get(d.frame)
            photometry[str(i)] = {
                "obsdate": _tns_date(d.date_obs),
                "flux": f"{d.mag:.3f}" if d.mag is not None else "",
                "flux_error": f"{d.mag_err:.3f}" if d.mag_err is not None else "",
                "limiting_flux": f"{search.limmag:.2f}" if search and search.limmag is not None else "",
                "flux_units": str(tns.flux_unit_id),
                "filter_value": _id(tns.filter_ids.get(d.filter)),
                "instrument_value": _id(tns.instrument_id),
                "exptime": f"{search.exposure_s:g}" if search and search.exposure_s else "",
                "observer": tns.observer,
                "comments": f"{d.filter}; S/N {d.snr:.1f}, real/bogus {d.score:.2f}",
            }
        errors = [d.context.position_error_arcsec for d in c.history if d.context.position_error_arcsec]
        error = f"{min(errors):.2f}" if errors else ""
        reports[str(index)] = {
            "ra": {"value": f"{c.ra_deg:.6f}", "error": error, "units": "arcsec"},
            "dec": {"value": f"{c.dec_deg:.6f}", "error": error, "units": "arcsec"},
            "reporting_group_id": group,
            "discovery_data_source_id": _id(tns.data_source_id if tns.data_source_id is not None else tns.group_id),
            "reporter": tns.reporter,
            "discovery_datetime": _tns_date(first.date_obs),
            "at_type": str(tns.at_type),
            "host_name": c.host.name if c.host else "",
            "host_redshift": "",
            "transient_redshift": "",
            "internal_name": c.name,
            "remarks": f"TOROS follow-up of {c.alert_id}"
            + (f"; flags: {', '.join(sorted(c.flags))}" if c.flags else ""),
            "proprietary_period_groups": [str(g) for g in tns.proprietary_groups],
            "proprietary_period": {
                "proprietary_period_value": f"{tns.proprietary_period_days:g}",
                "proprietary_period_units": "days",
            },
            "non_detection": _non_detection(c, first, observed, tns),
            "photometry": {"photometry_group": photometry},
        }
    return {"at_report": reports}, missing


def _non_detection(c: Candidate, first: Detection, observed: list[Search], tns: TnsReporting) -> dict[str, str]:
    """The last searched frame before the discovery that did not see it; else the reference image of the
    discovery frame (date and 5σ limit); else an archival remark naming it."""
    before = [s for s in non_detections(c, observed) if s.date_obs < first.date_obs and s.limmag is not None]
    common = {"flux_units": str(tns.flux_unit_id), "instrument_value": _id(tns.instrument_id),
              "observer": tns.observer, "archiveid": "", "archival_remarks": ""}  # fmt: skip
    if before:
        last = before[-1]
        return {
            **common, "obsdate": _tns_date(last.date_obs), "limiting_flux": f"{last.limmag:.2f}",
            "filter_value": _id(tns.filter_ids.get(last.filter)),
            "exptime": f"{last.exposure_s:g}" if last.exposure_s else "",
            "comments": f"TOROS frame {last.frame.name} ({last.filter}), searched without a detection",
        }  # fmt: skip
    discovery = next((s for s in observed if str(s.frame) == first.frame), None)
    if discovery is not None and discovery.reference_epoch and discovery.reference_limmag is not None:
        return {
            **common, "obsdate": _tns_date(discovery.reference_epoch),
            "limiting_flux": f"{discovery.reference_limmag:.2f}", "filter_value": _id(tns.filter_ids.get(first.filter)),
            "exptime": "", "comments": f"the reference image {Path(discovery.reference).name} ({first.filter})",
        }  # fmt: skip
    reference = Path(discovery.reference).name if discovery and discovery.reference else "unknown"
    return {
        "obsdate": "", "limiting_flux": "", "flux_units": "", "filter_value": "", "instrument_value": "",
        "exptime": "", "observer": "", "comments": "", "archiveid": "0",
        "archival_remarks": f"not in the reference image {reference}, whose date or depth is not known",
    }  # fmt: skip


def cutout_bytes(image: np.ndarray, wcs: WCS) -> bytes:
    """A gzipped FITS cut-out with its WCS, as ZTF packets carry."""
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(image, dtype=np.float32), wcs.to_header()).writeto(buffer)
    return gzip.compress(buffer.getvalue(), mtime=0)


def _pid(frame: str) -> int:
    """A frame's stable numeric id (ZTF's pid: the processed image)."""
    return int(hashlib.sha256(frame.encode()).hexdigest()[:15], 16)


def candid_of(detection: Detection) -> int:
    """A detection's stable numeric id (ZTF's candid)."""
    return int(hashlib.sha256(detection.record.encode()).hexdigest()[:15], 16)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def avro_packet(
    candidate: Candidate, latest: Detection, cut: Stamps, observed: list[Search], *, alert_id: str, programid: int,
    fids: dict[str, int],
) -> dict[str, Any]:  # fmt: skip
    """One alert packet (schema ``toros_alert.avsc``, ZTF's names, types and units) for a detection of the
    candidate: its earlier detections and the searched frames that covered its place without it."""
    by_frame = {str(s.frame): s for s in observed}
    search = by_frame.get(latest.frame)
    earlier = [d for d in candidate.history if d.date_obs < latest.date_obs and d is not latest]
    covered = [s for s in covering(candidate, observed) if s.date_obs <= latest.date_obs]
    context = latest.context
    prv: list[dict[str, Any]] = [
        {
            "jd": _jd(d.date_obs),
            "fid": fids.get(d.filter, 0),
            "pid": _pid(d.frame),
            "diffmaglim": by_frame[d.frame].limmag if d.frame in by_frame else None,
            "programid": programid,
            "candid": candid_of(d),
            "isdiffpos": "t",
            "ra": candidate.ra_deg,
            "dec": candidate.dec_deg,
            "magpsf": d.mag,
            "sigmapsf": d.mag_err,
            "rb": d.score,
            "filter": d.filter,
        }  # fmt: skip
        for d in earlier
    ]
    prv += [
        {
            "jd": _jd(s.date_obs),
            "fid": fids.get(s.filter, 0),
            "pid": _pid(str(s.frame)),
            "diffmaglim": s.limmag,
            "programid": programid,
            "candid": None,
            "isdiffpos": None,
            "ra": None,
            "dec": None,
            "magpsf": None,
            "sigmapsf": None,
            "rb": None,
            "filter": s.filter,
        }  # fmt: skip
        for s in non_detections(candidate, observed)
        if s.date_obs < latest.date_obs
    ]
    prv.sort(key=lambda p: p["jd"])
    return {
        "schemavsn": "2.0",
        "publisher": f"TOROS {__version__}",
        "objectId": candidate.name,
        "candid": candid_of(latest),
        "alertId": alert_id,
        "candidate": {
            "jd": _jd(latest.date_obs),
            "fid": fids.get(latest.filter, 0),
            "pid": _pid(latest.frame),
            "diffmaglim": search.limmag if search else None,
            "programid": programid,
            "candid": candid_of(latest),
            "isdiffpos": "t",  # only brightenings become candidates
            "ra": candidate.ra_deg,
            "dec": candidate.dec_deg,
            "magpsf": _nan(latest.mag),
            "sigmapsf": _nan(latest.mag_err),
            "magzpsci": search.magzp if search else None,
            "distnr": context.reference_distance_px,
            "magnr": context.reference_mag,
            "sgscore1": context.star_galaxy,
            "distpsnr1": context.catalog_star_arcsec
            if context.catalog_star_arcsec is not None and math.isfinite(context.catalog_star_arcsec)
            else None,
            "ndethist": len(earlier) + 1,
            "ncovhist": len(covered),
            "jdstarthist": _jd(min(d.date_obs for d in candidate.history)),
            "rb": latest.score,
            "xpos": latest.x,
            "ypos": latest.y,
            "filter": latest.filter,
            "snr": latest.snr,
            "poserr": context.position_error_arcsec,
            "host": candidate.host.name if candidate.host else None,
            "host_offset_arcsec": candidate.host.offset_arcsec if candidate.host else None,
            "host_offset_kpc": candidate.host.offset_kpc if candidate.host else None,
            "flags": sorted(candidate.flags),
        },
        "prv_candidates": prv,
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
