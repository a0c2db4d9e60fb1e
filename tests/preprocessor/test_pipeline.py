"""The preprocessor: masters and science frames equal ccdproc's guide recipe; bad files are named and skipped."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import astropy.units as u
import ccdproc
import grpc
import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.stats import mad_std
from support import SENSOR, Recorder, calibrate, done

from toros.daemons import build_daemon
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.preprocessor.combine import combine_bands
from toros.preprocessor.inventory import take_inventory
from toros.preprocessor.library import MasterLibrary
from toros.preprocessor.pipeline import MASK_COSMIC_RAY, MASK_HOT, NightCalibration
from toros.preprocessor.reduction import FrameReader
from toros.preprocessor.settings import CalibrationConfig
from toros.preprocessor.waiting import WAITING_FOR_MASTERS
from toros.runtime.config import DatabaseConfig
from toros.simulation.ccd import Sensor, make_frame, write_night

CCDPROC_DATA = Path(ccdproc.__file__).parent / "tests" / "data" / "a8280271.fits"


def ccdproc_reference(paths: list[Path]) -> dict[str, CCDData]:
    """The astropy CCD Data Reduction Guide's recipe, step by step, with ccdproc."""
    warnings.simplefilter("ignore")

    def raw(path: Path) -> CCDData:
        ccd = CCDData.read(path, unit="adu")
        ccd = ccdproc.subtract_overscan(ccd, fits_section=ccd.header["BIASSEC"], median=True, overscan_axis=1)
        return ccdproc.trim_image(ccd, fits_section=ccd.header["TRIMSEC"])

    def combine(frames: list[CCDData], **extra) -> CCDData:
        return ccdproc.combine(
            frames,
            method="average",
            sigma_clip=True,
            sigma_clip_low_thresh=3,
            sigma_clip_high_thresh=3,
            sigma_clip_func=np.ma.median,
            sigma_clip_dev_func=mad_std,
            **extra,
        )

    kinds = {p: fits.getheader(p)["IMAGETYP"] for p in paths}
    bias = combine([raw(p) for p in paths if kinds[p] == "BIAS"])
    dark = combine([ccdproc.subtract_bias(raw(p), bias) for p in paths if kinds[p] == "DARK"])
    dark.header["EXPTIME"] = 30.0
    flats = [
        ccdproc.subtract_dark(
            ccdproc.subtract_bias(raw(p), bias), dark, exposure_time="EXPTIME", exposure_unit=u.s, scale=True
        )
        for p in paths
        if kinds[p] == "FLAT"
    ]
    # Flat-normalisation convention: each flat is normalised by its median *before* it is combined (the issue's
    # recipe), where ccdproc.combine(scale=...) would sigma-clip the unscaled frames and scale only the average.
    flat = combine([f.multiply(1 / np.median(f.data)) for f in flats])
    science = {
        p.stem: ccdproc.flat_correct(
            ccdproc.subtract_dark(
                ccdproc.subtract_bias(raw(p), bias), dark, exposure_time="EXPTIME", exposure_unit=u.s, scale=True
            ),
            flat,
        )
        for p in paths
        if kinds[p] == "LIGHT"
    }
    return {"bias": bias, "dark": dark, "flat": flat, **science}


def assert_equal_to_float32(ours: np.ndarray, reference: np.ndarray, rtol: float, atol: float = 0.0) -> None:
    """Equal to float32 precision, except where a value lies at the clipping threshold.

    ccdproc clips in float64 and we in float32, so a pixel whose value is within float32 rounding of 3 sigma
    may be kept by one and rejected by the other: at most one pixel in 10,000.
    """
    close = np.isclose(ours, reference, rtol=rtol, atol=atol)
    assert close.mean() >= 0.9999, f"{(~close).sum()} pixels differ"


def test_a_simulated_night_equals_ccdprocs_guide_recipe(tmp_path):
    paths = write_night(tmp_path / "raw" / "2026-11-23", SENSOR, biases=5, darks=5, flats=5, lights=3)
    result, recorder = calibrate(tmp_path, paths)
    assert result.problems == [] and len(result.calibrated) == 3 and len(result.masters) == 3
    reference = ccdproc_reference(paths)
    masters = {path.name: fits.getdata(path) for path in result.masters}
    np.testing.assert_allclose(masters["master_bias.fits"], reference["bias"].data, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(masters["master_dark_30s.fits"], reference["dark"].data, rtol=1e-5, atol=1e-3)
    # Ours is normalised to mean 1; ccdproc divides by the flat's mean when it applies it.
    reference_flat = reference["flat"].data / reference["flat"].data.mean()
    assert_equal_to_float32(masters["master_flat_r.fits"], reference_flat, rtol=2e-5)
    for output in result.calibrated:
        raw_stem = output.name.removesuffix("_cal.fits")
        assert_equal_to_float32(fits.getdata(output), reference[raw_stem].data, rtol=2e-5, atol=0.01)
        assert raw_stem in output.name and output.parent == tmp_path / "calibrated" / "2026-11-23"
    header = fits.getheader(result.calibrated[0])
    assert header["MBIAS"] == "master_bias.fits" and header["MDARK"] == "master_dark_30s.fits"
    assert header["MFLAT"] == "master_flat_r.fits" and header["BORROWED"] == "none"
    assert any("TOROS preprocessor: overscan, trim, bias master_bias.fits" in str(h) for h in header["HISTORY"])
    assert [kind for _, kind in recorder.products].count("calibrated") == 3
    assert recorder.stages[-1][1:] == (18, 18)


def test_the_hot_pixels_of_the_sensor_are_in_the_mask(tmp_path):
    paths = write_night(tmp_path / "2026-11-23", SENSOR, lights=1)
    result, _ = calibrate(tmp_path, paths)
    mask = fits.getdata(result.calibrated[0], extname="MASK")
    hot = (mask & MASK_HOT) > 0
    assert hot[SENSOR.hot_pixels].mean() > 0.9 and hot.sum() <= 2 * SENSOR.hot_pixels.sum()


def test_overscan_and_trim_match_ccdproc_on_its_own_raw_frame(tmp_path):
    warnings.simplefilter("ignore")
    header = fits.getheader(CCDPROC_DATA)
    assert header["BIASSEC"] and header["TRIMSEC"]
    settings = CalibrationConfig(imagetyp={header["IMAGETYP"].strip().upper(): "light"})
    frame = take_inventory([CCDPROC_DATA], settings, CCDPROC_DATA.parent).frames[0]
    with FrameReader(frame, settings) as reader:
        ours = reader.band(0, reader.shape[0])
    ccd = CCDData.read(CCDPROC_DATA, unit="adu")
    reference = ccdproc.trim_image(
        ccdproc.subtract_overscan(ccd, fits_section=header["BIASSEC"], median=True, overscan_axis=1),
        fits_section=header["TRIMSEC"],
    )
    assert ours.shape == reference.data.shape
    np.testing.assert_allclose(ours, reference.data, rtol=1e-6, atol=1e-3)


def test_band_streaming_gives_the_same_master_whatever_the_band_size(tmp_path):
    paths = write_night(tmp_path, SENSOR, biases=5, darks=0, flats=0, lights=0)
    settings = CalibrationConfig()
    readers = [FrameReader(f, settings) for f in take_inventory(paths, settings, tmp_path).frames]
    shape = readers[0].shape
    combined = [
        combine_bands(
            5,
            shape,
            lambda i, a, b: readers[i].band(a, b),
            method="average",
            sigma_low=3,
            sigma_high=3,
            budget_bytes=budget,
        )
        for budget in (1, 5 * shape[1] * 16 * 7, 1 << 30)
    ]
    for reader in readers:
        reader.close()
    np.testing.assert_array_equal(combined[0], combined[2])
    np.testing.assert_array_equal(combined[1], combined[2])


def test_bad_files_are_named_and_the_rest_of_the_night_is_calibrated(tmp_path):
    night = tmp_path / "2026-11-23"
    paths = write_night(night, SENSOR, lights=2)
    (night / "garbage.fits").write_bytes(b"this is not FITS at all" * 100)
    truncated = night / "truncated.fits"
    truncated.write_bytes(paths[-1].read_bytes()[:20000])
    unknown = make_frame(SENSOR, "bias")
    unknown.header["IMAGETYP"] = "FOCUS"
    unknown.write(str(night / "focus.fits"))
    no_exptime = make_frame(SENSOR, "light", exposure_time=30)
    del no_exptime.header["EXPTIME"]
    no_exptime.write(str(night / "noexp.fits"))
    wrong_size = make_frame(Sensor(width=100, height=100, overscan=12), "light", exposure_time=30)
    wrong_size.write(str(night / "small.fits"))
    extra = [night / n for n in ("garbage.fits", "truncated.fits", "focus.fits", "noexp.fits", "small.fits")]
    result, _ = calibrate(tmp_path, paths + extra)
    text = result.summary()
    assert len(result.calibrated) == 2
    for expected in (
        "garbage.fits: unreadable FITS",
        "truncated.fits: the header declares 204 × 160 pixels (65280 bytes) but the file holds",
        "focus.fits: unknown IMAGETYP 'FOCUS'",
        "noexp.fits: no EXPTIME keyword",
        "small.fits: no master bias for setup 112x100_bin1x1",
    ):
        assert expected in text, text


def test_a_frame_cut_short_while_it_is_calibrated_leaves_no_partial_product(tmp_path):
    """A raw file truncated after the inventory (a copy still arriving) fails midway through its product:
    it is named, and neither the product nor a temporary file remains."""
    night = tmp_path / "2026-11-23"
    paths = write_night(night, SENSOR, lights=2)
    first, second = sorted(p for p in paths if fits.getheader(p)["IMAGETYP"] == "LIGHT")

    class CutsTheSecondLight(Recorder):
        def stage(self, stage: str, done: int, total: int, path: str = "") -> None:
            super().stage(stage, done, total, path)
            if stage == "science" and path == str(first):
                second.write_bytes(second.read_bytes()[: 2880 + 20 * SENSOR.width * 2])

    library = MasterLibrary(DatabaseConfig(path=tmp_path / "toros.db"))
    pipeline = NightCalibration(
        CalibrationConfig(), library, tmp_path, longitude_deg=-67.32, work_order_id="wo-cut", now=lambda: 0.0
    )
    result = pipeline.run(paths, CutsTheSecondLight(), night="2026-11-23")
    library.close()
    assert [p.name for p in result.calibrated] == [first.name.replace(".fits", "_cal.fits")]
    assert any(
        problem.startswith(f"{second.name}: ") and "ends before row" in problem for problem in result.problems
    ), result.problems
    assert sorted(p.name for p in (tmp_path / "calibrated" / "2026-11-23").iterdir()) == [
        first.name.replace(".fits", "_cal.fits")
    ]


def test_compressed_frames_are_read(tmp_path):
    night = tmp_path / "2026-11-23"
    paths = write_night(night, SENSOR, lights=2)
    fz = night / "light-fz.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(fits.getdata(paths[-1]), fits.getheader(paths[-1]))]).writeto(fz)
    gz = night / "light-gz.fits.gz"
    with open(paths[-2], "rb") as source, gzip.open(gz, "wb") as target:
        shutil.copyfileobj(source, target)
    result, _ = calibrate(tmp_path, paths + [fz, gz])
    outputs = {p.name: p for p in result.calibrated}
    assert {"light-fz_cal.fits", "light-gz_cal.fits"} <= set(outputs) and not result.problems
    same_raw = outputs[paths[-1].name.replace(".fits", "_cal.fits")]
    np.testing.assert_array_equal(fits.getdata(outputs["light-fz_cal.fits"]), fits.getdata(same_raw))


def test_a_night_without_calibrations_borrows_the_nearest_earlier_masters(tmp_path):
    first = write_night(tmp_path / "2026-11-20", SENSOR, lights=0)
    calibrate(tmp_path, first, night="2026-11-20")
    later = write_night(tmp_path / "2026-11-22", SENSOR, biases=0, darks=0, flats=0, lights=1, seed=7)
    result, _ = calibrate(tmp_path, later, night="2026-11-22")
    assert len(result.calibrated) == 1
    assert "master bias borrowed from 2026-11-20" in result.summary()
    assert "master flat borrowed from 2026-11-20" in result.summary()
    assert fits.getheader(result.calibrated[0])["BORROWED"] == "bias, dark, flat"


def test_cosmic_rays_are_cleaned_in_worker_processes_when_asked(tmp_path):
    night = tmp_path / "2026-11-23"
    paths = write_night(night, Sensor(width=128, height=128, overscan=8), lights=2)
    library = MasterLibrary(DatabaseConfig(path=tmp_path / "toros.db"))
    pipeline = NightCalibration(
        CalibrationConfig(), library, tmp_path, longitude_deg=-67.32, work_order_id="cr", now=lambda: 0.0
    )
    result = pipeline.run(paths, Recorder(), night="2026-11-23", clean_cosmic_rays=True)
    library.close()
    header = fits.getheader(result.calibrated[0])
    mask = fits.getdata(result.calibrated[0], extname="MASK")
    assert header["CRCLEAN"] and ((mask & MASK_COSMIC_RAY) > 0).sum() >= 3


@pytest.fixture
def preprocessor(make_config, start_daemon):
    daemon = start_daemon(make_config(), lambda config: build_daemon("preprocessor", config))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        yield FrontDeskStub(channel), daemon


def test_calibrate_night_work_order_with_progress_and_products(preprocessor):
    stub, daemon = preprocessor
    # Frames from 2026-11-23 00:00 UTC on belong to the night of 2026-11-22 at Macón (date at local noon).
    paths = write_night(daemon.storage_root / "raw" / "2026-11-22", SENSOR, lights=2)
    stub.Submit(pb.WorkOrder(id="night", calibrate_night=pb.CalibrateNight(directory="raw/2026-11-22")))
    status = done(stub, "night")
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    assert status.message == "2 frames calibrated, 3 masters built" and status.progress_percent == 100
    kinds = sorted(p.kind for p in status.products)
    assert kinds == ["calibrated", "calibrated", "master_bias", "master_dark", "master_flat"]
    assert all(Path(p.path).is_relative_to(daemon.storage_root) and len(p.sha256) == 64 for p in status.products)
    assert all(p.read_bytes() for p in paths)  # raw files untouched
    progress = [
        e.calibration_progress
        for e in stub.Watch(
            pb.WatchRequest(work_order_id="night", kinds=[pb.EVENT_KIND_CALIBRATION_PROGRESS], replay_only=True)
        )
    ]
    assert progress[0].stage == "inventory" and progress[-1].stage == "science" and progress[-1].percent == 100
    assert {p.stage for p in progress} >= {"master_bias", "master_dark", "master_flat", "science"}

    stub.Submit(pb.WorkOrder(id="images", calibrate_images=pb.CalibrateImages(paths=[str(paths[-1])])))
    again = done(stub, "images")
    assert again.state == pb.WORK_ORDER_STATE_DONE and [p.kind for p in again.products] == ["calibrated"]


def test_light_frames_without_masters_wait_for_them_and_are_calibrated_once_they_come(preprocessor):
    """A node restarted after dusk: the night's light frames arrive before any bias (the robot takes it in the
    morning). They are not skipped: they wait, journaled, and are calibrated when the masters are built."""
    stub, daemon = preprocessor
    paths = write_night(daemon.storage_root / "raw" / "2026-11-22", SENSOR, lights=2)
    lights, calibrations = paths[-2:], paths[:-2]
    stub.Submit(pb.WorkOrder(id="lights", calibrate_images=pb.CalibrateImages(paths=[str(p) for p in lights])))
    waited = done(stub, "lights")
    assert waited.state == pb.WORK_ORDER_STATE_DONE, waited.message
    assert waited.message.startswith("0 frames calibrated, 0 masters built; 2 wait for their masters: ")
    assert "no master bias for setup 204x160_bin1x1 on or before 2026-11-22 yet" in waited.message
    status = stub.GetStatus(pb.GetStatusRequest())
    assert "wait for their masters" in status.message and status.activity == WAITING_FOR_MASTERS
    stub.Submit(pb.WorkOrder(id="morning", calibrate_images=pb.CalibrateImages(paths=[str(p) for p in calibrations])))
    morning = done(stub, "morning")
    assert morning.state == pb.WORK_ORDER_STATE_DONE and "3 masters built" in morning.message
    assert "the frames that waited for these masters are calibrated by morning-waited-204x160_bin1x1" in morning.message
    then = done(stub, "morning-waited-204x160_bin1x1")
    assert then.state == pb.WORK_ORDER_STATE_DONE and then.message.startswith("2 frames calibrated"), then.message
    assert sorted(p.kind for p in then.products) == ["calibrated", "calibrated"]
    status = stub.GetStatus(pb.GetStatusRequest())
    assert "wait for their masters" not in status.message and status.activity == ""


def test_an_empty_night_fails_with_a_clear_message(preprocessor):
    stub, daemon = preprocessor
    (daemon.storage_root / "2026-11-24").mkdir()
    (daemon.storage_root / "2026-11-24" / "notes.txt").write_text("cloudy")
    stub.Submit(pb.WorkOrder(id="empty", calibrate_night=pb.CalibrateNight(directory="2026-11-24")))
    status = done(stub, "empty")
    assert status.state == pb.WORK_ORDER_STATE_FAILED and status.message.startswith("no FITS files in")


def test_a_night_of_only_bad_files_fails_naming_each(preprocessor):
    stub, daemon = preprocessor
    night = daemon.storage_root / "2026-11-25"
    night.mkdir()
    (night / "a.fits").write_bytes(b"garbage")
    (night / "b.fits").write_bytes(b"more garbage")
    stub.Submit(pb.WorkOrder(id="bad", calibrate_night=pb.CalibrateNight(directory="2026-11-25")))
    status = done(stub, "bad")
    assert status.state == pb.WORK_ORDER_STATE_FAILED
    assert "a.fits: unreadable FITS" in status.message and "b.fits: unreadable FITS" in status.message


def test_progress_reaches_the_end_when_a_calibration_type_is_skipped(tmp_path):
    paths = write_night(tmp_path / "2026-11-23", SENSOR, biases=2, darks=3, flats=3, lights=1)
    result, recorder = calibrate(tmp_path, paths)
    assert "master bias: 2 usable frames, at least 3 needed" in result.summary()
    stage, done, total = recorder.stages[-1]
    assert (stage, done, total) == ("science", 9, 9)


@pytest.mark.parametrize("frames", [2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 21])
def test_clipped_mean_is_astropy_sigma_clip_bit_for_bit(frames):
    import warnings

    import bottleneck
    from astropy.stats import sigma_clip

    from toros.preprocessor.combine import clipped_mean

    rng = np.random.default_rng(frames)
    stack = (1000 + 5 * rng.standard_normal((frames, 37, 101))).astype(np.float32)
    stack[:, :5] = np.rint(stack[:, :5])  # ties
    stack[rng.integers(0, frames, 300), rng.integers(0, 37, 300), rng.integers(0, 101, 300)] += rng.uniform(
        -400, 400, 300
    ).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        clipped = sigma_clip(
            stack.copy(),
            sigma_lower=3.0,
            sigma_upper=2.5,
            maxiters=1,
            cenfunc="median",
            stdfunc="mad_std",
            axis=0,
            masked=False,
            copy=False,
        )
    expected = bottleneck.nanmean(clipped, axis=0).astype(np.float32)
    assert np.array_equal(clipped_mean(stack, 3.0, 2.5, block_rows=8), expected)


def test_raw_unsigned_16_bit_frames_are_read_exactly_as_astropy_scales_them(tmp_path):
    from astropy.io import fits

    from toros.preprocessor.inventory import read_frame
    from toros.preprocessor.reduction import FrameReader
    from toros.simulation.ccd import Sensor, make_frame

    frame = make_frame(Sensor(width=64, height=40, overscan=8), "light", exposure_time=30.0, stars=5)
    frame.data[0, :5] = [0, 1, 32767, 32768, 65535]
    frame.write(str(tmp_path / "unsigned.fits"))
    fits.PrimaryHDU(frame.data.astype(np.float32), frame.header).writeto(tmp_path / "float.fits")
    for name in ("unsigned.fits", "float.fits"):
        with FrameReader(read_frame(tmp_path / name, CalibrationConfig()), CalibrationConfig()) as reader:
            got = reader.read(3, 30)
        expected = fits.getdata(tmp_path / name)[3:30]
        assert got.dtype == expected.dtype and np.array_equal(got, expected), name
