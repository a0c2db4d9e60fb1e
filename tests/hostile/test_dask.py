"""The compute cluster is never open to the network: a Dask scheduler and its workers run the pickles they are
sent, so without TLS they listen on loopback only, a tcp:// scheduler elsewhere is refused when the config is
read, and with TLS nothing that lacks the site CA's certificate gets in."""

from __future__ import annotations

import logging
import operator
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pki import Authority
from support import REPO, VENV_BIN, toros_cli, wait_for, write_config

from toros.config import ConfigError, load_config
from toros.demo import free_port
from toros.preprocessor.cluster_commands import scheduler_command, worker_command
from toros.preprocessor.compute import Compute
from toros.preprocessor.settings import ComputeConfig


def test_a_plain_tcp_scheduler_beyond_loopback_is_refused_naming_the_risk(tmp_path):
    for address in ("tcp://10.0.0.5:8786", "tcp://0.0.0.0:8786", "tcp://toros-scheduler:8786", "tcp://[fe80::1]:8786"):
        config = write_config(tmp_path, preprocessor={"compute": {"engine": "dask", "scheduler": address}})
        with pytest.raises(ConfigError, match="plain tcp beyond loopback: a Dask scheduler and its workers run"):
            load_config(config)
        started = toros_cli("serve", "preprocessor", "--config", str(config))
        assert started.returncode == 2
        assert started.stderr.count("\n") == 1 and "anyone who reaches it runs code on the cluster" in started.stderr
    for address in ("tcp://127.0.0.1:8786", "tcp://localhost:8786", "tcp://[::1]:8786", "tcp://127.0.0.2:8786"):
        assert ComputeConfig(engine="dask", scheduler=address).scheduler == address
    with pytest.raises(ValueError, match="a tls:// scheduler needs compute.tls"):
        ComputeConfig(engine="dask", scheduler="tls://cluster.site:8786")


def test_allow_insecure_lets_it_be_and_says_so_at_every_start(tmp_path, caplog):
    settings = ComputeConfig(engine="dask", scheduler="tcp://10.0.0.5:8786", allow_insecure=True)
    with caplog.at_level(logging.WARNING, logger="toros"):
        Compute(settings, tmp_path).close()
        scheduler_command(settings)
    warnings = [r.getMessage() for r in caplog.records if "compute.allow_insecure" in r.getMessage()]
    assert len(warnings) == 2 and "anyone who reaches it runs code on the cluster" in warnings[0]


def test_the_units_start_dask_from_the_config_never_on_every_interface():
    for unit in ("toros-dask-scheduler", "toros-dask-worker"):
        text = (REPO / "deploy" / "systemd" / f"{unit}.service").read_text()
        start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        assert start.startswith(f"ExecStart=/opt/toros/.venv/bin/toros serve {unit.removeprefix('toros-')} ")
        assert "0.0.0.0" not in text.replace("ip: 0.0.0.0", "")


def test_the_commands_listen_as_the_address_says():
    loopback = scheduler_command(ComputeConfig(scheduler="tcp://127.0.0.1:8786"))
    assert loopback[1:] == ["scheduler", "--protocol", "tcp", "--host", "127.0.0.1", "--port", "8786", "--no-dashboard"]
    worker = worker_command(ComputeConfig(scheduler="tcp://127.0.0.1:8786", resources={"toros": 1}), "2")
    assert worker[1:] == ["worker", "tcp://127.0.0.1:8786", "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                          "--host", "127.0.0.1", "--resources", "toros=1"]  # fmt: skip
    tls = ComputeConfig(
        scheduler="tls://cluster.site:8786", tls={"ca": "/c/ca.crt", "cert": "/c/n.crt", "key": "/c/n.key"}
    )
    assert scheduler_command(tls)[1:] == [
        "scheduler", "--protocol", "tls", "--host", "cluster.site", "--port", "8786", "--no-dashboard",
        "--tls-ca-file", "/c/ca.crt", "--tls-cert", "/c/n.crt", "--tls-key", "/c/n.key",
    ]  # fmt: skip
    assert "--host" not in worker_command(tls) and "--tls-cert" in worker_command(tls)


def listening(port: int) -> set[str]:
    """The local addresses a TCP port is listened on (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # LISTEN
                found.add(address)
    return found


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def serve(command: str, config: Path, log: Path, *extra: str) -> subprocess.Popen:
    with log.open("ab") as stream:
        return subprocess.Popen(
            [str(VENV_BIN / "toros"), "serve", command, "--config", str(config), *extra],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


def test_a_tcp_cluster_from_the_config_listens_on_loopback_only(tmp_path, processes):
    port = free_port()
    config = write_config(
        tmp_path, preprocessor={"compute": {"engine": "dask", "scheduler": f"tcp://127.0.0.1:{port}"}}
    )
    processes.append(serve("dask-scheduler", config, tmp_path / "scheduler.log"))
    wait_for(lambda: listening(port), timeout=60, interval=0.5)
    assert listening(port) == {"0100007F"}, "127.0.0.1 alone"
    processes.append(serve("dask-worker", config, tmp_path / "worker.log", "--processes", "1"))
    from distributed import Client

    with Client(f"tcp://127.0.0.1:{port}", timeout="20s", set_as_default=False) as client:
        client.wait_for_workers(1, timeout=60)
        workers = list(client.scheduler_info()["workers"])
        assert all(address.startswith("tcp://127.0.0.1:") for address in workers), workers
        assert client.submit(operator.mul, 6, 7).result(timeout=60) == 42


def test_a_tls_cluster_lets_in_only_certificates_of_the_site_ca(tmp_path, processes):
    authority = Authority(tmp_path / "pki")
    cert, key = authority.issue("node", ["localhost", "127.0.0.1"])
    port = free_port()
    tls = {"ca": str(authority.ca), "cert": str(cert), "key": str(key)}
    config = write_config(
        tmp_path, preprocessor={"compute": {"engine": "dask", "scheduler": f"tls://127.0.0.1:{port}", "tls": tls}}
    )
    processes.append(serve("dask-scheduler", config, tmp_path / "scheduler.log"))
    processes.append(serve("dask-worker", config, tmp_path / "worker.log", "--processes", "1"))
    wait_for(lambda: listening(port), timeout=60, interval=0.5)
    from distributed import Client
    from distributed.security import Security

    security = Security(
        tls_ca_file=tls["ca"], tls_client_cert=tls["cert"], tls_client_key=tls["key"], require_encryption=True
    )
    with Client(f"tls://127.0.0.1:{port}", security=security, timeout="20s", set_as_default=False) as client:
        client.wait_for_workers(1, timeout=60)
        assert client.submit(operator.mul, 9, 9).result(timeout=60) == 81
    with pytest.raises((OSError, TimeoutError)):  # plain tcp: no handshake, no code run
        Client(f"tcp://127.0.0.1:{port}", timeout="5s", set_as_default=False)
    stranger = Authority(tmp_path / "other-ca")
    their_cert, their_key = stranger.issue("stranger", ["localhost"])
    foreign = Security(tls_ca_file=str(stranger.ca), tls_client_cert=str(their_cert), tls_client_key=str(their_key),
                       require_encryption=True)  # fmt: skip
    with pytest.raises((OSError, TimeoutError)):
        Client(f"tls://127.0.0.1:{port}", security=foreign, timeout="5s", set_as_default=False)
