"""Hydra imports this module at every start of every app: it stays tiny and defers all work to runner.plugins."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class RunnerPluginsSearchPathPlugin(SearchPathPlugin):
    """Adds the conf/ of installed and ``user_dir=`` plug-ins to runner's commands (other Hydra apps: untouched)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Called once per config search path that Hydra builds (each command start, each ``compose`` setup)."""
        from runner.plugins import on_startup

        on_startup(search_path)
