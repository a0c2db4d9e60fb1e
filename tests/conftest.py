"""Shared fixtures: configs in a temporary folder, live daemons on loopback port 0, stubs."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from pki import Authority
from support import (
    NIGHT_TIME,
    SMALL_CAMERA,
    drill_daemon,
    glade_plus_line,
    kilonova_pair,
    telescope_daemon,
    write_config,
)

from toros.config import Config, load_config
from toros.daemons import build_daemon
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.runtime.server import Daemon


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
        if os.environ.get("TOROS_REQUIRE_ROOT"):
            pytest.fail("root is required here (TOROS_REQUIRE_ROOT) to mount a tmpfs")
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def glade_catalog(tmp_path) -> Path:
    """A GLADE+-format catalog: galaxies at the map's peak at the right and wrong distances, and elsewhere."""
    rng = np.random.default_rng(3)
    lines = [
        glade_plus_line(1, 194.30, -17.86, 40.0),
        glade_plus_line(2, 194.31, -17.85, 400.0),
        glade_plus_line(3, 194.29, -17.87, None),
    ]
    ra, dec = rng.uniform(185, 205, 3000), rng.uniform(-30, -5, 3000)
    away = np.hypot(ra - 194.3, dec + 17.86) > 2.0  # the planted galaxies alone sit at the peak
    lines += [
        glade_plus_line(10 + i, r, d, dist)
        for i, (r, d, dist) in enumerate(zip(ra[away], dec[away], rng.uniform(10, 200, 3000)[away], strict=True))
    ]
    lines += [glade_plus_line(5000 + i, ra, 60.0, 40.0) for i, ra in enumerate(rng.uniform(0, 360, 500))]
    path = tmp_path / "GLADE+.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def observatory(tmp_path, glade_catalog, start_daemon):
    """A drill telescope, and an alert daemon with the catalog, the observatory, and a May night clock."""
    (tmp_path / "scope").mkdir()
    telescope = start_daemon(load_config(write_config(tmp_path / "scope")), drill_daemon)

    def alert(**extra):
        (tmp_path / "alert").mkdir(exist_ok=True)
        settings = {
            "port": 0,
            "catalog": str(glade_catalog),
            "process_test_alerts": True,
            "targets_per_observatory": 5,
            "observatories": [
                {
                    "name": "macon",
                    "latitude": -24.62,
                    "longitude": -67.32,
                    "elevation": 4650,
                    "telescope": f"127.0.0.1:{telescope.port}",
                }
            ],
            "relay_retry_s": 2,
        }
        settings.update(extra)
        config = write_config(tmp_path / "alert", clock={"start": "2026-05-01T23:00:00Z", "rate": 1.0}, alert=settings)
        daemon = start_daemon(load_config(config), lambda c: build_daemon("alert", c))
        return daemon, FrontDeskStub(grpc.insecure_channel(f"127.0.0.1:{daemon.port}"))

    return telescope, alert


@pytest.fixture
def telescope(make_config: Callable[..., Config], start_daemon: Callable[..., Daemon]) -> Callable[..., FrontDeskStub]:
    channels: list[grpc.Channel] = []

    def start(
        *, at: str = NIGHT_TIME, rate: float = 200.0, storage: str | None = None, **settings: Any
    ) -> FrontDeskStub:
        telescope = {"port": 0, "mode": "manual", "camera": SMALL_CAMERA, "dome": {"shutter_s": 20.0}} | settings
        sections: dict[str, Any] = {"clock": {"start": at, "rate": rate}, "telescope": telescope}
        if storage:
            sections["storage"] = {"root": storage}
        daemon = start_daemon(make_config(**sections), telescope_daemon)
        channel = grpc.insecure_channel(f"127.0.0.1:{daemon.port}")
        channels.append(channel)
        return FrontDeskStub(channel)

    yield start
    for channel in channels:
        channel.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A throw-away CA with a server certificate for localhost and a client certificate."""
    authority = Authority(tmp_path_factory.mktemp("pki"))
    server_cert, server_key = authority.issue("server", ["localhost"])
    client_cert, client_key = authority.issue("client", [])
    return {
        "ca_cert": authority.ca,
        "server_cert": server_cert,
        "server_key": server_key,
        "client_cert": client_cert,
        "client_key": client_key,
    }


@pytest.fixture
def mutual_tls(pki: dict[str, Path]) -> dict[str, Any]:
    """A daemon's security.tls section that requires client certificates signed by the test CA."""
    return {
        "cert": str(pki["server_cert"]),
        "key": str(pki["server_key"]),
        "ca": str(pki["ca_cert"]),
        "require_client_cert": True,
    }


# .ci/run installs Debian's chromium and sets TOROS_REQUIRE_CHROMIUM: there, a missing browser is a failure.
REQUIRE_CHROMIUM = os.environ.get("TOROS_REQUIRE_CHROMIUM") == "1"


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium or not REQUIRE_CHROMIUM, "Debian's chromium is required (TOROS_REQUIRE_CHROMIUM=1)"
    if chromium is None:
        pytest.skip("Debian's chromium is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Any]:
    """The kilonova pair of the difference-imaging tests (support.kilonova_pair), made once per test module."""
    return kilonova_pair(tmp_path_factory.mktemp("discovery"))


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server on loopback that keeps the JSON bodies POSTed to it: (URL, bodies)."""
    posts: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", posts
    server.shutdown()


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Any]:
    """The reference library in a test's own database and storage root."""
    from toros.preprocessor.references import ReferenceLibrary
    from toros.preprocessor.settings import ReferencesConfig
    from toros.runtime.config import DatabaseConfig

    made = ReferenceLibrary(DatabaseConfig(path=tmp_path / "toros.db"), tmp_path / "data", ReferencesConfig())
    yield made
    made.close()
