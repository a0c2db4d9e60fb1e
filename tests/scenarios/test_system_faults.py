"""Whole-system faults, with the three daemons as processes: kill -9 the preprocessor or the telescope in the
middle of a night and restart it; a duplicate notice and then a retraction through the whole chain."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from support import wait_for

from toros import MODULES
from toros.demo import ALERT, SAMPLES, Node, write_config
from toros.generated import toros_pb2 as pb
from toros.runtime.states import FINAL_STATES

EARLY_EVENING = "2026-05-01T21:00:00Z"  # Macón, the Sun at +18 deg: time for long darks before the sky flats


@pytest.fixture
def node(tmp_path):
    nodes: list[Node] = []

    def make(**settings) -> Node:
        settings = {"frame": 96, "rate": 300.0, "galaxies": 3000} | settings
        started = Node(write_config(tmp_path / f"node{len(nodes)}", **settings))
        nodes.append(started)
        for module in MODULES:
            started.start(module)
        return started

    yield make
    for started in nodes:
        assert not any(started.stop().values()), "every daemon stops cleanly"


def replay(node: Node, path: Path) -> str:
    result = node.cli("alert", "replay", str(path), "--wait")
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def calibrated_once(node: Node) -> Counter:
    """How many times each raw science frame was calibrated, from the preprocessor's finished work orders."""
    counts: Counter = Counter()
    stub = node.stub("preprocessor")
    for id, update in node.work_orders("preprocessor", "calibrate_images").items():
        assert update.state == pb.WORK_ORDER_STATE_DONE, (id, update.message)
        status = stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id))
        counts.update(Path(p.path).stem.removesuffix("_cal") for p in status.products if p.kind == "calibrated")
    return counts


def finish(node: Node, timeout: float = 180.0) -> None:
    wait_for(lambda: node.progress()[1], timeout=timeout, interval=0.5)


def test_kill_9_the_preprocessor_mid_night_every_image_is_calibrated_exactly_once(node):
    chain = node(exposure_s=300.0, clock_start=EARLY_EVENING)  # 25 min of darks before twilight
    assert "6 targets accepted" in replay(chain, ALERT)
    wait_for(lambda: chain.progress()[3] >= 2, timeout=120, interval=0.3)
    chain.kill("preprocessor")
    time.sleep(2.0)  # the telescope goes on observing meanwhile
    chain.start("preprocessor")
    finish(chain)
    lights = chain.light_frames()
    assert len(lights) == 12
    counts = calibrated_once(chain)
    assert sorted(counts) == sorted(Path(image.path).stem for image in lights)
    assert set(counts.values()) == {1}


def test_kill_9_the_telescope_mid_night_the_stream_resumes_without_losing_an_image(node):
    chain = node(exposure_s=300.0, clock_start=EARLY_EVENING)  # 25 min of darks before twilight
    assert "6 targets accepted" in replay(chain, ALERT)
    wait_for(lambda: len(chain.light_frames()) >= 3, timeout=120, interval=0.3)
    chain.kill("telescope")
    chain.start("telescope")  # the night carries on; its simulated dome comes back closed and the robot reopens it
    finish(chain, timeout=240)
    observing = chain.work_orders("telescope", "observe_targets")
    assert [u.message for u in observing.values()] == ["6 of 6 targets observed (12 frames)"]
    lights = chain.light_frames()
    assert len(lights) >= 12  # one more if the kill fell between storing a frame and counting it
    counts = calibrated_once(chain)
    assert sorted(counts) == sorted(Path(image.path).stem for image in lights), "no image_ready was lost"
    assert set(counts.values()) == {1}


def test_a_duplicate_then_a_retraction_through_the_whole_chain(node):
    chain = node(clock_start="2026-05-01T15:00:00Z")  # early afternoon: the targets wait for the night
    assert "6 targets accepted" in replay(chain, ALERT)
    assert "duplicate notice, already handled by" in replay(chain, ALERT)
    observing = chain.work_orders("telescope", "observe_targets")
    assert len(observing) == 1, "the duplicate relayed nothing"
    (order_id,) = observing
    wait_for(lambda: "6 targets pending" in chain.stub("telescope").GetStatus(pb.GetStatusRequest()).message)
    assert "retraction; 1 of 1 target lists cancelled" in replay(chain, SAMPLES / "MS181101ab-retraction.json")
    status = wait_for(
        lambda: (
            (s := chain.stub("telescope").GetWorkOrder(pb.GetWorkOrderRequest(id=order_id))).state in FINAL_STATES and s
        )
    )
    assert status.state == pb.WORK_ORDER_STATE_CANCELLED and "MS181101ab retracted" in status.message
    wait_for(lambda: "0 targets pending" in chain.stub("telescope").GetStatus(pb.GetStatusRequest()).message)
    assert chain.light_frames() == []
