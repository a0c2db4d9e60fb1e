"""The daemon as a server: health, reflection, token auth, TLS and mutual TLS, loopback, graceful stop."""

from __future__ import annotations

import signal
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import VENV_BIN, dome_order, wait_for, write_config

from toros.client import open_channel
from toros.config import load_config
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub


def test_health_serving_and_reflection_lists_the_service(drill):
    with grpc.insecure_channel(f"127.0.0.1:{drill.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "toros.v1.FrontDesk"):
            assert (
                health.Check(health_pb2.HealthCheckRequest(service=service)).status
                == health_pb2.HealthCheckResponse.SERVING
            )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert "toros.v1.FrontDesk" in names and "grpc.health.v1.Health" in names


def test_binds_loopback_by_default(drill):
    assert drill.settings.ip == "127.0.0.1"


def test_token_is_required_except_for_the_health_check(make_config, start_daemon):
    daemon = start_daemon(make_config(security={"token": "s3cret"}))
    address = f"127.0.0.1:{daemon.port}"
    with grpc.insecure_channel(address) as channel:
        stub = FrontDeskStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.GetStatus(pb.GetStatusRequest())
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as error:
            list(stub.Watch(pb.WatchRequest(replay_only=True)))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as error:
            stub.Submit(dome_order("x"), metadata=[("authorization", "Bearer wrong")])
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
    with open_channel(address, daemon.config.security) as channel:
        stub = FrontDeskStub(channel)
        assert stub.GetStatus(pb.GetStatusRequest()).module == "telescope"
        assert stub.Submit(dome_order("with-token")).id == "with-token"
        assert list(stub.Watch(pb.WatchRequest(replay_only=True)))


def test_tls_and_mutual_tls(make_config, start_daemon, pki, mutual_tls):
    daemon = start_daemon(make_config(security={"tls": mutual_tls}))
    address = f"localhost:{daemon.port}"
    server_only = load_config(write_config(daemon.storage_root.parent, security={"tls": {"ca": str(pki["ca_cert"])}}))
    with open_channel(address, server_only.security) as channel:
        with pytest.raises(grpc.RpcError) as error:
            FrontDeskStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # no client certificate: handshake refused
    mutual = load_config(
        write_config(
            daemon.storage_root.parent,
            security={
                "tls": {
                    "ca": str(pki["ca_cert"]),
                    "client_cert": str(pki["client_cert"]),
                    "client_key": str(pki["client_key"]),
                }
            },
        )
    )
    with open_channel(address, mutual.security) as channel:
        assert FrontDeskStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5).module == "telescope"
    with grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError):
            FrontDeskStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)


def test_sigterm_stops_gracefully_with_exit_code_0(tmp_path):
    config = write_config(tmp_path, telescope={"port": 0})
    process = subprocess.Popen(
        [str(VENV_BIN / "toros"), "serve", "telescope", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    log = tmp_path / "logs" / "toros.log"
    line = wait_for(
        lambda: log.exists() and next((text for text in log.read_text().splitlines() if "listening on" in text), None)
    )
    port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        wait_for(lambda: health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING)
        stream = FrontDeskStub(channel).Watch(pb.WatchRequest())
        stream.initial_metadata()  # the stream is open on the daemon
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
        stream.cancel()
    text = log.read_text()
    assert "stopping telescope" in text and "telescope stopped" in text
    assert "Traceback" not in process.stderr.read()
