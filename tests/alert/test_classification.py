"""The candidates' classification: impostors by context, then a kilonova against supernovae at the host's
distance, with the evidence."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from toros.alert.classification import Classification, Detection, classify, on_track
from toros.floor.kilonova import kilonova_mag

MERGER = datetime(2026, 5, 1, 23, 45, tzinfo=UTC)


def seen(hours: float, band: str, mag: float, ra: float = 150.0, error: float = 0.05) -> Detection:
    return Detection(MERGER + timedelta(hours=hours), band, mag, error, ra, -20.0)


def at(hours: float, band: str, distance: float = 40.0, shift: float = 0.0) -> float:
    value = kilonova_mag(band, hours / 24.0, distance)
    assert value is not None
    return value + shift


def verdict(detections, flags=(), distance=40.0, consistency=1.0, score=0.9):
    return classify(
        detections, merger=MERGER, flags=set(flags), distance_mpc=distance, distance_source="its host",
        host_consistency=consistency, vetting_score=score,
    )  # fmt: skip


def test_a_kilonova_at_the_gw_distance_with_its_colour():
    found = verdict([seen(6, "r", at(6, "r")), seen(6.5, "g", at(6.5, "g"))])
    assert found.classification is Classification.KILONOVA and found.kilonova_score > 0.7
    assert any(line.startswith("g-r = ") for line in found.evidence), found.evidence
    # The same light, but a host far beyond the GW distance: not the kilonova.
    far = verdict([seen(6, "r", at(6, "r")), seen(6.5, "g", at(6.5, "g"))], consistency=math.exp(-0.5 * 9))
    assert far.classification is not Classification.KILONOVA and far.kilonova_score < 0.05 * found.kilonova_score
    # Fading as a kilonova does over two nights is evidence too; holding steady is not.
    fading = verdict([seen(26, "r", at(26, "r")), seen(50, "r", at(50, "r"))])
    steady = verdict([seen(26, "r", at(26, "r")), seen(50, "r", at(26, "r"))])
    assert fading.classification is Classification.KILONOVA and steady.kilonova_score < 0.2 * fading.kilonova_score


@pytest.mark.parametrize("absolute", [-19.3, -17.2])
def test_supernovae_are_too_bright_and_too_slow(absolute):
    modulus = 5 * math.log10(40e5)
    found = verdict([seen(6, "r", absolute + modulus), seen(30, "r", absolute + modulus + 0.05)])
    assert found.classification is Classification.SUPERNOVA and found.kilonova_score < 0.15


def test_impostors_by_context():
    mag = at(6, "r")
    moving = verdict([seen(6, "r", mag), seen(6.5, "r", mag, ra=150.0 + 30 / 3600)])
    assert moving.classification is Classification.MOVING and moving.kilonova_score == 0
    assert verdict([seen(6, "r", mag)], flags={"moving"}).classification is Classification.MOVING
    assert verdict([seen(6, "r", mag)], flags={"on_star"}).classification is Classification.STAR
    before = verdict([seen(-30, "r", 18.0), seen(6, "r", 18.0)])
    assert before.classification is Classification.VARIABLE and "before the merger" in before.evidence[0]
    nuclear = verdict([seen(6, "r", mag - 2.5)], flags={"nuclear"})
    assert nuclear.classification is Classification.NUCLEAR
    kept = verdict([seen(6, "r", mag), seen(6.5, "g", at(6.5, "g"))], flags={"nuclear"})
    assert kept.classification is Classification.KILONOVA, "a kilonova on a nucleus is kept"


def test_a_source_seen_in_a_routine_search_before_the_merger_is_a_variable():
    mag = at(6, "r")
    routine = classify(
        [seen(6, "r", mag)], merger=MERGER, flags={"on_star"}, distance_mpc=40.0, distance_source="its host",
        host_consistency=1.0, vetting_score=0.9, first_seen=MERGER - timedelta(days=26),
    )  # fmt: skip
    assert routine.classification is Classification.VARIABLE, "a star that varied before the event: a variable"
    assert "before the merger" in routine.evidence[0] and "reference catalog" in routine.evidence[0]


def test_a_supernova_older_than_the_event_is_told_from_a_variable():
    """Seen in a routine search before the merger in a galaxy at 40 Mpc: as bright as a supernova there, an
    older supernova; as faint as no supernova, a variable; at the galaxy's centre, an active nucleus."""

    def older(mag: float, flags: set[str]) -> Classification:
        return classify(
            [seen(6, "r", mag)], merger=MERGER, flags=flags, distance_mpc=40.0, distance_source="its host",
            host_consistency=1.0, vetting_score=0.9, first_seen=MERGER - timedelta(days=3),
        ).classification  # fmt: skip

    assert older(14.0, set()) is Classification.SUPERNOVA  # M = -19
    assert older(20.0, set()) is Classification.VARIABLE  # M = -13: no supernova
    assert older(20.0, {"nuclear"}) is Classification.NUCLEAR
    assert older(14.0, {"on_star"}) is Classification.VARIABLE, "a catalog star under it: a variable star"


def test_motion_is_judged_against_the_detections_position_errors():
    mag = at(6, "r")
    arcsec = 1 / 3600 / math.cos(math.radians(20.0))
    # 1.2" in two minutes at S/N 50: an asteroid at 0.6"/min.
    slow = verdict([seen(6, "r", mag, error=0.02), seen(6 + 2 / 60, "r", mag, ra=150.0 + 1.2 * arcsec, error=0.02)])
    assert slow.classification is Classification.MOVING and '"/min' in slow.evidence[0]
    # The same offset at S/N 5: within the positions' errors, not motion.
    faint = verdict([seen(6, "r", mag, error=0.2), seen(6 + 2 / 60, "r", mag, ra=150.0 + 1.2 * arcsec, error=0.2)])
    assert faint.classification is not Classification.MOVING


def test_a_candidate_on_a_movers_track_is_that_mover():
    arcsec = 1 / 3600 / math.cos(math.radians(20.0))
    mover = [seen(6, "r", 18.5), seen(6 + 2 / 60, "r", 18.5, ra=150.0 + 1.0 * arcsec)]  # 0.5"/min east
    later = [seen(6.5, "g", 18.9, ra=150.0 + 14.5 * arcsec)]  # 29 minutes on: 14.5" east
    assert on_track(mover, later)
    assert not on_track(mover, [seen(6.5, "g", 18.9, ra=150.0 - 14.5 * arcsec)]), "the other way"
    assert not on_track(mover[:1], later), "one detection has no track"


def test_without_a_distance_nothing_is_claimed():
    found = classify(
        [seen(6, "r", 18.0)], merger=MERGER, flags=set(), distance_mpc=None, distance_source="none",
        host_consistency=None, vetting_score=0.9,
    )  # fmt: skip
    assert found.classification is Classification.UNKNOWN and found.kilonova_score == 0
    assert classify([], merger=MERGER, flags=set(), distance_mpc=40.0, distance_source="", host_consistency=None,
                    vetting_score=1.0).classification is Classification.UNKNOWN  # fmt: skip
