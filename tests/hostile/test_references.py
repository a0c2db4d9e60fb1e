"""Hostile input to the reference library and to `toros difference` (hardening, second round): stored files
never collide or get replaced, images are checked as calibration inputs are, and every refusal is one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from support import kilonova_pair, toros_cli, write_config

from toros.floor.sky_geometry import tan_wcs
from toros.preprocessor.references import BadReference, ReferenceLibrary
from toros.preprocessor.settings import ReferencesConfig
from toros.runtime.config import DatabaseConfig
from toros.runtime.files import store_by_content


def cutout(path: Path, ra: float, dec: float, *, size: int = 64, value: float = 1.0) -> Path:
    header = tan_wcs(ra, dec, size, size, 1.0).to_header()
    header["FILTER"] = "r"
    header["DATE-OBS"] = "2019-03-01T05:00:00"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.full((size, size), value, np.float32), header).writeto(path)
    return path


def centre_of(path: Path) -> tuple[float, float]:
    header = fits.getheader(path)
    return tuple(float(v) for v in tan_wcs_of(header).pixel_to_world_values(31.5, 31.5))  # type: ignore[return-value]


def tan_wcs_of(header: fits.Header):
    from astropy.wcs import WCS

    return WCS(header).celestial


def test_imported_references_of_the_same_name_never_overwrite_each_other(library, tmp_path):
    first = library.import_file(cutout(tmp_path / "a" / "cutout.fits", 10.0, -20.0), 0.0)
    second = library.import_file(cutout(tmp_path / "b" / "cutout.fits", 200.0, -20.0), 0.0)
    assert first.path != second.path
    assert centre_of(first.path)[0] == pytest.approx(10.0) and centre_of(second.path)[0] == pytest.approx(200.0)
    for reference in library.all():  # each record's file holds its own field
        assert centre_of(reference.path)[0] == pytest.approx(reference.ra_deg)
    again = library.import_file(tmp_path / "a" / "cutout.fits", 0.0)
    assert again.id == first.id, "the same bytes imported twice are the same reference"
    assert len(library.all()) == 2


def test_own_frames_of_the_same_name_get_files_of_their_own(library, tmp_path):
    for number, ra in enumerate((10.0, 200.0)):
        frame = cutout(tmp_path / f"night{number}" / "frame_cal.fits", ra, -20.0)
        with fits.open(frame, mode="update") as hdus:
            hdus[0].header.update(LIMMAG=20.0, FWHM=3.0)
        assert library.consider(frame, f"wo-{number}", 0.0) is not None
    paths = [r.path for r in library.all()]
    assert len(set(paths)) == 2
    for reference in library.all():
        assert centre_of(reference.path)[0] == pytest.approx(reference.ra_deg)


def test_a_stored_file_is_never_replaced_by_other_bytes(tmp_path):
    folder = tmp_path / "store"
    one = tmp_path / "one.bin"
    one.write_bytes(b"first image")
    with open(one, "rb") as stream:
        path, sha = store_by_content(stream, folder, "cutout", ".fits")
    path.chmod(0o444)
    # A file already sitting at the name the next bytes would take: it is kept, the new bytes get the full digest.
    other = tmp_path / "other.bin"
    other.write_bytes(b"second image")
    import hashlib

    other_sha = hashlib.sha256(b"second image").hexdigest()
    planted = folder / f"cutout-{other_sha[:16]}.fits"
    planted.write_bytes(b"something else entirely")
    with open(other, "rb") as stream:
        stored, digest = store_by_content(stream, folder, "cutout", ".fits")
    assert digest == other_sha and stored.name == f"cutout-{other_sha}.fits"
    assert planted.read_bytes() == b"something else entirely" and stored.read_bytes() == b"second image"
    assert path.read_bytes() == b"first image" and sha == hashlib.sha256(b"first image").hexdigest()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temporary file is left"


def test_an_imported_file_never_keeps_a_name_a_browser_would_run(library, tmp_path):
    source = cutout(tmp_path / "cutout.html", 10.0, -20.0)
    reference = library.import_file(source, 0.0)
    assert reference.path.name.startswith("cutout-") and reference.path.suffix == ".fits"


# -- images are checked as calibration inputs are (item 7) and refusals are one line (item 10) ---------------


def forged(path: Path, width: int, height: int, data_bytes: int = 0) -> Path:
    """A FITS header declaring ``width`` × ``height`` float32 pixels, followed by ``data_bytes`` bytes (a sparse
    file: no disk is used)."""
    header = tan_wcs(10.0, -20.0, width, height, 1.0).to_header()
    header["FILTER"] = "r"
    hdu = fits.PrimaryHDU(header=header)
    hdu.header.update(BITPIX=-32, NAXIS=2, NAXIS1=width, NAXIS2=height)
    with open(path, "wb") as stream:
        stream.write(hdu.header.tostring().encode())
        stream.truncate(stream.tell() + data_bytes)
    return path


def gzip_bomb(path: Path, decompressed_bytes: int) -> Path:
    """A gzipped FITS image of zeros, small on disk, ``decompressed_bytes`` once decompressed."""
    import gzip

    side = int((decompressed_bytes / 4) ** 0.5)
    header = tan_wcs(10.0, -20.0, side, side, 1.0).to_header()
    hdu = fits.PrimaryHDU(header=header)
    hdu.header.update(BITPIX=-32, NAXIS=2, NAXIS1=side, NAXIS2=side, FILTER="r")
    zeros = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(hdu.header.tostring().encode())
        for _ in range(side * side * 4 // len(zeros) + 1):
            stream.write(zeros)
    return path


@pytest.fixture
def small_library(tmp_path: Path):
    """A library whose images may be at most 64 MiB decompressed (the checks are those of any cap)."""
    made = ReferenceLibrary(
        DatabaseConfig(path=tmp_path / "toros.db"), tmp_path / "data", ReferencesConfig(), max_image_bytes=64 << 20
    )
    yield made
    made.close()


def test_imports_are_checked_before_anything_is_copied(small_library, tmp_path):
    cases = {
        "nan.fits": (
            cutout(tmp_path / "nan.fits", 10.0, -20.0, value=np.nan),
            "only 0% of its pixels are finite numbers",
        ),
        "declares-more.fits": (
            forged(tmp_path / "declares-more.fits", 4000, 4000, 14_000),
            "but the file holds 14000 bytes",
        ),
        "huge.fits": (
            forged(tmp_path / "huge.fits", 100_000, 100_000, 14_000),
            "is more than preprocessor.calibration",
        ),
        "sparse.fits": (
            forged(tmp_path / "sparse.fits", 40_000, 40_000, 6_400_000_000),
            "bytes, more than preprocessor",
        ),
        "bomb.fits.gz": (gzip_bomb(tmp_path / "bomb.fits.gz", 100 << 20), "gzip data of more than 67108864 bytes"),
    }
    for name, (path, reason) in cases.items():
        with pytest.raises(BadReference) as refused:
            small_library.import_file(path, 0.0)
        assert str(refused.value).startswith(f"{path}: ") and reason in str(refused.value), (name, refused.value)
        assert "\n" not in str(refused.value)
    assert not (tmp_path / "data" / "references").exists() or not any(
        (tmp_path / "data" / "references").rglob("*.fits")
    )


@pytest.mark.parametrize(("card", "value"), [("LIMMAG", "deep"), ("FWHM", "2 arcsec")])
def test_a_non_numeric_card_is_one_line_naming_it(tmp_path, card, value):
    path = cutout(tmp_path / "cutout.fits", 10.0, -20.0)
    with fits.open(path, mode="update") as hdus:
        hdus[0].header[card] = value
    config = write_config(tmp_path)
    done = toros_cli("references", "import", str(path), "--config", str(config))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and f"{card} is not a" in done.stderr


@pytest.fixture(scope="module")
def pair_for_difference(tmp_path_factory) -> dict:
    """Two small frames of one field with a WCS each: enough for `toros difference` to run."""
    return kilonova_pair(tmp_path_factory.mktemp("pair"))


def _difference(*args: str) -> subprocess.CompletedProcess:
    return toros_cli("difference", *args, timeout=300)


def test_difference_refuses_bad_images_in_one_line(tmp_path):
    good = cutout(tmp_path / "good.fits", 10.0, -20.0, size=128)
    gain = cutout(tmp_path / "gain.fits", 10.0, -20.0, size=128)
    with fits.open(gain, mode="update") as hdus:
        hdus[0].header["GAIN"] = "x"
    singular = cutout(tmp_path / "singular.fits", 10.0, -20.0, size=128)
    with fits.open(singular, mode="update") as hdus:
        for card in ("CDELT1", "CDELT2", "PC1_1", "PC2_2", "CD1_1", "CD2_2"):
            hdus[0].header.remove(card, ignore_missing=True)
        hdus[0].header.update(CD1_1=0.0, CD1_2=0.0, CD2_1=0.0, CD2_2=0.0)
    nan = cutout(tmp_path / "nan.fits", 10.0, -20.0, size=128, value=np.nan)
    cases = [
        (gain, "science gain.fits: GAIN is not a number: 'x'"),
        (singular, "science singular.fits: the WCS cannot be used: Linear transformation matrix is singular."),
        (nan, "science nan.fits: only 0% of its pixels are finite numbers"),
        (forged(tmp_path / "declares-more.fits", 4000, 4000, 14_000), "but the file holds 14000 bytes"),
        (forged(tmp_path / "huge.fits", 100_000, 100_000, 14_000), "is more than calibration.max_frame_bytes"),
    ]
    for path, reason in cases:
        done = _difference(str(path), str(good), "--out", str(tmp_path / "out"))
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert reason in done.stderr, (reason, done.stderr)


def test_difference_gzip_bomb_is_refused_within_the_cap(tmp_path):
    bomb = gzip_bomb(tmp_path / "bomb.fits.gz", 2 * 1024**3 + (64 << 20))
    done = _difference(str(bomb), str(cutout(tmp_path / "good.fits", 10.0, -20.0)))
    assert done.returncode == 1 and "gzip data of more than 2147483648 bytes" in done.stderr
    assert done.stderr.count("\n") == 1


def test_difference_out_must_be_a_folder_it_can_write_and_follows_no_planted_link(pair_for_difference, tmp_path):
    science, reference = str(pair_for_difference["new"]), str(pair_for_difference["reference"])
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    for out in (str(a_file), "/proc/self"):
        done = _difference(science, reference, "--out", out)
        assert done.returncode == 2 and done.stderr.startswith(f"toros: --out {out}: cannot write the products there")
        assert done.stderr.count("\n") == 1
    assert a_file.read_text() == "mine"
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    stem = Path(science).name.removesuffix(".fits")
    for planted in (f".{stem}_candidates.csv.tmp", f"{stem}_candidates.csv.tmp"):
        (out / planted).symlink_to(victim)
    done = _difference(science, reference, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert victim.read_text() == "precious"
    assert (out / f"{stem}_candidates.csv").read_text().startswith("ra_deg,dec_deg,x,y,mag")
