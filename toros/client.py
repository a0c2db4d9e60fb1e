"""Connections to TOROS daemons (for the CLI, other modules and scripts): address, TLS and token from config."""

from __future__ import annotations

import collections
from typing import Any

import grpc

from toros.config import Config
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.runtime.config import SecurityConfig
from toros.runtime.server import MAX_MESSAGE_BYTES, host_port

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class TokenInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call (works on plaintext channels too)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = list(details.metadata or []) + [self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)


def module_address(config: Config, module: str) -> str:
    """Where a module's daemon listens, as seen from this node (a wildcard bind is reached on loopback)."""
    settings = config.server(module)
    return host_port(_WILDCARDS.get(settings.ip, settings.ip), settings.port)


def open_channel(address: str, security: SecurityConfig) -> grpc.Channel:
    """A channel to ``address``: TLS when a CA or client certificate is configured, plus the token if set."""
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    tls = security.tls
    if tls.ca is not None or tls.client_cert is not None:
        tls.verify()
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls.read("ca"),
            private_key=tls.read("client_key"),
            certificate_chain=tls.read("client_cert"),
        )
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    if security.token is not None:
        channel = grpc.intercept_channel(channel, TokenInterceptor(security.token.get_secret_value()))
    return channel


def frontdesk(config: Config, module: str, address: str | None = None) -> tuple[pb_grpc.FrontDeskStub, grpc.Channel]:
    """A FrontDesk stub for a module (its configured address unless ``address`` is given)."""
    channel = open_channel(address or module_address(config, module), config.security)
    return pb_grpc.FrontDeskStub(channel), channel
