"""Logging for a daemon: a rotated file (shared safely by the daemons of a node) and stderr, every line
naming the module and the work order."""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from concurrent_log_handler import ConcurrentRotatingFileHandler

from toros.runtime.config import ConfigError, LoggingConfig

current_work_order: contextvars.ContextVar[str] = contextvars.ContextVar("current_work_order", default="-")

FORMAT = "%(asctime)s %(levelname)-7s %(toros_module)s [%(work_order)s] %(name)s: %(message)s"


class _ContextFilter(logging.Filter):
    def __init__(self, module: str) -> None:
        super().__init__()
        self.module = module

    def filter(self, record: logging.LogRecord) -> bool:
        record.toros_module = self.module
        if not hasattr(record, "work_order"):
            record.work_order = current_work_order.get()
        return True


@contextmanager
def work_order_context(work_order_id: str) -> Iterator[None]:
    """Log lines written inside this block name ``work_order_id``."""
    token = current_work_order.set(work_order_id or "-")
    try:
        yield
    finally:
        current_work_order.reset(token)


def setup_logging(config: LoggingConfig, module: str, *, stderr: bool = True) -> None:
    """Sends the ``toros`` loggers to the configured rotated file and, by default, to stderr."""
    handlers: list[logging.Handler] = []
    if config.file is not None:
        try:
            config.file.parent.mkdir(parents=True, exist_ok=True)
            # The daemons of a node share one log file: rotation takes a file lock, so that two processes
            # never rotate at once.
            handlers.append(
                ConcurrentRotatingFileHandler(
                    config.file, maxBytes=config.max_bytes, backupCount=config.backup_count, encoding="utf-8"
                )
            )
        except OSError as exc:
            raise ConfigError(f"logging.file: cannot write {config.file}: {exc.strerror}") from None
    if stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    context = _ContextFilter(module)
    formatter = logging.Formatter(FORMAT)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        handler.addFilter(context)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("toros").setLevel(config.level)
