"""The Dask scheduler and workers of a node's compute cluster, started from the node's config
(``toros serve dask-scheduler|dask-worker``, as the systemd units do), so that where they listen follows the
same rule as the preprocessor's client: a Dask scheduler and its workers run the pickles they are sent, so
without TLS they listen on loopback only, and with TLS they speak it with the site CA's certificates."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from toros.preprocessor.settings import ComputeConfig
from toros.runtime.config import is_loopback

log = logging.getLogger(__name__)


def _dask() -> str:
    beside = Path(sys.executable).with_name("dask")
    return str(beside) if beside.exists() else shutil.which("dask") or "dask"


def _tls(settings: ComputeConfig) -> list[str]:
    if settings.tls is None:
        return []
    tls = settings.tls
    return ["--tls-ca-file", str(tls.ca), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]


def warn_if_exposed(settings: ComputeConfig) -> None:
    """Said at every start of whatever speaks to the cluster, while ``compute.allow_insecure`` lets it be open."""
    if settings.exposed:
        log.warning(
            "compute.allow_insecure: the Dask scheduler %s is plain tcp beyond loopback: anyone who reaches it runs "
            "code on the cluster",
            settings.scheduler,
        )


def scheduler_command(settings: ComputeConfig) -> list[str]:
    """``dask scheduler`` on the configured address: its host (loopback unless TLS, or allowed), no dashboard."""
    warn_if_exposed(settings)
    protocol = "tls" if settings.encrypted else "tcp"
    return [
        _dask(), "scheduler", "--protocol", protocol, "--host", settings.scheduler_host,
        "--port", str(settings.scheduler_port), "--no-dashboard", *_tls(settings),
    ]  # fmt: skip


def worker_command(settings: ComputeConfig, processes: str = "auto") -> list[str]:
    """``dask worker`` of the configured scheduler, one thread per process; a worker listens as the scheduler
    does (it too runs what it is sent): on loopback beside a loopback scheduler, with TLS beside a TLS one."""
    warn_if_exposed(settings)
    listen = ["--host", "127.0.0.1"] if is_loopback(settings.scheduler_host) else []
    resources = (
        ["--resources", " ".join(f"{k}={v:g}" for k, v in settings.resources.items())] if settings.resources else []
    )
    return [
        _dask(), "worker", settings.scheduler, "--nworkers", processes, "--nthreads", "1", "--no-dashboard",
        *listen, *resources, *_tls(settings),
    ]  # fmt: skip


def run(command: list[str]) -> None:
    """Becomes the command (systemd then supervises Dask itself, signals included)."""
    log.info("starting %s", " ".join(command))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
