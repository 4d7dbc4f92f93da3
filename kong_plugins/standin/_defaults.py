"""A plugin's ``config`` filled from its dumped schema, as Kong fills it before StartInstance.

The filling itself is ``kong_plugins.schema.fill_defaults`` (an emulation of
``Schema:process_auto_fields`` in ``kong/db/schema/init.lua``: defaults deep-copied, unset fields
``null``, required records expanded). This module finds the ``config`` record inside a dump
(``{"name": ..., "fields": [{"config": {"type": "record", "fields": [...]}}]}``) and reports
required fields that are still missing, which Kong rejects when it loads the decK file.
"""

from __future__ import annotations

from typing import Any

from kong_plugins.errors import ConfigError
from kong_plugins.schema import fill_defaults


def _field_items(fields: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(fields, list):
        raise ConfigError(path, "schema 'fields' must be a list of {name: definition}")
    items: list[tuple[str, dict[str, Any]]] = []
    for entry in fields:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(path, f"malformed schema field entry {entry!r}")
        ((name, definition),) = entry.items()
        if not isinstance(definition, dict):
            raise ConfigError(f"{path}.{name}" if path else name, "field definition must be a table")
        items.append((str(name), definition))
    return items


def config_fields(plugin_schema: dict[str, Any]) -> list[Any]:
    """The ``fields`` of the ``config`` record of a dumped plugin schema (empty when absent)."""
    for name, definition in _field_items(plugin_schema.get("fields", []), ""):
        if name == "config":
            fields = definition.get("fields", [])
            return list(fields) if isinstance(fields, list) else []
    return []


def fill_plugin_config(plugin_schema: dict[str, Any], conf: dict[str, Any] | None) -> dict[str, Any]:
    """Fill a plugin instance's ``config`` from its plugin schema (``{"name":..., "fields":[...]}``)."""
    return fill_defaults(config_fields(plugin_schema), dict(conf or {}))


def required_missing(plugin_schema: dict[str, Any], conf: dict[str, Any]) -> list[str]:
    """Top-level required config fields still missing after filling (Kong rejects the file)."""
    missing: list[str] = []
    for name, definition in _field_items(config_fields(plugin_schema), "config"):
        if definition.get("required") and conf.get(name) is None:
            missing.append(name)
    return missing
