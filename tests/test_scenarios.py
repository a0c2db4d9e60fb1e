"""Scenario files (`toros demo --scenario FILE`): the shipped one is valid; a broken one is refused in one line
naming the file and the key, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from support import toros_cli

from toros.scenarios import SHIPPED, Scenario, ScenarioError, SimulatedCamera, field_of_view

SAMPLE = SHIPPED.parent.parent / "alerts" / "MS181101ab-preliminary.json"


def test_the_shipped_scenario_is_a_two_site_campaign():
    scenario = Scenario.load(SHIPPED)
    assert [s.name for s in scenario.sites] == ["macon", "eaba"]
    assert scenario.notice == SAMPLE.resolve() and scenario.notice_delay_s == 30
    assert {t.kind for t in scenario.transients} == {"kilonova", "supernova_ia", "asteroid", "variable"}
    assert scenario.references.epoch < scenario.merger and scenario.second_look.filter == "g"


def write(folder: Path, **changes: object) -> Path:
    document = yaml.safe_load(SHIPPED.read_text()) | {"notice": str(SAMPLE)} | changes
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sights": []}, "sights: unknown key"),
        ({"merger": "2026-05-01T20:00:00Z"}, "merger must come after start"),
        ({"notice": "missing.json"}, "notice: no such file"),
        ({"transients": [{"kind": "kilonova", "host": "rank:1", "near": "rank:2"}]}, "give host"),
        ({"transients": [{"kind": "asteroid", "near": "rank:1"}]}, "asteroid needs mag"),
        ({"transients": [{"kind": "comet", "host": "rank:1"}]}, "transients.0"),
        ({"sites": [{"name": "macon", "latitude": -24.6, "longitude": -67.3}] * 2}, "two sites share a name"),
        ({"references": {"epoch": "2026-06-01T00:00:00Z"}}, "references.epoch must come before the merger"),
    ],
)
def test_a_broken_scenario_is_refused_in_one_line(tmp_path, changes, message):
    path = write(tmp_path, **changes)
    with pytest.raises(ScenarioError) as refused:
        Scenario.load(path)
    text = str(refused.value)
    assert message in text and "\n" not in text and (str(path) in text or "missing.json" in text), text


def test_what_is_not_a_scenario(tmp_path):
    for content in (b"- just\n- a list\n", b"start: [unclosed\n", b"\xff\xfe\x00"):
        path = tmp_path / "odd.yaml"
        path.write_bytes(content)
        with pytest.raises(ScenarioError, match="odd.yaml"):
            Scenario.load(path)


def test_the_demo_command_names_a_broken_scenario_and_starts_nothing(tmp_path):
    result = toros_cli("demo", "--scenario", str(write(tmp_path, sites=[])), "--out", str(tmp_path / "night"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "sites" in result.stderr and not (tmp_path / "night").exists()


def test_the_planners_field_is_what_the_simulated_camera_covers():
    site = Scenario.load(SHIPPED).sites[0]
    assert field_of_view(site, SimulatedCamera(frame=2048, pixel_scale_arcsec=0.47)) == pytest.approx(0.2674, abs=1e-4)
    wide = SimulatedCamera(frame=10560, pixel_scale_arcsec=0.47)  # the real camera: 1.38 deg, the site's 1.37
    assert field_of_view(site, wide) == 1.37
