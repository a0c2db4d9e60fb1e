"""Reports real services accept: a consumer written for ZTF's alert packets reads ours unchanged; the TNS bulk AT
report carries the site's ids, the last non-detection, exposure, observer and the position's error; the GCN
circular draft names its author, references, catalog, the fields not searched and why, and TNS names."""

from __future__ import annotations

import gzip
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from support import ZTF

from toros.floor.sky_geometry import tan_wcs
from toros.preprocessor import reports
from toros.preprocessor.candidates import Candidate, Detection, DetectionContext, Host, Search
from toros.preprocessor.settings import TnsReporting

T0 = 1_795_000_000.0  # unix seconds
HOUR = 3600.0
RA, DEC = 150.0, -30.0


def ztf_consumer(packet: dict[str, Any]) -> dict[str, Any]:
    """What a broker's filter written for ZTF's packets reads: the candidate's photometry and its sign, the
    history with the non-detections' limits, the star/galaxy context and the cut-outs."""
    candidate = packet["candidate"]
    history = packet["prv_candidates"] or []
    # Schema 3.5's history rows (forced photometry) have no candid: .get, as ZTF consumers read across versions.
    detections = [p for p in history if p.get("candid") is not None]
    limits = [p["diffmaglim"] for p in history if p.get("candid") is None and p.get("diffmaglim") is not None]
    sign = 1 if candidate["isdiffpos"] in ("t", "1") else -1
    cutouts = {}
    for kind in ("Science", "Template", "Difference"):
        data = packet[f"cutout{kind}"]["stampData"]
        with fits.open(io.BytesIO(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)) as hdus:
            cutouts[kind] = hdus[0].data.shape
    return {
        "candid": int(packet["candid"]),
        "fid": int(candidate["fid"]),
        "programid": int(candidate["programid"]),
        "sign": sign,
        "mag": float(candidate["magpsf"]),
        "mag_err": float(candidate["sigmapsf"]),
        "limit": candidate["diffmaglim"],
        "days_since_first": candidate["jd"] - (candidate["jdstarthist"] or candidate["jd"]),
        "ndethist": int(candidate["ndethist"]),
        "ncovhist": int(candidate["ncovhist"]),
        "magzpsci": candidate["magzpsci"],
        "near_star": candidate["sgscore1"] is not None and candidate["sgscore1"] > 0.5
        and (candidate["distpsnr1"] or math.inf) < 1.0,
        "host_light": (candidate["distnr"], candidate["magnr"]),
        "earlier_detections": len(detections),
        "non_detection_limits": limits,
        "cutouts": cutouts,
    }  # fmt: skip


def _search(name: str, hours: float, *, reference: str = "ref-1.fits", limmag: float | None = 20.5,
            message: str = "") -> Search:  # fmt: skip
    return Search(
        Path(f"/data/calibrated/2026-11-22/{name}"), "S261122a", T0 + hours * HOUR, "r", RA, DEC, 0.35, limmag, 120.0,
        reference, 1 if reference else 0, message, f"wo-{name}", magzp=25.1, catalog="refcat2.csv",
        reference_epoch=T0 - 30 * 86400 if reference else None, reference_limmag=21.2 if reference else None,
        event_time=T0 - HOUR,
    )  # fmt: skip


def _detection(search: Search, mag: float, *, sgscore: float = 0.0) -> Detection:
    return Detection(
        str(search.frame), search.date_obs, "r", 500.0, 600.0, mag, 0.05, 20.0, 0.93, ("nuclear",), "",
        f"/data/transients/{search.frame.name}.json",
        DetectionContext(0.12, 17.3, 0.4, sgscore, math.inf),
    )  # fmt: skip


@pytest.fixture
def history() -> tuple[Candidate, list[Search]]:
    """Searched at 0 h without it, found at 2 h and 5 h; a field at 1 h had no reference."""
    observed = [
        _search("a.fits", 0.0),
        _search("b.fits", 1.0, reference="", message="no reference for this field in r taken before the event"),
        _search("c.fits", 2.0),
        _search("d.fits", 5.0),
    ]
    candidate = Candidate(
        "TOROS-2026-0007", "S261122a", RA, DEC, Host("NGC 1", 0.2, 0.05, 40.0),
        [_detection(observed[2], 18.9), _detection(observed[3], 18.6)], {"nuclear"}, tns_name="AT 2026abc",
    )  # fmt: skip
    return candidate, observed


def _stamps() -> reports.Stamps:
    wcs = tan_wcs(RA, DEC, 1.0, 63, 63)
    cut = np.zeros((63, 63), np.float32)
    return reports.Stamps(cut, cut, cut, wcs, 31.0, 31.0)


def test_a_ztf_consumer_reads_ztf_packets_and_ours_alike(history, tmp_path):
    candidate, observed = history
    latest = candidate.history[-1]
    packet = reports.avro_packet(
        candidate, latest, _stamps(), observed, alert_id="S261122a", programid=1, fids={"g": 1, "r": 2, "i": 3}
    )
    path = reports.write_avro(tmp_path / "ours.avro", [packet])
    (ours,) = reports.read_avro(path)
    theirs = [reports.read_avro(p)[0] for p in sorted(ZTF.glob("*.avro")) if p.name != "87704463155000.avro"]
    assert theirs and all(ztf_consumer(p)["cutouts"]["Science"] == (63, 63) for p in theirs)
    view = ztf_consumer(ours)
    assert view["fid"] == 2 and view["programid"] == 1 and view["sign"] == 1
    assert view["mag"] == pytest.approx(18.6, abs=1e-5) and view["limit"] == pytest.approx(20.5)
    assert view["ndethist"] == 2 and view["ncovhist"] == 3  # a, c, d searched the place; b could not be
    assert view["days_since_first"] == pytest.approx(3 / 24)
    assert view["earlier_detections"] == 1 and view["non_detection_limits"] == [pytest.approx(20.5)]
    assert view["magzpsci"] == pytest.approx(25.1) and not view["near_star"]
    assert view["host_light"][1] == pytest.approx(17.3) and view["cutouts"]["Difference"] == (63, 63)
    assert ours["candid"] == ours["candidate"]["candid"] == reports.candid_of(latest)
    # ZTF's own types for the shared names: the schemas agree where a consumer looks.
    ztf_types = {f["name"]: f["type"] for f in _schema_fields(ZTF / "472263571115115000.avro")}
    our_types = {f["name"]: f["type"] for f in _schema_fields(path)}
    for name in ("jd", "fid", "pid", "diffmaglim", "programid", "candid", "isdiffpos", "ra", "dec", "magpsf",
                 "sigmapsf", "magzpsci", "distnr", "magnr", "sgscore1", "distpsnr1", "ndethist", "ncovhist",
                 "jdstarthist", "rb", "xpos", "ypos"):  # fmt: skip
        assert our_types[name] == ztf_types[name], name


def _schema_fields(path: Path) -> list[dict[str, Any]]:
    import fastavro

    with open(path, "rb") as stream:
        schema = fastavro.reader(stream).writer_schema
    (candidate,) = [f for f in schema["fields"] if f["name"] == "candidate"]
    return list(candidate["type"]["fields"])


def test_the_tns_report_has_the_site_s_ids_the_last_non_detection_and_the_position_error(history):
    candidate, observed = history
    tns = TnsReporting(
        reporter="A. Observer on behalf of TOROS", group_id=140, instrument_id=287, filter_ids={"r": 22},
        proprietary_period_days=2, proprietary_groups=(140,), observer="Robot",
    )  # fmt: skip
    report, missing = reports.tns_report([candidate], observed, tns)
    entry = report["at_report"]["0"]  # type: ignore[index]
    assert not missing
    assert entry["reporting_group_id"] == entry["discovery_data_source_id"] == "140"
    assert entry["ra"] == {"value": "150.000000", "error": "0.12", "units": "arcsec"}
    assert entry["discovery_datetime"].startswith("2026-") and entry["internal_name"] == "TOROS-2026-0007"
    assert entry["proprietary_period"] == {"proprietary_period_value": "2", "proprietary_period_units": "days"}
    assert entry["proprietary_period_groups"] == ["140"]
    # The last frame that covered the place without seeing it: a.fits, with its limit and exposure.
    nd = entry["non_detection"]
    assert nd["limiting_flux"] == "20.50" and nd["filter_value"] == "22" and nd["instrument_value"] == "287"
    assert nd["exptime"] == "120" and "a.fits" in nd["comments"] and nd["archiveid"] == ""
    photometry = entry["photometry"]["photometry_group"]
    assert [p["flux"] for p in photometry.values()] == ["18.900", "18.600"]
    assert all(
        p["observer"] == "Robot" and p["exptime"] == "120" and p["flux_units"] == "1" for p in photometry.values()
    )


def test_the_tns_report_falls_back_on_the_reference_and_names_what_the_config_lacks(history):
    candidate, observed = history
    report, missing = reports.tns_report([candidate], observed[2:], TnsReporting())
    nd = report["at_report"]["0"]["non_detection"]  # type: ignore[index]
    assert nd["comments"] == "the reference image ref-1.fits (r)" and nd["limiting_flux"] == "21.20"
    assert missing == [
        "preprocessor.reports.tns.filter_ids[r]", "preprocessor.reports.tns.group_id",
        "preprocessor.reports.tns.instrument_id",
    ]  # fmt: skip
    undated = [Search(**{**s.__dict__, "reference_epoch": None}) for s in observed[2:]]
    report, _ = reports.tns_report([candidate], undated, TnsReporting())
    nd = report["at_report"]["0"]["non_detection"]  # type: ignore[index]
    assert nd["archiveid"] == "0" and "ref-1.fits" in nd["archival_remarks"]


def test_the_circular_names_its_author_references_catalog_unsearched_fields_and_tns_names(history):
    candidate, observed = history
    text = reports.gcn_circular(
        "S261122a", observed, [candidate], author="A. Observer (IATE) on behalf of TOROS", site="Macon",
        min_score=0.7, min_snr=6,
    )  # fmt: skip
    assert "FROM:    A. Observer (IATE) on behalf of TOROS" in text
    assert (
        "calibrated against refcat2.csv" in text
        and "calibrated, astrometrically and photometrically calibrated" not in text
    )
    assert "ref-1.fits" in text and "observed 4 fields" in text
    (unsearched,) = [line for line in text.splitlines() if "no reference for this field" in line]
    assert "b.fits" not in unsearched and f"{RA:8.4f}" in unsearched
    (row,) = [line for line in text.splitlines() if line.startswith("TOROS-2026-0007")]
    assert "AT 2026abc" in row and "[nuclear]" in row
