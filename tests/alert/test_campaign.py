"""An event's campaign, kept from the relay and the sites' events: pointings, depth, coverage, efficiency,
candidates and the timeline — against independent computations from the sky map."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy_healpix import healpix_to_lonlat, level_to_nside
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from support import MULTIORDER, toros_cli, write_config

from toros.alert.campaign import CAMPAIGN_FILE, Campaigns, EventSky, describe, kilonova_reach_mpc
from toros.alert.coordination import Candidate, Galaxies, Pointing
from toros.alert.coverage import inside_any
from toros.alert.footprints import Footprint
from toros.alert.settings import Observatory
from toros.alert.skymap import read_skymap
from toros.cli import main
from toros.floor.kilonova import kilonova_mag
from toros.generated import toros_pb2 as pb

MERGER = datetime(2026, 5, 1, 23, 45, tzinfo=UTC)
FIELD = (1.4, 1.4)
MACON = Observatory(
    name="macon", latitude=-24.62, longitude=-67.32, elevation=4650, telescope="127.0.0.1:1", field_of_view_deg=FIELD
)
EABA = Observatory(name="eaba", latitude=-31.6, longitude=-64.5, telescope="127.0.0.1:2")  # no field of view


def stamp(moment: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def sky() -> tuple[EventSky, bytes]:
    data = MULTIORDER.read_bytes()
    skymap = read_skymap(data)
    rng = np.random.default_rng(8)
    count = 3000
    ra, dec = rng.normal(194.3, 2.0, count), rng.normal(-17.9, 2.0, count)
    distance = rng.uniform(10, 200, count)
    distance[:40] = np.nan  # some galaxies have no distance
    share = rng.random(count)
    return EventSky(skymap, np.array([f"G{i}" for i in range(count)]), ra, dec, distance, share / share.sum()), data


def pointing(site: str, ra: float, dec: float, name: str) -> Pointing:
    galaxy = Candidate(1, name, ra, dec, 40.0, 0.01)
    return Pointing(site, ra, dec, MERGER + timedelta(minutes=20), 240.0, (galaxy,))


PLAN = [
    (MACON, "S1-a-macon", [pointing("macon", 194.3, -17.9, "G-A"), pointing("macon", 195.6, -17.9, "G-B")], True, ""),
    (EABA, "S1-a-eaba", [pointing("eaba", 193.0, -18.5, "G-C")], True, ""),
]


def relayed(root: Path) -> tuple[Campaigns, EventSky]:
    event_sky, data = sky()
    campaigns = Campaigns(root, (MACON, EABA))
    campaigns.relayed(
        "S1",
        drill=True,
        merger=MERGER,
        notice=MERGER + timedelta(seconds=30),
        now=MERGER + timedelta(minutes=2),
        sky=event_sky,
        skymap_bytes=data,
        sites=PLAN,
        filter="r",
        exposure_s=60.0,
    )
    return campaigns, event_sky


def with_second_looks(root: Path) -> Campaigns:
    """The event relayed to both sites, candidates looked at again 30 min after their first detection."""
    event_sky, data = sky()
    campaigns = Campaigns(root, (MACON, EABA), second_look_delay_s=1800)
    campaigns.relayed("S1", drill=False, merger=MERGER, notice=None, now=MERGER, sky=event_sky, skymap_bytes=data,
                      sites=PLAN, filter="r", exposure_s=60.0)  # fmt: skip
    return campaigns


def frame(order: str, name: str, stem: str, when: datetime, sequence: int) -> pb.Event:
    return pb.Event(
        sequence=sequence,
        work_order_id=order,
        image_ready=pb.ImageReady(
            path=f"/data/2026-05-01/{stem}.fits",
            image_type=pb.IMAGE_TYPE_LIGHT,
            filter="r",
            exposure_time=Duration(seconds=60),
            object=name,
            date_obs=stamp(when),
        ),
    )


def depth(stem: str, limmag: float, when: datetime) -> pb.Event:
    science = pb.FrameScience(limmag=limmag)
    progress = pb.CalibrationProgress(stage="science", path=f"/cal/{stem}_cal.fits", science=science)
    return pb.Event(sequence=1, time=stamp(when), calibration_progress=progress)


def read(root: Path) -> dict:
    return json.loads((root / "S1" / CAMPAIGN_FILE).read_text())


def observe(campaigns: Campaigns, at: datetime) -> None:
    """Two frames of the first pointing at Macon (their depth first for one, as streams may race), one of
    Eaba's; Macon's list then cancelled with its second pointing unobserved."""
    campaigns.preprocessor_event("macon", depth("f1", 17.8, at), at)
    campaigns.telescope_event("macon", frame("S1-a-macon", "G-A", "f1", at, 1), at)
    campaigns.telescope_event("macon", frame("S1-a-macon", "G-A", "f2", at + timedelta(minutes=1), 2), at)
    campaigns.preprocessor_event("macon", depth("f2", 18.2, at), at)
    campaigns.telescope_event("eaba", frame("S1-a-eaba", "G-C", "e1", at, 3), at)
    cancelled = pb.WorkOrderUpdate(state=pb.WORK_ORDER_STATE_CANCELLED, message="cancelled by web:alice")
    campaigns.telescope_event(
        "macon", pb.Event(sequence=4, work_order_id="S1-a-macon", work_order_update=cancelled), at
    )
    campaigns.telescope_event("macon", frame("other-order", "G-A", "x1", at, 5), at)  # not the campaign's


def test_pointings_follow_the_sites_events(tmp_path):
    campaigns, _ = relayed(tmp_path)
    data = read(tmp_path)
    assert [p["state"] for p in data["pointings"]] == ["planned"] * 3
    assert data["sites"] == [
        {"name": "macon", "state": "observing", "note": ""},
        {"name": "eaba", "state": "observing", "note": ""},
    ]
    assert (
        data["timeline"]["notice"] == "2026-05-01T23:45:30Z" and data["timeline"]["relayed"] == "2026-05-01T23:47:00Z"
    )
    assert data["coverage"]["probability_2d"] == 0 and data["coverage"]["kilonova_efficiency"] == 0
    first = MERGER + timedelta(minutes=25)
    observe(campaigns, first)
    data = read(tmp_path)
    a, b, c = data["pointings"]
    assert a["state"] == "observed" and a["frames"] == {"f1": 17.8, "f2": 18.2} and a["limmag"] == pytest.approx(18.0)
    assert a["start"] == "2026-05-02T00:10:00Z" and a["exposure_s"] == 60.0
    assert b["state"] == "cancelled" and not b["frames"], "the cancelled list's unobserved pointing"
    assert c["state"] == "observed" and c["frames"] == {"e1": None} and c["limmag"] is None
    assert data["timeline"]["first_shutter_open"] == "2026-05-02T00:10:00Z"
    assert data["timeline"]["first_frame_searched"] == "2026-05-02T00:10:00Z"
    assert data["sites"][0] == {"name": "macon", "state": "finished", "note": "cancelled by web:alice"}
    # The galaxy Macon's operator gave up goes to the other sites; a list this daemon withdrew itself does not.
    assert data["moves"] == [{"from": "macon", "order": "S1-a-macon", "galaxies": ["G-B"],
                              "reason": "cancelled by web:alice", "state": "scheduled", "to": []}]  # fmt: skip
    (move,) = campaigns.due_moves()
    assert (move.site, move.galaxies, move.index) == ("macon", ["G-B"], 0)
    campaigns.moved(move, [], "r", 60.0, first)
    assert read(tmp_path)["moves"][0]["state"] == "nowhere" and campaigns.due_moves() == []
    campaigns.withdrawing("S1", ["S1-a-eaba"])
    ended = pb.WorkOrderUpdate(state=pb.WORK_ORDER_STATE_CANCELLED, message="S1 re-planned")
    campaigns.telescope_event("eaba", pb.Event(sequence=6, work_order_id="S1-a-eaba", work_order_update=ended), first)
    assert len(read(tmp_path)["moves"]) == 1

    again = Campaigns(tmp_path, (MACON, EABA))  # a restarted daemon carries on from the file
    again.preprocessor_event("eaba", depth("e1", 19.5, first), first)
    assert read(tmp_path)["pointings"][2]["limmag"] == 19.5


def test_coverage_and_depth_against_independent_sums(tmp_path):
    campaigns, event_sky = relayed(tmp_path)
    observe(campaigns, MERGER + timedelta(minutes=25))
    coverage = read(tmp_path)["coverage"]
    # Only Macon has a field of view: its one observed field counts (Eaba's frame has no footprint).
    fields = [(Footprint.of(FIELD), 194.3, -17.9)]
    inside = inside_any(event_sky.ra, event_sky.dec, fields)
    assert coverage["probability_3d_observed"] == pytest.approx(event_sky.share[inside].sum(), abs=1e-5)
    days = (datetime(2026, 5, 2, 0, 10, tzinfo=UTC) - MERGER).total_seconds() / 86400
    distance = event_sky.distance.copy()
    skymap = event_sky.skymap
    level, ipix = skymap.level_ipix
    # Galaxies without a distance are taken at DISTMU of their pixel: looked up here by brute force.
    for row in np.flatnonzero(~np.isfinite(distance) & inside):
        lon, lat = healpix_to_lonlat(ipix, level_to_nside(level), order="nested")
        nearest = np.argmin((lon.deg - event_sky.ra[row]) ** 2 + (lat.deg - event_sky.dec[row]) ** 2)
        distance[row] = skymap.distmu[nearest]
    seen = np.array([(kilonova_mag("r", days, d) or 99) <= 18.0 for d in distance])
    assert coverage["probability_3d"] == pytest.approx(event_sky.share[inside & seen].sum(), abs=2e-3)
    assert 0 < coverage["probability_3d"] < coverage["probability_3d_observed"]
    # The efficiency: a Monte Carlo of kilonovae drawn from the map, their distance from the pixel's posterior.
    rng = np.random.default_rng(9)
    probability = skymap.probability()
    chosen = rng.choice(len(probability), size=200_000, p=probability / probability.sum())
    lon, lat = healpix_to_lonlat(
        ipix[chosen],
        level_to_nside(level[chosen]),
        dx=rng.random(len(chosen)),
        dy=rng.random(len(chosen)),
        order="nested",
    )
    mu, sigma = skymap.distmu[chosen], skymap.distsigma[chosen]
    # Each kilonova's distance from r² N(mu, sigma) on (0, mu + 5 sigma], by rejection, drawn again until taken.
    usable = np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)  # elsewhere no distance: never counted
    top = np.where(usable, mu + 5 * sigma, 1.0)
    r = np.full(len(chosen), np.inf)
    pending = usable.copy()
    while pending.any():
        trial = rng.normal(mu[pending], sigma[pending])
        taken = (trial > 0) & (trial <= top[pending]) & (rng.random(len(trial)) < (trial / top[pending]) ** 2)
        r[np.flatnonzero(pending)[taken]] = trial[taken]
        pending[np.flatnonzero(pending)[taken]] = False
    reach = kilonova_reach_mpc("r", days, 18.0)  # 50 Mpc: the map holds the event at 40 ± 8
    hit = inside_any(lon.deg, lat.deg, fields) & (r <= reach)
    assert coverage["kilonova_efficiency"] == pytest.approx(hit.mean(), abs=0.01)
    assert 0.2 * coverage["probability_2d"] < coverage["kilonova_efficiency"] < 0.95 * coverage["probability_2d"]
    galaxies = read(tmp_path)["galaxies"]
    assert galaxies and all(g["site"] == "macon" for g in galaxies)
    listed = next(g for g in galaxies if g["distance_mpc"] is not None)
    assert listed["absolute_mag_limit"] == pytest.approx(18.0 - 5 * np.log10(listed["distance_mpc"] * 1e5), abs=0.02)


def test_candidates_and_their_hosts_distance(tmp_path):
    campaigns, event_sky = relayed(tmp_path)
    at = MERGER + timedelta(minutes=25)
    observe(campaigns, at)
    skymap = event_sky.skymap
    ra, dec = 194.30, -17.86
    posterior = event_sky.distance_posterior(np.array([ra]), np.array([dec]))
    mu, sigma = float(posterior[0][0]), float(posterior[1][0])
    event_sky.distance[:3] = [mu + 0.5 * sigma, mu + 6 * sigma, np.nan]  # near, far, unknown
    names = {"near": "G0", "far": "G1", "unknown": "G2", "none": ""}
    for number, (label, host) in enumerate(names.items()):
        found = pb.TransientCandidate(
            name=f"TOROS-{label}", ra_deg=ra if label != "none" else 200.0, dec_deg=dec, mag=18.0, mag_err=0.05,
            filter="r", snr=20, score=0.9, host=host, alert_id="S1", date_obs=stamp(at + timedelta(minutes=number)),
            frame_path=f"/cal/f{number}_cal.fits",
        )  # fmt: skip
        event = pb.Event(sequence=10 + number, time=stamp(at + timedelta(minutes=number)), transient_candidate=found)
        campaigns.preprocessor_event("macon", event, at)
        campaigns.preprocessor_event("macon", event, at)  # the same event again (a replayed stream): once
    assert skymap.has_distance
    data = read(tmp_path)
    by_name = {c["name"]: c for c in data["candidates"]}
    assert by_name["TOROS-near"]["host_distance_consistent"] is True and by_name["TOROS-near"]["rank"] == 1
    assert by_name["TOROS-far"]["host_distance_consistent"] is False
    assert by_name["TOROS-unknown"]["host_distance_consistent"] is None
    assert "no distance" in by_name["TOROS-unknown"]["distance_note"]
    assert (
        by_name["TOROS-none"]["distance_note"] == "no catalog galaxy near it" and not by_name["TOROS-none"]["in_field"]
    )
    assert by_name["TOROS-near"]["in_field"] and len(by_name["TOROS-near"]["detections"]) == 1
    assert data["timeline"]["first_candidate"] == "2026-05-02T00:10:00Z"


def test_the_cli_prints_the_campaign(tmp_path, capsys):
    config = str(write_config(tmp_path, storage={"root": str(tmp_path / "data")}))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["campaign", *args, "--config", config])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = run()
    assert code == 1 and err.strip().startswith("toros: no campaign yet under")
    campaigns, _ = relayed(tmp_path / "data" / "campaigns")
    observe(campaigns, MERGER + timedelta(minutes=25))
    code, out, err = run()
    assert code == 0, err
    assert out.startswith("S1 (drill)") and "site macon: finished" in out
    assert "pointings: 2 observed, 1 cancelled" in out and "kilonova efficiency" in out
    assert "timeline: merger 2026-05-01T23:45:00Z → notice 2026-05-01T23:45:30Z (+30 s)" in out
    code, out, _ = run("S1", "--json")
    assert code == 0 and json.loads(out)["event"] == "S1"
    code, _, err = run("S2")
    assert code == 1 and "no campaign for S2" in err
    code, _, err = run("../../etc")
    assert code in (1, 2) and len(err.strip().splitlines()) == 1
    shown = toros_cli("campaign", "S1", "--config", config)  # and as a command, once
    assert shown.returncode == 0 and shown.stdout.startswith("S1 (drill)"), shown.stderr


def test_treasure_map_and_circular_drafts_move_with_the_campaign(tmp_path):
    campaigns, _ = relayed(tmp_path)
    folder = tmp_path / "S1"
    planned = json.loads((folder / "treasuremap-pointings.json").read_text())
    assert planned["graceid"] == "S1" and [p["status"] for p in planned["pointings"]] == ["planned"] * 3
    assert all("depth" not in p for p in planned["pointings"])
    assert "TOROS has not observed yet" in (folder / "gcn-circular-draft.txt").read_text()
    observe(campaigns, MERGER + timedelta(minutes=25))
    report = json.loads((folder / "treasuremap-pointings.json").read_text())
    first, second, third = report["pointings"]
    assert first == {
        "ra": 194.3, "dec": -17.9, "instrumentid": None, "time": "2026-05-02T00:10:00", "status": "completed",
        "band": "r", "pos_angle": 0.0, "depth": 18.0, "depth_unit": "ab_mag",
    }  # fmt: skip
    assert second["status"] == "cancelled" and third["status"] == "completed" and "depth" not in third
    circular = (folder / "gcn-circular-draft.txt").read_text()
    assert circular.startswith("SUBJECT: LIGO/Virgo/KAGRA S1: TOROS optical follow-up (DRILL, do not send)")
    words = " ".join(circular.split())
    assert "observed 2 fields holding 2 of the ranked host-galaxy candidates of S1 from eaba, macon" in words
    assert "macon: median 5-sigma limit 18.00 AB (1 field measured)" in circular
    assert "No candidate passed the vetting so far." in circular
    campaigns.retracted("S1", MERGER + timedelta(hours=1))
    assert "S1 was retracted by LVK" in (folder / "gcn-circular-draft.txt").read_text()
    assert read(tmp_path)["retracted"]


def test_what_was_observed_is_not_planned_again(tmp_path):
    campaigns, _ = relayed(tmp_path)
    ra = np.array([194.3, 194.9, 195.6, 193.0, 150.0])
    dec = np.array([-17.9, -17.5, -17.9, -18.5, 10.0])
    pool = Galaxies(np.arange(1, 6), ["X1", "X2", "X3", "G-C", "X5"], ra, dec, np.full(5, 40.0), np.full(5, 0.2))
    assert not campaigns.observed("S1", pool).any() and not campaigns.observed("S2", pool).any()
    observe(campaigns, MERGER + timedelta(minutes=25))
    # In Macon's observed 1.4 deg field, or the galaxy Eaba (no field of view) pointed at; not the cancelled field.
    assert campaigns.observed("S1", pool).tolist() == [True, True, False, True, False]


def test_each_candidate_is_looked_at_again_when_due(tmp_path):
    campaigns = with_second_looks(tmp_path)
    found = MERGER + timedelta(minutes=30)
    candidate = pb.TransientCandidate(
        name="TOROS-1", ra_deg=194.3, dec_deg=-17.9, mag=18.0, mag_err=0.05, filter="r", snr=20, score=0.9,
        alert_id="S1", date_obs=stamp(found), frame_path="/cal/f1_cal.fits",
    )  # fmt: skip
    campaigns.preprocessor_event("eaba", pb.Event(sequence=1, time=stamp(found), transient_candidate=candidate), found)
    assert read(tmp_path)["candidates"][0]["second_look"]["state"] == "scheduled"
    assert campaigns.due(found + timedelta(minutes=29)) == []
    (look,) = campaigns.due(found + timedelta(minutes=30))
    assert (look.event, look.candidate, look.site, look.drill) == ("S1", "TOROS-1", "eaba", False)
    sent = found + timedelta(minutes=31)
    campaigns.looked(look, MACON, "S1-second-look-TOROS-1-macon", "g", 120.0, "2 × 120 s in g at macon", sent)
    assert campaigns.due(sent) == [], "sent once"
    data_now = read(tmp_path)
    assert data_now["candidates"][0]["second_look"] | {"note": ""} == {
        "due": "2026-05-02T00:45:00Z", "site": "macon", "state": "relayed",
        "work_order_id": "S1-second-look-TOROS-1-macon", "note": "",
    }  # fmt: skip
    again = data_now["pointings"][-1]
    assert again["purpose"] == "second look" and again["state"] == "planned" and again["filter"] == "g"
    taken = sent + timedelta(minutes=5)
    campaigns.telescope_event("macon", frame("S1-second-look-TOROS-1-macon", "TOROS-1", "s1", taken, 9), taken)
    timeline = read(tmp_path)["timeline"]
    assert timeline["second_look"] == "2026-05-02T00:51:00Z" and "first_shutter_open" not in timeline

    # A candidate of a retracted event is not looked at again; one that no telescope takes says why.
    campaigns.preprocessor_event(
        "eaba", pb.Event(sequence=2, time=stamp(found), transient_candidate=pb.TransientCandidate(
            name="TOROS-2", ra_deg=194.0, dec_deg=-18.0, alert_id="S1", date_obs=stamp(found))), found,
    )  # fmt: skip
    (second,) = campaigns.due(found + timedelta(hours=1))
    campaigns.looked(second, None, "", "g", 120.0, "no telescope took it (eaba: UNAVAILABLE)", found)
    assert read(tmp_path)["candidates"][1]["second_look"]["state"] == "failed"
    campaigns.preprocessor_event(
        "eaba", pb.Event(sequence=3, time=stamp(found), transient_candidate=pb.TransientCandidate(
            name="TOROS-3", ra_deg=194.1, dec_deg=-18.0, alert_id="S1", date_obs=stamp(found))), found,
    )  # fmt: skip
    campaigns.retracted("S1", found)
    assert campaigns.due(found + timedelta(hours=2)) == []
    third = next(c for c in read(tmp_path)["candidates"] if c["name"] == "TOROS-3")
    assert third["second_look"]["state"] == "cancelled"


def test_a_map_without_distances_and_a_site_without_a_field_of_view(tmp_path):
    """A 2-D map: no efficiency and no host verdict, said so; coverage and depth from the galaxies' own
    distances; Eaba's pointings (no field of view) count by the galaxies they were chosen for only."""
    event_sky, data = sky()
    skymap = event_sky.skymap
    flat = type(skymap)(skymap.uniq, skymap.probdensity, meta=skymap.meta)
    event_sky = EventSky(flat, event_sky.name, event_sky.ra, event_sky.dec, event_sky.distance, event_sky.share)
    campaigns = Campaigns(tmp_path, (MACON, EABA))
    campaigns.relayed("S1", drill=True, merger=MERGER, notice=None, now=MERGER, sky=event_sky, skymap_bytes=data,
                      sites=PLAN, filter="r", exposure_s=60.0)  # fmt: skip
    at = MERGER + timedelta(minutes=25)
    observe(campaigns, at)
    found = pb.TransientCandidate(name="TOROS-1", ra_deg=194.3, dec_deg=-17.9, mag=18.0, mag_err=0.05, filter="r",
                                  host="G100", alert_id="S1", date_obs=stamp(at), score=0.9)  # fmt: skip
    campaigns.preprocessor_event("macon", pb.Event(sequence=1, time=stamp(at), transient_candidate=found), at)
    campaign = read(tmp_path)
    assert campaign["coverage"]["kilonova_efficiency"] is None and campaign["coverage"]["probability_2d"] > 0
    (candidate,) = campaign["candidates"]
    assert candidate["host_distance_consistent"] is None and "2-D" in candidate["distance_note"]
    assert candidate["evidence"] and candidate["classification"] in ("kilonova-like", "supernova-like", "unknown")
    assert "kilonova efficiency -" in describe(campaign)


def test_movers_and_variables_get_no_second_look(tmp_path):
    """An asteroid that left the match radius between two exposures is two candidates, each missing from the
    other's frame: one mover, and so is a candidate found later on its track. A star seen varying in a routine
    search before the merger is a variable. No telescope time for either; a look waits for its pointing's frames
    to be searched, and a candidate found in a look's own frames gets none of its own."""
    campaigns = with_second_looks(tmp_path)
    t1, t2 = MERGER + timedelta(minutes=25), MERGER + timedelta(minutes=27)
    campaigns.telescope_event("macon", frame("S1-a-macon", "G-A", "f1", t1, 1), t1)
    campaigns.telescope_event("macon", frame("S1-a-macon", "G-A", "f2", t2, 2), t2)
    east = 1.0 / 3600 / math.cos(math.radians(17.9))

    def found(name: str, seq: int, when: datetime, stem: str, ra: float, first_seen: datetime | None = None) -> None:
        candidate = pb.TransientCandidate(
            name=name, ra_deg=ra, dec_deg=-17.9, mag=18.5, mag_err=0.05, filter="r", snr=20, score=0.9,
            alert_id="S1", date_obs=stamp(when), frame_path=f"/cal/{stem}_cal.fits",
            first_seen=stamp(first_seen or when),
        )  # fmt: skip
        campaigns.preprocessor_event(
            "macon", pb.Event(sequence=seq, time=stamp(when), transient_candidate=candidate), when
        )

    found("TOROS-A", 1, t1, "f1", 194.30)
    found("TOROS-V", 2, t1, "f1", 194.32, first_seen=MERGER - timedelta(days=26))  # seen in a routine search
    found("TOROS-V", 3, t2, "f2", 194.32, first_seen=MERGER - timedelta(days=26))
    due = t1 + timedelta(minutes=30)
    assert campaigns.due(due) == [], "f2 and f1 are not searched yet: wait"
    campaigns.preprocessor_event("macon", depth("f1", 20.0, t1), t1)
    found("TOROS-B", 4, t2, "f2", 194.30 + 1.1 * east)  # 1.1" east two minutes later
    campaigns.preprocessor_event("macon", depth("f2", 20.0, t2), t2)
    assert campaigns.due(due) == []
    listed = {c["name"]: c for c in read(tmp_path)["candidates"]}
    assert listed["TOROS-A"]["classification"] == listed["TOROS-B"]["classification"] == "moving"
    assert "each missing from the other's frames" in listed["TOROS-A"]["evidence"][0]
    assert listed["TOROS-V"]["classification"] == "variable" and listed["TOROS-V"]["first_seen"].startswith(
        "2026-04-05"
    )
    assert {listed[n]["second_look"]["state"] for n in ("TOROS-A", "TOROS-V")} == {"not needed"}

    # Half an hour on, a look at another candidate catches the asteroid 15" further east: on the track, and
    # found in a look's frames, it gets no look of its own.
    found("TOROS-K", 7, t1, "f1", 194.0)
    (look,) = campaigns.due(due)
    assert look.candidate == "TOROS-K"
    campaigns.looked(look, MACON, "S1-look-K", "g", 60.0, "", due)
    look_at = t2 + timedelta(minutes=32)
    campaigns.telescope_event("macon", frame("S1-look-K", "TOROS-K", "f3", look_at, 5), look_at)
    found("TOROS-C", 8, look_at, "f3", 194.30 + 17.0 * east)
    listed = {c["name"]: c for c in read(tmp_path)["candidates"]}
    assert listed["TOROS-C"]["classification"] == "moving" and "on the track of" in listed["TOROS-C"]["evidence"][0]
    assert listed["TOROS-C"]["second_look"]["state"] == "not needed"


def test_a_candidates_light_curve_holds_its_forced_photometry_and_limits(tmp_path):
    campaigns, _ = relayed(tmp_path)
    t0, t1, t2 = (MERGER + timedelta(minutes=m) for m in (20, 25, 27))
    for n, (stem, when, limmag) in enumerate((("f0", t0, 20.1), ("f1", t1, 20.3), ("f2", t2, 20.2)), start=1):
        campaigns.telescope_event("macon", frame("S1-a-macon", "G-A", stem, when, n), when)
        campaigns.preprocessor_event("macon", depth(stem, limmag, when), when)
    candidate = pb.TransientCandidate(
        name="TOROS-K", ra_deg=194.31, dec_deg=-17.9, mag=18.0, mag_err=0.05, filter="r", snr=20, score=0.9,
        alert_id="S1", date_obs=stamp(t1), frame_path="/cal/f1_cal.fits",
    )  # fmt: skip
    campaigns.preprocessor_event("macon", pb.Event(sequence=9, time=stamp(t1), transient_candidate=candidate), t1)
    forced = pb.ForcedPhotometry(
        name="TOROS-K", alert_id="S1", filter="r", date_obs=stamp(t2), frame_path="/cal/f2_cal.fits", flux=900.0,
        flux_err=200.0, mag=19.1, mag_err=0.24, limmag=19.6,
    )  # fmt: skip
    for sequence in (10, 11):  # the same frame's measurement twice (a replayed stream): kept once
        campaigns.preprocessor_event("macon", pb.Event(sequence=sequence, time=stamp(t2), forced_photometry=forced), t2)
    unknown = pb.ForcedPhotometry(name="TOROS-X", alert_id="S1", frame_path="/cal/f2_cal.fits")
    campaigns.preprocessor_event("macon", pb.Event(sequence=12, time=stamp(t2), forced_photometry=unknown), t2)
    (listed,) = read(tmp_path)["candidates"]
    assert [(f["frame"], f["mag"], f["limmag"]) for f in listed["forced"]] == [("f2_cal.fits", 19.1, 19.6)]
    assert listed["limits"] == [{"time": "2026-05-02T00:05:00Z", "filter": "r", "limmag": 20.1, "frame": "f0"}]


def test_a_persons_label_counts_in_the_ranking(tmp_path):
    campaigns = with_second_looks(tmp_path)
    when = MERGER + timedelta(hours=6)
    for n, name in enumerate(("TOROS-A", "TOROS-B"), start=1):
        candidate = pb.TransientCandidate(
            name=name, ra_deg=194.3 + n / 100, dec_deg=-17.9, mag=kilonova_mag("r", 0.25, 40.0), mag_err=0.05,
            filter="r", snr=20, score=0.5, alert_id="S1", date_obs=stamp(when), frame_path=f"/cal/f{n}_cal.fits",
        )  # fmt: skip
        campaigns.preprocessor_event(
            "eaba", pb.Event(sequence=n, time=stamp(when), transient_candidate=candidate), when
        )
    before = {c["name"]: c["kilonova_score"] for c in read(tmp_path)["candidates"]}
    for n, (name, label) in enumerate((("TOROS-A", pb.CANDIDATE_LABEL_BOGUS), ("TOROS-B", pb.CANDIDATE_LABEL_REAL))):
        said = pb.CandidateLabelled(name=name, alert_id="S1", label=label, by="web:ana", note="checked the triplet")
        campaigns.preprocessor_event("eaba", pb.Event(sequence=10 + n, time=stamp(when), candidate_labelled=said), when)
    listed = {c["name"]: c for c in read(tmp_path)["candidates"]}
    assert listed["TOROS-A"]["kilonova_score"] == 0 and listed["TOROS-A"]["label"]["label"] == "bogus"
    assert listed["TOROS-A"]["evidence"][0] == "labelled bogus by web:ana: checked the triplet"
    assert listed["TOROS-B"]["kilonova_score"] > before["TOROS-B"] > 0, "real: the vetting's doubt taken away"
    assert listed["TOROS-B"]["rank"] == 1
    assert [look.candidate for look in campaigns.due(when + timedelta(hours=1))] == ["TOROS-B"], "no look at bogus"
