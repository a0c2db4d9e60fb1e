"""The journal and the master library on a real PostgreSQL server (database.url), as several nodes sharing
one database would use them. The server is a throw-away cluster on a Unix socket in a temporary folder."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest
from support import dome_order, drill_daemon, wait_for, write_config

from toros.config import load_config
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.preprocessor.library import Master, MasterLibrary
from toros.runtime.config import DatabaseConfig

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None) or (
    str(Path(shutil.which("initdb")).parent) if shutil.which("initdb") else None
)
# .ci/run installs the Debian package and sets TOROS_REQUIRE_POSTGRES: there, a missing server is a failure.
REQUIRED = os.environ.get("TOROS_REQUIRE_POSTGRES") == "1"
pytestmark = pytest.mark.skipif(PG_BIN is None and not REQUIRED, reason="PostgreSQL server binaries are not installed")


class PostgresServer:
    """A throw-away PostgreSQL cluster, which a test may restart under a running daemon."""

    def __init__(self) -> None:
        assert PG_BIN is not None, (
            "PostgreSQL server binaries are required (TOROS_REQUIRE_POSTGRES=1) but not installed"
        )
        # Its own folder: the postgres user cannot traverse pytest's temporary tree when the tests run as root.
        self.folder = Path(tempfile.mkdtemp(prefix="toros-pg-"))
        self.data, socket_dir = self.folder / "data", self.folder / "socket"
        socket_dir.mkdir()
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.folder, "postgres")
            shutil.chown(socket_dir, "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self._options = f"-k {socket_dir} -c listen_addresses='' -p 54329"
        self.url = f"postgresql://toros@/postgres?host={socket_dir}&port=54329"  # the form the docs use
        subprocess.run(
            [*self.as_postgres, f"{PG_BIN}/initdb", "-D", str(self.data), "-U", "toros", "--auth=trust"],
            check=True,
            capture_output=True,
        )

    def pg_ctl(self, *command: str) -> None:
        subprocess.run(
            [
                *self.as_postgres,
                f"{PG_BIN}/pg_ctl",
                "-D",
                str(self.data),
                "-w",
                "-l",
                str(self.folder / "server.log"),
                "-o",
                self._options,
                *command,
            ],
            check=True,
            capture_output=True,
        )

    def remove(self) -> None:
        subprocess.run(
            [*self.as_postgres, f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-m", "fast", "stop"], capture_output=True
        )
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    server.pg_ctl("start")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres):
    return postgres.url


def test_work_orders_and_events_survive_a_restart_on_postgresql(tmp_path, postgres_url, start_daemon):
    config = load_config(write_config(tmp_path, database={"url": postgres_url, "path": "unused.db"}))
    first = start_daemon(config, drill_daemon)
    with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        stub = FrontDeskStub(channel)
        for id in ("pg-1", "pg-2"):
            stub.Submit(dome_order(id))
        wait_for(lambda: all(first.journal.get(i).final for i in ("pg-1", "pg-2")))
        last = first.journal.events.last_sequence
    assert "toros@" in first.journal.url_for_logs and "postgresql" in first.journal.url_for_logs
    first.stop(grace=1.0)

    second = start_daemon(config, drill_daemon)
    with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
        stub = FrontDeskStub(channel)
        assert stub.Submit(dome_order("pg-1")).already_known
        assert stub.GetWorkOrder(pb.GetWorkOrderRequest(id="pg-2")).state == pb.WORK_ORDER_STATE_DONE
        stub.Submit(dome_order("pg-3"))
        wait_for(lambda: second.journal.get("pg-3").final)
        sequences = [e.sequence for e in stub.Watch(pb.WatchRequest(replay_only=True))]
        assert sequences == list(range(1, len(sequences) + 1)) and len(sequences) > last


def test_master_library_on_postgresql(tmp_path, postgres_url):
    library = MasterLibrary(DatabaseConfig(url=postgres_url))
    path = tmp_path / "master_bias.fits"
    path.write_bytes(b"x")
    library.add(Master("bias", "96x80_bin1x1", "2026-11-20", 0.0, "", path, ("a.fits", "b.fits")), "0" * 64, 1.0, "wo")
    found = library.find("bias", "96x80_bin1x1", "2026-11-22")
    assert found is not None and found.night == "2026-11-20" and found.frames == ("a.fits", "b.fits")
    assert library.find("bias", "96x80_bin1x1", "2026-11-19") is None
    library.close()


def test_a_daemon_carries_on_when_the_postgresql_server_restarts_under_it(tmp_path, postgres, start_daemon):
    config = load_config(write_config(tmp_path, database={"url": postgres.url, "path": "unused.db"}))
    daemon = start_daemon(config, drill_daemon)
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(dome_order("before-restart"))
        wait_for(lambda: daemon.journal.get("before-restart").final)

        postgres.pg_ctl("-m", "fast", "stop")  # every connection is dropped
        for attempt in ("while-down", "still-down"):  # the connection is lost, then cannot be made
            with pytest.raises(grpc.RpcError) as refused:
                stub.Submit(dome_order(attempt))
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
            assert refused.value.details().startswith("not accepted, try again: database: ")

        postgres.pg_ctl("start")
        stub.Submit(dome_order("after-restart"))  # the journal reconnects by itself
        wait_for(lambda: daemon.journal.get("after-restart").final)
        assert stub.GetWorkOrder(pb.GetWorkOrderRequest(id="after-restart")).state == pb.WORK_ORDER_STATE_DONE
        with pytest.raises(grpc.RpcError) as unknown:
            stub.GetWorkOrder(pb.GetWorkOrderRequest(id="while-down"))
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND, "a refused work order was not stored"
        sequences = [e.sequence for e in stub.Watch(pb.WatchRequest(replay_only=True))]
        assert sequences == list(range(1, len(sequences) + 1)), "no gap and no duplicate across the restart"
