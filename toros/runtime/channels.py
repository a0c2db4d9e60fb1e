"""Channels to other daemons, with this node's TLS and token: how a module reaches another (a relayed target
list, a followed telescope) and how clients reach a daemon."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import grpc

from toros.runtime.config import SecurityConfig

# The largest request a client sends and a daemon accepts by default (the alert daemon's: a ProcessAlert may
# carry a 64 MiB sky map); each daemon's own limit is its section's max_message_bytes.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024 + 4096

Connect = Callable[[str], grpc.Channel]  # a channel to the daemon at an address


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


def connector(security: SecurityConfig) -> Connect:
    """The channel factory a module is lent (``Services.connect``)."""
    return lambda address: open_channel(address, security)
