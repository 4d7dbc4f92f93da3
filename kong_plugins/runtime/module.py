"""Loading a plugin module written for kong-pdk and describing it the way Kong's query_cmd expects.

The contract is kong-pdk's (``kong_pdk/module.py``): a module-level ``Plugin`` class with one method
per phase, ``Schema`` (the list of config fields), ``version`` and ``priority``. Suite plugins add
``NAME`` and may set ``failure_mode`` ("open" or "closed") on the module or on each instance.

Two deliberate differences from kong-pdk:

* a phase method whose body is empty (``pass`` or a docstring) is not registered: kong-pdk registers
  every attribute named like a phase, so an inherited no-op ``response`` switches every route of the
  plugin to buffered proxying (Kong's ``response`` phase buffers the upstream body);
* the dump is produced without starting a server (kong-pdk 0.36's ``--dump-plugin-info`` crashes).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

#: Phases Kong 3.9 can call on an external plugin (``kong/runloop/plugin_servers/init.lua``).
KONG_PHASES: tuple[str, ...] = ("certificate", "rewrite", "access", "response", "preread", "log")

FailureMode = Literal["open", "closed"]


class PluginLoadError(Exception):
    """The plugin module cannot be imported or does not follow the kong-pdk module contract."""


def _noop_code_signature(func: Callable[..., Any]) -> bytes:
    return func.__code__.co_code


def _empty(self: Any, kong: Any) -> None:
    pass


def _empty_with_doc(self: Any, kong: Any) -> None:
    """Doc."""


_EMPTY_BODIES = {_noop_code_signature(_empty), _noop_code_signature(_empty_with_doc)}


def _is_empty_function(value: Any) -> bool:
    func = getattr(value, "__func__", value)
    code = getattr(func, "__code__", None)
    return code is not None and code.co_code in _EMPTY_BODIES


@dataclass(frozen=True)
class PluginModule:
    """A loaded plugin module: everything the server needs, resolved once."""

    name: str
    plugin_class: type[Any]
    schema: list[Any]
    version: str | None
    priority: int
    phases: tuple[str, ...]
    failure_mode: FailureMode = "open"
    source: str = ""
    load_time: float = 0.0
    mtime: float = 0.0
    skipped_phases: tuple[str, ...] = field(default=())

    def info(self) -> dict[str, Any]:
        """The plugin description Kong reads from ``query_cmd`` (one entry of the dumped list)."""
        return {
            "Name": self.name,
            "Phases": list(self.phases),
            "Priority": self.priority,
            "Version": self.version,
            "Schema": {
                "name": self.name,
                "fields": [{"config": {"type": "record", "fields": self.schema}}],
            },
        }


def _import_from_path(path: Path) -> types.ModuleType:
    module_name = f"kong_plugin_{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def resolve_module(target: str) -> tuple[types.ModuleType, str]:
    """Import PLUGIN as given on the command line; returns the module and its default plugin name.

    ``target`` is one of the suite's plugin names (``ai-tier-quota``), an importable module
    (``my_company.plugins.hello``) or a path to a ``.py`` file.
    """
    from kong_plugins import SUITE_PLUGINS

    if target in SUITE_PLUGINS:
        return _import(SUITE_PLUGINS[target], target), target
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise PluginLoadError(f"plugin file not found: {target}")
        try:
            return _import_from_path(path.resolve()), path.stem
        except PluginLoadError:
            raise
        except Exception as exc:
            raise PluginLoadError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
    if not _is_module_name(target):
        known = ", ".join(sorted(SUITE_PLUGINS))
        raise PluginLoadError(f"cannot load plugin {target!r}: not a suite plugin ({known}), "
                              "not a .py file, not a module name")
    return _import(target, target), target.rsplit(".", 1)[-1]


def _is_module_name(target: str) -> bool:
    return all(part.isidentifier() for part in target.split("."))


def _import(module_name: str, target: str) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # a plugin's import may fail in any way; report it, don't crash
        raise PluginLoadError(f"importing {module_name} for {target!r} failed: "
                              f"{type(exc).__name__}: {exc}") from exc


def load_plugin_module(target: str, name: str | None = None) -> PluginModule:
    """Load and validate a plugin module; ``name`` overrides the plugin name Kong will see."""
    import time

    module, default_name = resolve_module(target)
    plugin_class = getattr(module, "Plugin", None)
    if not isinstance(plugin_class, type):
        raise PluginLoadError(f"{target}: the module has no Plugin class")
    plugin_name = name or getattr(module, "NAME", None) or default_name
    phases: list[str] = []
    skipped: list[str] = []
    for phase in KONG_PHASES:
        method = getattr(plugin_class, phase, None)
        if method is None:
            continue
        if not callable(method):
            raise PluginLoadError(f"{target}: Plugin.{phase} is not callable")
        if _is_empty_function(method):
            skipped.append(phase)
            continue
        phases.append(phase)
    schema = getattr(module, "Schema", [])
    if not isinstance(schema, list | tuple):
        raise PluginLoadError(f"{target}: Schema must be a list of fields, got {type(schema).__name__}")
    failure_mode: FailureMode = getattr(module, "failure_mode", "open")
    if failure_mode not in ("open", "closed"):
        raise PluginLoadError(f"{target}: failure_mode must be 'open' or 'closed', got {failure_mode!r}")
    source = getattr(module, "__file__", None) or target
    try:
        mtime = Path(source).stat().st_mtime
    except OSError:
        mtime = 0.0
    priority = getattr(module, "priority", 0)
    if not isinstance(priority, int):
        raise PluginLoadError(f"{target}: priority must be an integer, got {priority!r}")
    version = getattr(module, "version", None)
    return PluginModule(
        name=str(plugin_name),
        plugin_class=plugin_class,
        schema=list(schema),
        version=None if version is None else str(version),
        priority=priority,
        phases=tuple(phases),
        failure_mode=failure_mode,
        source=str(source),
        load_time=time.time(),
        mtime=mtime,
        skipped_phases=tuple(skipped),
    )


__all__ = ["KONG_PHASES", "FailureMode", "PluginLoadError", "PluginModule", "load_plugin_module"]
