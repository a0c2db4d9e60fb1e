"""The whole campaign, as `make demo` runs it (the shipped scenario with smaller frames and a faster clock): two
sites, each a telescope and a preprocessor as processes (the first also the alert robot), one simulated clock;
routine monitoring filled their reference libraries weeks before; the sample LVK notice arrives 30 s after the
merger; the kilonova beside a ranked galaxy is found, looked at again in g and ranked first as kilonova-like,
and every decoy of the simulated sky (a supernova, an asteroid, a variable star) is classified as what it is."""

from __future__ import annotations

import json
import math
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from astropy.io import fits
from support import toros_cli

from toros.demo import run_scenario
from toros.scenarios import SHIPPED, Scenario

SMALL = {"camera": {"frame": 640, "pixel_scale_arcsec": 0.75, "exposure_s": 60}, "clock_rate": 400, "galaxies": 5000,
         "timeout_s": 270}  # fmt: skip


def small_scenario(folder: Path) -> Path:
    """The shipped scenario on 640² frames (0.75"/px: an 8' field with enough stars, and stars still sampled) at
    clock ×400. (`toros reprocess` of a night is tested in tests/preprocessor/test_compute.py.)"""
    document = yaml.safe_load(SHIPPED.read_text()) | SMALL
    document["notice"] = str((SHIPPED.parent / document["notice"]).resolve())
    document["references"]["ranked"] = 5  # the fields of the kilonova and of every decoy
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.mark.timeout(330)  # above the night's own deadline, so that a stall reports its progress lines
def test_a_two_site_campaign_from_the_shipped_scenario(tmp_path):
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line)  # shown by pytest if the test fails

    scenario = Scenario.load(small_scenario(tmp_path))
    result = run_scenario(scenario, tmp_path / "night", say=say)
    sites = {site.name: site for site in result.prepared.sites} if result.prepared else {}
    if not result.ok:  # what went wrong, from the daemons' own logs
        for site in sites.values():
            log = (site.config.parent / "logs" / "toros.log").read_text().splitlines()
            lines += [line for line in log if " ERROR " in line][-15:]
    assert result.ok, "\n".join(lines)
    assert set(result.exit_codes) == {"macon/alert", "macon/telescope", "macon/preprocessor", "eaba/telescope",
                                      "eaba/preprocessor"} and not any(result.exit_codes.values())  # fmt: skip
    assert any("macon: 6 targets accepted" in line and "eaba: 6 targets accepted" in line for line in lines), lines
    assert any("routine search of" in line and "1 vetted" in line for line in lines), "the variable, before the event"
    campaign = json.loads((tmp_path / "night" / "campaign.json").read_text())

    # Every transient of the simulated sky classified as what it is; the kilonova ranked first, with its colour.
    for truth, found in result.verdicts:
        assert found, f"{truth.label}: not found\n" + "\n".join(lines)
        assert {c["classification"] for c in found} == {truth.expected}, (truth.label, [c["evidence"] for c in found])
    (kilonova,) = next(found for truth, found in result.verdicts if truth.kind == "kilonova")
    assert kilonova["rank"] == 1 and kilonova["kilonova_score"] > 0.1 and kilonova["host_distance_consistent"]
    assert {d["filter"] for d in kilonova["detections"]} == {"r", "g"}, "the second look gave its colour"
    assert any(e.startswith("g-r = ") for e in kilonova["evidence"]), kilonova["evidence"]
    assert kilonova["second_look"]["state"] == "relayed"
    variable = next(found for truth, found in result.verdicts if truth.kind == "variable")
    assert all(c["first_seen"] < campaign["timeline"]["merger"] for c in variable), "seen in the routine search"
    assert all(c["second_look"]["state"] == "not needed" for _, found in result.verdicts for c in found
               if c["classification"] in ("moving", "variable")), "no telescope time for impostors"  # fmt: skip

    # The kilonova's photometry and position against the truth, at every detection.
    placed = next(truth for truth, _ in result.verdicts if truth.kind == "kilonova")
    streamed = [c for events in result.candidates.values() for c in events if c.name == kilonova["name"]]
    assert len(streamed) == len(kilonova["detections"]) >= 3
    from toros.simulation.sky import Kilonova

    truth = Kilonova(placed.ra_deg, placed.dec_deg, scenario.merger, float(placed.spec["distance_mpc"]))
    for candidate in streamed:
        east = (candidate.ra_deg - truth.ra_deg) * math.cos(math.radians(truth.dec_deg))
        assert math.hypot(east, candidate.dec_deg - truth.dec_deg) * 3600 < 1.0
        expected = truth.mag(candidate.filter, candidate.date_obs.ToDatetime(tzinfo=UTC))
        assert abs(candidate.mag - expected) <= max(0.2, 3 * candidate.mag_err), (
            candidate.filter,
            candidate.mag,
            expected,
        )
        assert Path(candidate.triplet_path).exists()

    # Coordination: both sites observed, no galaxy twice in the first epoch; every frame's depth is its LIMMAG.
    first = [p for p in campaign["pointings"] if p["purpose"] == "first epoch" and p["state"] == "observed"]
    assert {p["site"] for p in first} == {"macon", "eaba"}
    galaxies = [g for p in first for g in p["galaxies"]]
    assert len(galaxies) == len(set(galaxies)), "no galaxy observed at two sites"
    ready = 0
    for pointing in first:
        calibrated = sites[pointing["site"]].config.parent / "data" / "calibrated"
        headers = [fits.getheader(next(calibrated.rglob(f"{stem}_cal.fits"))) for stem in pointing["frames"]]
        assert all(h["ALERTID"] == "MS181101ab" and h["DRILL"] is True for h in headers)
        # An 8' test field holds a few dozen stars: now and then one cannot be solved (a real field has thousands).
        solved = [h for h in headers if "LIMMAG" in h]
        ready += len(solved)
        assert all(h["WCSSRC"] == "fit" and h["ASTRRMS"] < 0.3 and 24 < h["MAGZP"] < 28 for h in solved)
        depths = [h["LIMMAG"] for h in solved]
        assert pointing["limmag"] == (pytest.approx(statistics.median(depths), abs=1e-3) if depths else None)
    assert ready >= 0.8 * sum(len(p["frames"]) for p in first), "frames science-ready"
    coverage = campaign["coverage"]
    assert 0 < coverage["probability_2d"] < 1 and 0 < coverage["probability_3d"] <= coverage["probability_3d_observed"]
    assert 0 < coverage["kilonova_efficiency"] <= coverage["probability_2d"]

    # One clock for the whole network: the timeline's steps, stamped by different daemons, are in order.
    timeline = {k: v for k, v in campaign["timeline"].items() if isinstance(v, str)}
    at = {k: datetime.fromisoformat(v) for k, v in timeline.items()}
    assert at["notice"] - at["merger"] == timedelta(seconds=30)
    order = ["merger", "notice", "relayed", "first_shutter_open", "first_frame_searched", "first_candidate",
             "second_look"]  # fmt: skip
    assert [at[k] for k in order] == sorted(at[k] for k in order), timeline
    assert abs((result.notice_replayed - at["notice"]).total_seconds()) < 60, "replayed when the notice was made"
    assert any(line.strip().startswith("timeline: merger") for line in lines), "the demo prints the campaign"
    folder = sites["macon"].config.parent / "data" / "campaigns" / "MS181101ab"
    assert kilonova["name"] in (folder / "gcn-circular-draft.txt").read_text()
    reported = json.loads((folder / "treasuremap-pointings.json").read_text())
    observed = [p for p in campaign["pointings"] if p["state"] == "observed"]
    assert len([p for p in reported["pointings"] if p["status"] == "completed"]) == len(observed)
    # The names DESIGN.md fixes for scripts.
    assert {"event", "drill", "sites", "pointings", "coverage", "candidates", "timeline"} <= set(campaign)
    assert all({"name", "state"} <= set(s) for s in campaign["sites"])
    assert all({"site", "ra_deg", "dec_deg", "filter", "start", "exposure_s", "limmag", "state"} <= set(p)
               for p in campaign["pointings"])  # fmt: skip
    assert all({"name", "ra_deg", "dec_deg", "rank", "classification", "kilonova_score", "host",
                "host_distance_consistent", "detections"} <= set(c) for c in campaign["candidates"])  # fmt: skip
    assert all({"time", "filter", "mag", "mag_err"} <= set(d) for c in campaign["candidates"] for d in c["detections"])

    site = next(s for s in sites.values() if kilonova["name"].split("-")[2].lower() == s.name)
    listing = toros_cli("references", "list", "--config", str(site.config))
    assert sum(line[4:5] == "*" for line in listing.stdout.splitlines()) >= 6, listing.stdout
