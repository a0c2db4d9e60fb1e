"""Science-ready frames, checked against the simulated sky's truth: the sky itself (stars tied to the sky,
counts, light curves), then the science step — astrometry, zero point, limiting magnitude, the catalog — and
every bad input it must name."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from toros.daemons import build_daemon
from toros.floor.kilonova import AT2017GFO_MAGS
from toros.preprocessor.science import BadReferenceCatalog, ReferenceCatalog, ScienceFailed, ScienceStep
from toros.preprocessor.settings import ScienceConfig
from toros.simulation.sky import (
    Asteroid,
    Conditions,
    Galaxy,
    Kilonova,
    SimulatedSky,
    StarCatalog,
    write_calibrated_frame,
)

FIELD = (11.888, -25.288)  # NGC 253's sky, near the south galactic pole
WHEN = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def sky() -> SimulatedSky:
    return SimulatedSky()


@pytest.fixture(scope="module")
def reference(sky, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "reference.csv"
    sky.stars.write_reference_catalog(path, [FIELD], 0.6)
    return path


def step(reference: Path, **settings) -> ScienceStep:
    return ScienceStep(ScienceConfig(reference_catalog=reference, **settings), ReferenceCatalog.read(reference))


# -- the simulated sky -------------------------------------------------------------------------------


def test_the_same_star_is_at_the_same_place_whatever_the_pointing(sky):
    wide = sky.stars.cone(*FIELD, 0.3)
    offset = sky.stars.cone(FIELD[0] + 0.2, FIELD[1], 0.3)
    common = set(zip(wide.ra.round(7), wide.dec.round(7), strict=True)) & set(
        zip(offset.ra.round(7), offset.dec.round(7), strict=True)
    )
    assert len(common) > 0.3 * len(wide)
    again = StarCatalog().cone(*FIELD, 0.3)  # another instance: the same sky
    assert np.array_equal(again.ra, wide.ra) and np.array_equal(again.mags["g"], wide.mags["g"])


def test_star_counts_follow_galactic_latitude():
    from astropy.coordinates import SkyCoord

    stars = StarCatalog(faintest_mag=20.0)
    pole = SkyCoord(l=0.0, b=-90.0, unit="deg", frame="galactic").icrs
    centre = SkyCoord(l=0.0, b=0.0, unit="deg", frame="galactic").icrs
    at_pole = len(stars.cone(pole.ra.deg, pole.dec.deg, 1.0)) / math.pi
    in_plane = len(stars.cone(centre.ra.deg, centre.dec.deg, 1.0)) / math.pi
    assert at_pole == pytest.approx(stars.per_square_degree(-90.0, 20.0), rel=0.15)  # about 1000 per deg²
    assert in_plane == pytest.approx(stars.per_square_degree(0.0, 20.0), rel=0.15)  # ten times that
    assert 900 < at_pole < 1100 and in_plane > 8 * at_pole


def test_kilonova_follows_at2017gfo_scaled_by_distance():
    merger = datetime(2026, 5, 1, 22, 0, tzinfo=UTC)
    at_40 = Kilonova(10.0, -20.0, merger, 40.0)
    at_160 = Kilonova(10.0, -20.0, merger, 160.0)
    assert at_40.mag("r", merger - timedelta(hours=1)) is None
    assert at_40.mag("r", merger + timedelta(days=1)) == pytest.approx(AT2017GFO_MAGS["r"][1])
    assert at_40.mag("g", merger + timedelta(days=4)) == pytest.approx(AT2017GFO_MAGS["g"][5])
    assert at_160.mag("r", merger + timedelta(days=1)) - at_40.mag("r", merger + timedelta(days=1)) == pytest.approx(
        5 * math.log10(4)
    )
    # blue fades first: g - r grows with time
    g_r = [at_40.mag("g", merger + timedelta(days=d)) - at_40.mag("r", merger + timedelta(days=d)) for d in (1, 4)]
    assert g_r[1] > g_r[0] + 0.5


def test_an_asteroid_moves_at_its_rate():
    asteroid = Asteroid(10.0, 0.0, WHEN, rate_arcsec_per_hour=36.0, position_angle_deg=90.0, magnitude=18.0)
    ra, dec = asteroid.position(WHEN + timedelta(hours=1))
    assert (ra - 10.0) * 3600 == pytest.approx(36.0, rel=1e-6) and dec == pytest.approx(0.0)


def test_transients_and_galaxies_are_drawn_where_they_are(sky, tmp_path):
    merger = WHEN - timedelta(days=1)
    kilonova = Kilonova(FIELD[0], FIELD[1] + 0.01, merger, 40.0)
    galaxy = Galaxy("NGC test", FIELD[0], FIELD[1] - 0.01, 16.0, 200.0)  # 2.6 arcsec scale length
    lit = SimulatedSky(sky.stars, [galaxy], [kilonova])
    truth = write_calibrated_frame(tmp_path / "lit.fits", lit, FIELD, 512, pointing_error_arcsec=(0, 0))
    write_calibrated_frame(tmp_path / "dark.fits", sky, FIELD, 512, pointing_error_arcsec=(0, 0))
    difference = fits.getdata(tmp_path / "lit.fits") - fits.getdata(tmp_path / "dark.fits")
    for ra, dec, mag in (
        (kilonova.ra_deg, kilonova.dec_deg, kilonova.mag("r", WHEN)),
        (galaxy.ra_deg, galaxy.dec_deg, galaxy.mag("r")),
    ):
        x, y = (int(round(float(v))) for v in truth.wcs.world_to_pixel_values(ra, dec))
        box = difference[y - 40 : y + 41, x - 40 : x + 41]
        expected = 10 ** (-0.4 * (mag - truth.magzp))
        assert box.sum() == pytest.approx(expected, rel=0.1)


# -- the science step --------------------------------------------------------------------------------


def test_a_frame_is_made_science_ready_against_the_truth(sky, reference, tmp_path):
    path = tmp_path / "frame_cal.fits"
    truth = write_calibrated_frame(path, sky, FIELD, 2048)
    mount = WCS(fits.getheader(path))  # the reported pointing, 25 arcsec off
    result = step(reference).run(path)
    header = fits.getheader(path)
    for keyword in ("MAGZP", "MAGZPERR", "FWHM", "LIMMAG", "SKYLEV", "ASTRRMS", "ASTRNSTR"):
        assert keyword in header
    assert header["WCSSRC"] == "fit" and header["ASTRNSTR"] == result.astrometry_stars >= 30
    # Astrometry: the fitted WCS puts the true stars within 0.1 pixel (rms) of where the sky drew them.
    fitted = WCS(header)
    stars = sky.stars.cone(*FIELD, 0.2)
    true_x, true_y = truth.wcs.world_to_pixel_values(stars.ra, stars.dec)
    fit_x, fit_y = fitted.world_to_pixel_values(stars.ra, stars.dec)
    inside = (true_x > 0) & (true_x < 2047) & (true_y > 0) & (true_y < 2047)
    assert np.sqrt(np.mean((true_x - fit_x)[inside] ** 2 + (true_y - fit_y)[inside] ** 2)) <= 0.1
    # where the mount's WCS put them: off by the pointing error (25 arcsec, 53 pixels)
    mount_x, mount_y = mount.world_to_pixel_values(stars.ra, stars.dec)
    assert np.hypot(true_x - mount_x, true_y - mount_y)[inside].min() > 50
    # Photometry on Moffat stars (β 3): the zero point within 1% of the truth, all of the light counted; the
    # FWHM the seeing's (a Moffat fit, not a half-light diameter), β the optics'.
    assert result.magzp == pytest.approx(truth.magzp, abs=0.01)
    assert result.fwhm_px * 0.47 == pytest.approx(truth.conditions.seeing_fwhm_arcsec, rel=0.03)
    assert result.psf_beta == pytest.approx(sky.optics.beta, abs=0.5) and header["PSFBETA"] == round(result.psf_beta, 3)
    assert result.sky_level > 0 and 18 < result.limmag < 23 and header["LIMMAGAP"] < header["LIMMAG"]
    # The catalog: a FITS table beside the frame, with positions and magnitudes that match the truth.
    catalog = Table.read(result.catalog_path)
    assert "cat" in result.catalog_path.name and len(catalog) == result.sources > 80
    assert {
        "x",
        "y",
        "ra_deg",
        "dec_deg",
        "flux",
        "flux_err",
        "mag",
        "mag_err",
        "fwhm_px",
        "ellipticity",
        "flags",
        "mask",
    } <= set(catalog.colnames)
    bright = catalog[catalog["snr"] > 50]
    near = np.array([np.argmin(np.hypot(true_x - row["x"], true_y - row["y"])) for row in bright])
    assert np.median(np.abs(bright["mag"] - stars.mags["r"][near])) < 0.03


def test_a_frame_made_ready_before_a_restart_is_not_measured_again(sky, reference, tmp_path):
    from toros.preprocessor.science import ScienceResult

    path = tmp_path / "frame_cal.fits"
    write_calibrated_frame(path, sky, FIELD, 1024)
    assert ScienceResult.from_frame(path) is None
    first = step(reference).run(path)
    again = ScienceResult.from_frame(path)
    assert again is not None and again.magzp == pytest.approx(first.magzp, abs=1e-4)
    assert again.frame_sha256 == first.frame_sha256 and again.sources == first.sources


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ("empty", "point sources detected, 12 needed (clouds, a closed dome or an empty field?)"),
        ("far", "reference stars within"),
        ("no_wcs", "no WCS in the header"),
        ("all_masked", "no usable pixel"),
    ],
)
def test_frames_that_cannot_be_solved_say_why(sky, reference, tmp_path, spoil, message):
    path = tmp_path / "frame_cal.fits"
    write_calibrated_frame(path, sky, FIELD, 1024)
    with fits.open(path) as hdus:
        data, header, mask = hdus[0].data.copy(), hdus[0].header.copy(), hdus["MASK"].data.copy()
    if spoil == "empty":
        data = np.random.default_rng(1).normal(30, 6, data.shape).astype(np.float32)
    elif spoil == "far":
        header["CRVAL2"] = header["CRVAL2"] + 1.5  # a pointing error of a degree and a half
    elif spoil == "no_wcs":
        for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2"):
            header.remove(key, ignore_missing=True)
    else:
        mask[:] = 4
    fits.HDUList([fits.PrimaryHDU(data, header), fits.ImageHDU(mask, name="MASK")]).writeto(path, overwrite=True)
    before = path.read_bytes()
    with pytest.raises(ScienceFailed, match=re.escape(message)):
        step(reference).run(path)
    assert path.read_bytes() == before, "a frame that cannot be solved stays as it was"


def test_a_pointing_error_of_a_degree_is_named_when_the_catalog_covers_it(sky, tmp_path):
    wide = tmp_path / "wide.csv"
    sky.stars.write_reference_catalog(wide, [FIELD], 1.8)
    path = tmp_path / "frame_cal.fits"
    write_calibrated_frame(path, sky, FIELD, 1024, pointing_error_arcsec=(0.0, 3600.0))
    with pytest.raises(ScienceFailed, match="is the pointing far off"):
        step(wide).run(path)


def test_nan_regions_and_a_saturated_star_do_not_stop_the_solution(sky, reference, tmp_path):
    path = tmp_path / "frame_cal.fits"
    truth = write_calibrated_frame(path, sky, FIELD, 1536)
    with fits.open(path) as hdus:
        data, header, mask = hdus[0].data.copy(), hdus[0].header.copy(), hdus["MASK"].data.copy()
    data[:300, :300] = np.nan
    data[700:720, 700:720] = 70000.0
    mask[700:720, 700:720] |= 4
    fits.HDUList([fits.PrimaryHDU(data, header), fits.ImageHDU(mask, name="MASK")]).writeto(path, overwrite=True)
    result = step(reference).run(path)
    assert result.magzp == pytest.approx(truth.magzp, abs=0.03)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ra,dec,r\n1,2,3\n", "missing column(s) ra_deg, dec_deg"),
        ("ra_deg,dec_deg\n1,2\n", "no magnitude column"),
        ("ra_deg,dec_deg,r\n1,2\n3,4,5,6\n", "cannot read as a table"),
    ],
)
def test_a_reference_catalog_that_cannot_be_used_names_the_file(tmp_path, content, message):
    path = tmp_path / "stars.csv"
    path.write_text(content)
    with pytest.raises(BadReferenceCatalog, match=re.escape(f"{path}: ") + ".*" + re.escape(message)):
        ReferenceCatalog.read(path)


def test_a_catalog_without_the_frame_filter_says_so(sky, tmp_path):
    path = tmp_path / "frame_cal.fits"
    write_calibrated_frame(path, sky, FIELD, 1024, conditions=Conditions("g", 60.0, 1.1, 1.6, WHEN))
    only_r = tmp_path / "r-only.csv"
    stars = sky.stars.cone(*FIELD, 0.4)
    only_r.write_text(
        "ra_deg,dec_deg,r\n"
        + "".join(f"{a},{d},{m}\n" for a, d, m in zip(stars.ra, stars.dec, stars.mags["r"], strict=True))
    )
    with pytest.raises(ScienceFailed, match="no magnitudes for filter 'g'"):
        step(only_r).run(path)


def test_the_preprocessor_daemon_makes_its_frames_science_ready(make_config, start_daemon, sky, tmp_path):
    import grpc
    from support import wait_for

    from toros.floor.sky_geometry import tan_wcs
    from toros.generated import toros_pb2 as pb
    from toros.generated.toros_pb2_grpc import FrontDeskStub
    from toros.simulation.ccd import Sensor, make_frame, write_night
    from toros.simulation.sky import Scene

    reference = tmp_path / "reference-stars.csv"
    sky.stars.write_reference_catalog(reference, [FIELD], 0.4)
    config = make_config(preprocessor={"port": 0, "science": {"reference_catalog": str(reference)}})
    daemon = start_daemon(config, lambda c: build_daemon("preprocessor", c))
    night = daemon.storage_root / "raw" / "2026-11-22"
    sensor = Sensor(width=1024, height=1024, overscan=16)
    write_night(night, sensor, lights=0)
    for number in range(3):
        true_wcs = tan_wcs(FIELD[0] + 0.004, FIELD[1] - 0.003, 1024, 1024, 0.47)  # the pointing error
        conditions = Conditions("r", 0.0, 1.1, 1.7 + 0.3 * number, WHEN + timedelta(minutes=5 * number))
        frame = make_frame(
            sensor,
            "light",
            exposure_time=120.0,
            sky_rate=sky.photometry.sky_electrons("r", 0.47),
            scene=Scene(sky, true_wcs, 0.47, conditions),
            date_obs=conditions.when,
            seed=number,
        )
        if number < 2:  # the third has no pointing: it stays calibrated, the order says why
            frame.header.update(tan_wcs(*FIELD, 1024, 1024, 0.47).to_header())  # where the mount said it pointed
        frame.write(str(night / f"light-{number}.fits"))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(pb.WorkOrder(id="night", calibrate_night=pb.CalibrateNight(directory="raw/2026-11-22")))
        status = wait_for(
            lambda: (
                (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="night"))).state == pb.WORK_ORDER_STATE_DONE and s
            ),
            timeout=120,
        )
        kinds = sorted(p.kind for p in status.products)
        assert kinds.count("calibrated") == 3 and kinds.count("source_catalog") == 2 and "reference" in kinds
        assert (
            "light-2.fits: not science-ready: no WCS in the header (the raw frame carried no pointing)"
            in status.message
        )
        for product in (p for p in status.products if p.kind == "calibrated" and "light-2" not in p.path):
            assert product.HasField("science") and product.science.astrometry_stars >= 12
            assert product.science.catalog_path.endswith("_cat.fits") and product.science.magzp > 20
            assert fits.getheader(product.path)["MAGZP"] == pytest.approx(product.science.magzp, abs=1e-4)
        progress = [
            e.calibration_progress
            for e in stub.Watch(
                pb.WatchRequest(work_order_id="night", kinds=[pb.EVENT_KIND_CALIBRATION_PROGRESS], replay_only=True)
            )
        ]
        ready = [p for p in progress if p.HasField("science")]
        assert len(ready) == 2 and all(p.stage == "science" and p.path.endswith("_cal.fits") for p in ready)
        catalog = next(p for p in status.products if p.kind == "source_catalog")
        chunks = list(stub.FetchFile(pb.FetchFileRequest(path=catalog.path)))
        assert b"".join(c.data for c in chunks) == Path(catalog.path).read_bytes()


def test_too_few_matched_stars_is_named(sky, reference, tmp_path):
    path = tmp_path / "frame_cal.fits"
    write_calibrated_frame(path, sky, FIELD, 1024)  # 19 point sources
    shallow = tmp_path / "shallow.csv"  # a catalog that holds only the brightest of them
    table = Table.read(reference, format="csv")
    table[table["r"] < 19.0].write(shallow, format="csv")
    with pytest.raises(ScienceFailed, match=r"^\d+ stars matched, 15 needed$"):
        step(shallow, min_matches=15).run(path)


def test_a_fits_reference_catalog_serves_as_well_as_a_csv(sky, reference, tmp_path):
    table = Table.read(reference, format="csv")
    as_fits = tmp_path / "reference.fits"
    table.write(as_fits)
    path = tmp_path / "frame_cal.fits"
    truth = write_calibrated_frame(path, sky, FIELD, 1024)
    result = step(as_fits).run(path)
    assert result.magzp == pytest.approx(truth.magzp, abs=0.03) and result.astrometry_rms_arcsec < 0.2
