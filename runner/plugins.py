"""Plug-ins: ordinary Python packages that add tasks, models and criteria, each with its own ``conf/`` folder.

A plug-in joins a run in one of two ways (fairseq's ``--user-dir``, without a registry):

- **installed**: its distribution declares an entry point in the group ``runner.plugins`` whose value is the
  package's import name (``captioning = "captioning"``);
- **named at launch**: ``user_dir=PATH`` (or a list ``user_dir=[A,B]``, or ``$RUNNER_USER_DIR`` with
  ``os.pathsep``-separated folders), where PATH is the package folder; its parent folder goes on ``sys.path``.

Either way, ``PACKAGE/conf`` is appended to the config search path of runner's commands (by
``hydra_plugins/runner_plugins``), so ``task=captioning`` is a choice like a built-in one and ``--help`` lists it, and
the schemas in ``PACKAGE/config.py`` (``SCHEMAS``, shaped like ``runner.config.SCHEMAS``) are registered under
``schema/GROUP/NAME`` for the plug-in's YAML to extend. Before anything is instantiated, every ``_target_`` of the
composed config is imported by :func:`locate`: an error inside a plug-in surfaces as a :class:`PluginError` quoting the
plug-in's file, line and the original exception, instead of a missing choice or Hydra's "Error locating target".
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf

ENTRY_POINT_GROUP = "runner.plugins"
USER_DIR_ENV = "RUNNER_USER_DIR"
USER_DIR_KEY = "user_dir"


class PluginError(RuntimeError):
    """A plug-in that cannot be found or imported; the message names the folder, file and line at fault."""


@dataclass(frozen=True)
class Plugin:
    """One plug-in package: its import name, its folder and how it was found (for messages)."""

    name: str
    path: Path
    origin: str

    @property
    def conf_dir(self) -> Path:
        return self.path / "conf"


_active: dict[str, Plugin] = {}  # activated in this process, by package name (for error messages)


# ------------------------------------------------------------------------------------------------- discovery
def as_dir_list(value: Any) -> list[str]:
    """``user_dir`` as a list of folders: None, one path, a list, or an ``os.pathsep``-joined string."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, ListConfig)):
        return [str(v) for v in value if v not in (None, "")]
    return [p for p in str(value).split(os.pathsep) if p]


def user_dirs_from_overrides(overrides: Sequence[str]) -> list[str]:
    """The folders a ``user_dir=``/``+user_dir=``/``++user_dir=`` command-line override names (the last one wins)."""
    candidates = [o for o in overrides if o.lstrip("+").startswith(f"{USER_DIR_KEY}=")]
    if not candidates:
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    dirs: list[str] = []
    for override in OverridesParser.create().parse_overrides(candidates):
        if override.is_sweep_override():
            raise PluginError(f"{override.input_line}: user_dir cannot be swept; give one folder or a list [A,B]")
        dirs = as_dir_list(override.value())
    return dirs


def from_user_dir(folder: str | Path, origin: str = USER_DIR_KEY) -> Plugin:
    """The plug-in package at ``folder``, checked to be an importable package."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise PluginError(f"{origin}={folder}: no such folder (looked in {path})")
    if not (path / "__init__.py").is_file():
        raise PluginError(f"{origin}={folder}: {path} is not a Python package (it has no __init__.py)")
    if not path.name.isidentifier():
        raise PluginError(f"{origin}={folder}: the folder name {path.name!r} is not a valid Python package name")
    return Plugin(path.name, path, f"{origin}={folder}")


def installed() -> list[Plugin]:
    """Plug-ins of installed distributions (entry point group ``runner.plugins``), located without importing them."""
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", "?")
        origin = f"entry point {ep.name!r} of {dist}"
        name = ep.value.split(":")[0].strip()
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError) as e:
            raise PluginError(f"{origin}: cannot find package {name!r} ({e})") from None
        if spec is None or not spec.submodule_search_locations:
            raise PluginError(f"{origin}: {name!r} is not an importable package")
        found.append(Plugin(name, Path(list(spec.submodule_search_locations)[0]), origin))
    return found


def discover(user_dirs: Iterable[str] = ()) -> list[Plugin]:
    """Plug-ins from ``user_dirs``, then ``$RUNNER_USER_DIR``, then installed ones; the first of a name wins."""
    env = as_dir_list(os.environ.get(USER_DIR_ENV))
    candidates = [from_user_dir(d) for d in user_dirs]
    candidates += [from_user_dir(d, f"${USER_DIR_ENV}") for d in env]
    candidates += installed()
    chosen: dict[str, Plugin] = {}
    for p in candidates:
        chosen.setdefault(p.name, p)
    return list(chosen.values())


# ------------------------------------------------------------------------------------------------ activation
def put_on_path(plugin: Plugin) -> None:
    """Make the plug-in package importable under its folder name, refusing a name that another module owns."""
    parent = str(plugin.path.parent)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(plugin.name)
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if origin is None or origin.parent != plugin.path:
        raise PluginError(
            f"plug-in {plugin.path} ({plugin.origin}): the name {plugin.name!r} is already taken by "
            f"{origin or 'a built-in module'}; rename the plug-in folder"
        )


def register_schemas(plugin: Plugin) -> None:
    """Store the dataclasses of ``PACKAGE/config.py`` (``SCHEMAS``) in Hydra's ConfigStore as ``schema/GROUP/NAME``."""
    if not (plugin.path / "config.py").is_file():
        return
    from hydra.core.config_store import ConfigStore

    from runner.config import SCHEMAS as BUILT_IN

    module = import_module(f"{plugin.name}.config", plugin)
    schemas = getattr(module, "SCHEMAS", None)
    if not isinstance(schemas, dict):
        raise PluginError(f"{module.__file__}: defines no SCHEMAS dict ({{group: {{name: dataclass}}}})")
    cs = ConfigStore.instance()
    for group, nodes in schemas.items():
        for name, node in nodes.items():
            if name in BUILT_IN.get(group, {}):
                raise PluginError(f"{module.__file__}: schema {group}/{name} clashes with a built-in one; rename it")
            cs.store(group=f"schema/{group}", name=name, node=node)


def activate(plugins: Iterable[Plugin], schemas: bool = True) -> list[Plugin]:
    """Make ``plugins`` importable and (with ``schemas``) register their config schemas."""
    plugins = list(plugins)
    for p in plugins:
        put_on_path(p)
        _active[p.name] = p
        if schemas:
            register_schemas(p)
    return plugins


def extend_search_path(search_path: Any, argv: Optional[Sequence[str]] = None) -> list[Plugin]:
    """Append every plug-in's conf/ to ``search_path``: called by Hydra (through our SearchPathPlugin) at start-up.

    Only runner's own commands are extended (their primary config folder is runner's conf/), so that other Hydra
    applications in the same environment are left alone.
    """
    from runner.config import CONF_DIR

    main = [e.path for e in search_path.get_path() if e.provider == "main"]
    if not main or Path(str(main[0]).removeprefix("file://")).resolve() != CONF_DIR.resolve():
        return []
    plugins = activate(discover(user_dirs_from_overrides(sys.argv[1:] if argv is None else argv)))
    for p in plugins:
        if p.conf_dir.is_dir():
            search_path.append(provider=f"runner-plugin:{p.name}", path=f"file://{p.conf_dir}")
    return plugins


def on_startup(search_path: Any) -> None:
    """What the SearchPathPlugin runs: :func:`extend_search_path`, with a broken plug-in reported like Hydra's own
    errors when a command is starting (a message and exit status 1; ``HYDRA_FULL_ERROR=1`` shows the traceback)."""
    try:
        extend_search_path(search_path)
    except PluginError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or not _starting_a_command():
            raise  # the compose API (tests, notebooks) gets the exception
        sys.stderr.write(f"Error in a runner plug-in: {e}\n")
        sys.exit(1)


def _starting_a_command() -> bool:
    """True when called while ``@hydra.main`` sets up a command (Hydra prints tracebacks of errors at this stage)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_run_hydra" and "hydra" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def plugin_dir(name: str) -> str:
    """The folder of the plug-in package ``name`` (the ``${plugin_dir:NAME}`` resolver, e.g. for bundled data)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise PluginError(f"${{plugin_dir:{name}}}: no plug-in package {name!r} on the path")
    return str(Path(list(spec.submodule_search_locations)[0]).resolve())


if not OmegaConf.has_resolver("plugin_dir"):
    OmegaConf.register_new_resolver("plugin_dir", plugin_dir)


# ----------------------------------------------------------------------------------------- clear import errors
def describe_failure(module: str, error: BaseException, plugin: Optional[Plugin] = None) -> str:
    """The error that stopped ``module`` importing, with the frames of the plug-in's own files (file and line)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename != __file__]
    root = f"{plugin.path}{os.sep}" if plugin else None
    own = [f for f in frames if root and f.filename.startswith(root)]
    if not own:  # unknown package: everything but the import machinery
        own = [f for f in frames if "importlib" not in f.filename]
    where = "".join(traceback.format_list(own))
    what = "".join(traceback.format_exception_only(type(error), error))
    source = ""
    if plugin is not None:
        source = f" (plug-in {plugin.path}, {plugin.origin})" if plugin.name in _active else f" (from {plugin.path})"
    return f"importing {module}{source} failed:\n{where}{what}".rstrip()


def import_module(name: str, plugin: Optional[Plugin] = None) -> Any:
    """``importlib.import_module`` whose failures become a PluginError naming the file and line that raised."""
    try:
        return importlib.import_module(name)
    except Exception as e:
        raise PluginError(describe_failure(name, e, plugin)) from e


def owner(module: str) -> Optional[Plugin]:
    """The plug-in that ``module`` belongs to, when it is one of the discovered plug-ins' packages."""
    top = module.split(".")[0]
    if top in _active:
        return _active[top]
    spec = importlib.util.find_spec(top) if top not in sys.modules else sys.modules[top].__spec__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Plugin(top, Path(list(spec.submodule_search_locations)[0]).resolve(), "on sys.path")


def locate(target: str) -> Any:
    """The object a dotted ``_target_`` names, importing its module; a failure raises PluginError saying why."""
    parts = target.split(".")
    obj: Any = None
    found = 0
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        if name not in sys.modules:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError):  # the parent is a module, not a package: the rest are attributes
                spec = None
            if spec is None:
                break
        obj = import_module(name, owner(name))
        found = i
    if found == 0:
        raise PluginError(
            f"_target_ {target!r}: there is no module {parts[0]!r}. If it is a plug-in, install it (entry point "
            f"group {ENTRY_POINT_GROUP!r}) or name its folder with user_dir=PATH"
        )
    for depth, attr in enumerate(parts[found:], start=found):
        if not hasattr(obj, attr):
            where = getattr(obj, "__file__", None) or ".".join(parts[:depth])
            raise PluginError(f"_target_ {target!r}: {'.'.join(parts[:depth])} ({where}) has no attribute {attr!r}")
        obj = getattr(obj, attr)
    return obj


def targets(cfg: Any) -> list[str]:
    """Every ``_target_`` string in a config, in order."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            t = node.get("_target_")
            if isinstance(t, str):
                found.append(t)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, (DictConfig, ListConfig)) else cfg)
    return found


def load_plugins(cfg: Any, user_dir: Any = None, keys: Optional[Sequence[str]] = None) -> list[Plugin]:
    """Before building anything: put the config's plug-ins on sys.path and import every ``_target_`` it names.

    ``user_dir`` (else the config's own ``user_dir``) names plug-in folders; needed where the start-up search path
    plug-in did not run in this process (a Slurm job, or generate reading a checkpoint's config). ``keys`` limits the
    check to those top-level sections (generate builds only the task's and model's targets).
    """
    dirs = as_dir_list(user_dir if user_dir else _get(cfg, USER_DIR_KEY))
    plugins = activate(discover(dirs), schemas=False)
    sections = [cfg] if keys is None else [_get(cfg, k) for k in keys]
    for target in (t for section in sections if section is not None for t in targets(section)):
        locate(target)
    return plugins


def _get(cfg: Any, key: str) -> Any:
    if isinstance(cfg, DictConfig):
        return cfg.get(key)
    return cfg.get(key) if isinstance(cfg, dict) else getattr(cfg, key, None)
