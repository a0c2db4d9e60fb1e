"""Connections to TOROS daemons for the CLI, the console and scripts: a module's address, TLS and token from the
node's config."""

from __future__ import annotations

import grpc

from toros.config import Config
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.runtime.channels import open_channel
from toros.runtime.server import host_port

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


def module_address(config: Config, module: str) -> str:
    """Where a module's daemon listens, as seen from this node (a wildcard bind is reached on loopback)."""
    settings = config.server(module)
    return host_port(_WILDCARDS.get(settings.ip, settings.ip), settings.port)


def frontdesk(config: Config, module: str, address: str | None = None) -> tuple[pb_grpc.FrontDeskStub, grpc.Channel]:
    """A FrontDesk stub for a module (its configured address unless ``address`` is given)."""
    channel = open_channel(address or module_address(config, module), config.security)
    return pb_grpc.FrontDeskStub(channel), channel
