"""The alert robot: notices, sky maps, the galaxy index, ranking, and process_alert end to end."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import re
import shutil
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
from astropy.io import fits
from astropy_healpix import HEALPix
from support import DATA, MULTIORDER, done, glade_plus_line, submit, write_config

from toros.alert.notices import BadNotice, parse_notice
from toros.alert.ranking import rank
from toros.alert.skymap import BadSkymap, read_skymap
from toros.floor.catalogs import GalaxyIndex
from toros.generated import toros_pb2 as pb

# -- notices -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, alert_type, serial, has_map",
    [
        ("MS181101ab-1-EarlyWarning.xml", "EARLY_WARNING", 1, True),
        ("MS181101ab-2-Preliminary.xml", "PRELIMINARY", 2, True),
        ("MS181101ab-3-Initial.xml", "INITIAL", 3, True),
        ("MS181101ab-4-Update.xml", "UPDATE", 4, True),
        ("MS181101ab-5-Retraction.xml", "RETRACTION", 5, False),
        ("MS181101ab-preliminary.json", "PRELIMINARY", 0, True),
        ("MS181101ab-retraction.json", "RETRACTION", 0, False),
    ],
)
def test_shared_notices_parse_into_one_record(name, alert_type, serial, has_map):
    alert = parse_notice((DATA / name).read_bytes())
    assert (alert.alert_id, alert.alert_type, alert.serial) == ("MS181101ab", alert_type, serial)
    assert alert.is_test and (alert.skymap is not None) == has_map
    if alert_type == "PRELIMINARY":
        assert alert.far_hz == pytest.approx(9.11069936486e-14) and alert.group == "CBC" and alert.pipeline == "gstlal"
        assert alert.classification["BNS"] == 0.95 and alert.properties["HasNS"] == 0.95


def test_o2_era_parameter_names_and_ext_update():
    o2 = (DATA / "MS181101ab-2-Preliminary.xml").read_text()
    o2 = o2.replace('name="skymap_fits"', 'name="skymap_fits_basic"').replace('name="HasNS"', 'name="ProbHasNS"')
    o2 = o2.replace('role="test"', 'role="observation"').replace("MS181101ab", "S190425z")
    alert = parse_notice(o2.encode())
    assert alert.skymap.url.endswith("bayestar.multiorder.fits") and alert.properties["HasNS"] == 0.95
    assert not alert.is_test and alert.alert_id == "S190425z"
    notice = json.loads((DATA / "MS181101ab-preliminary.json").read_text())
    notice.update(
        alert_type="EXT_UPDATE", superevent_id="S250101a", external_coinc={"observatory": "Fermi", "search": "GRB"}
    )
    ext = parse_notice(json.dumps(notice).encode())
    assert ext.alert_type == "EXT_UPDATE" and ext.external_coinc["observatory"] == "Fermi" and not ext.is_test


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\x00\x01garbage", "neither XML, JSON nor Avro"),
        (b"<VOEvent><What>", "malformed XML"),
        (b"{not json", "not valid JSON"),
        (b'{"alert_type": "PRELIMINARY"}', "superevent_id is missing"),
        (
            b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0"><What><Param name="Packet_Type" value="61"/></What></voe:VOEvent>',
            "no GraceID parameter (packet type 61)",
        ),
    ],
)
def test_bad_notices_say_why(payload, reason):
    with pytest.raises(BadNotice) as error:
        parse_notice(payload)
    assert reason in str(error.value)


# -- sky maps ----------------------------------------------------------------------------------------


def test_multi_order_map_peaks_where_the_user_guide_says():
    skymap = read_skymap(MULTIORDER.read_bytes())
    ra, dec = skymap.most_probable()
    assert ra == pytest.approx(194.3042, abs=0.01) and dec == pytest.approx(-17.8569, abs=0.01)
    assert skymap.probability().sum() == pytest.approx(1.0) and skymap.has_distance
    assert skymap.meta["DISTMEAN"] == pytest.approx(39.77, abs=0.01)


def test_flat_maps_nested_and_ring_agree(tmp_path):
    nested = read_skymap((DATA / "M323277-bayestar.flat-nested.fits.gz").read_bytes())
    table = fits.getdata(DATA / "M323277-bayestar.flat-nested.fits.gz", 1)
    nside = 512
    ring_order = HEALPix(nside=nside, order="ring").ring_to_nested(np.arange(12 * nside * nside))
    columns = [
        fits.Column(name=n, format="D", array=np.asarray(table[n], float).ravel()[ring_order])
        for n in ("PROB", "DISTMU", "DISTSIGMA", "DISTNORM")
    ]
    hdu = fits.BinTableHDU.from_columns(columns)
    hdu.header["ORDERING"], hdu.header["NSIDE"] = "RING", nside
    path = tmp_path / "ring.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    ring = read_skymap(path.read_bytes())
    assert ring.most_probable() == pytest.approx(nested.most_probable())
    assert nested.meta["DISTMEAN"] == pytest.approx(147.5, abs=0.1)


@pytest.mark.parametrize("data, reason", [(b"garbage" * 100, "unreadable FITS"), (b"\x1f\x8bnot gzip", "corrupt gzip")])
def test_corrupt_sky_maps_say_why(data, reason):
    with pytest.raises(BadSkymap) as error:
        read_skymap(data)
    assert reason in str(error.value)


# -- catalog and ranking -----------------------------------------------------------------------------


def test_the_index_is_built_once_and_rebuilt_when_the_catalog_changes(glade_catalog):
    index = GalaxyIndex.open(glade_catalog)
    expected = sum(1 for _ in open(glade_catalog))
    assert len(index) == expected and index.manifest["format"] == "glade+"
    assert np.all(np.diff(index.hpx) >= 0)
    built = (GalaxyIndex.folder_for(glade_catalog) / "hpx.npy").stat().st_mtime_ns
    assert (GalaxyIndex.folder_for(glade_catalog) / "hpx.npy").stat().st_mtime_ns == built
    GalaxyIndex.open(glade_catalog)
    assert (GalaxyIndex.folder_for(glade_catalog) / "hpx.npy").stat().st_mtime_ns == built, "not rebuilt"
    with open(glade_catalog, "a") as stream:
        stream.write(glade_plus_line(99999, 10.0, 10.0, 50.0) + "\n")
    assert len(GalaxyIndex.open(glade_catalog)) == expected + 1


def test_gwgc_catalog_ra_is_in_hours(tmp_path):
    shutil.copy(DATA / "minicat-gwgc.txt", tmp_path / "gwgc.txt")
    index = GalaxyIndex.open(tmp_path / "gwgc.txt")
    assert len(index) == 29 and index.manifest["format"] == "gwgc"
    row = list(index.name).index(b"UGC12889")
    assert index.ra[row] == pytest.approx(0.00047 * 15) and index.dist[row] == pytest.approx(72.458)


def test_ranking_follows_the_distance_ansatz(glade_catalog):
    index = GalaxyIndex.open(glade_catalog)
    ranked = rank(index, read_skymap(MULTIORDER.read_bytes()), credible_level=0.9, luminosity_weighting=False)
    names = [index.name[r].decode() for r in ranked.rows]
    assert names[0] == "NGC1", "the galaxy at the peak and at the map's distance ranks first"
    assert names.index("NGC2") > 10, "the same position at 400 Mpc ranks far lower"
    assert names.index("NGC3") >= int(ranked.has_distance.sum()), "no distance: after every galaxy with one"
    assert not any(n.startswith("NGC5") and len(n) == 7 for n in names), "nothing outside the credible region"


# -- the daemon --------------------------------------------------------------------------------------


def test_preliminary_then_duplicate_then_retraction(observatory):
    telescope, alert = observatory
    daemon, stub = alert()
    submit(stub, "MS181101ab-preliminary.json", "a1")
    status = done(stub, "a1")
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    assert "macon: 5 targets accepted" in status.message and status.message.startswith("drill PRELIMINARY MS181101ab")
    assert sorted(p.kind for p in status.products) == ["sky_view", "skymap_plot", "target_list", "target_list"]
    png = next(Path(p.path) for p in status.products if p.kind == "skymap_plot")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_sky_view(json.loads(next(Path(p.path) for p in status.products if p.kind == "sky_view").read_text()))
    sent = telescope.journal.get("MS181101ab-a1-macon")
    assert sent is not None
    order = sent.work_order()
    assert order.observe_targets.alert_id == "MS181101ab" and order.observe_targets.drill
    assert order.observe_targets.targets[0].name == "NGC1" and len(order.observe_targets.targets) == 5
    event = next(e for e in stub.Watch(pb.WatchRequest(kinds=[pb.EVENT_KIND_ALERT_PROCESSED], replay_only=True)))
    assert event.alert_processed.targets_relayed == 5 and event.alert_processed.drill

    submit(stub, "MS181101ab-preliminary.json", "a2")  # LVK re-sends preliminaries by design
    duplicate = done(stub, "a2")
    assert "duplicate notice, already handled by a1" in duplicate.message
    assert telescope.journal.get("MS181101ab-a2-macon") is None

    observed = telescope.journal.get("MS181101ab-a1-macon").state == pb.WORK_ORDER_STATE_DONE
    submit(stub, "MS181101ab-retraction.json", "a3")
    retraction = done(stub, "a3")
    if observed:  # the drill telescope may have finished the list already: nothing left to cancel, and said so
        assert (
            "retraction; 0 of 1 target lists cancelled, 1 already finished (MS181101ab-a1-macon DONE)"
            in retraction.message
        )
    else:
        assert "retraction; 1 of 1 target lists cancelled" in retraction.message


def check_sky_view(view: dict) -> None:
    """The sky view a browser draws: contours that enclose the user guide's most probable position, the
    banner, the ranked galaxies and each site's relayed targets."""
    ra, dec = view["most_probable"]
    assert abs(ra - 194.3042) < 1.0 and abs(dec + 17.8569) < 1.0
    assert 0 < view["area_deg2"]["0.5"] < view["area_deg2"]["0.9"] < 41253
    for contours in (view["contours"], view["zoom"]["contours"]):
        assert contours["0.5"] and contours["0.9"]
        lines = [np.array(line) for line in contours["0.9"]]
        assert all(line.shape[1] == 2 for line in lines)
        # The 90% contour surrounds the peak: a ray from the peak to the east crosses it an odd number of times.
        crossings = 0
        for line in lines:
            a, b = line[:-1], line[1:]
            straddle = (a[:, 1] > dec) != (b[:, 1] > dec)
            x = a[:, 0] + (dec - a[:, 1]) * (b[:, 0] - a[:, 0]) / np.where(b[:, 1] == a[:, 1], 1, b[:, 1] - a[:, 1])
            crossings += int((straddle & (x > ra)).sum())
        assert crossings % 2 == 1
    low, high = view["zoom"]["ra"]
    assert low < ra < high and view["zoom"]["dec"][0] < dec < view["zoom"]["dec"][1]
    banner = view["alert"]
    assert banner["alert_id"] == "MS181101ab" and banner["alert_type"] == "PRELIMINARY" and banner["drill"]
    assert banner["far_hz"] > 0 and banner["classification"]
    assert view["galaxies"][0]["rank"] == 1 and view["galaxies"][0]["name"] == "NGC1"
    (site,) = view["sites"]
    assert site["name"] == "macon" and site["accepted"] and site["work_order_id"].endswith("-macon")
    assert [t["name"] for t in site["targets"]][0] == "NGC1" and len(site["targets"]) == 5


def test_an_operator_drill_is_an_event_of_its_own(observatory):
    telescope, alert = observatory
    _, stub = alert(process_test_alerts=False)  # the stream's test notices are ignored; a drill asked for is not
    payload = (DATA / "MS181101ab-preliminary.json").read_bytes()
    for id in ("d1", "d2"):  # each replay is handled, not taken for a duplicate of the other
        stub.Submit(pb.WorkOrder(id=id, process_alert=pb.ProcessAlert(payload=payload, drill=True)))
        status = done(stub, id)
        assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
        assert (
            status.message.startswith("drill PRELIMINARY MS181101ab-drill") and "5 targets accepted" in status.message
        )
        sent = telescope.journal.get(f"MS181101ab-drill-{id}-macon").work_order()
        assert sent.observe_targets.alert_id == "MS181101ab-drill" and sent.observe_targets.drill
    # The real event's notice was never handled: it is when it comes (here the mock is a test: ignored).
    submit(stub, "MS181101ab-preliminary.json", "real")
    assert "test alert ignored" in done(stub, "real").message


def test_test_alerts_are_ignored_unless_drills_are_enabled(observatory):
    telescope, alert = observatory
    _, stub = alert(process_test_alerts=False)
    submit(stub, "MS181101ab-preliminary.json", "t1")
    assert "test alert ignored" in done(stub, "t1").message
    assert telescope.journal.get("MS181101ab-t1-macon") is None


def test_sky_map_downloaded_from_a_mirror_and_an_unreachable_one(observatory, tmp_path):
    served = tmp_path / "www"
    served.mkdir()
    shutil.copy(MULTIORDER, served / "bayestar.multiorder.fits")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        telescope, alert = observatory
        _, stub = alert(
            skymap={
                "rewrite": {
                    "https://emfollow.docs.ligo.org/userguide/_static/": f"http://127.0.0.1:{server.server_port}/"
                },
                "retries": 1,
                "timeout_s": 5,
            }
        )
        submit(stub, "MS181101ab-3-Initial.xml", "v1")
        status = done(stub, "v1")
        assert status.state == pb.WORK_ORDER_STATE_DONE and "macon: 5 targets accepted" in status.message
        (served / "bayestar.multiorder.fits").unlink()
        submit(stub, "MS181101ab-4-Update.xml", "v2")
        missing = done(stub, "v2")
        assert missing.state == pb.WORK_ORDER_STATE_FAILED
        assert "sky map unavailable: cannot download http://127.0.0.1" in missing.message and "404" in missing.message
        assert stub.GetStatus(pb.GetStatusRequest()).module == "alert"
    finally:
        server.shutdown()


def test_garbage_is_refused_at_submit_and_kept_raw(observatory):
    _, alert = observatory
    daemon, stub = alert()
    with pytest.raises(grpc.RpcError) as error:
        submit(stub, b"<VOEvent><broken", "g1")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("process_alert.payload: malformed XML")
    archived = list((daemon.storage_root / "alerts" / "raw").glob("*.bin"))
    assert [p.read_bytes() for p in archived] == [b"<VOEvent><broken"]


def test_cli_ingest_catalog_and_replay(observatory, glade_catalog, tmp_path):
    from support import toros_cli

    fresh = tmp_path / "fresh" / "GLADE+.txt"
    fresh.parent.mkdir()
    shutil.copy(glade_catalog, fresh)
    ingested = toros_cli("alert", "ingest-catalog", str(fresh))
    assert ingested.returncode == 0, ingested.stderr
    assert ingested.stdout.strip().endswith(f"galaxies indexed in {GalaxyIndex.folder_for(fresh)}")
    bad = tmp_path / "bad.txt"
    bad.write_text("a b c\n")
    refused = toros_cli("alert", "ingest-catalog", str(bad))
    assert refused.returncode == 2 and refused.stderr.startswith(f"toros: {bad}: unknown catalog format")

    _, alert = observatory
    daemon, _ = alert()
    (tmp_path / "cli").mkdir()
    config = write_config(tmp_path / "cli", alert={"port": daemon.port})
    replayed = toros_cli(
        "alert",
        "replay",
        str(DATA / "MS181101ab-preliminary.json"),
        str(DATA / "MS181101ab-retraction.json"),
        "--wait",
        "--config",
        str(config),
    )
    assert replayed.returncode == 0, replayed.stderr
    lines = replayed.stdout.splitlines()
    assert "done: drill PRELIMINARY MS181101ab" in lines[1] and "macon: 5 targets accepted" in lines[1]
    # The drill telescope may already have observed the list: then it is reported finished, not cancelled.
    assert re.search(
        r"retraction; (1 of 1 target lists cancelled|0 of 1 target lists cancelled, 1 already finished \(MS181101ab-\S+-macon DONE\))$",
        lines[3],
    ), lines[3]


def test_csv_catalog_with_a_header(tmp_path):
    path = tmp_path / "glade23.csv"
    path.write_text("name,ra,dec,d_L,B\nNGC 4993,197.4487,-23.3839,40.4,13.3\nfar,10,10,,\n")
    index = GalaxyIndex.open(path)
    assert index.manifest["format"] == "csv" and len(index) == 2
    row = list(index.name).index(b"NGC 4993")
    assert index.ra[row] == pytest.approx(197.4487) and index.dist[row] == pytest.approx(40.4)
    assert np.isnan(index.dist[list(index.name).index(b"far")])


def test_a_2d_map_ranks_by_probability_alone(glade_catalog):
    index = GalaxyIndex.open(glade_catalog)
    skymap = read_skymap(MULTIORDER.read_bytes())
    skymap.distmu = skymap.distsigma = skymap.distnorm = None
    ranked = rank(index, skymap, credible_level=0.9, luminosity_weighting=False)
    names = [index.name[r].decode() for r in ranked.rows[:3]]
    assert set(names) == {"NGC1", "NGC2", "NGC3"}, "at the peak, whatever their distance (or none)"
    assert ranked.has_distance.all()


def test_luminosity_weighting_prefers_the_brighter_of_two_neighbours(tmp_path):
    path = tmp_path / "pair.csv"
    path.write_text("name,ra,dec,d_L,B\nfaint,194.30,-17.86,40.0,19.0\nbright,194.30,-17.86,40.0,11.0\n")
    index = GalaxyIndex.open(path)
    skymap = read_skymap(MULTIORDER.read_bytes())
    plain = rank(index, skymap, credible_level=0.9, luminosity_weighting=False)
    weighted = rank(index, skymap, credible_level=0.9, luminosity_weighting=True)
    assert plain.score[0] == pytest.approx(plain.score[1])
    assert index.name[weighted.rows[0]] == b"bright" and weighted.score[0] > 100 * weighted.score[1]


def test_significance_threshold(observatory):
    telescope, alert = observatory
    _, stub = alert(significant_only=True)
    notice = json.loads((DATA / "MS181101ab-preliminary.json").read_text())
    notice["event"]["significant"] = False
    submit(stub, json.dumps(notice).encode(), "s1")
    assert "not marked significant" in done(stub, "s1").message
    assert telescope.journal.get("MS181101ab-s1-macon") is None


def test_a_raven_coincidence_uses_the_combined_sky_map_and_says_so(observatory):
    """An external coincidence carries the GW map combined with the external one (RAVEN): the better
    localisation is ranked, and the work order and the sky view name which map it was."""
    notice = json.loads((DATA / "MS181101ab-preliminary.json").read_text())
    gw_only = parse_notice(json.dumps(notice).encode())
    assert gw_only.skymap_source == "the GW sky map"
    combined = base64.b64encode((DATA / "MS181101ab-bayestar.multiorder.fits").read_bytes()).decode()
    notice.update(alert_type="EXT_UPDATE", external_coinc={"observatory": "Fermi", "search": "GRB",
                                                          "combined_skymap": combined})  # fmt: skip
    alert = parse_notice(json.dumps(notice).encode())
    assert alert.skymap is not None and alert.skymap.data == (DATA / "MS181101ab-bayestar.multiorder.fits").read_bytes()
    assert alert.skymap_source == "the combined GW and Fermi sky map (external_coinc.combined_skymap)"
    _, alert_daemon = observatory
    _, stub = alert_daemon()
    submit(stub, json.dumps(notice).encode(), "raven")
    status = done(stub, "raven")
    assert "galaxies in the credible region of the combined GW and Fermi sky map" in status.message, status.message
    view = json.loads(next(Path(p.path) for p in status.products if p.kind == "sky_view").read_text())
    assert view["alert"]["skymap_source"] == alert.skymap_source
    notice["external_coinc"]["combined_skymap"] = "not base64!"
    with pytest.raises(BadNotice, match="external_coinc.combined_skymap: not valid base64"):
        parse_notice(json.dumps(notice).encode())
