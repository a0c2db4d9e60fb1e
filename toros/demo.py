"""`make demo`: one observatory from one command — the whole chain on embedded defaults, down to the kilonova.

The three daemons start on loopback (SQLite, simulated hardware, an accelerated clock on an autumn evening
at Macón when the sample event's region rises). The night starts with routine monitoring of nearby galaxies
(as galaxy-targeted programs such as DLT40 do): the telescope observes them after its calibration frames, and
the preprocessor, following its image stream, calibrates each frame, makes it science-ready and files it in
the reference library. At 23:45 UTC a merger happens: the shipped sample LVK alert (MS181101ab, igwn.gwalert
JSON with its sky map, its times moved to tonight) is replayed as a drill a minute later, and the simulated sky
holds an AT2017gfo-like kilonova 3.6" from the galaxy the alert robot will rank first. The robot ranks and
relays; the telescope observes the targets; the preprocessor calibrates, solves, subtracts the references
taken before the merger, vets what is new, and writes the candidate's triplet, the GCN circular draft, the TNS
report and Avro packets. The demo prints the candidate and where everything is, and stops the daemons.
Everything goes under ./demo/ (ignored by git).

``run_chain`` is also what the end-to-end test runs, with smaller frames and a faster clock.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import yaml
from astropy.io import fits
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toros import MODULES
from toros.alert.coordination import Galaxies, Pointing, plan_first_epoch, pool_size
from toros.alert.notices import parse_notice
from toros.alert.ranking import rank
from toros.alert.skymap import read_skymap
from toros.config import load_config
from toros.floor.catalogs import GalaxyIndex
from toros.floor.requesters import DEMO
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.preprocessor.waiting import WAITING_FOR_MASTERS
from toros.runtime.states import FINAL_STATES
from toros.simulation.galaxies import write_glade_plus
from toros.simulation.sky import Kilonova, StarCatalog

SAMPLES = Path(__file__).resolve().parent / "data" / "alerts"
ALERT = SAMPLES / "MS181101ab-preliminary.json"
ALERT_ID = "MS181101ab"
REFERENCE_CATALOG = "reference-stars.csv"
REFERENCE_MARGIN_DEG = 0.1  # beyond a frame's half-diagonal: the mount's pointing error and then some
# Macón, the Sun at +16 deg: an hour of clock time before the sky-flat band (Sun at -3 deg), so that daemons slow to
# start on a loaded machine (each real second is minutes of clock time) still take their evening flats in it.
CLOCK_START = "2026-05-01T20:40:00Z"
EVENT_TIME = datetime(2026, 5, 1, 23, 45, tzinfo=UTC)  # the merger, once the routine monitoring is done
NOTICE_DELAY = timedelta(minutes=1)  # LVK's preliminary notices come within a minute
ROUTINE_EXPOSURE_S = 180.0  # the references: deeper than the alert's 60 s frames
KILONOVA_OFFSET_ARCSEC = (3.0, 2.0)  # east, north of the host's centre


PORTS_BELOW = 32768  # Linux's default first ephemeral port


def free_port() -> int:
    """A loopback port free now, for a daemon started a few seconds later: drawn below the kernel's ephemeral
    range where it can be, so that the servers other processes bind to port 0 meanwhile, and their outgoing
    connections, never take it (a port from bind(0) is free only until the kernel hands it out again)."""
    low = _first_ephemeral_port()
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1) if low > 2048 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free loopback port")


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return PORTS_BELOW


@dataclass
class ChainResult:
    ok: bool
    lines: list[str] = field(default_factory=list)
    exit_codes: dict[str, int] = field(default_factory=dict)
    light_frames: int = 0
    campaign: dict[str, Any] = field(default_factory=dict)  # the alert daemon's campaign.json at the end
    calibrated: list[str] = field(default_factory=list)
    science_ready: list[str] = field(default_factory=list)  # calibrated frames with a fitted WCS and MAGZP
    kilonova: Kilonova | None = None  # the truth: the simulated sky's kilonova
    candidates: list[pb.TransientCandidate] = field(default_factory=list)  # the streamed transient_candidate events
    candidate_latency_s: list[float] = field(default_factory=list)  # image_ready -> transient_candidate, real s
    reports: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    """Tonight's story, set up before the daemons start: the galaxies the alert will rank (monitored before
    it), the notice with its times moved to tonight, and the kilonova beside the first galaxy."""

    targets: list[Pointing]
    alert: Path
    kilonova: dict[str, Any]  # as the telescope's sky.transients takes it


def write_config(
    folder: Path,
    *,
    frame: int,
    pixel_scale: float = 0.47,
    rate: float,
    galaxies: int,
    clock_start: str = CLOCK_START,
    exposure_s: float = 60.0,
    transients: list[dict[str, object]] | None = None,
) -> Path:
    """A node config with free loopback ports and everything under ``folder`` (started afresh)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    catalog = folder / "galaxies-glade+.txt"
    write_glade_plus(catalog, galaxies, seed=7, near_fraction=0.05)
    ports = {module: free_port() for module in MODULES}
    config = {
        "logging": {"file": "logs/toros.log", "level": "INFO"},
        "database": {"path": "toros.db"},
        "storage": {"root": "data"},
        "clock": {"start": clock_start, "rate": rate},
        "alert": {
            "port": ports["alert"],
            "catalog": catalog.name,
            "process_test_alerts": True,
            "targets_per_observatory": 6,
            "exposure": {"exposure_time_s": exposure_s, "exposure_count": 2, "filter": "r"},
            "observatories": [
                {
                    "name": "macon",
                    "latitude": -24.62,
                    "longitude": -67.32,
                    "elevation": 4650,
                    "telescope": f"127.0.0.1:{ports['telescope']}",
                    "preprocessor": f"127.0.0.1:{ports['preprocessor']}",
                    "field_of_view_deg": [round(frame * pixel_scale / 3600.0, 4)] * 2,
                }
            ],
        },
        "telescope": {
            "port": ports["telescope"],
            "mode": "robotic",
            "camera": {
                "width": frame,
                "height": frame,
                "overscan": max(8, frame // 32),
                "readout_s": 5.0,
                "pixel_scale_arcsec": pixel_scale,
            },
            "sky": {"galaxy_catalog": catalog.name, "transients": transients or []},
            "calibrations": {
                "bias_count": 5,
                "dark_count": 5,
                "dark_times_s": [exposure_s],  # the routine 180 s frames use them scaled
                "flat_count": 5,
                "flat_filters": ["r"],
                # The simulated twilight needs 3-8 s at the Sun's -3 deg: flats from there up to 60 s leave ~11
                # clock minutes, 2-3 frames when a loaded laptop stretches each to 4-5 clock minutes at rate 300
                # (a master flat needs 3). Opening at sunset for flats of up to 180 s leaves ~25.
                "flat_sun_altitude_deg": [-12.0, 0.0],
                "flat_max_exposure_s": 180.0,
            },
            "safety": {"max_sun_altitude_deg": 0.0},
        },
        "preprocessor": {
            "port": ports["preprocessor"],
            "http": f"http://127.0.0.1:{ports['preprocessor']}",
            "follow": [{"name": "macon", "address": f"127.0.0.1:{ports['telescope']}"}],
            "science": {"reference_catalog": REFERENCE_CATALOG},
        },
    }
    path = folder / "toros.demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_reference_stars(folder: Path, targets: list[Pointing], radius_deg: float) -> int:
    """The site's reference catalog for tonight's fields: the simulated sky's stars around each target (a real
    site keeps a Gaia or Pan-STARRS extract)."""
    centres = [(t.ra_deg, t.dec_deg) for t in targets]
    return StarCatalog().write_reference_catalog(folder / REFERENCE_CATALOG, centres, radius_deg)


def plan_scenario(config: Path) -> Scenario:
    """Ranks the sample alert's galaxies as the alert robot will when the notice arrives (the same code, the
    same catalog), writes the notice with tonight's times, and places the kilonova beside the first galaxy."""
    node = load_config(config)
    payload = json.loads(ALERT.read_text())
    payload["event"]["time"] = EVENT_TIME.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    payload["time_created"] = (EVENT_TIME + NOTICE_DELAY).strftime("%Y-%m-%dT%H:%M:%SZ")
    alert_path = config.parent / f"{ALERT_ID}-tonight.json"
    alert_path.write_text(json.dumps(payload), encoding="utf-8")
    alert = parse_notice(alert_path.read_bytes())
    assert alert.skymap is not None, "the sample notice embeds its sky map"
    settings = node.alert
    assert settings.catalog is not None
    ranked = rank(
        GalaxyIndex.open(settings.catalog),
        read_skymap(alert.skymap.data),
        credible_level=settings.credible_level,
        luminosity_weighting=settings.luminosity_weighting,
    )
    pool = Galaxies.of(GalaxyIndex.open(settings.catalog), ranked, pool_size(settings, ranked))
    targets = plan_first_epoch(pool, settings.observatories, settings, EVENT_TIME + 2 * NOTICE_DELAY)[0].pointings
    host = targets[0].galaxies[0]
    east, north = KILONOVA_OFFSET_ARCSEC
    kilonova = {
        "kind": "kilonova",
        "ra_deg": host.ra_deg + east / 3600.0 / math.cos(math.radians(host.dec_deg)),
        "dec_deg": host.dec_deg + north / 3600.0,
        "start": EVENT_TIME.isoformat(),
        "distance_mpc": host.distance_mpc or 40.0,
    }
    return Scenario(targets, alert_path, kilonova)


def wait_serving(port: int, logs: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"a daemon on port {port} did not start; see {logs}")


class Node:
    """The three daemons of one node as processes (so that they can be stopped, killed and restarted)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.folder = config.parent
        self.ports = {m: yaml.safe_load(config.read_text())[m]["port"] for m in MODULES}
        self.logs = self.folder / "logs" / "toros.log"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._channels: dict[str, grpc.Channel] = {}

    def start(self, module: str) -> None:
        command = [sys.executable, "-m", "toros.cli", "serve", module, "--config", str(self.config)]
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=self.folder)
        self.processes[module] = process
        wait_serving(self.ports[module], self.logs)
        if process.poll() is not None:  # what answered on the port is not this daemon
            raise RuntimeError(f"{module} exited with {process.returncode} while starting; see {self.logs}")

    def kill(self, module: str) -> None:
        """kill -9: no goodbye, as in a power cut or a crash."""
        process = self.processes.pop(module)
        process.send_signal(signal.SIGKILL)
        process.wait()
        self._close(module)

    def stop(self) -> dict[str, int]:
        """SIGTERM to every daemon still running; their exit codes."""
        for module in list(self._channels):
            self._close(module)
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        codes = {module: process.wait(timeout=60) for module, process in self.processes.items()}
        self.processes.clear()
        return codes

    def stub(self, module: str) -> FrontDeskStub:
        if module not in self._channels:
            self._channels[module] = grpc.insecure_channel(f"127.0.0.1:{self.ports[module]}")
        return FrontDeskStub(self._channels[module])

    def _close(self, module: str) -> None:
        channel = self._channels.pop(module, None)
        if channel is not None:
            channel.close()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "toros.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            cwd=self.folder,
        )

    def work_orders(self, module: str, task: str) -> dict[str, pb.WorkOrderUpdate]:
        """The latest update of each work order of ``task`` (from the event journal)."""
        latest: dict[str, pb.WorkOrderUpdate] = {}
        request = pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_WORK_ORDER_UPDATE])
        for event in self.stub(module).Watch(request, timeout=30):
            if event.work_order_update.task == task or event.work_order_id in latest:
                latest[event.work_order_id] = event.work_order_update
        return latest

    def light_frames(self) -> list[pb.ImageReady]:
        events = self.stub("telescope").Watch(
            pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_IMAGE_READY]), timeout=30
        )
        return [e.image_ready for e in events if e.image_ready.image_type == pb.IMAGE_TYPE_LIGHT]

    def progress(self) -> tuple[str, bool, int, int]:
        """(a line for people, whether the targets and their calibration are all finished, lights, calibrated)."""
        telescope = self.stub("telescope").GetStatus(pb.GetStatusRequest(), timeout=10)
        observing = self.work_orders("telescope", "observe_targets")
        lights = len(self.light_frames())
        follows = self.work_orders("preprocessor", "calibrate_images")
        waiting = self.stub("preprocessor").GetStatus(pb.GetStatusRequest(), timeout=10).activity == WAITING_FOR_MASTERS
        calibrated = sum(u.state == pb.WORK_ORDER_STATE_DONE for u in follows.values())
        state = telescope.activity
        line = (
            f"{telescope.clock_time.ToDatetime():%H:%M} UTC: telescope {state}, {lights} science frames; "
            f"preprocessor {calibrated} calibrated" + (", frames waiting for their masters" if waiting else "")
        )
        finished = (
            bool(observing)
            and all(u.state in FINAL_STATES for u in observing.values())
            and all(u.state in FINAL_STATES for u in follows.values())
            and len(follows) >= lights
            and not waiting
        )
        return line, finished, lights, calibrated


def add_transients(config: Path, transients: list[dict[str, object]]) -> None:
    """The simulated sky's transients into the telescope's section of a written config."""
    document = yaml.safe_load(config.read_text())
    document["telescope"]["sky"]["transients"] = transients
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def clock_now(node: Node) -> datetime:
    status: pb.ModuleStatus = node.stub("telescope").GetStatus(pb.GetStatusRequest(), timeout=10)
    return status.clock_time.ToDatetime(tzinfo=UTC)


def wait_until(node: Node, done: Callable[[], bool], deadline: float, say: Callable[[str], None]) -> None:
    """Progress lines until ``done``; RuntimeError at the deadline."""
    shown = ""
    while time.monotonic() < deadline:
        line, _, _, _ = node.progress()
        if line != shown:
            say(line)
            shown = line
        if done():
            return
        time.sleep(1.0)
    raise RuntimeError(f"the chain did not get there in time; see {node.logs}")


def routine_order(targets: list[Pointing]) -> pb.WorkOrder:
    """Tonight's routine monitoring of the galaxies, as an operator would submit it."""
    exposure = Duration(seconds=int(ROUTINE_EXPOSURE_S))
    return pb.WorkOrder(
        id="routine-monitoring-2026-05-01",
        requester=f"{DEMO}routine-monitoring",
        observe_targets=pb.ObserveTargets(
            targets=[
                pb.Target(
                    name=t.name,
                    ra_deg=t.ra_deg,
                    dec_deg=t.dec_deg,
                    exposure_time=exposure,
                    exposure_count=1,
                    filter="r",
                )  # fmt: skip
                for t in targets
            ]
        ),
    )


def run_chain(
    folder: Path,
    *,
    frame: int = 2048,
    pixel_scale: float = 0.47,
    rate: float = 300.0,
    galaxies: int = 20000,
    timeout: float = 540.0,
    say: Callable[[str], None] = print,
) -> ChainResult:
    """Runs the whole chain under ``folder`` and stops the daemons; never leaves a daemon running."""
    config = write_config(folder, frame=frame, pixel_scale=pixel_scale, rate=rate, galaxies=galaxies)
    scenario = plan_scenario(config)
    add_transients(config, [scenario.kilonova])
    stars = write_reference_stars(folder, scenario.targets, frame * pixel_scale / 3600.0 * 0.71 + REFERENCE_MARGIN_DEG)
    node = Node(config)
    result = ChainResult(ok=False)
    host = scenario.targets[0].galaxies[0]
    say(f"tonight: routine monitoring of {len(scenario.targets)} galaxies, then a merger at {EVENT_TIME:%H:%M} UTC")
    say(f"reference catalog: {stars} synthetic stars around the fields ({REFERENCE_CATALOG})")
    say(f"starting alert, telescope and preprocessor on loopback (config {node.config})")
    deadline = time.monotonic() + timeout
    try:
        for module in MODULES:
            node.start(module)
            say(f"{module} is serving on 127.0.0.1:{node.ports[module]}")
        routine = routine_order(scenario.targets)
        node.stub("telescope").Submit(routine, timeout=30)
        say(
            f"routine monitoring submitted: {', '.join(t.name for t in scenario.targets)} ({ROUTINE_EXPOSURE_S:.0f} s, r)"
        )

        def references_made() -> bool:
            update = node.work_orders("telescope", "observe_targets").get(routine.id)
            _, _, lights, calibrated = node.progress()
            return update is not None and update.state in FINAL_STATES and 0 < lights == calibrated

        wait_until(node, references_made, deadline, say)
        wait_until(node, lambda: clock_now(node) >= EVENT_TIME + NOTICE_DELAY, deadline, say)
        replayed = clock_now(node)
        late = (replayed - EVENT_TIME).total_seconds() / 60.0
        say(
            f"{EVENT_TIME:%H:%M} UTC: a merger. Its notice (made a minute after it) is replayed at {replayed:%H:%M} "
            f"UTC, {late:.0f} min after the merger on the simulated clock (the routine references came first): "
            f"{scenario.alert.name} (a drill)"
        )
        replay = node.cli("alert", "replay", str(scenario.alert), "--wait")
        for line in replay.stdout.strip().splitlines():
            say(f"  {line.strip()}")
        if replay.returncode != 0:
            raise RuntimeError(f"the alert was not processed: {replay.stderr.strip() or replay.stdout.strip()}")
        wait_until(node, lambda: node.progress()[1], deadline, say)
        _, _, result.light_frames, calibrated = node.progress()
        result.ok = calibrated == result.light_frames > 0
        for id, update in node.work_orders("telescope", "observe_targets").items():
            say(f"telescope work order {id}: {update.message}")
        wait_until(node, lambda: second_looks_done(folder), deadline, say)
        wait_until(node, lambda: node.progress()[1], deadline, say)  # the second looks' frames calibrated too
        _, _, result.light_frames, calibrated = node.progress()
        result.ok = calibrated == result.light_frames > 0
        result.candidates, result.candidate_latency_s = candidate_events(node, rate)
        listing = node.cli("candidates", "--alert", ALERT_ID)
        for line in listing.stdout.strip().splitlines():
            say(f"  {line}")
        result.reports = [line.split(" ", 2)[1] for line in listing.stdout.splitlines() if line.startswith("report ")]
        wait_until(node, lambda: campaign_caught_up(folder, result.light_frames - len(scenario.targets)), deadline, say)
        campaign = node.cli("campaign", ALERT_ID)
        for line in campaign.stdout.strip().splitlines():
            say(f"  {line}")
        result.campaign = json.loads((folder / "data" / "campaigns" / ALERT_ID / "campaign.json").read_text())
    except (RuntimeError, grpc.RpcError) as exc:
        say(f"demo failed: {exc}")
    finally:
        result.exit_codes = node.stop()
    say("daemons stopped (exit codes: " + ", ".join(f"{m} {c}" for m, c in result.exit_codes.items()) + ")")
    result.calibrated = sorted(str(p) for p in (folder / "data" / "calibrated").rglob("*_cal.fits"))
    result.science_ready = [p for p in result.calibrated if "MAGZP" in fits.getheader(p)]
    spec = scenario.kilonova
    result.kilonova = Kilonova(
        float(spec["ra_deg"]), float(spec["dec_deg"]), datetime.fromisoformat(str(spec["start"])),
        float(spec["distance_mpc"]),
    )  # fmt: skip
    result.ok = result.ok and not any(result.exit_codes.values())
    say(
        f'the kilonova was placed {math.hypot(*KILONOVA_OFFSET_ARCSEC):.1f}" from {host.name} ({host.distance_mpc or 40:.0f} Mpc)'
    )
    return result


def second_looks_done(folder: Path) -> bool:
    """Whether every candidate of the alert was observed again and those frames searched (or its second look
    could not be had)."""
    path = folder / "data" / "campaigns" / ALERT_ID / "campaign.json"
    if not path.exists():
        return False
    campaign = json.loads(path.read_text())
    looks = [c["second_look"] for c in campaign["candidates"]]
    if any(look is not None and look["state"] == "scheduled" for look in looks):
        return False
    again = [p for p in campaign["pointings"] if p["purpose"] == "second look"]
    return all(
        p["state"] in ("cancelled", "failed") or (p["frames"] and None not in p["frames"].values()) for p in again
    )


def campaign_caught_up(folder: Path, frames: int) -> bool:
    """Whether the alert daemon's campaign holds the alert's ``frames``, each with its measured depth."""
    path = folder / "data" / "campaigns" / ALERT_ID / "campaign.json"
    if not path.exists():
        return False
    depths = [d for p in json.loads(path.read_text())["pointings"] for d in p["frames"].values()]
    return len(depths) >= frames and None not in depths


def candidate_events(node: Node, rate: float) -> tuple[list[pb.TransientCandidate], list[float]]:
    """The preprocessor's transient_candidate events, and for each the real seconds since its raw frame's
    image_ready (clock seconds over the clock's rate)."""
    ready = {}
    request = pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_IMAGE_READY])
    for event in node.stub("telescope").Watch(request, timeout=30):
        ready[Path(event.image_ready.path).stem] = event.time.ToDatetime(tzinfo=UTC)
    found, latency = [], []
    request = pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_TRANSIENT_CANDIDATE])
    for event in node.stub("preprocessor").Watch(request, timeout=30):
        found.append(event.transient_candidate)
        raw = Path(event.transient_candidate.frame_path).stem.removesuffix("_cal")
        if raw in ready:
            latency.append((event.time.ToDatetime(tzinfo=UTC) - ready[raw]).total_seconds() / rate)
    return found, latency


def main() -> int:
    folder = Path("demo").resolve()
    result = run_chain(folder, say=lambda line: print(f"demo: {line}", flush=True))
    data = folder / "data"
    print("demo: where things are:")
    for label, pattern in (
        ("calibrated images", "calibrated/*"),
        ("source catalogs", "calibrated/*/*_cat.fits"),
        ("differences", "transients/*/*/*_diff.fits"),
        ("target list", "alerts/*/*/targets-*.csv"),
        ("sky-map plot", "alerts/*/*/skymap.png"),
        ("night-plan plot", "20*/plan.png"),
        ("raw frames", "20*"),
    ):
        found = sorted(data.glob(pattern))
        print(
            f"  {label:18s} {found[0] if found else '(none)'}"
            + (f" (+{len(found) - 1} more)" if len(found) > 1 else "")
        )
    print(f"  {'logs':18s} {folder / 'logs' / 'toros.log'}")
    print(
        f"demo: {len(result.calibrated)} calibrated frames of {result.light_frames} science frames, "
        f"{len(result.science_ready)} science-ready (fitted WCS, zero point, source catalog)"
        + ("" if result.ok else " — FAILED")
    )
    names = sorted({c.name for c in result.candidates})
    if names:
        for name in names:
            latest = [c for c in result.candidates if c.name == name][-1]
            truth = result.kilonova
            assert truth is not None, "the scenario placed one"
            east = (latest.ra_deg - truth.ra_deg) * math.cos(math.radians(latest.dec_deg))
            offset = math.hypot(east, latest.dec_deg - truth.dec_deg) * 3600
            print(
                f"demo: candidate {name} at {latest.ra_deg:.6f} {latest.dec_deg:+.6f}, r = {latest.mag:.2f} ± "
                f'{latest.mag_err:.2f}, host {latest.host or "-"} ({latest.host_offset_arcsec:.1f}", '
                f"{latest.host_offset_kpc:.1f} kpc), score {latest.score:.2f}, {latest.detections} detections; "
                f'{offset:.2f}" from the injected kilonova'
            )
            print(f"demo:   triplet {latest.triplet_path}")
        for report in result.reports:
            print(f"demo:   report {report}")
    else:
        print("demo: no transient candidate was found — FAILED")
    return 0 if result.ok and names else 1


if __name__ == "__main__":
    sys.exit(main())
