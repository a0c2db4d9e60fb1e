"""Alert to shutter: from ``Submit(process_alert)`` on the alert daemon to the DATE-OBS of the first alert frame
on the simulated observatory, in four cases — the telescope idle, in the middle of a routine 300 s exposure,
reading one out, and in the middle of a series of 120 s dark frames.

    .venv/bin/python benchmarks/rapid_response.py [--rate 5] [--cases idle ...] [--repeat 1]

The alert and telescope daemons run as processes on loopback with the demo's catalog and the sample notice
(its times moved to tonight), the telescope open in the dark (manual mode, so that nothing but the case keeps
it busy). Times are telescope clock seconds; the clock runs ``--rate`` times faster than real time, so each
real second the daemons spend (ranking the galaxies, planning) counts ``rate`` clock seconds: a low rate
keeps the figure honest. ``--policy finish_frame`` is the reference in the same run: what the telescope did
before alert targets could stop an exposure (220 s in the issue's report).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from toros.demo import EVENT_TIME, NOTICE_DELAY, Node, plan_scenario, write_config
from toros.generated import toros_pb2 as pb
from toros.runtime.states import FINAL_STATES

ROUTINE_S = 300
DARK_S = 120
READOUT_S = 8.0  # an STA1600 read through its 16 outputs
ROUTINE_FIELD = (150.0, -40.0)  # high in the west that night, far from the Moon and the alert's galaxies


def clock(node: Node) -> datetime:
    return node.stub("telescope").GetStatus(pb.GetStatusRequest(), timeout=10).clock_time.ToDatetime(tzinfo=UTC)


def camera_message(node: Node) -> str:
    devices = node.stub("telescope").GetStatus(pb.GetStatusRequest(), timeout=10).devices
    return next(d.message for d in devices if d.name == "camera")


def wait(predicate: Callable[[], object], timeout: float = 300.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise RuntimeError("the case did not get there in time")


def until_clock(node: Node, moment: datetime) -> None:
    wait(lambda: clock(node) >= moment)


def exposure_start(node: Node) -> datetime:
    """The clock when the camera is first seen exposing (looked at every 2 clock seconds)."""
    wait(lambda: "exposing" in camera_message(node))
    return clock(node)


def routine(node: Node, ra: float, dec: float) -> None:
    target = pb.Target(
        name="routine field", ra_deg=ra, dec_deg=dec, exposure_count=3, exposure_time={"seconds": ROUTINE_S}
    )
    node.stub("telescope").Submit(pb.WorkOrder(id="routine", observe_targets=pb.ObserveTargets(targets=[target])))


def idle(node: Node, ra: float, dec: float) -> None:
    """Nothing to do: the alert finds the telescope open and waiting."""


def mid_exposure(node: Node, ra: float, dec: float) -> None:
    routine(node, ra, dec)
    until_clock(node, exposure_start(node) + timedelta(seconds=100))


def mid_readout(node: Node, ra: float, dec: float) -> None:
    routine(node, ra, dec)
    until_clock(node, exposure_start(node) + timedelta(seconds=ROUTINE_S + 3))


def mid_calibrations(node: Node, ra: float, dec: float) -> None:
    darks = pb.TakeCalibrations(image_type=pb.IMAGE_TYPE_DARK, count=5, exposure_time={"seconds": DARK_S})
    node.stub("telescope").Submit(pb.WorkOrder(id="darks", take_calibrations=darks))
    until_clock(node, exposure_start(node) + timedelta(seconds=40))


CASES = {
    "idle": idle,
    "mid routine exposure": mid_exposure,
    "mid readout": mid_readout,
    "mid calibration frames": mid_calibrations,
}


def run_case(folder: Path, prepare: Callable[[Node, float, float], None], rate: float, policy: str) -> dict:
    start = EVENT_TIME + NOTICE_DELAY - timedelta(minutes=3)
    config = write_config(folder, frame=256, rate=rate, galaxies=5000, clock_start=start.isoformat())
    document = yaml.safe_load(config.read_text())
    document["telescope"] |= {"mode": "manual", "preemption": {"routine_exposure": policy}}
    document["telescope"]["safety"] |= {"poll_s": 2.0}
    document["telescope"]["camera"]["readout_s"] = READOUT_S
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    scenario = plan_scenario(config)
    node = Node(config)
    try:
        for module in ("alert", "telescope"):
            node.start(module)
        telescope = node.stub("telescope")
        opened = telescope.Submit(pb.WorkOrder(night_operation=pb.NightOperation(step=pb.NIGHT_STEP_OPEN)))
        wait(lambda: telescope.GetWorkOrder(pb.GetWorkOrderRequest(id=opened.id)).state in FINAL_STATES)
        # The routine field: high in the west, well away from the Moon (RA 221, Dec -20 that night) and tens of
        # degrees of sky from the alert's galaxies, so that the slew and the dome's turn are real ones.
        prepare(node, *ROUTINE_FIELD)
        sent, sent_real = clock(node), time.monotonic()
        node.stub("alert").Submit(
            pb.WorkOrder(process_alert=pb.ProcessAlert(payload=scenario.alert.read_bytes())), timeout=30
        )
        names = {t.name for t in scenario.targets}

        def first_alert_frame() -> pb.ImageReady | None:
            request = pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_IMAGE_READY])
            frames = [e.image_ready for e in telescope.Watch(request, timeout=30) if e.image_ready.object in names]
            return frames[0] if frames else None

        first: pb.ImageReady = wait(first_alert_frame)  # type: ignore[assignment]
        real = time.monotonic() - sent_real
        return {
            "seconds": (first.date_obs.ToDatetime(tzinfo=UTC) - sent).total_seconds(),
            "real": real,
            "target": first.object,
        }
    finally:
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--repeat", type=int, default=1, help="runs per case and policy: the median and p95 shown")
    arguments = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}; clock rate {arguments.rate:g}")
    print(f"{'case':24s} {'abort (default)':>16s} {'finish_frame':>14s}   first alert target")
    worst = 0.0
    for name in arguments.cases:
        results: dict[str, list[dict]] = {}
        for policy in ("abort", "finish_frame"):
            for _ in range(arguments.repeat):
                with tempfile.TemporaryDirectory() as folder:
                    results.setdefault(policy, []).append(
                        run_case(Path(folder) / "node", CASES[name], arguments.rate, policy)
                    )
        seconds = {policy: sorted(r["seconds"] for r in runs) for policy, runs in results.items()}
        worst = max(worst, seconds["abort"][-1])

        def spread(values: list[float]) -> str:
            if len(values) == 1:
                return f"{values[0]:.0f} s"
            p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
            return f"{statistics.median(values):.0f}/{p95:.0f} s"

        print(
            f"{name:24s} {spread(seconds['abort']):>16s} {spread(seconds['finish_frame']):>14s}   "
            f"{results['abort'][0]['target']} (real {results['abort'][0]['real']:.1f} s)"
            + (f" (median/p95 of {arguments.repeat} runs)" if arguments.repeat > 1 else ""),
            flush=True,
        )
    print(f"worst case with abort: {worst:.0f} clock seconds from Submit(process_alert) to DATE-OBS (target <= 60 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
