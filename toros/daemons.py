"""The three daemons: which module class each role runs, and how ``toros serve`` starts one."""

from __future__ import annotations

import logging

from toros.config import Config
from toros.runtime.logs import setup_logging
from toros.runtime.module import Module
from toros.runtime.server import Daemon


def module_class(name: str) -> type[Module]:
    if name == "alert":
        from toros.alert.module import AlertModule

        return AlertModule
    if name == "telescope":
        from toros.telescope.module import TelescopeModule

        return TelescopeModule
    if name == "preprocessor":
        from toros.preprocessor.module import PreprocessorModule

        return PreprocessorModule
    raise ValueError(f"unknown module {name!r}: alert, telescope or preprocessor")


def build_daemon(name: str, config: Config) -> Daemon:
    return Daemon(config, module_class(name), name)


def serve(name: str, config: Config) -> None:
    """Runs one daemon in the foreground until SIGTERM/SIGINT."""
    setup_logging(config.logging, name)
    logging.getLogger("toros").info("config %s", config.source or "(built-in defaults)")
    daemon = build_daemon(name, config)
    daemon.start()
    daemon.serve_until_signal()
