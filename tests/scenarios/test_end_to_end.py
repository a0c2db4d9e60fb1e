"""The whole chain, as `make demo` runs it (smaller frames, faster clock): routine monitoring fills the
reference library, a sample LVK alert arrives after a merger, calibrated images of its host-galaxy candidates
come out, and the kilonova injected beside the first of them is found — and nothing else — across the three
daemons as separate processes."""

from __future__ import annotations

import math
import statistics
from datetime import UTC
from pathlib import Path

import pytest
from astropy.io import fits
from support import toros_cli

from toros.demo import Node, run_chain
from toros.generated import toros_pb2 as pb


@pytest.mark.timeout(300)  # above the chain's own deadline, so that a stall reports its progress lines
def test_alert_to_calibrated_images(tmp_path):
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line)  # shown by pytest if the test fails

    result = run_chain(
        tmp_path / "chain", frame=512, pixel_scale=1.0, rate=400.0, galaxies=5000, timeout=260.0, say=say
    )
    if not result.ok:  # what went wrong, from the daemons' own log
        log = (tmp_path / "chain" / "logs" / "toros.log").read_text().splitlines()
        lines += [line for line in log if " ERROR " in line or " WARNING " in line][-30:]
    assert result.ok, "\n".join(lines)
    assert result.exit_codes == {"alert": 0, "telescope": 0, "preprocessor": 0}
    assert any("6 targets accepted" in line for line in lines), lines
    assert result.light_frames == 20 and len(result.calibrated) == 20, "6 routine, 12 of the alert, 2 second looks"
    data = tmp_path / "chain" / "data"
    raw_lights = sorted(p.stem for p in (data / "2026-05-01").glob("*-light-*.fits"))
    assert len(raw_lights) == 20
    assert sorted(Path(p).stem.removesuffix("_cal") for p in result.calibrated) == raw_lights
    with fits.open(result.calibrated[-1]) as hdus:
        assert hdus[0].header["IMAGETYP"] == "LIGHT" and "MASK" in hdus and hdus[0].data.dtype.name == "float32"
        assert hdus[0].header["DRILL"] is True, "a mock alert is handled as a drill down to the images"
        assert hdus[0].header["ALERTID"] == "MS181101ab" and hdus[0].header["EVENTT"].startswith("2026-05-01T23:45")
    # Science-ready: every calibrated frame has a fitted WCS, a zero point and its source catalog beside it.
    assert result.science_ready == result.calibrated, "\n".join(lines)
    for path in result.calibrated:
        header = fits.getheader(path)
        assert header["WCSSRC"] == "fit" and header["ASTRRMS"] < 0.3 and header["ASTRNSTR"] >= 12
        assert 24 < header["MAGZP"] < 28 and header["MAGZPERR"] < 0.2 and header["LIMMAG"] > 18
        catalog = Path(path.removesuffix(".fits") + "_cat.fits")
        assert catalog.exists() and len(fits.getdata(catalog)) > 12
    # One telescope, one night: the zero points per second agree (they differ by airmass and the frames' few stars).
    zero_points = [
        fits.getheader(path)["MAGZP"] - 2.5 * math.log10(fits.getheader(path)["EXPTIME"]) for path in result.calibrated
    ]
    assert max(zero_points) - min(zero_points) < 0.3, zero_points
    # The reference library filled from the routine monitoring: one current reference per field (6 targets).
    listing = toros_cli("references", "list", "--config", str(tmp_path / "chain" / "toros.demo.yaml"))
    current = [line for line in listing.stdout.splitlines() if line[4:5] == "*"]
    assert len(current) == 6 and all(" r " in line and "own: " in line for line in current), listing.stdout
    assert list(data.glob("alerts/MS181101ab/*/targets-macon.csv")) and list(
        data.glob("alerts/MS181101ab/*/skymap.png")
    )
    assert (data / "2026-05-01" / "plan.png").exists()
    kinds = {p.name.split("-")[2] for p in (data / "2026-05-01").glob("*.fits")}
    assert kinds == {"bias", "dark", "flat", "light"}, "the robotic night took its calibrations before the targets"
    # The kilonova: found within 1" and 0.2 mag of the truth at every detection, beside its host; no other
    # candidate passes the vetting.
    assert result.candidates, "\n".join(lines)
    assert {c.name for c in result.candidates} == {result.candidates[0].name}, [
        (c.name, c.ra_deg, c.dec_deg, c.mag, c.score, list(c.flags)) for c in result.candidates
    ]
    truth = result.kilonova
    assert truth is not None
    for candidate in result.candidates:
        offset = math.hypot(
            (candidate.ra_deg - truth.ra_deg) * math.cos(math.radians(truth.dec_deg)), candidate.dec_deg - truth.dec_deg
        )
        assert offset * 3600 < 1.0
        # Within 0.2 mag, or three of its own errors for a faint detection (a 0.2 mag cut at S/N 10 fails one
        # detection in twenty by noise alone).
        expected = truth.mag("r", candidate.date_obs.ToDatetime(tzinfo=UTC))
        assert abs(candidate.mag - expected) <= max(0.2, 3 * candidate.mag_err), (
            candidate.mag,
            expected,
            candidate.mag_err,
        )
        assert candidate.alert_id == "MS181101ab" and candidate.host and candidate.host_offset_kpc > 0
        assert Path(candidate.triplet_path).exists()
    assert [c.detections for c in result.candidates] == list(range(1, len(result.candidates) + 1)), "its history"
    # The campaign, as the alert daemon kept it from the telescope's and the preprocessor's events.
    campaign = result.campaign
    assert (
        campaign["event"] == "MS181101ab" and campaign["drill"] and [s["name"] for s in campaign["sites"]] == ["macon"]
    )
    observed = [p for p in campaign["pointings"] if p["state"] == "observed"]
    assert len(observed) == 7 and all(len(p["frames"]) == 2 for p in observed)
    (again,) = [p for p in observed if p["purpose"] == "second look"]
    assert again["name"] == result.candidates[0].name and again["site"] == "macon"
    for pointing in observed:
        depths = [fits.getheader(path)["LIMMAG"] for path in result.calibrated
                  if Path(path).stem.removesuffix("_cal") in pointing["frames"]]  # fmt: skip
        assert pointing["limmag"] == pytest.approx(statistics.median(depths), abs=1e-3)
    coverage = campaign["coverage"]
    assert 0 < coverage["probability_2d"] < 1 and 0 < coverage["probability_3d"] <= coverage["probability_3d_observed"]
    assert 0 < coverage["kilonova_efficiency"] <= coverage["probability_2d"]
    (found,) = campaign["candidates"]
    assert found["name"] == result.candidates[0].name and found["rank"] == 1 and found["in_field"]
    assert found["host"] == result.candidates[0].host and found["host_distance_consistent"] is True
    assert found["classification"] == "kilonova-like" and found["kilonova_score"] > 0.1, found["evidence"]
    assert len(found["detections"]) == len(result.candidates)
    assert (
        found["second_look"]["state"] == "relayed" and found["second_look"]["work_order_id"] == again["work_order_id"]
    )
    assert any(d["frame"].removesuffix("_cal.fits") in again["frames"] for d in found["detections"]), "seen again"
    timeline = campaign["timeline"]
    assert timeline["merger"].startswith("2026-05-01T23:45")
    # Each step is stamped by the daemon where it happened; the three simulated clocks started a few real
    # seconds apart (minutes of clock time at rate 400), so only steps of one daemon are compared here.
    assert timeline["merger"] < timeline["notice"] < timeline["relayed"], timeline
    assert timeline["first_shutter_open"] == timeline["first_shutter_open_by_site"]["macon"]
    assert timeline["first_frame_searched"] <= timeline["first_candidate"], timeline
    assert timeline["first_shutter_open"] < timeline["second_look"], "both stamped by the telescope"
    assert any(line.strip().startswith("timeline: merger") for line in lines), "the demo prints the campaign"
    reports = data / "reports" / "MS181101ab"
    assert result.candidates[0].name in (reports / "gcn-circular-draft.txt").read_text()
    assert list((reports / "avro").glob("*.avro")) and (reports / "tns-at-report.json").exists()

    # The demo's night reprocessed (`toros reprocess`): the same zero points, the kilonova found again as the
    # same candidate.
    zero_points = {p: fits.getheader(p)["MAGZP"] for p in result.calibrated}
    node = Node(tmp_path / "chain" / "toros.demo.yaml")
    node.start("preprocessor")
    try:
        again = node.cli("reprocess", "--night", "2026-05-01", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr
        order = again.stdout.splitlines()[0]
        status = node.stub("preprocessor").GetWorkOrder(pb.GetWorkOrderRequest(id=order))
        assert status.state == pb.WORK_ORDER_STATE_DONE and status.task == "reprocess_night"
        assert status.message.startswith("2026-05-01: 20 of 20 frames science-ready, "), status.message
        found = [
            e.transient_candidate
            for e in node.stub("preprocessor").Watch(
                pb.WatchRequest(work_order_id=order, kinds=[pb.EVENT_KIND_TRANSIENT_CANDIDATE], replay_only=True)
            )
        ]
        assert {c.name for c in found} == {result.candidates[0].name}
    finally:
        node.stop()
    for path, magzp in zero_points.items():
        assert fits.getheader(path)["MAGZP"] == pytest.approx(magzp, abs=1e-4)
