"""Every shared ZTF alert packet through ``toros difference``: ZTF's magpsf against ours, from the cut-outs' own
pixels.

    .venv/bin/python benchmarks/ztf_packets.py [--packets DIR] [--markdown]

Each packet's science and template cut-outs (63×63 of real ZTF images) become FITS files with a WCS (ZTF's
1.01"/px, the candidate at the centre; the cut-outs carry none) and, for the science image, ZTF's zero point
``magzpsci`` when the packet has one. Nothing else is given: no ``FWHM`` (the PSF is measured on each image's
own stars, or on the transient itself on the difference), no template zero point (ZTF scales its templates to
the science image, but a survey reference in general is not: the flux scale comes from common stars or the
host's light). Packets without ``magzpsci`` (schema 2.0 and the simulated pre-survey ones) get their zero point
from the reference source ZTF found under the candidate (``magnr`` within 1.5", its PSF magnitude on the
template), said in the table; JPEG cut-outs are refused. The table prints ZTF's magnitude, ours, the
difference and what the packet says about the source (a variable star, a bogus, a saturated core…).
"""

from __future__ import annotations

import argparse
import gzip
import io
import math
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from toros.floor.sky_geometry import tan_wcs
from toros.preprocessor.discovery import DiscoveryFailed, discover
from toros.preprocessor.psf import fit_moffat

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ztf-alerts"
ZTF_PIXEL_ARCSEC = 1.012
ZTF_GAIN = 6.2  # e-/DN of the ZTF camera


def cutouts(record: dict, folder: Path) -> tuple[Path, Path, str]:
    """The science and template cut-outs as FITS files with a WCS (and the science zero point when the packet
    has one); the third value says where the zero point came from."""
    candidate = record["candidate"]
    paths, origin = [], ""
    for kind in ("Science", "Template"):
        raw = record[f"cutout{kind}"]["stampData"]
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        path = folder / f"{record['candid']}-{kind.lower()}.fits"
        if not data.startswith(b"SIMPLE"):
            path.write_bytes(data)  # a JPEG: toros difference refuses it, with its reason
            paths.append(path)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = fits.open(io.BytesIO(data))[0].data.astype(np.float32)
        header = fits.Header()
        header.update(tan_wcs(candidate["ra"], candidate["dec"], *pixels.shape[::-1], ZTF_PIXEL_ARCSEC).to_header())
        header["GAIN"], header["FILTER"] = ZTF_GAIN, {1: "g", 2: "r", 3: "i"}.get(candidate.get("fid"), "r")
        if kind == "Science" and candidate.get("magzpsci") is not None:
            header["MAGZP"], origin = candidate["magzpsci"], "magzpsci"
        fits.PrimaryHDU(pixels, header).writeto(path, overwrite=True)
        paths.append(path)
    if not origin:
        origin = _zero_point_from_reference_source(record, paths)
    return paths[0], paths[1], origin


def _zero_point_from_reference_source(record: dict, paths: list[Path]) -> str:
    """A packet without magzpsci: the science zero point from the source ZTF measured in the reference under
    the candidate (magnr, within 1.5"), fitted on the template (ZTF scales templates to the science image)."""
    candidate = record["candidate"]
    distance, magnitude = candidate.get("distnr"), candidate.get("magnr")
    if distance is None or magnitude is None or not 0 <= distance <= 1.5 or magnitude < 0:
        return "none"
    try:
        template = fits.getdata(paths[1]).astype(np.float64)
    except OSError:
        return "none"
    template -= np.median(template)
    centre = (template.shape[1] - 1) / 2.0, (template.shape[0] - 1) / 2.0
    noise = 1.4826 * float(np.median(np.abs(template - np.median(template))))
    fit = fit_moffat(template, *centre, 2.0, max(noise, 1e-3), ZTF_GAIN)
    if fit is None or fit.flux <= 0:
        return "none"
    zero_point = magnitude + 2.5 * math.log10(fit.flux)
    with fits.open(paths[0], mode="update") as hdus:
        hdus[0].header["MAGZP"] = round(zero_point, 4)
    return "magnr"


def describe(candidate: dict) -> str:
    """What the packet itself says about the source."""
    if candidate.get("rb") is not None and candidate["rb"] < 0.3:
        kind = f"bogus by ZTF (rb {candidate['rb']:.2f})"
    elif (candidate.get("sgscore1") or 0) > 0.8 and (candidate.get("distpsnr1") or 99) < 1.5:
        kind = "a star (PS1)"
    elif (candidate.get("distnr") or 99) < 1.0:
        kind = "on a reference source"
    else:
        kind = "new source"
    if (candidate.get("fwhm") or 0) > 10:
        kind += f", diff FWHM {candidate['fwhm']:.0f} px"
    return kind


def measure(science: Path, template: Path) -> tuple[float | None, str]:
    """Our magnitude of the source at the cut-outs' centre and how its PSF was found (or why not)."""
    try:
        result = discover(science, template)
    except DiscoveryFailed as exc:
        return None, str(exc).replace(f"science {science.name}", "the science image").replace(
            f"reference {template.name}", "the template"
        ).replace(": the magnitudes would be wrong", "")
    centre = [c for c in result.candidates if math.hypot(c.x - 31, c.y - 31) < 2.5]
    psf = next((n.split(": ", 1)[1].split(";")[0] for n in result.notes if n.startswith("science PSF")), "")
    if not centre:
        return None, "nothing at the centre"
    return centre[0].mag, psf + ("; fading" if centre[0].negative else "")


def with_zero_point(template: Path, zero_point: float | None) -> Path:
    """A copy of the template carrying the science image's zero point (ZTF scales templates to it)."""
    scaled = template.with_name(template.stem + "-scaled.fits")
    with fits.open(template) as hdus:
        header = hdus[0].header.copy()
        if zero_point is not None:
            header["MAGZP"] = zero_point
        fits.PrimaryHDU(hdus[0].data, header).writeto(scaled, overwrite=True)
    return scaled


def _short(reason: str) -> str:
    """A table cell's reason: the refusal of a picture in a few words."""
    return "a JPEG cut-out: refused" if "JPEG" in reason else reason


def main() -> int:
    import fastavro

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=Path, default=SHARED)
    parser.add_argument("--markdown", action="store_true", help="the README's table")
    arguments = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for path in sorted(arguments.packets.glob("*.avro")):
            with open(path, "rb") as stream:
                record = next(iter(fastavro.reader(stream)))
            candidate = record["candidate"]
            science, template, origin = cutouts(record, Path(folder))
            zero_point = fits.getheader(science).get("MAGZP") if science.read_bytes()[:6] == b"SIMPLE" else None
            scaled, how = measure(science, with_zero_point(template, zero_point) if zero_point else template)
            own, own_how = measure(science, template)
            rows.append((path.stem, candidate["magpsf"], scaled, own, origin, how, own_how, describe(candidate)))
    if arguments.markdown:
        print("| packet | ZTF magpsf | ours (Δ), template scaled by us | ours (Δ), template at ZTF's scale | zero point | "
              "PSF, or why not measured | the source, as ZTF's packet says |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
    for packet, ztf, scaled, own, origin, how, own_how, kind in rows:
        first = f"{scaled:.2f} ({scaled - ztf:+.2f})" if scaled is not None else "-"
        second = f"{own:.2f} ({own - ztf:+.2f})" if own is not None else "-"
        why = _short(own_how if own is None else how)
        if own is None and origin == "none" and "JPEG" not in why and "MAGZP" not in why:
            why = f"no zero point in the packet (no magzpsci, no magnr under it); {why}"
        if arguments.markdown:
            print(f"| {packet} | {ztf:.2f} | {second} | {first} | {origin} | {why} | {kind} |")
        else:
            print(f"{packet:36s} ZTF {ztf:6.2f}  {second:16s} {first:16s} zp {origin:8s} {why} [{kind}]")
    for column, label in ((3, "template scaled by us"), (2, "template at ZTF's scale")):
        compared = [abs(row[column] - row[1]) for row in rows if row[column] is not None]
        if compared:
            print(
                f"{label}: {len(compared)} of {len(rows)} packets measured, median |ours - ZTF| "
                f"{np.median(compared):.3f} mag, {sum(d <= 0.15 for d in compared)} within 0.15 mag"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
