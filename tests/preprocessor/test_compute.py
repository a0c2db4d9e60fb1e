"""Per-frame work on a Dask cluster: real `dask scheduler` and `dask worker` processes on loopback (one thread
each), a preprocessor daemon sending its frames' science step and difference imaging to them. Products equal the local engine's; a
worker killed in the middle of a night loses nothing; an unreachable scheduler, a worker with another version
of toros, a worker that cannot see the storage: each one clear line, and no frame is lost."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from astropy.io import fits
from support import VENV_BIN, wait_for, write_config

from toros.config import load_config
from toros.daemons import build_daemon
from toros.demo import free_port
from toros.floor.sky_geometry import tan_wcs
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.runtime.server import Daemon
from toros.simulation.ccd import Sensor, make_frame, write_night
from toros.simulation.sky import Conditions, Scene, SimulatedSky

FIELD = (11.888, -25.288)
WHEN = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
SIZE = 1024
PATHS_AND_TIMES = {"RAWID"}  # the raw file's path, size and modification time: two nodes, two files


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]
    logs: Path


def _start_worker(address: str, name: str, logs: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [str(VENV_BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
               "--host", "127.0.0.1", "--name", name]  # fmt: skip
    with (logs / f"{name}.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _workers(address: str) -> int:
    from distributed import Client

    with Client(address, timeout="10s", set_as_default=False) as client:
        return len(client.scheduler_info(n_workers=-1)["workers"])


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    """A scheduler and two single-threaded workers, as processes (so that one can be killed)."""
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    command = [str(VENV_BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    with (logs / "scheduler.log").open("ab") as log:
        scheduler = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    workers = [_start_worker(address, f"worker-{i}", logs) for i in range(2)]
    running = Cluster(address, scheduler, workers, logs)
    try:
        wait_for(lambda: _workers(address) == 2, timeout=60, interval=0.5)
        yield running
    finally:
        for process in [*running.workers, scheduler]:
            process.terminate()
        for process in [*running.workers, scheduler]:
            try:
                process.wait(timeout=5)  # a worker still closing its connections has nothing left to keep
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def executions(address: str, prefix: str) -> list[tuple[str, float, float]]:
    """(worker, start, end) of each task whose key starts with ``prefix``, from the workers' transition logs."""
    from distributed import Client

    def executed(dask_worker) -> list[tuple[str, float, float]]:  # type: ignore[no-untyped-def]
        started: dict[str, float] = {}
        spans = []
        for key, start, finish, *_, stamp in dask_worker.state.log:
            if not str(key).startswith(prefix):
                continue
            if finish == "executing":
                started[str(key)] = stamp
            elif start == "executing" and finish == "memory" and str(key) in started:
                spans.append((dask_worker.name, started.pop(str(key)), stamp))
        return spans

    with Client(address, timeout="10s", set_as_default=False) as client:
        return [span for spans in client.run(executed).values() for span in spans]


def write_raw_night(root: Path, lights: int, unpointed: int | None = None) -> None:
    """A night of raw frames: biases, darks, flats, and ``lights`` frames of one field, the same bytes each time
    (the ``unpointed`` one without the mount's pointing in its header: the science step cannot solve it)."""
    sky = SimulatedSky()
    night = root / "raw" / "2026-11-22"
    sensor = Sensor(width=SIZE, height=SIZE, overscan=16)
    write_night(night, sensor, lights=0)
    for number in range(lights):
        true_wcs = tan_wcs(FIELD[0] + 0.004, FIELD[1] - 0.003, SIZE, SIZE, 0.47)
        conditions = Conditions("r", 0.0, 1.1, 1.7 + 0.1 * number, WHEN + timedelta(minutes=5 * number))
        frame = make_frame(sensor, "light", exposure_time=120.0, sky_rate=sky.photometry.sky_electrons("r", 0.47),
                           scene=Scene(sky, true_wcs, 0.47, conditions), date_obs=conditions.when, seed=number)  # fmt: skip
        if number != unpointed:
            frame.header.update(tan_wcs(*FIELD, SIZE, SIZE, 0.47).to_header())
        frame.write(str(night / f"light-{number}.fits"))


def preprocessor(folder: Path, start_daemon, **compute) -> Daemon:
    """A preprocessor daemon under ``folder`` with the science step, on the given compute engine."""
    reference = folder / "reference-stars.csv"
    folder.mkdir(parents=True, exist_ok=True)
    SimulatedSky().stars.write_reference_catalog(reference, [FIELD], 0.4)
    config = load_config(
        write_config(
            folder, preprocessor={"port": 0, "science": {"reference_catalog": str(reference)}, "compute": compute}
        )  # fmt: skip
    )
    return start_daemon(config, lambda c: build_daemon("preprocessor", c))


def calibrate(daemon: Daemon, id: str = "night", timeout: float = 180) -> pb.WorkOrderStatus:
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(pb.WorkOrder(id=id, calibrate_night=pb.CalibrateNight(directory="raw/2026-11-22")))
        return wait_for(
            lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id=id))).state in (3, 4) and s, timeout=timeout
        )


def products(status: pb.WorkOrderStatus, kind: str) -> dict[str, Path]:
    return {Path(p.path).name: Path(p.path) for p in status.products if p.kind == kind}


def test_a_night_on_the_cluster_gives_the_local_engine_s_products(cluster, start_daemon, tmp_path):
    local = preprocessor(tmp_path / "local", start_daemon)
    remote = preprocessor(tmp_path / "cluster", start_daemon, engine="dask", scheduler=cluster.address)
    for daemon in (local, remote):
        write_raw_night(daemon.storage_root, lights=5, unpointed=4)
    here, there = calibrate(local), calibrate(remote)
    assert here.state == there.state == pb.WORK_ORDER_STATE_DONE, (here.message, there.message)
    assert "computed locally" not in there.message, there.message
    unsolved = "light-4.fits: not science-ready: no WCS in the header (the raw frame carried no pointing)"
    assert unsolved in here.message and unsolved in there.message  # a task that raises: the frame and the reason
    catalogs, remote_catalogs = products(here, "source_catalog"), products(there, "source_catalog")
    assert len(catalogs) == 4 and catalogs.keys() == remote_catalogs.keys(), here.message
    for name, path in catalogs.items():  # the catalogs hold no time: the same bytes
        assert path.read_bytes() == remote_catalogs[name].read_bytes(), name
    frames, remote_frames = products(here, "calibrated"), products(there, "calibrated")
    assert frames.keys() == remote_frames.keys()
    for name, path in frames.items():
        with fits.open(path) as mine, fits.open(remote_frames[name]) as theirs:
            assert np.array_equal(mine[0].data, theirs[0].data) and np.array_equal(
                mine["MASK"].data, theirs["MASK"].data
            )
            ours, cluster_header = mine[0].header, theirs[0].header
            differ = {k for k in set(ours) | set(cluster_header) if ours.get(k) != cluster_header.get(k)}
            assert differ <= PATHS_AND_TIMES, differ
    worked = "".join((cluster.logs / f"worker-{i}.log").read_text() for i in range(2))
    failed = re.findall(r"Key:\s+(\S+)", worked)  # a worker logs the tasks that raised
    assert failed and all(key.startswith("science-step-of-light-4_cal.fits") for key in failed), worked[-2000:]
    calibrating = executions(cluster.address, "calibration-of-")  # the night's frames fanned out: two at once
    assert len(calibrating) == 5 and len({worker for worker, _, _ in calibrating}) == 2, calibrating
    assert any(
        one[0] != other[0] and one[1] < other[2] and other[1] < one[2] for one in calibrating for other in calibrating
    ), calibrating

    # The night reprocessed on the cluster (`toros reprocess`): every frame measured again, fanned out.
    before = {name: fits.getheader(path).get("MAGZP") for name, path in remote_frames.items()}
    with grpc.insecure_channel(f"127.0.0.1:{remote.port}") as channel:
        stub = FrontDeskStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Submit(pb.WorkOrder(reprocess_night=pb.ReprocessNight(night="yesterday")))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "reprocess_night.night" in refused.value.details()
        order = pb.WorkOrder(id="again", reprocess_night=pb.ReprocessNight(night="2026-11-22"))
        stub.Submit(order)
        again = wait_for(
            lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="again"))).state in (3, 4) and s, timeout=120
        )
    assert again.state == pb.WORK_ORDER_STATE_DONE, again.message
    assert again.message.startswith("2026-11-22: 4 of 5 frames science-ready"), again.message
    assert "light-4_cal.fits: not science-ready: no WCS in the header" in again.message  # as the night says it
    assert len(products(again, "source_catalog")) == 4 and "computed locally" not in again.message
    for name, path in remote_frames.items():
        assert fits.getheader(path).get("MAGZP") == before[name]


def test_a_worker_killed_in_the_middle_of_a_night_loses_no_frame(cluster, start_daemon, tmp_path):
    daemon = preprocessor(tmp_path / "node", start_daemon, engine="dask", scheduler=cluster.address)
    write_raw_night(daemon.storage_root, lights=6)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(pb.WorkOrder(id="night", calibrate_night=pb.CalibrateNight(directory="raw/2026-11-22")))
        events = stub.Watch(pb.WatchRequest(work_order_id="night", kinds=[pb.EVENT_KIND_CALIBRATION_PROGRESS]))
        for event in events:  # the first frame made science-ready: the night is under way on the cluster
            if event.calibration_progress.HasField("science"):
                break
        events.cancel()
        cluster.workers[0].send_signal(signal.SIGKILL)  # kill -9, in the middle of its next frame
        cluster.workers[0].wait()
        status = wait_for(
            lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="night"))).state in (3, 4) and s, timeout=180
        )
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    catalogs = [p.path for p in status.products if p.kind == "source_catalog"]
    assert len(catalogs) == len(set(catalogs)) == 6, status.message  # every frame once
    assert "not science-ready" not in status.message and "computed locally" not in status.message
    for path in catalogs:
        assert fits.getheader(path.replace("_cat.fits", ".fits"))["WCSSRC"] == "fit"
    assert not list(daemon.storage_root.rglob("*.tmp*")), "no half-written product left behind"


def test_a_scheduler_lost_in_the_night_leaves_the_rest_to_this_node(cluster, start_daemon, tmp_path):
    daemon = preprocessor(
        tmp_path / "node", start_daemon, engine="dask", scheduler=cluster.address, connect_timeout_s=2.0
    )
    write_raw_night(daemon.storage_root, lights=4)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(pb.WorkOrder(id="night", calibrate_night=pb.CalibrateNight(directory="raw/2026-11-22")))
        events = stub.Watch(pb.WatchRequest(work_order_id="night", kinds=[pb.EVENT_KIND_CALIBRATION_PROGRESS]))
        for event in events:
            if event.calibration_progress.HasField("science"):
                break
        events.cancel()
        cluster.scheduler.send_signal(signal.SIGKILL)
        cluster.scheduler.wait()
        status = wait_for(
            lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="night"))).state in (3, 4) and s, timeout=180
        )
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    catalogs = [p.path for p in status.products if p.kind == "source_catalog"]
    assert len(catalogs) == len(set(catalogs)) == 4, status.message
    assert "computed locally" in status.message and "not science-ready" not in status.message


def test_an_unreachable_scheduler_is_one_line_and_the_frames_are_computed_here_or_named(start_daemon, tmp_path, caplog):
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    daemon = preprocessor(tmp_path / "fallback", start_daemon, engine="dask", scheduler=nowhere, connect_timeout_s=1.0)
    write_raw_night(daemon.storage_root, lights=2)
    status = calibrate(daemon)
    assert status.state == pb.WORK_ORDER_STATE_DONE and len(products(status, "source_catalog")) == 2
    assert f"Dask scheduler {nowhere}: cannot connect" in status.message and "computed locally (4 tasks)" in (
        status.message
    )
    started = [
        r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name == "toros.preprocessor.module"
    ]
    assert len(started) == 1 and started[0].startswith(f"compute: Dask scheduler {nowhere}: cannot connect")
    assert started[0].endswith("per-frame work will run on this node until the cluster answers")

    waiting = preprocessor(
        tmp_path / "waiting", start_daemon, engine="dask", scheduler=nowhere, connect_timeout_s=0.5,
        unreachable="wait", wait_s=0.0,
    )  # fmt: skip
    write_raw_night(waiting.storage_root, lights=1)
    status = calibrate(waiting)  # the masters are built on the node; the frame waits for the cluster, in vain
    assert status.state == pb.WORK_ORDER_STATE_DONE and not products(status, "calibrated"), status.message
    assert (
        f"1 skipped: light-0.fits: Dask scheduler {nowhere}: cannot connect" in (status.message)
        and "waited 0 s (compute.wait_s)" in status.message
    )


def test_workers_that_cannot_do_the_work_are_named(cluster, start_daemon, tmp_path):
    """A worker that cannot see the storage root, then one with another version of toros."""
    daemon = preprocessor(
        tmp_path / "blind", start_daemon, engine="dask", scheduler=cluster.address,
        storage_on_workers="/nonexistent/toros-storage",
    )  # fmt: skip
    write_raw_night(daemon.storage_root, lights=1)
    status = calibrate(daemon)
    assert status.state == pb.WORK_ORDER_STATE_DONE and len(products(status, "source_catalog")) == 1
    assert "cannot see the storage root /nonexistent/toros-storage" in status.message
    assert "Dask worker tcp://127.0.0.1:" in status.message and "computed locally" in status.message

    # Another toros on a third worker's path (as on a machine that was not upgraded).
    other = tmp_path / "other-toros"
    (other / "toros-0.0.1.dist-info").mkdir(parents=True)
    (other / "toros-0.0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toros\nVersion: 0.0.1\n")
    env = dict(os.environ, PYTHONPATH=f"{other}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cluster.workers.append(_start_worker(cluster.address, "worker-old", cluster.logs, env))
    wait_for(lambda: _workers(cluster.address) == 3, timeout=60, interval=0.5)
    mixed = preprocessor(tmp_path / "mixed", start_daemon, engine="dask", scheduler=cluster.address)
    write_raw_night(mixed.storage_root, lights=1)
    status = calibrate(mixed)
    assert status.state == pb.WORK_ORDER_STATE_DONE and len(products(status, "source_catalog")) == 1
    assert "Dask worker tcp://127.0.0.1:" in status.message and "toros 0.0.1 where this preprocessor has " in (
        status.message
    )


def test_difference_imaging_on_the_cluster_finds_what_the_node_finds(cluster, pair, tmp_path):
    """The kilonova pair of the discovery tests, searched here and on the cluster: the same candidate, the
    same measurement, the same difference image."""
    from toros.preprocessor.candidates import CandidateStore
    from toros.preprocessor.compute import Compute
    from toros.preprocessor.references import ReferenceLibrary
    from toros.preprocessor.settings import ComputeConfig, DiscoveryConfig, ReferencesConfig
    from toros.preprocessor.transients import TransientSearch
    from toros.runtime.config import DatabaseConfig

    found = {}
    for name, compute in (("node", None), ("cluster", ComputeConfig(engine="dask", scheduler=cluster.address))):
        root = tmp_path / name / "data"
        frame = root / "calibrated" / "2026-11-22" / "new_cal.fits"
        frame.parent.mkdir(parents=True)
        frame.write_bytes(pair["new"].read_bytes())
        database = DatabaseConfig(path=tmp_path / name / "toros.db")
        library = ReferenceLibrary(database, root, ReferencesConfig())
        library.import_file(pair["reference"], 0.0)
        store = CandidateStore(database)
        engine = Compute(compute, root) if compute else None
        try:
            search = TransientSearch(DiscoveryConfig(), library, store, root, compute=engine)
            outcome = search.search(frame, work_order_id="search")
        finally:
            library.close()
            store.close()
            if engine is not None:
                engine.close()
        assert outcome.searched and "computed locally" not in outcome.message, outcome.message
        (event,) = outcome.events
        difference = next(path for path, kind in outcome.products if kind == "difference")
        found[name] = (event, fits.getdata(difference))
    here, there = found["node"], found["cluster"]
    assert (here[0].ra_deg, here[0].dec_deg, here[0].mag, here[0].snr, here[0].score) == (
        there[0].ra_deg, there[0].dec_deg, there[0].mag, there[0].snr, there[0].score
    )  # fmt: skip
    assert np.array_equal(here[1], there[1], equal_nan=True)


def test_kill_9_the_preprocessor_on_the_cluster_every_frame_is_done_once(cluster, tmp_path):
    """The preprocessor as a process, its frames on the cluster; killed with kill -9 in the middle of the night,
    started again: the work order resumes and every frame is calibrated and made science-ready exactly once."""
    from toros.demo import wait_serving

    folder = tmp_path / "node"
    folder.mkdir()
    reference = folder / "reference-stars.csv"
    SimulatedSky().stars.write_reference_catalog(reference, [FIELD], 0.4)
    port = free_port()
    science = {"reference_catalog": str(reference), "min_matches": 8}
    compute = {"engine": "dask", "scheduler": cluster.address}
    config = write_config(folder, preprocessor={"port": port, "science": science, "compute": compute})
    write_raw_night(folder / "data", lights=6)
    command = [str(VENV_BIN / "python"), "-m", "toros.cli", "serve", "preprocessor", "--config", str(config)]

    def start() -> subprocess.Popen:
        process = subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=folder)
        wait_serving(port, folder / "logs" / "toros.log")
        return process

    daemon = start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = FrontDeskStub(channel)
            stub.Submit(pb.WorkOrder(id="night", calibrate_night=pb.CalibrateNight(directory="raw/2026-11-22")))
            events = stub.Watch(pb.WatchRequest(work_order_id="night", kinds=[pb.EVENT_KIND_CALIBRATION_PROGRESS]))
            ready = 0
            for event in events:  # two frames done on the cluster: kill -9 in the middle of the rest
                ready += event.calibration_progress.HasField("science")
                if ready == 2:
                    break
            events.cancel()
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
        daemon = start()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = FrontDeskStub(channel)
            status = wait_for(
                lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="night"))).state in (3, 4) and s,
                timeout=180,
            )
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    assert status.state == pb.WORK_ORDER_STATE_DONE and status.attempts == 2, status.message
    night = folder / "data" / "calibrated" / "2026-11-22"
    frames = sorted(night.glob("light-*_cal.fits"))
    assert [f.name for f in frames] == [f"light-{n}_cal.fits" for n in range(6)], "each frame once, by its own name"
    assert all(fits.getheader(f)["WCSSRC"] == "fit" for f in frames)
    assert sorted(p.name for p in night.glob("*_cat.fits")) == [f"light-{n}_cal_cat.fits" for n in range(6)]
    assert not list(night.glob("*.tmp*")), "no half-written product left behind"
