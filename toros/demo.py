"""`make demo` (`toros demo`): a night from a scenario file, every daemon on loopback, down to the campaign.

``run_scenario`` sets a scenario up (``toros.scenarios``: one node per site, one simulated clock, routine
monitoring's references), starts every site's daemons as processes, lets each preprocessor search its later
routine visits, replays the notice when the shared clock reaches it, follows the sites' progress until the
campaign has nothing pending, prints it with what each transient of the simulated sky became, and stops every
daemon. Everything goes under ./demo/ (ignored by git); ``tests/scenarios/test_end_to_end.py`` runs the shipped
scenario on smaller frames.

The single-node helpers (``write_config``, ``plan_scenario``, ``Node``) are what the system tests, the console's
tests and the rapid-response benchmark start their nodes with.
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
from toros.scenarios import (
    REFERENCE_CATALOG,
    SHIPPED,
    Placed,
    Prepared,
    ScenarioError,
    SiteNode,
    prepare,
    share_clock,
)
from toros.scenarios import Scenario as ScenarioFile
from toros.simulation.galaxies import write_glade_plus
from toros.simulation.sky import StarCatalog

SAMPLES = Path(__file__).resolve().parent / "data" / "alerts"
ALERT = SAMPLES / "MS181101ab-preliminary.json"
ALERT_ID = "MS181101ab"
# Macón, the Sun at +16 deg: an hour of clock time before the sky-flat band (Sun at -3 deg), so that daemons slow to
# start on a loaded machine (each real second is minutes of clock time) still take their evening flats in it.
CLOCK_START = "2026-05-01T20:40:00Z"
EVENT_TIME = datetime(2026, 5, 1, 23, 45, tzinfo=UTC)  # the merger, once the routine monitoring is done
NOTICE_DELAY = timedelta(minutes=1)  # LVK's preliminary notices come within a minute
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


@dataclass(frozen=True)
class Tonight:
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


def plan_scenario(config: Path) -> Tonight:
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
    return Tonight(targets, alert_path, kilonova)


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
    """The daemons of one node as processes (so that they can be stopped, killed and restarted)."""

    def __init__(self, config: Path, modules: tuple[str, ...] = MODULES) -> None:
        self.config = config
        self.folder = config.parent
        self.modules = modules
        self.ports = {m: yaml.safe_load(config.read_text())[m]["port"] for m in modules}
        self.logs = self.folder / "logs" / "toros.log"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._channels: dict[str, grpc.Channel] = {}

    def start(self, module: str) -> None:
        self.launch(module)
        self.ready(module)

    def launch(self, module: str) -> None:
        """Starts a daemon without waiting for it to serve (``ready`` waits)."""
        command = [sys.executable, "-m", "toros.cli", "serve", module, "--config", str(self.config)]
        self.processes[module] = subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=self.folder)

    def ready(self, module: str) -> None:
        wait_serving(self.ports[module], self.logs)
        process = self.processes[module]
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


def clock_now(node: Node) -> datetime:
    status: pb.ModuleStatus = node.stub("telescope").GetStatus(pb.GetStatusRequest(), timeout=10)
    return status.clock_time.ToDatetime(tzinfo=UTC)


# -- a campaign night from a scenario ------------------------------------------------------------------------


@dataclass
class SiteRun:
    site: SiteNode
    node: Node

    def progress(self) -> str:
        line, _, _, _ = self.node.progress()
        return f"{self.site.name}: {line.split(': ', 1)[1]}"

    def caught_up(self) -> bool:
        """Every light frame calibrated (and its masters there), every list the telescope took finished."""
        lights = len(self.node.light_frames())
        observing = self.node.work_orders("telescope", "observe_targets")
        follows = self.node.work_orders("preprocessor", "calibrate_images")
        return (
            len(follows) >= lights
            and all(u.state in FINAL_STATES for u in observing.values())
            and all(u.state in FINAL_STATES for u in follows.values())
        )


@dataclass
class ScenarioResult:
    ok: bool
    folder: Path
    prepared: Prepared | None = None
    exit_codes: dict[str, int] = field(default_factory=dict)  # "site/module": exit code
    campaign: dict[str, Any] = field(default_factory=dict)
    # Each placed transient and the campaign's candidates that are it (matched by position at their times).
    verdicts: list[tuple[Placed, list[dict[str, Any]]]] = field(default_factory=list)
    candidates: dict[str, list[pb.TransientCandidate]] = field(default_factory=dict)  # per site, as streamed
    notice_replayed: datetime | None = None  # on the shared simulated clock


def run_scenario(scenario: ScenarioFile, folder: Path, *, say: Callable[[str], None] = print) -> ScenarioResult:
    """Runs a scenario's night under ``folder`` and stops every daemon; never leaves one running."""
    result = ScenarioResult(ok=False, folder=folder)
    ports = {
        site.name: {module: free_port() for module in (MODULES if n == 0 else ("telescope", "preprocessor"))}
        for n, site in enumerate(scenario.sites)
    }
    prepared = prepare(scenario, folder, ports=ports, say=say)
    result.prepared = prepared
    for placed in prepared.placed:
        say(f"the simulated sky holds: {placed.label}")
    say(f"{prepared.references} pre-event frames in the sites' reference libraries")
    origin = datetime.now(UTC) + timedelta(seconds=1)
    runs = []
    for site in prepared.sites:
        share_clock(site, origin)
        runs.append(SiteRun(site, Node(site.config, site.modules)))
    deadline = time.monotonic() + scenario.timeout_s
    try:
        for run in runs:
            for module in run.site.modules:
                run.node.launch(module)
        for run in runs:
            for module in run.site.modules:
                run.node.ready(module)
        serving = ", ".join(f"{r.site.name} ({'/'.join(r.site.modules)})" for r in runs)
        say(f"serving: {serving}; one simulated clock from {scenario.start:%H:%M} UTC at ×{scenario.clock_rate:g}")
        _search_routine_frames(runs, deadline, say)
        alert = runs[0].node
        notice_at = origin + timedelta(
            seconds=(scenario.notice_time - scenario.start).total_seconds() / scenario.clock_rate
        )
        _wait_for(notice_at, runs, deadline, say)
        order = pb.WorkOrder(
            id=f"scenario-{prepared.alert_id}",
            requester=f"{DEMO}scenario",
            process_alert=pb.ProcessAlert(
                payload=prepared.notice.read_bytes(), format=pb.ALERT_FORMAT_GWALERT_JSON, source=prepared.notice.name,
            ),
        )  # fmt: skip
        alert.stub("alert").Submit(order, timeout=30)
        result.notice_replayed = clock_now(alert)
        say(
            f"{scenario.merger:%H:%M:%S} UTC: a merger. Its notice ({prepared.notice.name}, created "
            f"{scenario.notice_delay_s:g} s later) is replayed at {result.notice_replayed:%H:%M:%S} UTC on the simulated clock"
        )
        status = _finished(alert.stub("alert"), order.id, deadline)
        say(f"alert: {status.message}")
        if status.state != pb.WORK_ORDER_STATE_DONE:
            raise RuntimeError(f"the alert was not processed: {status.message}")
        campaign_file = runs[0].site.config.parent / "data" / "campaigns" / prepared.alert_id / "campaign.json"
        _until(lambda: campaign_done(campaign_file) and all(r.caught_up() for r in runs), runs, deadline, say)
        printed = alert.cli("campaign", prepared.alert_id)
        for line in printed.stdout.strip().splitlines():
            say(f"  {line}")
        result.campaign = json.loads(campaign_file.read_text())
        shutil.copyfile(campaign_file, folder / "campaign.json")
        result.candidates = {r.site.name: candidate_events(r.node) for r in runs}
        result.verdicts = match_truth(prepared.placed, result.campaign)
        result.ok = True
    except (RuntimeError, grpc.RpcError, ScenarioError) as exc:
        say(f"the scenario failed: {exc}")
    finally:
        for run in runs:
            for module, code in run.node.stop().items():
                result.exit_codes[f"{run.site.name}/{module}"] = code
    say("daemons stopped (exit codes: " + ", ".join(f"{m} {c}" for m, c in result.exit_codes.items()) + ")")
    result.ok = result.ok and not any(result.exit_codes.values())
    return result


def _search_routine_frames(runs: list[SiteRun], deadline: float, say: Callable[[str], None]) -> None:
    """Each site's preprocessor searches its later pre-event visits against the first (as routine monitoring
    does), so that a source that varies is known before the merger."""
    for run in runs:
        if not run.site.routine:
            continue
        order = pb.WorkOrder(
            id=f"routine-search-{run.site.name}", requester=f"{DEMO}routine-monitoring",
            find_transients=pb.FindTransients(paths=[str(p) for p in run.site.routine]),
        )  # fmt: skip
        run.node.stub("preprocessor").Submit(order, timeout=30)
        status = _finished(run.node.stub("preprocessor"), order.id, deadline)
        say(f"{run.site.name}: routine search of {len(run.site.routine)} pre-event frames: {status.message}")


def _finished(stub: FrontDeskStub, order_id: str, deadline: float) -> pb.WorkOrderStatus:
    while time.monotonic() < deadline:
        status: pb.WorkOrderStatus = stub.GetWorkOrder(pb.GetWorkOrderRequest(id=order_id), timeout=10)
        if status.state in FINAL_STATES:
            return status
        time.sleep(0.1)
    raise RuntimeError(f"work order {order_id} did not finish in time")


def _wait_for(moment: datetime, runs: list[SiteRun], deadline: float, say: Callable[[str], None]) -> None:
    """Progress lines until the real ``moment``, which is kept to the millisecond."""
    shown: dict[str, str] = {}
    while (left := (moment - datetime.now(UTC)).total_seconds()) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the night did not get there in time")
        if left > 1.5:
            _show(runs, shown, say)
        time.sleep(min(1.0, max(left - 0.02, 0.0)) if left > 0.05 else 0.001)


def _until(done: Callable[[], bool], runs: list[SiteRun], deadline: float, say: Callable[[str], None]) -> None:
    shown: dict[str, str] = {}
    while time.monotonic() < deadline:
        _show(runs, shown, say)
        if done():
            return
        time.sleep(1.0)
    raise RuntimeError(f"the night did not get there in time; see {runs[0].node.logs}")


def _show(runs: list[SiteRun], shown: dict[str, str], say: Callable[[str], None]) -> None:
    for run in runs:
        line = run.progress()
        if shown.get(run.site.name) != line.split(" UTC: ", 1)[-1]:
            say(line)
            shown[run.site.name] = line.split(" UTC: ", 1)[-1]


def campaign_done(path: Path) -> bool:
    """Whether a campaign has nothing pending: every pointing taken or given up, every second look sent (or
    not needed), and its file not rewritten for two real seconds (the last frames' depths and candidates in)."""
    if not path.exists():
        return False
    campaign = json.loads(path.read_text())
    if any(c["second_look"] is not None and c["second_look"]["state"] == "scheduled" for c in campaign["candidates"]):
        return False
    if not campaign["pointings"] or any(p["state"] == "planned" for p in campaign["pointings"]):
        return False
    return time.time() - path.stat().st_mtime > 2.0


def candidate_events(node: Node) -> list[pb.TransientCandidate]:
    request = pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_TRANSIENT_CANDIDATE])
    return [event.transient_candidate for event in node.stub("preprocessor").Watch(request, timeout=30)]


def match_truth(placed: list[Placed], campaign: dict[str, Any]) -> list[tuple[Placed, list[dict[str, Any]]]]:
    """Each placed transient with the candidates that are it: a detection within 2" of where it was then."""
    from toros.telescope.devices.simulated import transient_of
    from toros.telescope.settings import SimulatedSkySettings

    matched = []
    for truth in placed:
        source = transient_of(SimulatedSkySettings.model_validate({"transients": [truth.spec]}).transients[0])
        found = []
        for candidate in campaign["candidates"]:
            for d in candidate["detections"]:
                ra, dec = source.position(datetime.fromisoformat(d["time"]))
                east = ((d["ra_deg"] - ra + 180.0) % 360.0 - 180.0) * math.cos(math.radians(dec))
                if math.hypot(east, d["dec_deg"] - dec) * 3600.0 < 2.0:
                    found.append(candidate)
                    break
        matched.append((truth, found))
    return matched


def main(scenario_path: Path = SHIPPED, out: Path = Path("demo")) -> int:
    """``toros demo``: a scenario's night, then the campaign and where everything is."""
    scenario = ScenarioFile.load(scenario_path)
    folder = out.resolve()
    say: Callable[[str], None] = lambda line: print(f"demo: {line}", flush=True)  # noqa: E731
    say(f"scenario {scenario_path}: {len(scenario.sites)} sites, merger at {scenario.merger:%Y-%m-%d %H:%M} UTC")
    result = run_scenario(scenario, folder, say=say)
    print("demo: what each transient of the simulated sky became:")
    right = 0
    for truth, found in result.verdicts:
        called = ", ".join(f"{c['name']} {c['classification']} (rank {c['rank']})" for c in found) or "not found"
        ok = bool(found) and all(c["classification"] == truth.expected for c in found)
        right += ok
        print(f"  {truth.label}: {called}" + ("" if ok else f"  — expected {truth.expected}"))
    print("demo: where things are:")
    for site in result.prepared.sites if result.prepared else []:
        data = site.config.parent / "data"
        for label, pattern in (
            ("calibrated images", "calibrated/*"),
            ("differences", "transients/*/*/*_diff.fits"),
            ("night-plan plot", "20*/plan.png"),
        ):
            paths = sorted(data.glob(pattern))
            print(f"  {site.name} {label:18s} {paths[0] if paths else '(none)'}"
                  + (f" (+{len(paths) - 1} more)" if len(paths) > 1 else ""))  # fmt: skip
        print(f"  {site.name} {'logs':18s} {site.config.parent / 'logs' / 'toros.log'}")
    print(f"  campaign           {folder / 'campaign.json'}")
    whole = result.ok and right == len(result.verdicts)
    print(
        f"demo: {right} of {len(result.verdicts)} transients classified as what they are"
        + ("" if whole else " — FAILED")
    )
    return 0 if whole else 1


if __name__ == "__main__":
    sys.exit(main())
