"""Three nodes: each daemon in its own network namespace (its own address on a bridge, its own loopback; as
root with iproute2, else on separate loopback addresses), with its own storage root and database, no shared
disk; mutual TLS with a site CA and a shared token between them. The alert relays over TLS, the
preprocessor pulls every image through FetchFile. And the example configs in deploy/multi-node are valid."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pki import Authority
from support import REPO, wait_for

from toros.client import open_channel
from toros.config import load_config
from toros.demo import ALERT, CLOCK_START
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.runtime.config import SecurityConfig
from toros.simulation.galaxies import write_glade_plus

MODULES = ("alert", "telescope", "preprocessor")
TOKEN = "site-token-for-the-test"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@pytest.fixture
def placement() -> Iterator[tuple[dict[str, str], dict[str, list[str]]]]:
    """Where each node runs: (address by module, command prefix by module)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        yield {"alert": "127.0.0.2", "telescope": "127.0.0.3", "preprocessor": "127.0.0.4"}, dict.fromkeys(MODULES, [])
        return
    tag = f"{os.getpid() % 100000}"
    subnet = f"10.77.{os.getpid() % 250}"
    bridge, commands = f"tbr{tag}", []

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)
        commands.append(args)

    hosts, prefixes, namespaces = {}, {}, []
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for number, module in enumerate(MODULES, start=2):
            namespace, outside, inside = f"toros{tag}{module[0]}", f"tv{tag}{module[0]}", f"tn{tag}{module[0]}"
            ip("netns", "add", namespace)
            namespaces.append(namespace)
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", namespace)
            ip("link", "set", outside, "master", bridge)
            ip("link", "set", outside, "up")
            ip("netns", "exec", namespace, "ip", "addr", "add", f"{subnet}.{number}/24", "dev", inside)
            ip("netns", "exec", namespace, "ip", "link", "set", inside, "up")
            ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
            hosts[module] = f"{subnet}.{number}"
            prefixes[module] = ["ip", "netns", "exec", namespace]
        yield hosts, prefixes
    finally:
        for namespace in namespaces:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


def test_example_configs_are_valid(monkeypatch):
    monkeypatch.setenv("TOROS_TOKEN", "x")
    for module in MODULES:
        config = load_config(REPO / "deploy" / "multi-node" / f"{module}.yaml")
        assert config.security.tls.require_client_cert and config.security.token.get_secret_value() == "x"
        assert config.server(module).ip == "0.0.0.0"


@pytest.fixture
def site(tmp_path, placement):
    """Writes one config per node (own storage, own database, TLS, the token from the environment)."""
    hosts, prefixes = placement
    authority = Authority(tmp_path / "pki")
    ports = {module: 50050 + n if prefixes[module] else free_port(hosts[module]) for n, module in enumerate(MODULES, 1)}
    address = {module: f"{hosts[module]}:{ports[module]}" for module in hosts}
    configs = {}
    for module, host in hosts.items():
        folder = tmp_path / f"{module}-node"
        folder.mkdir()
        cert, key = authority.issue(module, [host])
        tls = {
            "cert": str(cert),
            "key": str(key),
            "ca": str(authority.ca),
            "require_client_cert": True,
            "client_cert": str(cert),
            "client_key": str(key),
        }
        config = {
            "logging": {"file": "logs/toros.log", "level": "INFO"},
            "database": {"path": f"{module}.db"},
            "storage": {"root": "data"},
            "clock": {"start": CLOCK_START, "rate": 300.0},
            "security": {"token": "${TOROS_TOKEN}", "tls": tls},
            module: {"ip": host, "port": ports[module]},
        }
        if module == "alert":
            write_glade_plus(folder / "galaxies.txt", 3000, seed=7, near_fraction=0.05)
            config["alert"] |= {
                "catalog": "galaxies.txt",
                "process_test_alerts": True,
                "targets_per_observatory": 3,
                "exposure": {"exposure_time_s": 60.0, "exposure_count": 1, "filter": "r"},
                "observatories": [
                    {
                        "name": "macon",
                        "latitude": -24.62,
                        "longitude": -67.32,
                        "elevation": 4650,
                        "telescope": address["telescope"],
                    }
                ],
            }
        elif module == "telescope":
            config["telescope"] |= {
                "mode": "robotic",
                "camera": {"width": 96, "height": 96, "overscan": 8},
                "calibrations": {"bias_count": 3, "dark_count": 3, "dark_times_s": [60.0], "flat_count": 3},
            }
        else:
            config["preprocessor"] |= {"http": None, "follow": [{"name": "macon", "address": address["telescope"]}]}
        path = folder / "toros.conf.yaml"
        path.write_text(yaml.safe_dump(config))
        configs[module] = path
    environment = os.environ | {"TOROS_TOKEN": TOKEN}
    processes = {}
    try:
        for module, path in configs.items():
            processes[module] = subprocess.Popen(
                [*prefixes[module], sys.executable, "-m", "toros.cli", "serve", module, "--config", str(path)],
                cwd=path.parent,
                env=environment,
                stderr=subprocess.DEVNULL,
            )
        yield configs, address, environment, hosts
    finally:
        for process in processes.values():
            process.terminate()
        for module, process in processes.items():
            assert process.wait(timeout=60) == 0, f"{module} did not stop cleanly"


def node_security(config: Path, token: str) -> SecurityConfig:
    """A node's security settings, its ``${TOROS_TOKEN}`` read from ``token``."""
    previous = os.environ.get("TOROS_TOKEN")
    os.environ["TOROS_TOKEN"] = token
    try:
        return load_config(config).security
    finally:
        if previous is None:
            del os.environ["TOROS_TOKEN"]
        else:
            os.environ["TOROS_TOKEN"] = previous


def test_three_nodes_with_mutual_tls_and_a_token(site):
    configs, address, environment, hosts = site
    stubs, channels = {}, []
    for module in MODULES:
        channel = open_channel(address[module], node_security(configs[module], environment["TOROS_TOKEN"]))
        stubs[module] = FrontDeskStub(channel)
        channels.append(channel)

        def serving(channel: grpc.Channel = channel) -> bool:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        wait_for(serving, timeout=90, interval=0.3)
    try:
        # Nobody without a site certificate gets in; with one but without the token, no work order either.
        with grpc.insecure_channel(address["telescope"]) as plain:
            with pytest.raises(grpc.RpcError) as refused:
                FrontDeskStub(plain).GetStatus(pb.GetStatusRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with open_channel(address["telescope"], node_security(configs["alert"], "wrong")) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                FrontDeskStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        replay = subprocess.run(
            [
                sys.executable,
                "-m",
                "toros.cli",
                "alert",
                "replay",
                str(ALERT),
                "--wait",
                "--config",
                str(configs["alert"]),
            ],
            capture_output=True,
            text=True,
            env=environment,
            cwd=configs["alert"].parent,
        )
        assert replay.returncode == 0 and "3 targets accepted" in replay.stdout, replay.stdout + replay.stderr

        def all_calibrated() -> int | None:
            lights = [
                e
                for e in stubs["telescope"].Watch(pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_IMAGE_READY]))
                if e.image_ready.image_type == pb.IMAGE_TYPE_LIGHT
            ]
            calibrated = list((configs["preprocessor"].parent / "data" / "calibrated").rglob("*_cal.fits"))
            return len(lights) if len(lights) == 3 and len(calibrated) == 3 else None

        wait_for(all_calibrated, timeout=180, interval=1.0)
        telescope_data = configs["telescope"].parent / "data"
        preprocessor_data = configs["preprocessor"].parent / "data"
        raw = sorted(p.name for p in telescope_data.glob("20*/*-light-*.fits"))
        fetched = sorted(p.name for p in (preprocessor_data / "incoming" / "macon").rglob("*-light-*.fits"))
        assert raw == fetched, "every image crossed over FetchFile into the preprocessor's own storage"
        assert not (preprocessor_data / "20*").exists() and not list(telescope_data.rglob("*_cal.fits"))
        assert sorted(
            p.name.removesuffix("_cal.fits") for p in (preprocessor_data / "calibrated").rglob("*_cal.fits")
        ) == [name.removesuffix(".fits") for name in raw]
        status = stubs["preprocessor"].GetStatus(pb.GetStatusRequest())
        assert "following macon" in status.message
        assert len(set(hosts.values())) == 3
    finally:
        for channel in channels:
            channel.close()
        time.sleep(0.1)
