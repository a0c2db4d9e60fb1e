"""Files of a node: a FITS image streamed band by band is the file astropy writes, atomic and checksummed."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from astropy.io import fits

from toros.floor.fitsfiles import FitsImageStream


def header() -> fits.Header:
    header = fits.Header()
    header["OBJECT"] = ("NGC 1316", "target")
    header["EXPTIME"] = 30.0
    header["BZERO"] = 32768  # from the raw frame: the float image drops it
    header.add_history("calibrated")
    return header


def stream_in_bands(path, data: np.ndarray, mask: np.ndarray, band_rows: list[int]) -> str:
    with FitsImageStream(path, header(), data.shape, np.float32) as stream:
        start = 0
        for rows in band_rows:
            stream.write_rows(data[start : start + rows])
            start += rows
        return stream.finish([fits.ImageHDU(mask, name="MASK")])


@pytest.mark.parametrize("band_rows", [[37], [1] * 37, [10, 3, 20, 4], [16, 16, 5]])
def test_a_streamed_image_is_byte_for_byte_what_astropy_writes(tmp_path, band_rows):
    rng = np.random.default_rng(7)
    data = rng.normal(1000, 30, size=(37, 53)).astype(np.float32)
    mask = (rng.random((37, 53)) > 0.9).astype(np.uint8) * 4
    sha256 = stream_in_bands(tmp_path / "streamed.fits", data, mask, band_rows)

    fits.HDUList([fits.PrimaryHDU(data, header()), fits.ImageHDU(mask, name="MASK")]).writeto(tmp_path / "astropy.fits")
    written = (tmp_path / "streamed.fits").read_bytes()
    assert written == (tmp_path / "astropy.fits").read_bytes()
    assert sha256 == hashlib.sha256(written).hexdigest()
    with fits.open(tmp_path / "streamed.fits") as hdul:
        np.testing.assert_array_equal(hdul[0].data, data)
        np.testing.assert_array_equal(hdul["MASK"].data, mask)
        assert "BZERO" not in hdul[0].header and hdul[0].header["OBJECT"] == "NGC 1316"


def test_the_caller_may_reuse_its_band_buffer_at_once(tmp_path):
    data = np.arange(64 * 40, dtype=np.float32).reshape(64, 40)
    band = np.empty((4, 40), np.float32)
    with FitsImageStream(tmp_path / "reused.fits", header(), data.shape, np.float32) as stream:
        for start in range(0, 64, 4):
            band[:] = data[start : start + 4]
            stream.write_rows(band)
        stream.finish()
    np.testing.assert_array_equal(fits.getdata(tmp_path / "reused.fits"), data)


def test_an_unfinished_or_failing_stream_leaves_no_file(tmp_path):
    data = np.ones((8, 8), np.float32)
    with pytest.raises(ValueError, match="4 of 8 rows written"):
        with FitsImageStream(tmp_path / "short.fits", header(), data.shape, np.float32) as stream:
            stream.write_rows(data[:4])
            stream.finish()
    with pytest.raises(ValueError, match="does not continue"):
        with FitsImageStream(tmp_path / "wide.fits", header(), data.shape, np.float32) as stream:
            stream.write_rows(np.ones((2, 9), np.float32))
    with pytest.raises(ValueError, match="closed before finish"):
        with FitsImageStream(tmp_path / "unfinished.fits", header(), data.shape, np.float32) as stream:
            stream.write_rows(data)
    with pytest.raises(RuntimeError, match="camera lost"):
        with FitsImageStream(tmp_path / "interrupted.fits", header(), data.shape, np.float32) as stream:
            stream.write_rows(data[:4])
            raise RuntimeError("camera lost")
    assert list(tmp_path.iterdir()) == [], "neither the products nor a temporary file remain"


def test_a_full_disk_is_raised_in_the_computing_thread_and_leaves_no_file(tiny_disk):
    band = np.ones((16, 1000), np.float32)  # 96 KiB of disk holds six such bands
    with pytest.raises(OSError, match="No space left on device"):
        with FitsImageStream(tiny_disk / "big.fits", header(), (160, 1000), np.float32) as stream:
            for _ in range(10):
                stream.write_rows(band)
            stream.finish()
    assert list(tiny_disk.iterdir()) == []


def test_an_image_written_in_bands_is_the_image_write_fits_writes(tmp_path):
    """The same pixels, bit for bit (NaN too), and the same cards; the stream's header says EXTEND = T."""
    from toros.floor.fitsfiles import write_fits, write_fits_image

    data = np.random.default_rng(8).normal(0, 1, size=(1030, 17)).astype(np.float32)
    data[5:9, 3] = np.nan
    streamed = write_fits_image(tmp_path / "streamed.fits", header(), data, rows=512)
    write_fits(tmp_path / "whole.fits", [fits.PrimaryHDU(data, header())])
    assert streamed == hashlib.sha256((tmp_path / "streamed.fits").read_bytes()).hexdigest()
    with fits.open(tmp_path / "streamed.fits") as ours, fits.open(tmp_path / "whole.fits") as astropys:
        assert ours[0].data.tobytes() == astropys[0].data.tobytes()
        cards = [(card.keyword, card.value) for card in ours[0].header.cards if card.keyword != "EXTEND"]
        assert cards == [(card.keyword, card.value) for card in astropys[0].header.cards if card.keyword != "EXTEND"]
        assert ours[0].header["EXTEND"] is True
