"""One daemon: a module behind the FrontDesk service, with health, reflection, auth, TLS and a journal."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import SQLAlchemyError

from toros import __version__
from toros.generated import toros_pb2 as pb
from toros.generated import toros_pb2_grpc as pb_grpc
from toros.runtime.channels import connector
from toros.runtime.clock import Clock
from toros.runtime.config import ConfigError, NodeConfig, TlsConfig, plaintext_beyond_loopback
from toros.runtime.database import url_for_logs
from toros.runtime.files import remove_stale_parts, set_file_mode
from toros.runtime.frontdesk import FrontDesk
from toros.runtime.interceptors import LoggingInterceptor, TokenAuthInterceptor
from toros.runtime.journal import Journal, WorkOrderRecord
from toros.runtime.module import Module, Services
from toros.runtime.workers import WorkerPool

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FrontDesk"].full_name


def host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip and not ip.startswith("[") else f"{ip}:{port}"


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """TLS, and mutual TLS when ``require_client_cert`` (clients must present a cert signed by ``ca``)."""
    if tls.require_client_cert and tls.ca is None:
        raise ConfigError("security.tls.ca: required when require_client_cert is true")
    tls.verify()
    key, cert = tls.read("key"), tls.read("cert")
    assert key is not None and cert is not None, "TLS is enabled by a certificate, and TlsConfig pairs it with a key"
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=tls.read("ca") if tls.require_client_cert else None,
        require_client_auth=tls.require_client_cert,
    )


class StartupError(Exception):
    """What a daemon needs at start is not there (the database, the storage): one line says which and why."""


def _first_line(error: Exception) -> str:
    """The driver's own message of a database error (SQLAlchemy wraps it in a paragraph), or the OS error."""
    cause = getattr(error, "orig", None) or error
    if isinstance(cause, OSError) and cause.strerror:
        return f"{cause.strerror}: {cause.filename}" if cause.filename else cause.strerror
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


class Daemon:
    """Builds and runs one module's gRPC server."""

    def __init__(self, config: NodeConfig, module_factory: Callable[[Services], Module], module: str) -> None:
        self.config = config
        self.module_name = module
        self.settings = config.server(module)
        # A simulated clock stands still until the daemon serves: a slow start is not time lost to the night
        # (unless the network shares one clock).
        self.clock = Clock(config.clock.start, config.clock.rate, held=True, shared_from=config.clock.shared_from)
        self.storage_root = Path(config.storage.root)
        self._module_factory = module_factory
        self._stopped = threading.Event()
        self.port: int | None = None

    def start(self) -> int:
        """Starts serving; returns the bound port. Health reports SERVING once the module is ready. Beyond loopback
        only with TLS (or ``security.allow_insecure_network``): refused before anything is opened."""
        security = self.config.security
        ip = self.settings.ip
        if (
            refusal := plaintext_beyond_loopback(f"{self.module_name}.ip", ip, security.tls.enabled, security)
        ) is not None:
            raise ConfigError(refusal)
        set_file_mode(self.config.storage.file_mode)
        self._open_storage_and_journal()
        services = Services(
            self.clock, self.journal, self._submit_internal, self.storage_root, self.config.database,
            connector(self.config.security),
        )  # fmt: skip
        self.module = self._module_factory(services)
        self.workers = WorkerPool(
            self.journal,
            self.clock,
            self.module.tasks(),
            self.settings.workers,
            self.module_name,
            max_attempts=self.settings.max_attempts,
        )
        self.server = self._grpc_server()
        self.port = self._listen()
        self.server.start()
        tls = self.config.security.tls
        log.info(
            "%s %s listening on %s (%s%s), database %s, storage %s",
            self.module_name,
            __version__,
            host_port(self.settings.ip, self.port),
            "mutual TLS" if tls.require_client_cert else "TLS" if tls.enabled else "plaintext",
            ", token required" if self.config.security.token is not None else "",
            self.journal.url_for_logs,
            self.storage_root,
        )
        try:
            self.module.start()
        except BaseException:  # e.g. an unreadable catalog: nothing is left listening or open
            self.server.stop(0).wait()
            self.journal.close()
            raise
        self.workers.start()
        self.clock.release()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def _open_storage_and_journal(self) -> None:
        """The storage root (swept of what a crash left) and the journal; a simulated clock carries on from the
        journal's last event."""
        try:
            self.storage_root.mkdir(parents=True, exist_ok=True)
            for part in remove_stale_parts(self.storage_root):
                log.warning("removed %s: the temporary file of a write that a crash interrupted", part)
        except OSError as exc:
            raise StartupError(f"storage.root {self.storage_root}: {exc.strerror or exc}") from None
        try:
            self.journal = Journal(self.config.database, self.module_name, self.clock)
        except (OSError, SQLAlchemyError) as exc:
            raise StartupError(f"database {url_for_logs(self.config.database)}: {_first_line(exc)}") from None
        if (last := self.journal.last_event_time()) is not None:
            self.clock.resume_from(last)

    def _grpc_server(self) -> grpc.Server:
        """The gRPC server with its services (FrontDesk, health NOT_SERVING until the module is ready,
        reflection), interceptors and limits; not yet listening."""
        interceptors: list[grpc.ServerInterceptor] = [LoggingInterceptor()]
        if self.config.security.token is not None:
            interceptors.insert(0, TokenAuthInterceptor(self.config.security.token.get_secret_value()))
        # Streams (Watch, FetchFile) are capped at max_streams, so rpc_threads always remain for unary calls.
        self._executor = futures.ThreadPoolExecutor(
            max_workers=self.settings.rpc_threads + self.settings.max_streams,
            thread_name_prefix=f"{self.module_name}-rpc",
        )
        server = grpc.server(
            self._executor,
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", self.settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                # Connections that never finish their handshake, or hold no call, are closed: idle sockets
                # cannot use up the daemon's file descriptors.
                ("grpc.server_handshake_timeout_ms", int(self.settings.handshake_timeout_s * 1000)),
                ("grpc.max_connection_idle_ms", int(self.settings.idle_connection_s * 1000)),
            ],
        )
        self.frontdesk = FrontDesk(
            self.module, self.journal, self.workers, self.storage_root, self.settings.max_streams
        )
        pb_grpc.add_FrontDeskServicer_to_server(self.frontdesk, server)
        self.health = health.HealthServicer(
            experimental_non_blocking=True,
            experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"),
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        return server

    def _listen(self) -> int:
        """Binds the configured address (TLS when configured); the port it got."""
        address = host_port(self.settings.ip, self.settings.port)
        tls = self.config.security.tls
        refusal = plaintext_beyond_loopback(
            f"{self.module_name}.ip", self.settings.ip, tls.enabled, self.config.security
        )
        if refusal is not None:
            raise ConfigError(refusal)
        try:
            if tls.enabled:
                port = self.server.add_secure_port(address, server_credentials(tls))
            else:
                port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"{self.module_name}.ip/port: cannot listen on {address}: {exc}") from None
        if not port:
            raise ConfigError(f"{self.module_name}.ip/port: cannot listen on {address}")
        return port

    def _submit_internal(self, order: pb.WorkOrder) -> tuple[WorkOrderRecord, bool]:
        """A work order from the module itself: accepted exactly like a client's."""
        return self.frontdesk.accept(order)

    def _set_health(self, status: int) -> None:
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: NOT_SERVING, in-flight calls finish within the grace period, work is put down."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_seconds if grace is None else grace
        log.info("stopping %s (grace %.0f s)", self.module_name, grace)
        self.health.enter_graceful_shutdown()
        self.journal.events.close()
        self.server.stop(grace).wait()
        self.module.stop()
        self.workers.stop(timeout=grace)
        self.journal.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("%s stopped", self.module_name)

    def serve_until_signal(self) -> None:
        """Runs in the foreground until SIGTERM or SIGINT, then stops gracefully."""
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
        self.stop()
