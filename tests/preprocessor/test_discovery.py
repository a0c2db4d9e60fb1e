"""Transient discovery against the simulated sky's truth and real ZTF cut-outs: the kilonova is found where and
as bright as it is, and is the only vetted candidate; `toros difference` writes its three products; the
preprocessor's search stores candidates exactly once, streams them and writes the reports (PNG triplet, JSON,
GCN draft, TNS report, Avro packets that read back); bad inputs give clear reasons."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from support import FIELD, HOST, KILONOVA_OFFSET, SCALE, SIZE, WHEN, science_ready_with_truth, ztf_cutouts

from toros.cli import main as toros_main
from toros.daemons import build_daemon
from toros.demo import free_port
from toros.preprocessor import vetting
from toros.preprocessor.candidates import CandidateStore, Host, NewDetection, Search
from toros.preprocessor.discovery import DiscoveryFailed, discover
from toros.preprocessor.references import ReferenceLibrary
from toros.preprocessor.reports import read_avro
from toros.preprocessor.settings import DiscoveryConfig, ReferencesConfig, ReportsConfig, TnsReporting
from toros.preprocessor.transients import TransientSearch, kpc_offset
from toros.runtime.config import DatabaseConfig
from toros.simulation.sky import Conditions, SimulatedSky, StarCatalog, VariableStar, write_calibrated_frame


def _truth_xy(pair: dict) -> tuple[float, float]:
    x, y = pair["truth"].wcs.world_to_pixel_values(pair["kilonova"].ra_deg, pair["kilonova"].dec_deg)
    return float(x), float(y)


def test_the_kilonova_is_found_at_its_place_and_brightness_and_is_the_only_vetted_candidate(pair):
    result = discover(pair["new"], pair["reference"])
    vetted = [c for c in result.candidates if not c.negative and c.score >= DiscoveryConfig().min_score]
    assert len(vetted) == 1, [(c.x, c.y, c.snr, c.score) for c in vetted]
    found = vetted[0]
    x, y = _truth_xy(pair)
    assert math.hypot(found.x - x, found.y - y) * SCALE < 1.0, "within 1 arcsec"
    true_mag = pair["kilonova"].mag("r", WHEN)
    assert found.mag == pytest.approx(true_mag, abs=0.2)
    assert found.mag_err is not None and 0 < found.mag_err < 0.2 and found.snr > 10
    assert found.ra_deg == pytest.approx(pair["kilonova"].ra_deg, abs=1 / 3600)
    assert result.common_stars >= 5, "the registration was refined on stars"


def test_toros_difference_writes_the_difference_the_significance_and_the_candidates(pair, tmp_path, capsys):
    assert toros_main(["difference", str(pair["new"]), str(pair["reference"]), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "new_diff.fits" in out and "new_candidates.csv" in out
    diff, scorr = fits.open(tmp_path / "new_diff.fits"), fits.open(tmp_path / "new_scorr.fits")
    assert diff[0].data.shape == (SIZE, SIZE) and WCS(scorr[0].header).has_celestial
    with open(tmp_path / "new_candidates.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert {"ra_deg", "dec_deg", "x", "y", "mag", "mag_err", "snr", "score"} <= set(rows[0])
    snrs = [float(r["snr"]) for r in rows]
    assert snrs == sorted(snrs, reverse=True)
    best = max((r for r in rows if r["negative"] == "False"), key=lambda r: float(r["score"]))
    x, y = _truth_xy(pair)
    assert math.hypot(float(best["x"]) - x, float(best["y"]) - y) < 2.0, "x is the column, y the row (0-based)"
    ra, dec = WCS(scorr[0].header).pixel_to_world_values(float(best["x"]), float(best["y"]))
    assert float(best["ra_deg"]) == pytest.approx(float(ra), abs=1e-6)
    assert scorr[0].data[round(float(best["y"])), round(float(best["x"]))] == pytest.approx(float(best["snr"]), rel=0.3)


def test_a_transient_on_a_galaxy_nucleus_is_kept_flagged_nuclear_and_measured(pair, tmp_path):
    """The host's nucleus (r 14.7) is bright reference light under the detection, but extended: not a star. Its
    PSF models come from a few faint stars (uncertain by 2-3%), so the flux error counts that uncertainty times
    the nucleus: a transient of a quarter of the nucleus's light is found, its magnitude right within its error,
    never precise and wrong."""
    nova = VariableStar(HOST.ra_deg, HOST.dec_deg, 16.0, 0.0, 1.0, WHEN)
    path = tmp_path / "nuclear.fits"
    truth = write_calibrated_frame(
        path, SimulatedSky(StarCatalog(), [HOST], [nova]), FIELD, SIZE, pointing_error_arcsec=(0.0, 0.0),
        pixel_scale_arcsec=SCALE, conditions=Conditions("r", 120.0, 1.2, 2.0, WHEN), seed=12,
    )  # fmt: skip
    science_ready_with_truth(path, truth, 2.0)
    result = discover(path, pair["reference"])
    x, y = truth.wcs.world_to_pixel_values(HOST.ra_deg, HOST.dec_deg)
    (found,) = [c for c in result.candidates if math.hypot(c.x - x, c.y - y) < 2.0 and not c.negative]
    assert "nuclear" in found.flags and not {"on_star", "bright_star"} & set(found.flags)
    assert found.star_galaxy == 0.0 and found.mag is not None and found.mag_err is not None
    assert abs(found.mag - 16.0) < 3 * found.mag_err and found.mag_err < 0.3, (found.mag, found.mag_err)
    assert found.snr >= DiscoveryConfig().min_snr and found.score >= 0.5, (found.snr, found.score)
    # Without it, the nucleus's residual (2.6% of its light with these PSF models) is no detection.
    quiet = discover(pair["new"], pair["reference"])
    hx, hy = pair["truth"].wcs.world_to_pixel_values(HOST.ra_deg, HOST.dec_deg)
    assert not [c for c in quiet.candidates if math.hypot(c.x - hx, c.y - hy) < 3.0]


def test_a_bright_star_that_varied_is_kept_and_its_residual_is_not(pair, tmp_path):
    """A detection on a bright star is its subtraction residual (``bright_star``, never vetted) unless it holds a
    real share of the star's light: a variable star that brightened by half is kept, flagged ``on_star``."""
    ra, dec, mag = FIELD[0] - 0.02, FIELD[1] + 0.015, 14.5
    star = VariableStar(ra, dec, mag, 0.0, 1.0, WHEN)  # constant: a bright star of the field
    reference = tmp_path / "reference.fits"
    truth = write_calibrated_frame(
        reference, SimulatedSky(StarCatalog(), [HOST], [star]), FIELD, SIZE, pointing_error_arcsec=(0.0, 0.0),
        pixel_scale_arcsec=SCALE, conditions=Conditions("r", 300.0, 1.1, 1.5, WHEN - timedelta(days=30)), seed=11,
    )  # fmt: skip
    science_ready_with_truth(reference, truth, 1.5)
    for share, kept in ((0.5, True), (0.02, False)):
        extra = VariableStar(ra, dec, mag - 2.5 * math.log10(share), 0.0, 1.0, WHEN)
        path = tmp_path / f"varied-{share}.fits"
        truth = write_calibrated_frame(
            path, SimulatedSky(StarCatalog(), [HOST], [star, extra]), FIELD, SIZE, pointing_error_arcsec=(0.0, 0.0),
            pixel_scale_arcsec=SCALE, conditions=Conditions("r", 120.0, 1.2, 2.0, WHEN), seed=12,
        )  # fmt: skip
        science_ready_with_truth(path, truth, 2.0)
        sx, sy = truth.wcs.world_to_pixel_values(ra, dec)
        there = [c for c in discover(path, reference).candidates
                 if math.hypot(c.x - sx, c.y - sy) < 2.0 and not c.negative]  # fmt: skip
        if kept:
            (found,) = there
            assert "on_star" in found.flags and "bright_star" not in found.flags, found.flags
            assert abs(found.mag - extra.mean_mag) < 0.1 + 3 * found.mag_err, (found.mag, extra.mean_mag)
        else:
            assert all("bright_star" in c.flags for c in there), [c.flags for c in there]


def test_a_saturated_core_under_a_detection_never_gives_a_clean_magnitude(pair, tmp_path):
    """The kilonova's place saturated in the new frame: either nothing is found there, or what is found is
    flagged (masked pixels), never an unflagged candidate with a magnitude."""
    path = tmp_path / "saturated.fits"
    x, y = _truth_xy(pair)
    with fits.open(pair["new"]) as hdus:
        hdus[0].header["SATURATE"] = 60000.0
        hdus[0].data[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4] = 65000.0
        hdus.writeto(path)
    result = discover(path, pair["reference"])
    there = [c for c in result.candidates if math.hypot(c.x - x, c.y - y) < 5.0]
    assert all({"near_masked", "edge"} & set(c.flags) for c in there), [(c.flags, c.mag) for c in there]


def test_a_reference_of_another_pixel_scale_is_resampled_and_the_kilonova_still_measured(pair, tmp_path):
    """A 2×2-binned reference (0.94"/px) of another size: resampled onto the science grid."""
    with fits.open(pair["reference"]) as hdus:
        data, header = hdus[0].data, hdus[0].header.copy()
    binned = data[: SIZE // 2 * 2, : SIZE // 2 * 2].reshape(SIZE // 2, 2, SIZE // 2, 2).sum(axis=(1, 3))[:300, :340]
    wcs = WCS(header)[::2, ::2]
    header.update(wcs.to_header())
    header["FWHM"] = header["FWHM"] / 2
    fits.PrimaryHDU(binned.astype(np.float32), header).writeto(tmp_path / "binned.fits")
    result = discover(pair["new"], tmp_path / "binned.fits")
    x, y = _truth_xy(pair)
    near = [c for c in result.candidates if math.hypot(c.x - x, c.y - y) < 2.5 and not c.negative]
    assert near and near[0].mag == pytest.approx(pair["kilonova"].mag("r", WHEN), abs=0.2)


@pytest.mark.filterwarnings("ignore:Found a SIMPLE card")  # ZTF's cut-outs' own header
@pytest.mark.parametrize(
    "packet", ["2019_01_10_739260766315010006", "472263571115115000", "forcedphot_test_1660293514215020000"]
)
def test_ztf_cutouts_are_measured_from_their_own_pixels(packet, tmp_path):
    """Real ZTF cut-outs (63×63) with nothing but a WCS and the science image's zero point: each PSF from the
    image's own stars, the template's flux scale from the stars both show; ZTF's sign and magnitude."""
    science, template, candidate = ztf_cutouts(packet, tmp_path)
    result = discover(science, template)
    central = [c for c in result.candidates if math.hypot(c.x - 31, c.y - 31) < 2.5]
    assert central, [(c.x, c.y) for c in result.candidates]
    assert central[0].negative is (candidate["isdiffpos"] in ("f", "0"))
    assert central[0].mag == pytest.approx(candidate["magpsf"], abs=0.15)
    assert any("flux scale from" in note and "common star" in note for note in result.notes), result.notes
    psf = next(note for note in result.notes if note.startswith("science PSF"))
    assert "header" not in psf, "measured on the pixels, not taken from a header"


@pytest.mark.filterwarnings("ignore:Found a SIMPLE card")
def test_a_template_without_a_zero_point_and_nothing_to_scale_from_is_refused(tmp_path):
    """ZTF packet 472263571115115008: a new point source, and no star the two cut-outs share: the magnitudes
    would be a guess, so the subtraction says why it cannot give them."""
    science, template, _ = ztf_cutouts("472263571115115008", tmp_path)
    with pytest.raises(DiscoveryFailed, match="no MAGZP in the reference and no common source to scale"):
        discover(science, template)


def test_a_jpeg_cutout_is_refused_with_its_reason(tmp_path):
    science, template, _ = ztf_cutouts("87704463155000", tmp_path)
    with pytest.raises(DiscoveryFailed, match="a JPEG picture, not a FITS image"):
        discover(science, template)
    assert toros_main(["difference", str(science), str(template), "--out", str(tmp_path)]) == 1


def test_cutouts_with_no_point_source_and_no_fwhm_are_refused(tmp_path):
    from toros.floor.sky_geometry import tan_wcs

    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        header = tan_wcs(FIELD[0], FIELD[1], 63, 63, 1.0).to_header()
        header["MAGZP"] = 26.0
        fits.PrimaryHDU(rng.normal(100, 5, (63, 63)).astype(np.float32), header).writeto(tmp_path / f"{name}.fits")
    with pytest.raises(DiscoveryFailed, match="has a point source to measure a PSF on or a FWHM in its header"):
        discover(tmp_path / "a.fits", tmp_path / "b.fits")


def test_a_header_fwhm_the_stars_contradict_is_named_and_overridden(pair, tmp_path):
    wrong = tmp_path / "wrong.fits"
    with fits.open(pair["new"]) as hdus:
        hdus[0].header["FWHM"] = hdus[0].header["FWHM"] * 2.0
        hdus[0].header["PSFBETA"] = 25.0
        hdus.writeto(wrong)
    result = discover(wrong, pair["reference"])
    assert any("the header's FWHM" in note and "contradicts its stars'" in note for note in result.notes)
    assert any("PSFBETA 25 is not a seeing profile's" in note for note in result.notes)
    assert result.science.fwhm == pytest.approx(2.0 / SCALE, rel=0.05), "the stars' FWHM, a Moffat fit"


def test_bad_inputs_are_named(pair, tmp_path):
    no_wcs = tmp_path / "no-wcs.fits"
    fits.PrimaryHDU(np.ones((64, 64), np.float32)).writeto(no_wcs)
    with pytest.raises(DiscoveryFailed, match="science no-wcs.fits: no celestial WCS"):
        discover(no_wcs, pair["reference"])
    elsewhere = tmp_path / "elsewhere.fits"
    with fits.open(pair["reference"]) as hdus:
        header = hdus[0].header.copy()
        header["CRVAL1"] += 5.0
        fits.PrimaryHDU(hdus[0].data, header).writeto(elsewhere)
    with pytest.raises(DiscoveryFailed, match="does not cover the science frame"):
        discover(pair["new"], elsewhere)
    # NaN regions and masked pixels: no crash, and a candidate next to them says so.
    holed = tmp_path / "holed.fits"
    x, y = _truth_xy(pair)
    with fits.open(pair["new"]) as hdus:
        data, header = hdus[0].data.copy(), hdus[0].header.copy()
        mask = np.zeros(data.shape, np.uint8)
        data[:100, :100] = np.nan
        mask[round(y) + 4, round(x) + 4] = 1  # a hot pixel beside the kilonova
        fits.HDUList([fits.PrimaryHDU(data, header), fits.ImageHDU(mask, name="MASK")]).writeto(holed)
    result = discover(holed, pair["reference"])
    assert np.isnan(result.difference.score[:100, :100]).all()
    near = [c for c in result.candidates if math.hypot(c.x - x, c.y - y) < 2]
    assert near and "near_masked" in near[0].flags and near[0].masked_pixels >= 1


def test_the_json_forest_scores_exactly_as_scikit_learn():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    rows = rng.normal(size=(400, len(vetting.FEATURES)))
    labels = rows[:, 0] + 0.5 * rows[:, 3] > 0
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(rows, labels)
    trees = vetting.forest_to_json(forest)["trees"]
    ours = np.mean([_evaluate(tree, rows) for tree in trees], axis=0)
    assert np.allclose(ours, forest.predict_proba(rows)[:, 1], atol=1e-6)
    assert vetting.score(np.zeros((2, len(vetting.FEATURES)))).shape == (2,), "the versioned model loads"


def _evaluate(tree: dict, rows: np.ndarray) -> np.ndarray:
    """vetting.score's walk over one tree."""
    arrays = {key: np.asarray(value) for key, value in tree.items()}
    node = np.zeros(len(rows), dtype=int)
    for _ in range(64):
        inner = arrays["left"][node] >= 0
        go_left = rows[np.arange(len(rows)), np.maximum(arrays["feature"][node], 0)] <= arrays["threshold"][node]
        node = np.where(inner, np.where(go_left, arrays["left"][node], arrays["right"][node]), node)
    return arrays["value"][node]


@pytest.fixture
def search(pair, tmp_path):
    database = DatabaseConfig(path=tmp_path / "toros.db")
    library = ReferenceLibrary(database, tmp_path / "data", ReferencesConfig())
    store = CandidateStore(database)
    catalog = tmp_path / "galaxies.csv"
    catalog.write_text(
        f"name,ra,dec,dist,bmag\n{HOST.name},{HOST.ra_deg},{HOST.dec_deg},{HOST.distance_mpc},{HOST.b_mag}\n"
    )
    from toros.floor.catalogs import GalaxyIndex

    index = GalaxyIndex.open(catalog)
    reporting = ReportsConfig(
        author="A. Observer (IATE) on behalf of TOROS",
        tns=TnsReporting(group_id=140, instrument_id=287, filter_ids={"r": 22}, observer="Robot"),
    )
    finder = TransientSearch(
        DiscoveryConfig(), library, store, tmp_path / "data", galaxies=lambda: index, site="Macon", reporting=reporting
    )
    yield finder
    library.close()
    store.close()


def _calibrated(pair: dict, root: Path) -> Path:
    """The new frame where the preprocessor keeps calibrated frames."""
    folder = root / "calibrated" / "2026-11-22"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "new_cal.fits"
    target.write_bytes(pair["new"].read_bytes())
    return target


def test_the_search_stores_the_kilonova_once_streams_it_and_writes_every_report(pair, search, tmp_path):
    root = tmp_path / "data"
    frame = _calibrated(pair, root)
    outcome = search.search(frame, work_order_id="wo-1")
    assert not outcome.searched and outcome.message == "no reference for this field in r taken before the event"
    search.references.import_file(pair["reference"], 0.0)
    outcome = search.search(frame, work_order_id="wo-2")
    assert outcome.searched and len(outcome.events) == 1, outcome.message
    event = outcome.events[0]
    assert event.name.startswith("TOROS-2026-") and event.detections == 1 and event.alert_id == "S261122a"
    assert event.host == HOST.name and event.host_offset_arcsec == pytest.approx(
        math.hypot(KILONOVA_OFFSET[0] * 0.905, KILONOVA_OFFSET[1]), abs=0.6
    )
    assert event.host_offset_kpc == pytest.approx(kpc_offset(event.host_offset_arcsec, 60.0), rel=1e-6)
    assert event.mag == pytest.approx(pair["kilonova"].mag("r", WHEN), abs=0.2)
    kinds = {kind for _, kind in outcome.products}
    assert {"difference", "significance", "candidates_table", "triplet", "candidate_record", "gcn_draft",
            "tns_report", "avro_packet"} <= kinds  # fmt: skip
    triplet = Path(event.triplet_path)
    assert triplet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(event.record_path).read_text())["candidate"] == event.name
    reports = root / "reports" / "S261122a"
    circular = (reports / "gcn-circular-draft.txt").read_text()
    assert event.name in circular and HOST.name in circular and "S261122a" in circular
    assert "FROM:    A. Observer (IATE) on behalf of TOROS" in circular and "ref-" in circular
    tns = json.loads((reports / "tns-at-report.json").read_text())["at_report"]["0"]
    photometry = tns["photometry"]["photometry_group"]["0"]
    assert tns["internal_name"] == event.name and photometry["filter_value"] == "22"
    assert photometry["instrument_value"] == "287" and tns["reporting_group_id"] == "140"
    assert photometry["exptime"] and float(photometry["limiting_flux"]) > event.mag
    # Nothing searched it before: the reference image is the last non-detection, with its date and limit.
    assert tns["non_detection"]["comments"].startswith("the reference image") and tns["non_detection"]["obsdate"]
    assert 0 < float(tns["ra"]["error"]) < 1.0
    (packet_path,) = (reports / "avro").glob("*.avro")
    (packet,) = read_avro(packet_path)
    assert packet["objectId"] == event.name and packet["candidate"]["magpsf"] == pytest.approx(event.mag, abs=1e-5)
    assert packet["candidate"]["ndethist"] == 1 and packet["candidate"]["fid"] == 2
    cutout = fits.open(io.BytesIO(gzip.decompress(packet["cutoutDifference"]["stampData"])))[0]
    assert cutout.data.shape[0] >= 15 and WCS(cutout.header).has_celestial
    # The same frame again (a restart mid-night): still one detection; a second frame: a history of two.
    again = search.search(frame, work_order_id="wo-3")
    assert again.events[0].detections == 1
    later = frame.with_name("later_cal.fits")
    with fits.open(frame) as hdus:
        hdus[0].header["DATE-OBS"] = (WHEN + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000")
        hdus.writeto(later)
    assert search.search(later, work_order_id="wo-4").events[0].detections == 2
    (candidate,) = search.store.candidates("S261122a")
    assert len(candidate.history) == 2 and candidate.last_seen - candidate.first_seen == pytest.approx(3600)
    packets = [read_avro(p)[0] for p in (reports / "avro").glob("*.avro")]
    (second,) = [p for p in packets if p["candidate"]["ndethist"] == 2]
    assert second["candidate"]["ncovhist"] == 2 and len(second["prv_candidates"]) == 1
    assert second["prv_candidates"][0]["candid"] == packet["candid"]


def test_a_known_candidate_is_measured_on_the_frames_that_do_not_detect_it(pair, search, tmp_path):
    """Forced photometry: the kilonova found, a later frame where it has faded below the detection threshold
    measures it at its place (within its error of the truth), and one where nothing is there gives a limit."""
    root = tmp_path / "data"
    search.references.import_file(pair["reference"], 0.0)
    (found,) = search.search(_calibrated(pair, root), work_order_id="wo-1").events
    faded = pair["kilonova"].__class__(pair["kilonova"].ra_deg, pair["kilonova"].dec_deg, pair["kilonova"].start, 125.0)
    later = WHEN + timedelta(hours=2)
    for name, sky, seed in (("faded", SimulatedSky(StarCatalog(), [HOST], [faded]), 21),
                            ("gone", SimulatedSky(StarCatalog(), [HOST]), 22)):  # fmt: skip
        path = root / "calibrated" / "2026-11-22" / f"{name}_cal.fits"
        truth = write_calibrated_frame(
            path, sky, FIELD, SIZE, pointing_error_arcsec=(0.0, 0.0), pixel_scale_arcsec=SCALE,
            conditions=Conditions("r", 120.0, 1.2, 2.0, later), seed=seed,
        )  # fmt: skip
        science_ready_with_truth(path, truth, 2.0, ALERTID="S261122a", EVENTT="2026-11-22T03:00:00.000", DRILL=False)
        outcome = search.search(path, work_order_id=f"wo-{name}")
        assert outcome.searched and not outcome.events, outcome.message
        (measured,) = outcome.forced
        assert measured.name == found.name and measured.alert_id == "S261122a" and measured.filter == "r"
        assert measured.frame_path == str(path) and measured.flux_err > 0 and 18 < measured.limmag < 24
        expected = faded.mag("r", later) if name == "faded" else None
        if expected is None:
            assert abs(measured.flux) < 4 * measured.flux_err and math.isnan(measured.mag)
        else:
            flux = 10 ** (-0.4 * (expected - truth.magzp))
            assert abs(measured.flux - flux) < 3 * measured.flux_err and measured.flux > 3 * measured.flux_err
            assert abs(measured.mag - expected) < 3 * measured.mag_err + 0.05


def test_a_reference_in_another_filter_only_is_named(pair, search, tmp_path):
    other = tmp_path / "g.fits"
    with fits.open(pair["reference"]) as hdus:
        hdus[0].header["FILTER"] = "g"
        hdus.writeto(other)
    search.references.import_file(other, 0.0)
    outcome = search.search(_calibrated(pair, tmp_path / "data"), work_order_id="wo-1")
    assert outcome.message == "no reference for this field in r (only in g) taken before the event"


def test_single_detections_of_a_field_searched_again_are_unconfirmed_and_nearby_ones_moving(tmp_path):
    store = CandidateStore(DatabaseConfig(path=tmp_path / "toros.db"))
    base = datetime(2026, 5, 1, 23, 0, tzinfo=UTC).timestamp()

    def search_at(name: str, minutes: float, found: list[NewDetection]) -> None:
        frame = Search(tmp_path / name, "S1", base + 60 * minutes, "r", 10.0, -20.0, 0.2, 20.5, 60.0, "ref", len(found),
                       "", "wo")  # fmt: skip
        store.record(frame, found, "TOROS-2026-")

    def at(ra: float, dec: float) -> NewDetection:
        return NewDetection(1.0, 1.0, ra, dec, 19.0, 0.05, 20.0, 0.9, (), Host("G", 3.0, 1.0, 70.0))

    search_at("a.fits", 0, [at(10.0, -20.0), at(10.01, -20.0)])
    search_at("b.fits", 30, [at(10.0, -20.0 + 0.2 / 3600), at(10.012, -20.001)])
    found = {c.name: c for c in store.candidates("S1")}
    static = [c for c in found.values() if len(c.history) == 2]
    assert len(static) == 1 and "unconfirmed" not in static[0].flags
    movers = [c for c in found.values() if len(c.history) == 1]
    assert len(movers) == 2 and all("moving" in c.flags for c in movers)
    assert ["unconfirmed" in c.flags for c in sorted(movers, key=lambda c: c.first_seen)] == [True, False]
    store.close()


def test_the_preprocessor_daemon_finds_transients_on_a_work_order(pair, make_config, start_daemon, tmp_path):
    """find_transients through FrontDesk: the frame is searched against the library's reference, the kilonova
    streams as a transient_candidate event, the products are listed; malformed orders are refused by field."""
    import grpc
    from support import toros_cli, wait_for

    from toros.generated import toros_pb2 as pb
    from toros.generated.toros_pb2_grpc import FrontDeskStub

    stars = tmp_path / "reference-stars.csv"
    StarCatalog().write_reference_catalog(stars, [FIELD], 0.3)
    config = make_config(preprocessor={"port": 0, "science": {"reference_catalog": str(stars)}})
    daemon = start_daemon(config, lambda c: build_daemon("preprocessor", c))
    frame = _calibrated(pair, daemon.storage_root)
    library = ReferenceLibrary(config.database, daemon.storage_root, ReferencesConfig())
    library.import_file(pair["reference"], 0.0)
    library.close()
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        for task, field in (
            (pb.FindTransients(), "find_transients.paths"),
            (pb.FindTransients(night="2026-11-22", paths=[str(frame)]), "find_transients.night"),
            (pb.FindTransients(night="22-11-2026"), "find_transients.night"),
            (pb.FindTransients(paths=["/etc/passwd"]), "find_transients.paths[0]"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Submit(pb.WorkOrder(find_transients=task))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in refused.value.details()
        stub.Submit(pb.WorkOrder(id="search", find_transients=pb.FindTransients(night="2026-11-22")))
        status = wait_for(
            lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="search"))).state in (3, 4) and s, timeout=60
        )
        assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
        assert status.message.startswith("1 of 1 frames searched, 1 vetted detections")
        assert {"difference", "significance", "candidates_table", "triplet", "gcn_draft", "avro_packet"} <= {
            p.kind for p in status.products
        }
        events = list(
            stub.Watch(pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_TRANSIENT_CANDIDATE]), timeout=10)
        )
        assert len(events) == 1 and events[0].work_order_id == "search"
        candidate = events[0].transient_candidate
        assert candidate.alert_id == "S261122a" and candidate.snr > 10
        assert candidate.mag == pytest.approx(pair["kilonova"].mag("r", WHEN), abs=0.2)

        # A person's verdict: kept, listed for the console, and written with the features as a training example.
        for task, field in (
            (pb.LabelCandidate(name="TOROS-nobody", label=pb.CANDIDATE_LABEL_REAL), "label_candidate.name"),
            (pb.LabelCandidate(name=candidate.name), "label_candidate.label"),
            (pb.LabelCandidate(name=candidate.name, label=1, tns_name="TOROS-1"), "label_candidate.tns_name"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Submit(pb.WorkOrder(label_candidate=task))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in refused.value.details()
        for id, label in (("first", pb.CANDIDATE_LABEL_BOGUS), ("second", pb.CANDIDATE_LABEL_REAL)):
            order = pb.LabelCandidate(name=candidate.name, label=label, note="a point source beside its host")
            stub.Submit(pb.WorkOrder(id=id, requester="web:ana", label_candidate=order))
            done = wait_for(
                lambda id=id: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id))).state in (3, 4) and s, timeout=30
            )
            assert done.state == pb.WORK_ORDER_STATE_DONE, done.message
        assert done.message == f"{candidate.name}: real (web:ana: a point source beside its host)"
        labels = json.loads((daemon.storage_root / "reports" / "labels.json").read_text())
        assert labels == {candidate.name: {"label": "real", "by": "web:ana", "note": "a point source beside its host",
                                           "time": labels[candidate.name]["time"]}}  # fmt: skip
        # Reported to the TNS: the circular draft names it from then on.
        order = pb.LabelCandidate(name=candidate.name, label=pb.CANDIDATE_LABEL_REAL, tns_name="AT 2026xyz")
        stub.Submit(pb.WorkOrder(id="named", requester="web:ana", label_candidate=order))
        named = wait_for(
            lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="named"))).state in (3, 4) and s, timeout=30
        )
        assert named.state == pb.WORK_ORDER_STATE_DONE and "reported as AT 2026xyz" in named.message
        circular = daemon.storage_root / "reports" / "S261122a" / "gcn-circular-draft.txt"
        (row,) = [line for line in circular.read_text().splitlines() if line.startswith(candidate.name)]
        assert "AT 2026xyz" in row
        record = json.loads(Path(candidate.record_path).read_text())
        assert set(record["features"]) == set(vetting.FEATURES) and record["features"]["snr"] > 10
    listing = toros_cli(
        "candidates", "--config", str(tmp_path / "toros.conf.yaml"), "--labels", str(tmp_path / "labels.csv")
    )
    assert listing.returncode == 0, listing.stderr
    assert "1 labelled" in listing.stdout and "labelled real by web:ana" in listing.stdout
    features, real = vetting.read_labelled(tmp_path / "labels.csv")
    assert features.shape == (1, len(vetting.FEATURES)) and real.tolist() == [True]
    assert vetting.score(features)[0] == pytest.approx(candidate.score, abs=1e-6)


def test_candidates_in_the_console_light_curve_triplet_reports_and_labels(
    pair, make_config, start_daemon, browser, tmp_path
):
    """The alerts and candidates page in Debian's Chromium over a real preprocessor daemon that found the
    kilonova: its row (host and offset, score), light curve, triplet and report links; an operator marks it
    real (a label_candidate work order, stored); a viewer sees the label and no buttons."""
    from support import confined, wait_for

    from toros.generated import toros_pb2 as pb
    from toros.web.accounts import hash_password
    from toros.web.server import WebServer

    stars = tmp_path / "reference-stars.csv"
    StarCatalog().write_reference_catalog(stars, [FIELD], 0.3)
    galaxies = tmp_path / "galaxies.csv"
    galaxies.write_text(
        f"name,ra,dec,dist,bmag\n{HOST.name},{HOST.ra_deg},{HOST.dec_deg},{HOST.distance_mpc},{HOST.b_mag}\n"
    )
    discovery = {"galaxy_catalog": str(galaxies)}
    science = {"reference_catalog": str(stars)}
    config = make_config(preprocessor={"port": 0, "science": science, "discovery": discovery})
    daemon = start_daemon(config, lambda c: build_daemon("preprocessor", c))
    frame = _calibrated(pair, daemon.storage_root)
    library = ReferenceLibrary(config.database, daemon.storage_root, ReferencesConfig())
    library.import_file(pair["reference"], 0.0)
    library.close()
    console_config = make_config(
        preprocessor={"port": daemon.port, "science": science, "discovery": discovery},
        alert={"port": free_port()}, telescope={"port": free_port()},
        web={"port": 0, "users": [{"name": "ana", "role": "operator", "password_hash": hash_password("ana's secret")},
                                  {"name": "vic", "role": "viewer", "password_hash": hash_password("vic's secret")}]},
    )  # fmt: skip
    server = WebServer(console_config)
    server.start()
    try:
        stub = server.app.state.console.hub.stub("preprocessor")
        stub.Submit(pb.WorkOrder(id="search", find_transients=pb.FindTransients(paths=[str(frame)])))
        wait_for(lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="search")).state == 3, timeout=60)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        outside = confined(context, server.url)
        page = context.new_page()
        _log_in(page, server.url, "ana", "ana's secret")
        page.goto(f"{server.url}/alerts")
        row = page.locator("#candidates tr").first
        row.wait_for()
        name = row.get_attribute("data-name")
        cells = row.locator("td").all_inner_texts()
        assert name.startswith("TOROS-") and cells[1] == "S261122a" and "NGC-TEST" in cells[7] and "″" in cells[8]
        assert row.locator("svg.lightcurve circle.point").count() == 1
        page.wait_for_function("[...document.querySelectorAll('img.triplet')].some((i) => i.naturalWidth > 0)")
        draft = row.locator("a.gcn_draft").get_attribute("href")
        assert "S261122a" in page.evaluate(f"(async () => await (await fetch({draft!r})).text())()")
        assert row.locator("a.tns_report").count() == 1
        row.locator("button.real").click()
        page.wait_for_selector(f"#candidates tr[data-name='{name}'] td.verdict:has-text('real (web:ana)')")
        assert page.locator("#candidates tr").count() == 1 and page.locator("img.triplet").count() == 1
        shots = Path(os.environ.get("TOROS_SCREENSHOTS", tmp_path))  # for people to look at
        page.screenshot(path=str(shots / "candidates.png"), full_page=True)
        labels = json.loads((daemon.storage_root / "reports" / "labels.json").read_text())
        assert labels[name]["label"] == "real" and labels[name]["by"] == "web:ana"

        viewer = context.browser.new_context()
        outside += confined(viewer, server.url)
        watching = viewer.new_page()
        _log_in(watching, server.url, "vic", "vic's secret")
        watching.goto(f"{server.url}/alerts")
        watching.wait_for_selector(f"#candidates tr[data-name='{name}'] td.verdict:has-text('real (web:ana)')")
        assert watching.locator("#candidates button").count() == 0
        assert outside == []
    finally:
        server.stop()


def _log_in(page, url: str, name: str, password: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")


@pytest.mark.parametrize(
    ("flags", "catalog_star_arcsec", "host_offset_arcsec", "kept"),
    [
        (("nuclear",), 0.1, 40.0, ("on_star",)),  # a catalog star on a galaxy's disc (not point-like against it)
        (("nuclear", "psf_varies"), math.inf, 40.0, ("psf_varies",)),  # far from its host's centre: no nucleus
        (("nuclear",), math.inf, 0.4, ("nuclear",)),  # on its host's centre
        (("nuclear",), math.inf, None, ("nuclear",)),  # no host known: the image's word stands
        (("edge",), 0.1, 40.0, ("edge",)),
    ],
)
def test_a_nucleus_is_a_catalog_star_or_a_hosts_centre(flags, catalog_star_arcsec, host_offset_arcsec, kept):
    from toros.preprocessor.transients import in_context

    host = Host("NGC-TEST", host_offset_arcsec, 1.0, 40.0) if host_offset_arcsec is not None else None
    assert in_context(flags, catalog_star_arcsec, host, 1.0) == kept
