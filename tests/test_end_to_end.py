"""The whole chain, as `make demo` runs it (smaller frames, faster clock): a sample LVK alert in, calibrated
images of its host-galaxy candidates out, across the three daemons as separate processes."""

from __future__ import annotations

from pathlib import Path

from astropy.io import fits

from toros.demo import run_chain


def test_alert_to_calibrated_images(tmp_path):
    lines: list[str] = []
    result = run_chain(tmp_path / "chain", frame=128, rate=600.0, galaxies=5000, timeout=240.0, say=lines.append)
    assert result.ok, "\n".join(lines)
    assert result.exit_codes == {"alert": 0, "telescope": 0, "preprocessor": 0}
    assert any("6 targets accepted" in line for line in lines), lines
    assert result.light_frames == 12 and len(result.calibrated) == 12
    data = tmp_path / "chain" / "data"
    raw_lights = sorted(p.stem for p in (data / "2026-05-01").glob("*-light-*.fits"))
    assert len(raw_lights) == 12
    assert sorted(Path(p).stem.removesuffix("_cal") for p in result.calibrated) == raw_lights
    with fits.open(result.calibrated[0]) as hdus:
        assert hdus[0].header["IMAGETYP"] == "LIGHT" and "MASK" in hdus and hdus[0].data.dtype.name == "float32"
        assert hdus[0].header["DRILL"] is True, "a mock alert is handled as a drill down to the images"
    assert list(data.glob("alerts/MS181101ab/*/targets-macon.csv")) and list(
        data.glob("alerts/MS181101ab/*/skymap.png")
    )
    assert (data / "2026-05-01" / "plan.png").exists()
    kinds = {p.name.split("-")[2] for p in (data / "2026-05-01").glob("*.fits")}
    assert kinds == {"bias", "dark", "flat", "light"}, "the robotic night took its calibrations before the targets"
