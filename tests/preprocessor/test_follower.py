"""The preprocessor follows a telescope's image stream: masters as calibration frames arrive, each science
frame calibrated once, images pulled through FetchFile when the nodes share no disk, nothing lost on restart."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from support import camera_daemon, wait_for, write_config

from toros.config import load_config
from toros.daemons import build_daemon
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub


def preprocessor_daemon(config):
    return build_daemon("preprocessor", config)


@pytest.fixture
def nodes(tmp_path, start_daemon):
    """A telescope and a preprocessor on separate storage roots and databases, the second following the first."""
    (tmp_path / "telescope").mkdir()
    (tmp_path / "preprocessor").mkdir()
    telescope = start_daemon(
        load_config(write_config(tmp_path / "telescope", clock={"rate": 100.0}, telescope={"port": 0, "workers": 1})),
        camera_daemon,
    )
    config = write_config(
        tmp_path / "preprocessor",
        preprocessor={
            "port": 0,
            "follow": [{"name": "macon", "address": f"127.0.0.1:{telescope.port}"}],
            "calibration": {"min_bias": 3, "min_dark": 3, "min_flat": 3},
        },
    )
    return telescope, config


def calibrations(kind: int, count: int, seconds: int = 0) -> pb.WorkOrder:
    task = pb.TakeCalibrations(image_type=kind, count=count)
    if seconds:
        task.exposure_time.seconds = seconds
    return pb.WorkOrder(take_calibrations=task)


def targets(*names: str) -> pb.WorkOrder:
    return pb.WorkOrder(
        observe_targets=pb.ObserveTargets(
            targets=[pb.Target(name=n, ra_deg=10.0, dec_deg=-20.0, exposure_time=Duration(seconds=30)) for n in names]
        )
    )


def calibrated(root: Path) -> list[Path]:
    return sorted((root / "calibrated").rglob("*_cal.fits"))


def test_follow_fetch_calibrate_and_resume_after_restart(nodes, start_daemon):
    telescope, config_path = nodes
    with grpc.insecure_channel(f"127.0.0.1:{telescope.port}") as channel:
        scope = FrontDeskStub(channel)
        for order in (
            calibrations(pb.IMAGE_TYPE_BIAS, 3),
            calibrations(pb.IMAGE_TYPE_DARK, 3, 30),
            calibrations(pb.IMAGE_TYPE_FLAT, 3),
            targets("NGC 1", "NGC 2"),
        ):
            scope.Submit(order)

        preprocessor = start_daemon(load_config(config_path), preprocessor_daemon)
        root = preprocessor.storage_root
        wait_for(lambda: len(calibrated(root)) == 2, timeout=60)
        assert all(p.is_relative_to(root) for p in calibrated(root))
        fetched = sorted((root / "incoming" / "macon").rglob("*.fits"))
        assert len(fetched) == 11, "every image pulled through FetchFile (no shared disk)"
        masters = sorted(p.name for p in (root / "masters").rglob("*.fits"))
        assert masters == ["master_bias.fits", "master_dark_30s.fits", "master_flat_r.fits"]

        preprocessor.stop(grace=1.0)  # the preprocessor goes away; the telescope observes on
        scope.Submit(targets("NGC 3"))
        restarted = start_daemon(load_config(config_path), preprocessor_daemon)
        wait_for(lambda: len(calibrated(root)) == 3, timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as pre_channel:
            pre = FrontDeskStub(pre_channel)
            events = list(pre.Watch(pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_WORK_ORDER_UPDATE])))
            done = [e.work_order_id for e in events if e.work_order_update.state == pb.WORK_ORDER_STATE_DONE]
            assert len(done) == len(set(done)) == 3, "each science frame calibrated exactly once"
            status = pre.GetStatus(pb.GetStatusRequest())
            assert status.message.startswith("following macon (after event")
        assert len(calibrated(root)) == 3
