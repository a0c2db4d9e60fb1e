"""The three daemons: which module class each role runs, and how ``toros serve`` starts one."""

from __future__ import annotations

import logging
from collections.abc import Callable

from toros.config import Config
from toros.runtime.logs import setup_logging
from toros.runtime.module import Module, Services
from toros.runtime.server import Daemon


def module_factory(name: str, config: Config) -> Callable[[Services], Module]:
    """How a role's module is made: the runtime's services, and its own section of the node's config (with what
    it borrows from another's, resolved here: the preprocessor's site and galaxy catalog)."""
    if name == "alert":
        from toros.alert.module import AlertModule

        return lambda services: AlertModule(services, config.alert)
    if name == "telescope":
        from toros.telescope.module import TelescopeModule

        return lambda services: TelescopeModule(services, config.telescope)
    if name == "preprocessor":
        from toros.preprocessor.module import PreprocessorModule

        catalog = config.preprocessor.discovery.galaxy_catalog or config.alert.catalog
        return lambda services: PreprocessorModule(
            services, config.preprocessor, site=config.preprocessor_site, galaxy_catalog=catalog
        )
    raise ValueError(f"unknown module {name!r}: alert, telescope or preprocessor")


def build_daemon(name: str, config: Config) -> Daemon:
    return Daemon(config, module_factory(name, config), name)


def serve(name: str, config: Config) -> None:
    """Runs one daemon in the foreground until SIGTERM/SIGINT."""
    setup_logging(config.logging, name)
    logging.getLogger("toros").info("config %s", config.source or "(built-in defaults)")
    daemon = build_daemon(name, config)
    daemon.start()
    daemon.serve_until_signal()
