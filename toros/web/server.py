"""Runs the console under uvicorn: loopback unless ``web.ip`` says otherwise, TLS when ``web.tls`` is set."""

from __future__ import annotations

import signal
import threading
import time

import uvicorn

from toros.config import Config, ConfigError
from toros.runtime.config import plaintext_beyond_loopback
from toros.web.app import make_app

STREAMS_CLOSE_S = 2


def check_setup(config: Config) -> None:
    """A console nobody can enter, or one that would send passwords and sessions in the clear beyond this
    machine, is refused at start (ConfigError: one line naming the key, exit 2)."""
    web = config.web
    if not web.users:
        raise ConfigError(
            "web.users: no accounts: nobody could log in (add one, its hash from `toros web hash-password`)"
        )
    if (refusal := plaintext_beyond_loopback("web.ip", web.ip, web.tls is not None, config.security)) is not None:
        raise ConfigError(refusal)


def _settings(config: Config) -> uvicorn.Config:
    check_setup(config)
    web = config.web
    return uvicorn.Config(
        make_app(config),
        host=web.ip,
        port=web.port,
        ssl_certfile=str(web.tls.cert) if web.tls else None,
        ssl_keyfile=str(web.tls.key) if web.tls else None,
        log_config=None,  # the node's logging
        # Forwarded addresses only from the configured proxies (uvicorn believes loopback's by default: rotating
        # X-Forwarded-For would then dodge the login limits).
        proxy_headers=bool(web.trusted_proxies),
        forwarded_allow_ips=list(web.trusted_proxies),
        access_log=False,
        # Browsers hold their event streams open for ever: a stop waits this long for them, then ends them
        # (they reconnect to the next console with Last-Event-ID and lose nothing).
        timeout_graceful_shutdown=STREAMS_CLOSE_S,
    )


def serve(config: Config) -> None:
    """``toros serve web``: the console in the foreground until SIGINT or SIGTERM, then exit code 0 as the
    daemons (uvicorn raises the signal again once it has stopped: it then meets a handler that lets it be)."""
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, lambda number, frame: None)
    uvicorn.Server(_settings(config)).run()


class WebServer:
    """The console's HTTP server in a thread of its own (for tests and embedding)."""

    def __init__(self, config: Config) -> None:
        settings = _settings(config)
        self.app = settings.app
        self._server = uvicorn.Server(settings)
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)
        self.scheme = "https" if config.web.tls else "http"

    def start(self, timeout_s: float = 20.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the web console did not start (is the port free? the TLS files readable?)")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
