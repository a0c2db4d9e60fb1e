"""The first epoch planned for several sites together: fields of view, visibility, no galaxy at two sites."""

from __future__ import annotations

import json
import math
import queue
from concurrent import futures
from datetime import UTC, datetime, timedelta
from pathlib import Path

import astropy.units as u
import grpc
import numpy as np
import pytest
from astropy.coordinates import AltAz, SkyCoord, get_body, get_sun
from astropy.time import Time
from support import DATA, done, submit, wait_for, write_config

from toros.alert.coordination import Galaxies, Pointing, plan_first_epoch
from toros.alert.settings import AlertConfig, Observatory
from toros.config import load_config
from toros.daemons import build_daemon
from toros.demo import free_port
from toros.floor.astronomy import location_of
from toros.floor.sky_geometry import tan_wcs
from toros.generated import toros_pb2 as pb
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.generated.toros_pb2_grpc import FrontDeskStub

NOW = datetime(2026, 5, 1, 23, 0, tzinfo=UTC)  # the sample map's region is up at both sites; the full Moon
# stands at RA 220, Dec -20, and galaxies east of RA 200 are too close to it
MACON = {"name": "macon", "latitude": -24.62, "longitude": -67.32, "elevation": 4650, "telescope": "127.0.0.1:1"}
EABA = {"name": "eaba", "latitude": -31.598, "longitude": -64.546, "elevation": 1350, "telescope": "127.0.0.1:2"}
NORTH = {"name": "north", "latitude": 62.0, "longitude": 10.0, "elevation": 100, "telescope": "127.0.0.1:3"}


def pool(ra: np.ndarray, dec: np.ndarray) -> Galaxies:
    share = 1.0 / np.arange(1, len(ra) + 1)
    return Galaxies(
        rank=np.arange(1, len(ra) + 1),
        name=[f"G{i}" for i in range(len(ra))],
        ra=np.asarray(ra, float),
        dec=np.asarray(dec, float),
        distance=np.full(len(ra), 40.0),
        share=share / share.sum(),
    )


def settings(*sites: dict, fov: object = 1.37, **extra: object) -> AlertConfig:
    return AlertConfig(
        observatories=[Observatory(**site, field_of_view_deg=fov) for site in sites],
        targets_per_observatory=extra.pop("targets_per_observatory", 200),
        exposure={"exposure_time_s": 60.0, "exposure_count": 3, "filter": "r"},
        **extra,
    )


def region(count: int, seed: int = 1, radius: float = 12.0) -> Galaxies:
    rng = np.random.default_rng(seed)
    return pool(rng.normal(194.3, radius / 2, count) % 360, np.clip(rng.normal(-17.9, radius / 2, count), -89, 89))


def inside_camera(pointing: Pointing, size: tuple[float, float], margin_deg: float) -> bool:
    """Every galaxy of a pointing on the detector (astropy's TAN projection of a 1"/px camera), off its edge."""
    width, height = (round(s * 3600) for s in size)
    wcs = tan_wcs(pointing.ra_deg, pointing.dec_deg, width, height, 1.0)
    x, y = wcs.all_world2pix([g.ra_deg for g in pointing.galaxies], [g.dec_deg for g in pointing.galaxies], 0)
    edge = margin_deg * 3600
    return bool(np.all((x >= edge) & (x <= width - 1 - edge) & (y >= edge) & (y <= height - 1 - edge)))


def altitude_sun_moon(site: dict, ra: float, dec: float, when: datetime) -> tuple[float, float, float]:
    """Astropy's full transform, independent of the plan's grid: the field's altitude, the Sun's altitude, the
    Moon's distance from the field."""
    site_config = Observatory(**site)
    frame = AltAz(obstime=Time(when), location=location_of(site_config))
    target = SkyCoord(ra * u.deg, dec * u.deg)
    moon = get_body("moon", Time(when), location_of(site_config))
    return (
        float(target.transform_to(frame).alt.deg),
        float(get_sun(Time(when)).transform_to(frame).alt.deg),
        float(moon.separation(target.transform_to(moon.frame)).deg),
    )


def test_two_sites_share_the_galaxies_and_plan_none_twice():
    galaxies = region(600)
    config = settings(MACON, EABA, fov=[1.4, 1.4], targets_per_observatory=25)
    plans = plan_first_epoch(galaxies, config.observatories, config, NOW)
    names = [g.name for plan in plans for p in plan.pointings for g in p.galaxies]
    assert len(names) == len(set(names)), "no galaxy planned at two sites"
    assert [len(plan.pointings) for plan in plans] == [25, 25], [plan.note for plan in plans]
    (alone,) = plan_first_epoch(galaxies, config.observatories[:1], config, NOW)
    assert len(names) > 1.6 * sum(len(p.galaxies) for p in alone.pointings), "the second site adds new galaxies"
    together = sum(p.probability for plan in plans for p in plan.pointings)
    assert together > sum(p.probability for p in alone.pointings)
    for plan in plans:
        site = MACON if plan.observatory.name == "macon" else EABA
        previous_end = NOW
        for pointing in plan.pointings:
            assert pointing.start >= previous_end, "a site's pointings follow one another"
            previous_end = pointing.start + timedelta(seconds=pointing.duration_s)
            assert inside_camera(pointing, (1.4, 1.4), margin_deg=1.5 / 60)
            for moment in (pointing.start, previous_end):
                altitude, sun, moon = altitude_sun_moon(site, pointing.ra_deg, pointing.dec_deg, moment)
                assert altitude >= 30.0 - 0.1 and sun < -12.0 + 0.1 and moon >= 20.0 - 0.1
    # Fields hold several galaxies: fewer pointings than galaxies.
    assert len(names) > 1.5 * sum(len(plan.pointings) for plan in plans)


def test_galaxies_in_one_field_are_taken_in_one_pointing():
    cluster = [(194.0, -18.0), (194.5, -18.3), (193.6, -17.7), (194.2, -17.5), (193.8, -18.4)]
    singles = [(194.0 - 5 * k, -18.0 - 2 * k) for k in range(1, 6)]
    ra, dec = zip(*(singles[:2] + cluster + singles[2:]), strict=True)
    galaxies = pool(np.array(ra), np.array(dec))
    config = settings(MACON, fov=[1.4, 1.4])
    (plan,) = plan_first_epoch(galaxies, config.observatories, config, NOW)
    fields = {frozenset(g.name for g in p.galaxies) for p in plan.pointings}
    assert frozenset({"G2", "G3", "G4", "G5", "G6"}) in fields and len(plan.pointings) == 6
    assert all(inside_camera(p, (1.4, 1.4), margin_deg=1.5 / 60) for p in plan.pointings)
    one_by_one = settings(MACON, fov=None)
    (plan,) = plan_first_epoch(galaxies, one_by_one.observatories, one_by_one, NOW)
    assert len(plan.pointings) == 10 and all(len(p.galaxies) == 1 for p in plan.pointings)
    assert all((p.ra_deg, p.dec_deg) == (p.galaxies[0].ra_deg, p.galaxies[0].dec_deg) for p in plan.pointings)
    circle = settings(MACON, fov=1.0)  # a 1-degree circle reaches only part of the cluster
    (plan,) = plan_first_epoch(galaxies, circle.observatories, circle, NOW)
    assert all(
        math.hypot((g.ra_deg - p.ra_deg) * math.cos(math.radians(p.dec_deg)), g.dec_deg - p.dec_deg) <= 0.5
        for p in plan.pointings
        for g in p.galaxies
    )
    assert 6 < len(plan.pointings) < 10


def test_the_best_field_goes_first_and_the_cap_holds():
    galaxies = region(300, seed=2)
    config = settings(MACON, EABA, targets_per_observatory=3)
    plans = plan_first_epoch(galaxies, config.observatories, config, NOW)
    assert [len(plan.pointings) for plan in plans] == [3, 3]
    first = plans[0].pointings[0]
    assert first.start == NOW and "G0" in {g.name for g in first.galaxies}, "the site free first takes the best"
    assert [g.score for g in first.galaxies] == sorted((g.score for g in first.galaxies), reverse=True)


def test_a_site_that_cannot_see_the_region_leaves_it_to_the_others():
    galaxies = region(200, seed=3)
    config = settings(NORTH, MACON)
    north, macon = plan_first_epoch(galaxies, config.observatories, config, NOW)
    assert not north.pointings and macon.pointings
    assert north.note in (
        "no ranked galaxy observable in its coming night",
        "no dark time in the 24 h after the alert",
    )
    arctic = settings({**NORTH, "latitude": 85.0}, MACON)
    polar, _ = plan_first_epoch(galaxies, arctic.observatories, arctic, NOW)
    assert polar.note == "no dark time in the 24 h after the alert" and not polar.pointings


def test_in_daytime_the_plan_starts_at_dusk():
    galaxies = region(100, seed=4)
    config = settings(MACON)
    noon = datetime(2026, 5, 1, 16, 0, tzinfo=UTC)  # local noon-ish at Macon
    (plan,) = plan_first_epoch(galaxies, config.observatories, config, noon)
    assert plan.pointings and plan.pointings[0].start > noon + timedelta(hours=6)
    _, sun, _ = altitude_sun_moon(MACON, 0.0, 0.0, plan.pointings[0].start)
    assert sun < -12.0 + 0.1


def alert_daemon(
    folder: Path, catalog: Path, start_daemon, sites: list[dict], per_site: int, rate: float = 1.0, **alert: object
) -> FrontDeskStub:
    """An alert daemon on a May night clock (``rate``) that plans for ``sites`` (``alert``: more settings)."""
    folder.mkdir()
    config = write_config(
        folder,
        clock={"start": "2026-05-01T23:00:00Z", "rate": rate},
        alert={"port": 0, "catalog": str(catalog), "process_test_alerts": True, "targets_per_observatory": per_site,
               "observatories": sites, "relay_retry_s": 2, **alert},
    )  # fmt: skip
    daemon = start_daemon(load_config(config), lambda c: build_daemon("alert", c))
    return FrontDeskStub(grpc.insecure_channel(f"127.0.0.1:{daemon.port}"))


@pytest.fixture
def two_sites(tmp_path, glade_catalog, start_daemon):
    """Two drill telescopes and an alert daemon that plans for both with Macon's field of view."""
    telescopes = []
    for name in ("macon", "eaba"):
        (tmp_path / name).mkdir()
        telescopes.append(start_daemon(load_config(write_config(tmp_path / name))))
    sites = [
        {**MACON, "telescope": f"127.0.0.1:{telescopes[0].port}", "field_of_view_deg": 1.37},
        {**EABA, "telescope": f"127.0.0.1:{telescopes[1].port}", "field_of_view_deg": [1.0, 0.7]},
    ]
    return telescopes, alert_daemon(tmp_path / "alert", glade_catalog, start_daemon, sites, 8)


def test_an_alert_reaches_two_sites_with_disjoint_fields(two_sites):
    telescopes, stub = two_sites
    submit(stub, "MS181101ab-preliminary.json", "c1")
    status = done(stub, "c1")
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    assert "macon: 8 targets accepted" in status.message and "eaba: 8 targets accepted" in status.message
    lists = {
        Path(p.path).stem.removeprefix("targets-"): json.loads(Path(p.path).read_text())
        for p in status.products
        if p.kind == "target_list" and p.path.endswith(".json")
    }
    galaxies = {site: {g["name"] for t in targets for g in t["galaxies"]} for site, targets in lists.items()}
    assert not galaxies["macon"] & galaxies["eaba"], "no galaxy at both sites"
    assert "NGC1" in galaxies["macon"], "the best galaxy goes to the first site free"
    for telescope, site in zip(telescopes, ("macon", "eaba"), strict=True):
        order = telescope.journal.get(f"MS181101ab-c1-{site}").work_order()
        sent = [(t.name, round(t.ra_deg, 6), round(t.dec_deg, 6)) for t in order.observe_targets.targets]
        assert sent == [(t["name"], t["ra_deg"], t["dec_deg"]) for t in lists[site]]
        scores = [t.score for t in order.observe_targets.targets]
        assert scores == pytest.approx([t["probability"] for t in lists[site]])


def test_a_field_across_ra_zero_is_one_pointing():
    # Galaxies on both sides of RA 0, up at Macon before dawn in late August.
    galaxies = pool(np.array([359.7, 0.2, 359.9, 0.4]), np.array([-30.0, -30.3, -29.7, -30.1]))
    config = settings(MACON, fov=[1.4, 1.4])
    (plan,) = plan_first_epoch(galaxies, config.observatories, config, datetime(2026, 8, 25, 4, 0, tzinfo=UTC))
    (pointing,) = plan.pointings
    assert len(pointing.galaxies) == 4 and inside_camera(pointing, (1.4, 1.4), margin_deg=1.5 / 60)
    assert min(pointing.ra_deg, 360.0 - pointing.ra_deg) < 0.5


def test_a_site_that_does_not_answer_has_its_galaxies_moved(tmp_path, glade_catalog, start_daemon):
    (tmp_path / "macon").mkdir()
    macon = start_daemon(load_config(write_config(tmp_path / "macon")))
    nobody = free_port()  # Eaba's telescope is down
    sites = [
        {**MACON, "telescope": f"127.0.0.1:{macon.port}", "field_of_view_deg": 1.37},
        {**EABA, "telescope": f"127.0.0.1:{nobody}", "field_of_view_deg": 1.37},
    ]
    stub = alert_daemon(tmp_path / "alert", glade_catalog, start_daemon, sites, 6)
    submit(stub, "MS181101ab-preliminary.json", "m1")
    status = done(stub, "m1")
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    assert "eaba: telescope refused or unreachable (UNAVAILABLE" in status.message
    assert "its galaxies planned again at macon" in status.message and "targets moved here accepted" in status.message
    first = macon.journal.get("MS181101ab-m1-macon").work_order().observe_targets.targets
    moved = macon.journal.get("MS181101ab-m1-macon-moved").work_order().observe_targets.targets
    assert first and moved and not {t.name for t in first} & {t.name for t in moved}
    campaign = json.loads((tmp_path / "alert" / "data" / "campaigns" / "MS181101ab" / "campaign.json").read_text())
    assert {p["state"] for p in campaign["pointings"] if p["site"] == "eaba"} == {"failed"}
    assert {p["site"] for p in campaign["pointings"] if p["work_order_id"].endswith("-moved")} == {"macon"}
    eaba = {p["name"] for p in campaign["pointings"] if p["site"] == "eaba"}
    again = {g for p in campaign["pointings"] if p["work_order_id"].endswith("-moved") for g in p["galaxies"]}
    planned_at_eaba = {g for p in campaign["pointings"] if p["site"] == "eaba" for g in p["galaxies"]}
    assert eaba and again <= planned_at_eaba and len(again) > 0
    # A retraction cancels every list the event sent, the moved one too.
    submit(stub, "MS181101ab-retraction.json", "m2")
    assert "of 2 target lists cancelled" in done(stub, "m2").message


def test_a_new_sky_map_withdraws_the_lists_still_running_and_plans_anew(two_sites):
    telescopes, stub = two_sites
    submit(stub, "MS181101ab-preliminary.json", "u1")
    assert done(stub, "u1").state == pb.WORK_ORDER_STATE_DONE
    notice = json.loads((DATA / "MS181101ab-preliminary.json").read_text())
    notice.update(alert_type="UPDATE", time_created="2026-05-01T23:30:00Z")
    submit(stub, json.dumps(notice).encode(), "u2")
    status = done(stub, "u2")
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    assert "earlier lists withdrawn: " in status.message and "macon: 8 targets accepted" in status.message
    for telescope, site in zip(telescopes, ("macon", "eaba"), strict=True):
        first = telescope.journal.get(f"MS181101ab-u1-{site}")
        assert first.state in (pb.WORK_ORDER_STATE_CANCELLED, pb.WORK_ORDER_STATE_DONE, pb.WORK_ORDER_STATE_FAILED)
        assert telescope.journal.get(f"MS181101ab-u2-{site}") is not None
    submit(stub, "MS181101ab-retraction.json", "u3")  # the withdrawn lists are not asked again
    retraction = done(stub, "u3").message
    assert "target lists cancelled" in retraction and "-u1-" not in retraction, retraction


class Telescope(pb_grpc.FrontDeskServicer):
    """A site's telescope as the alert daemon sees it (FrontDesk's Submit, CancelWorkOrder and Watch): it keeps
    what it is sent; with ``cancelling`` its operator cancels every list a moment after taking it (clouds); with
    ``observing`` it takes a frame of every target at once."""

    def __init__(self, cancelling: bool, observing: bool = False) -> None:
        self.cancelling = cancelling
        self.observing = observing
        self.cancelled: list[str] = []
        self.orders: dict[str, pb.WorkOrder] = {}
        self.events: queue.Queue[pb.Event] = queue.Queue()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_FrontDeskServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def Submit(self, request, context):
        self.orders[request.id] = request
        if self.cancelling:
            update = pb.WorkOrderUpdate(state=pb.WORK_ORDER_STATE_CANCELLED, message="cancelled by web:alice: clouds",
                                        task="observe_targets")  # fmt: skip
            self.events.put(pb.Event(sequence=len(self.orders), work_order_id=request.id, work_order_update=update))
        if self.observing:
            for n, target in enumerate(request.observe_targets.targets):
                image = pb.ImageReady(path=f"/data/{request.id}-{n}.fits", image_type=pb.IMAGE_TYPE_LIGHT, filter="r",
                                      object=target.name)  # fmt: skip
                self.events.put(pb.Event(sequence=100 * len(self.orders) + n, work_order_id=request.id,
                                         image_ready=image))  # fmt: skip
        return pb.SubmitResponse(id=request.id)

    def CancelWorkOrder(self, request, context):
        self.cancelled.append(request.id)
        return pb.WorkOrderStatus(id=request.id, state=pb.WORK_ORDER_STATE_CANCELLED, message=request.reason)

    def Watch(self, request, context):
        while context.is_active():
            try:
                yield self.events.get(timeout=0.2)
            except queue.Empty:
                continue


def test_galaxies_a_site_gives_up_in_the_night_go_to_the_other_site(tmp_path, glade_catalog, start_daemon):
    macon, eaba = Telescope(cancelling=True), Telescope(cancelling=False)
    try:
        sites = [
            {**MACON, "telescope": f"127.0.0.1:{macon.port}", "field_of_view_deg": 1.37},
            {**EABA, "telescope": f"127.0.0.1:{eaba.port}", "field_of_view_deg": 1.37},
        ]
        stub = alert_daemon(tmp_path / "alert", glade_catalog, start_daemon, sites, 5)
        submit(stub, "MS181101ab-preliminary.json", "n1")
        assert done(stub, "n1").state == pb.WORK_ORDER_STATE_DONE
        kept = tmp_path / "alert" / "data" / "campaigns" / "MS181101ab" / "campaign.json"
        wait_for(lambda: [m["state"] for m in json.loads(kept.read_text())["moves"]] == ["moved"], timeout=30)
        campaign = json.loads(kept.read_text())
        (move,) = campaign["moves"]
        left = {g for p in campaign["pointings"] if p["work_order_id"] == "MS181101ab-n1-macon" for g in p["galaxies"]}
        assert move["from"] == "macon" and move["to"] == ["eaba"] and "clouds" in move["reason"]
        assert set(move["galaxies"]) == left and len(left) > 0
        sent = eaba.orders["MS181101ab-moved-0-eaba"].observe_targets
        again = {
            g for p in campaign["pointings"] if p["work_order_id"] == "MS181101ab-moved-0-eaba" for g in p["galaxies"]
        }
        assert again and again <= left and {t.name for t in sent.targets} <= left and sent.alert_id == "MS181101ab"
        assert {p["state"] for p in campaign["pointings"] if p["site"] == "macon"} == {"cancelled"}
        assert not any(k.startswith("MS181101ab-moved") for k in macon.orders), (
            "nothing goes back to the site that left"
        )
    finally:
        macon.server.stop(grace=0)
        eaba.server.stop(grace=0)


def test_a_site_that_falls_behind_has_its_list_cancelled_and_its_galaxies_moved(tmp_path, glade_catalog, start_daemon):
    """Macon takes its list and then nothing (down, or closed without ending it): once its next pointing is
    ``site_behind_s`` late, the list is cancelled there and its galaxies go to Eaba, which observes."""
    macon, eaba = Telescope(cancelling=False), Telescope(cancelling=False, observing=True)
    try:
        sites = [
            {**MACON, "telescope": f"127.0.0.1:{macon.port}", "field_of_view_deg": 1.37},
            {**EABA, "telescope": f"127.0.0.1:{eaba.port}", "field_of_view_deg": 1.37},
        ]
        stub = alert_daemon(tmp_path / "alert", glade_catalog, start_daemon, sites, 4, rate=120.0, site_behind_s=600)
        submit(stub, "MS181101ab-preliminary.json", "b1")
        assert done(stub, "b1").state == pb.WORK_ORDER_STATE_DONE
        kept = tmp_path / "alert" / "data" / "campaigns" / "MS181101ab" / "campaign.json"
        wait_for(lambda: [m["state"] for m in json.loads(kept.read_text())["moves"]] == ["moved"], timeout=60)
        campaign = json.loads(kept.read_text())
        (move,) = campaign["moves"]
        assert move["from"] == "macon" and move["to"] == ["eaba"] and "macon fell behind" in move["reason"]
        assert macon.cancelled == ["MS181101ab-b1-macon"], "the list is cancelled where it was left"
        assert {s["name"]: s["state"] for s in campaign["sites"]}["macon"] == "behind"
        left = {g for p in campaign["pointings"] if p["work_order_id"] == "MS181101ab-b1-macon" for g in p["galaxies"]}
        assert set(move["galaxies"]) == left and {p["state"] for p in campaign["pointings"] if p["site"] == "macon"} == {
            "cancelled"}  # fmt: skip
        assert {t.name for t in eaba.orders["MS181101ab-moved-0-eaba"].observe_targets.targets} <= left
        assert not any("behind" in m["reason"] and m["from"] == "eaba" for m in campaign["moves"]), "eaba observes"
    finally:
        macon.server.stop(grace=0)
        eaba.server.stop(grace=0)
