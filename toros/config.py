"""The node's whole configuration: the runtime's sections (logging, database, storage, security, clock) and
one section per module, composed here, where the modules are known. See ``toros.runtime.config`` for how a
file is found, read and validated."""

from __future__ import annotations

import os

from toros.alert.settings import AlertConfig
from toros.floor.site import Site
from toros.preprocessor.settings import PreprocessorConfig
from toros.runtime.config import ConfigError, NodeConfig, find_config_file, load_model
from toros.telescope.settings import TelescopeConfig
from toros.web.settings import WebConfig

__all__ = ["Config", "ConfigError", "find_config_file", "load_config"]


class Config(NodeConfig):
    alert: AlertConfig = AlertConfig()
    telescope: TelescopeConfig = TelescopeConfig()
    preprocessor: PreprocessorConfig = PreprocessorConfig()
    web: WebConfig = WebConfig()

    @property
    def preprocessor_site(self) -> Site:
        """Where the preprocessor's frames are taken (its nights are that site's): its own ``site``, else the
        node's telescope's."""
        return self.preprocessor.site or self.telescope.site


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Loads and validates a node's config file; ``None`` gives the built-in defaults."""
    return load_model(path, Config)
