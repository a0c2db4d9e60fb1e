"""Shared fixtures: configs in a temporary folder, live daemons on loopback port 0, stubs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from support import drill_daemon

from toros.config import Config, load_config
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.runtime.server import Daemon

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def write_config(folder: Path, **sections: Any) -> Path:
    """A config file in ``folder`` with test defaults (port 0, fast clock, everything under ``folder``)."""
    data: dict[str, Any] = {
        "logging": {"file": "logs/toros.log", "level": "DEBUG"},
        "database": {"path": "toros.db"},
        "storage": {"root": "data"},
        "clock": {"rate": 20.0},
        "alert": {"port": 0},
        "telescope": {"port": 0},
        "preprocessor": {"port": 0},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = folder / "toros.conf.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    def make(**sections: Any) -> Config:
        return load_config(write_config(tmp_path, **sections))

    return make


@pytest.fixture
def start_daemon() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Config, factory: Callable[[Config], Daemon] = drill_daemon) -> Daemon:
        daemon = factory(config)
        daemon.start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop(grace=1.0)


@pytest.fixture
def drill(make_config: Callable[..., Config], start_daemon: Callable[..., Daemon]) -> Daemon:
    """A live drill telescope daemon with the default test config."""
    return start_daemon(make_config())


@pytest.fixture
def stub(drill: Daemon) -> Iterator[pb_grpc.FrontDeskStub]:
    with grpc.insecure_channel(f"127.0.0.1:{drill.port}") as channel:
        yield pb_grpc.FrontDeskStub(channel)


@pytest.fixture
def tiny_disk(tmp_path):
    """A real full disk: a 96 KiB tmpfs as the storage root (needs root, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def toros_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs the installed ``toros`` command."""
    return subprocess.run(
        [str(VENV_BIN / "toros"), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Polls until ``predicate`` returns something true; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
