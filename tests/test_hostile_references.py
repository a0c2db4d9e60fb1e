"""Hostile input to the reference library and to `toros difference` (hardening, second round): stored files
never collide or get replaced, images are checked as calibration inputs are, and every refusal is one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from toros.preprocessor.references import ReferenceLibrary
from toros.preprocessor.settings import ReferencesConfig
from toros.runtime.config import DatabaseConfig
from toros.runtime.files import store_by_content
from toros.sky_geometry import tan_wcs


def cutout(path: Path, ra: float, dec: float, *, size: int = 64, value: float = 1.0) -> Path:
    header = tan_wcs(ra, dec, size, size, 1.0).to_header()
    header["FILTER"] = "r"
    header["DATE-OBS"] = "2019-03-01T05:00:00"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.full((size, size), value, np.float32), header).writeto(path)
    return path


@pytest.fixture
def library(tmp_path: Path):
    made = ReferenceLibrary(DatabaseConfig(path=tmp_path / "toros.db"), tmp_path / "data", ReferencesConfig())
    yield made
    made.close()


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
