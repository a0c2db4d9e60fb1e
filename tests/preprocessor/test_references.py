"""The reference library: own science-ready frames become references when they beat the one there, imports
need a WCS and a filter, look-ups go by footprint (HEALPix cells), filter and epoch; `toros references`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from sqlalchemy import func, select
from support import toros_cli, write_config

from toros.floor.sky_geometry import tan_wcs
from toros.preprocessor.references import BadReference, reference_cells

FIELD = (194.3, -17.9)
NIGHT = datetime(2026, 5, 1, 23, 0, tzinfo=UTC)


def science_ready(path: Path, centre=FIELD, *, limmag=20.0, fwhm_px=4.0, filter="r", when=NIGHT, size=512) -> Path:
    """A frame as the science step leaves it: a fitted WCS, LIMMAG and FWHM in the header."""
    header = fits.Header()
    header["FILTER"] = filter
    header["DATE-OBS"] = when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    header["LIMMAG"] = limmag
    header["FWHM"] = fwhm_px
    header.update(tan_wcs(*centre, size, size, 0.47).to_header())
    fits.PrimaryHDU(np.zeros((size, size), np.float32), header).writeto(path, overwrite=True)
    return path


def test_own_frames_become_references_when_they_beat_the_current_one(library, tmp_path):
    first = library.consider(science_ready(tmp_path / "a.fits"), "wo-1", 0.0)
    assert first is not None and first.current and first.source == "own: wo-1"
    assert first.path.is_file() and first.path.is_relative_to(tmp_path / "data" / "references")
    assert library.consider(science_ready(tmp_path / "b.fits", limmag=20.1), "wo-2", 0.0) is None  # not deeper enough
    deeper = library.consider(science_ready(tmp_path / "c.fits", limmag=20.5), "wo-3", 0.0)
    assert deeper is not None
    sharper = library.consider(science_ready(tmp_path / "d.fits", limmag=20.4, fwhm_px=3.0), "wo-4", 0.0)
    assert sharper is not None, "sharper by 25% and not shallower by more than 0.2 mag"
    found = library.find(*FIELD, 0.01, "r")
    assert [r.id for r in found if r.current] == [sharper.id]
    assert {r.id for r in found} == {first.id, deeper.id, sharper.id}, "replaced references stay for `before`"
    # another filter, another field: references of their own
    assert library.consider(science_ready(tmp_path / "g.fits", filter="g"), "wo-5", 0.0) is not None
    away = (FIELD[0] + 0.5, FIELD[1])
    assert library.consider(science_ready(tmp_path / "e.fits", centre=away), "wo-6", 0.0) is not None
    assert len([r for r in library.all() if r.current]) == 3


def test_frames_outside_the_limits_never_become_references(library, tmp_path):
    assert library.consider(science_ready(tmp_path / "shallow.fits", limmag=15.0), "wo", 0.0) is None
    assert library.consider(science_ready(tmp_path / "blurred.fits", fwhm_px=12.0), "wo", 0.0) is None
    plain = tmp_path / "plain.fits"
    fits.PrimaryHDU(np.zeros((8, 8), np.float32)).writeto(plain)
    assert library.consider(plain, "wo", 0.0) is None  # not science-ready


def test_look_up_by_footprint_filter_and_epoch(library, tmp_path):
    old = library.consider(science_ready(tmp_path / "old.fits", when=NIGHT - timedelta(days=30)), "wo-1", 0.0)
    new = library.consider(science_ready(tmp_path / "new.fits", limmag=21.0), "wo-2", 0.0)
    assert old is not None and new is not None
    edge = (FIELD[0], FIELD[1] + 0.03)  # 1.8' from the centre of the 4' frame
    assert [r.id for r in library.find(*edge, 0.01, "r")] == [new.id, old.id]
    assert library.find(FIELD[0], FIELD[1] + 0.2, 0.01, "r") == []
    assert library.find(*FIELD, 0.01, "g") == []
    event = (NIGHT - timedelta(days=1)).timestamp()
    assert [r.id for r in library.find(*FIELD, 0.01, "r", before=event)] == [old.id]
    with library._engine.connect() as conn:  # the footprint is indexed by HEALPix cell
        cells = conn.execute(select(func.count()).select_from(reference_cells)).scalar()
    assert cells >= 2


def test_imports_need_a_wcs_and_a_filter(library, tmp_path):
    cutout = tmp_path / "survey-cutout.fits"
    header = tan_wcs(*FIELD, 300, 300, 1.0).to_header()
    header["DATE-OBS"] = "2019-03-01T05:00:00"
    fits.PrimaryHDU(np.ones((300, 300), np.float32), header).writeto(cutout)
    with pytest.raises(BadReference, match=f"{cutout}: no FILTER in the header: say which with --filter"):
        library.import_file(cutout, 0.0)
    imported = library.import_file(cutout, 0.0, filter="r")
    assert imported.source == "import: survey-cutout.fits" and imported.taken == "2019-03-01T05:00"
    assert imported.radius_deg == pytest.approx(150 * 2**0.5 / 3600, rel=0.01)
    blank = tmp_path / "no-wcs.fits"
    fits.PrimaryHDU(np.ones((30, 30), np.float32), fits.Header({"FILTER": "r"})).writeto(blank)
    with pytest.raises(BadReference, match=f"{blank}: no celestial WCS: an image needs one to be a reference"):
        library.import_file(blank, 0.0)


def test_toros_references_import_and_list(tmp_path):
    config = write_config(tmp_path)
    cutout = tmp_path / "cutout.fits"
    header = tan_wcs(*FIELD, 200, 200, 1.0).to_header()
    header["FILTER"] = "g"
    fits.PrimaryHDU(np.ones((200, 200), np.float32), header).writeto(cutout)
    blank = tmp_path / "blank.fits"
    fits.PrimaryHDU(np.ones((20, 20), np.float32)).writeto(blank)
    done = toros_cli("references", "import", str(cutout), str(blank), "--config", str(config))
    assert done.returncode == 1, "one of the two was refused"
    assert done.stdout.startswith("reference 1: g at 194.3000 -17.9000")
    assert done.stderr.strip() == f"toros: {blank}: no celestial WCS: an image needs one to be a reference"
    listing = toros_cli("references", "list", "--config", str(config))
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert len(lines) == 2 and lines[1].startswith("   1* g") and "import: cutout.fits" in lines[1]
