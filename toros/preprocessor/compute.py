"""Where per-frame work runs, behind one seam (``Engine``): in the preprocessor itself (``local``, the default), on a
Dask distributed cluster (``dask``), or in a pool of processes of this node (cosmic-ray cleaning). Combining
masters stays on the node.

A ``Task`` says how to do one frame's work here (a closure) and elsewhere (a module-level function of
``tasks.py`` with its arguments): it reads its inputs from the storage the node and the workers share, writes
its products atomically (so a task run again after its worker died writes them once), and returns something
small. Paths cross the seam mapped between the node's storage root and where the workers mount it
(``preprocessor.compute.storage_on_workers``). A task that raises re-raises here with its own type and message,
as the local engine would: the caller names the frame. When the scheduler cannot be reached, the frame is
computed here or waited for (``compute.unreachable``), never lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

from toros.preprocessor.cluster_commands import warn_if_exposed
from toros.preprocessor.settings import ComputeConfig, ComputeEngineName, WhenUnreachable

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_S = 5.0  # between attempts to reach a scheduler that is away (with unreachable: wait)
QUIET_S = 30.0  # after a failed connection, the cluster is not asked again for this long (each frame would wait)


class ComputeUnavailable(Exception):
    """The cluster cannot take the work: its scheduler is unreachable, or its workers cannot do it."""


@dataclass(frozen=True)
class Task(Generic[T]):
    """One frame's piece of work: ``here()`` in this process, else ``function(*args(paths))`` elsewhere (a
    module-level function of ``tasks.py``, its paths as the workers see them), whose result comes back through
    ``back(result, paths)`` (paths as the node sees them)."""

    label: str
    here: Callable[[], T]
    function: Callable[..., T]
    args: Callable[[PathMap], tuple[Any, ...]]
    back: Callable[[T, PathMap], T] = lambda result, paths: result


class Engine(Protocol):
    """Where tasks run."""

    @property
    def remote(self) -> bool:
        """Elsewhere than in this process."""

    def parallelism(self) -> int:
        """How many tasks to keep in flight."""

    def run(self, task: Task[T], note: Callable[[str], None]) -> T:
        """Runs one task and returns its result; ``note`` hears of a fallback or a wait, for the work order."""


class Here:
    """This process: every task's ``here``."""

    remote = False

    def parallelism(self) -> int:
        return 1

    def run(self, task: Task[T], note: Callable[[str], None]) -> T:
        return task.here()


class Processes:
    """A pool of processes of this node (for work that holds the GIL: cosmic-ray cleaning)."""

    remote = True

    def __init__(self, count: int, storage_root: Path) -> None:
        self.count = count
        self.paths = PathMap(storage_root, None)
        self._pool = ProcessPoolExecutor(count)

    def parallelism(self) -> int:
        return self.count

    def run(self, task: Task[T], note: Callable[[str], None]) -> T:
        return task.back(self._pool.submit(task.function, *task.args(self.paths)).result(), self.paths)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class PathMap:
    """The node's storage root as the workers see it."""

    def __init__(self, node_root: Path, worker_root: str | None) -> None:
        self.node_root = str(node_root.resolve())
        self.worker_root = worker_root.rstrip("/") if worker_root else self.node_root

    def to_worker(self, path: Path) -> str:
        text = str(path.resolve())
        if text == self.node_root or text.startswith(self.node_root + "/"):
            return self.worker_root + text[len(self.node_root) :]
        return text  # outside the storage root (a reference catalog elsewhere): the same path on the workers

    def to_node(self, path: str | Path) -> Path:
        text = str(path)
        if text == self.worker_root or text.startswith(self.worker_root + "/"):
            return Path(self.node_root + text[len(self.worker_root) :])
        return Path(text)


class DaskEngine:
    """A client of a Dask scheduler, connected when first needed and again after the scheduler came back."""

    def __init__(self, settings: ComputeConfig, paths: PathMap) -> None:
        self.settings = settings
        self.paths = paths
        self._client: Any = None
        self._lock = threading.Lock()
        self._down: tuple[float, str] | None = None  # (until when, why) after a failed connection

    def _security(self) -> Any:
        if self.settings.tls is None:
            return None
        from distributed.security import Security

        tls = self.settings.tls
        return Security(
            tls_ca_file=str(tls.ca), tls_client_cert=str(tls.cert), tls_client_key=str(tls.key), require_encryption=True
        )

    def client(self) -> Any:
        """The connected client (checked once per connection); ComputeUnavailable naming the problem."""
        from distributed import Client

        with self._lock:
            if self._client is not None and self._client.status == "running":
                return self._client
            self.close_client()
            if self._down is not None and time.monotonic() < self._down[0]:
                raise ComputeUnavailable(self._down[1])
            address = self.settings.scheduler
            try:
                client = Client(
                    address,
                    security=self._security(),
                    timeout=f"{self.settings.connect_timeout_s}s",
                    set_as_default=False,
                )
            except (OSError, TimeoutError) as exc:
                self._down = (time.monotonic() + QUIET_S, f"Dask scheduler {address}: cannot connect: {exc}")
                raise ComputeUnavailable(self._down[1]) from None
            try:
                check_workers(client, self.paths.worker_root)
            except ComputeUnavailable as exc:
                client.close()
                self._down = (time.monotonic() + QUIET_S, str(exc))
                raise
            self._down = None
            self._client = client
            log.info("compute: connected to the Dask scheduler at %s", address)
            return client

    def close_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # a client whose scheduler is gone may fail to say goodbye
                log.debug("closing the Dask client", exc_info=True)
            self._client = None

    def run(self, label: str, function: Callable[..., T], *args: Any) -> T:
        from distributed import TimeoutError as DaskTimeout

        client = self.client()
        key = f"{label.replace(' ', '-')}-{uuid.uuid4().hex[:12]}"
        future = client.submit(
            function,
            *args,
            key=key,
            pure=False,
            retries=self.settings.retries,
            resources=self.settings.resources or None,
        )
        try:
            return cast(T, future.result(timeout=self.settings.task_timeout_s))
        except (DaskTimeout, TimeoutError):
            future.cancel()
            raise ComputeUnavailable(
                f"{label}: not done within compute.task_timeout_s ({self.settings.task_timeout_s:g} s)"
            ) from None
        except (OSError, _cancelled_error()) as exc:  # the scheduler went away with the task
            self.close_client()
            raise ComputeUnavailable(
                f"{label}: the Dask scheduler {self.settings.scheduler} was lost ({exc})"
            ) from None

    def close(self) -> None:
        with self._lock:
            self.close_client()


def _cancelled_error() -> type[BaseException]:
    from distributed.client import FutureCancelledError

    return FutureCancelledError


def check_workers(client: Any, storage_root: str) -> None:
    """Every worker has this node's versions of the libraries and sees the storage root; else one line naming
    the worker and the problem."""
    if not client.scheduler_info(n_workers=-1).get("workers"):
        raise ComputeUnavailable(f"Dask scheduler {client.scheduler.address}: no worker is connected")
    versions = client.get_versions(check=False, packages=["toros", "astropy", "sep", "astroalign"])
    mine = versions["client"]["packages"]
    for worker, info in versions["workers"].items():
        theirs = info["packages"]
        for package in ("python", "dask", "distributed", "numpy", "astropy", "sep", "astroalign", "toros"):
            if package in mine and theirs.get(package) != mine[package]:
                raise ComputeUnavailable(
                    f"Dask worker {worker}: {package} {theirs.get(package) or 'missing'} "
                    f"where this preprocessor has {mine[package]}"
                )
    client.run(_warm_up)
    seen = client.run(_storage_visible, storage_root)
    for worker, visible in sorted(seen.items()):
        if not visible:
            raise ComputeUnavailable(
                f"Dask worker {worker}: cannot see the storage root {storage_root} "
                "(mount it there, or set preprocessor.compute.storage_on_workers)"
            )


def _warm_up() -> None:
    """The tasks' libraries imported once per worker when the preprocessor connects (a second or two that
    the first frame would otherwise pay)."""
    import astroalign  # noqa: F401
    import sep  # noqa: F401

    import toros.preprocessor.tasks  # noqa: F401


def _storage_visible(root: str) -> bool:
    return os.path.isdir(root) and os.access(root, os.R_OK | os.W_OK)


class Compute:
    """The configured engine, with the fallback that keeps every frame: ``run`` calls a task there."""

    def __init__(self, settings: ComputeConfig, storage_root: Path) -> None:
        self.settings = settings
        self.paths = PathMap(storage_root, settings.storage_on_workers)
        self.dask = DaskEngine(settings, self.paths) if settings.engine is ComputeEngineName.DASK else None
        if self.dask is not None:
            warn_if_exposed(settings)

    @property
    def remote(self) -> bool:
        return self.dask is not None

    def parallelism(self) -> int:
        """How many tasks to keep in flight: the cluster's worker threads (1 here, as the night runs)."""
        if self.dask is None:
            return 1
        try:
            return max(1, int(sum(self.dask.client().nthreads().values())))
        except ComputeUnavailable:
            return 1

    def check(self) -> str | None:
        """At the daemon's start: the cluster's problem in one line, or None (local, or a cluster that is fine)."""
        if self.dask is None:
            return None
        try:
            self.dask.client()
        except ComputeUnavailable as exc:
            return str(exc)
        return None

    def run(self, task: Task[T], note: Callable[[str], None]) -> T:
        """A task here, or on the cluster; a cluster that cannot take it computes it here or is waited for, as
        ``compute.unreachable`` says, and ``note`` hears which."""
        if self.dask is None:
            return task.here()
        deadline = time.monotonic() + self.settings.wait_s
        while True:
            try:
                return task.back(self.dask.run(task.label, task.function, *task.args(self.paths)), self.paths)
            except ComputeUnavailable as exc:
                if self.settings.unreachable is WhenUnreachable.LOCAL:
                    log.warning("%s; computed locally", exc)
                    note(f"{exc}; computed locally")
                    return task.here()
                if time.monotonic() >= deadline:
                    raise ComputeUnavailable(f"{exc}; waited {self.settings.wait_s:g} s (compute.wait_s)") from None
                log.warning("%s; trying again in %g s", exc, RETRY_S)
                time.sleep(RETRY_S)

    def close(self) -> None:
        if self.dask is not None:
            self.dask.close()
