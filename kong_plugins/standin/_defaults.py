"""Default filling of a plugin's ``config`` from its (dumped) schema, as Kong does it.

Kong's ``kong/db/schema/init.lua`` (``handle_missing_field`` / ``process_auto_fields``):

- a missing field with a ``default`` gets a deep copy of it;
- a missing field without a default that is ``required`` stays missing (validation fails later);
- any other missing field becomes ``ngx.null``, i.e. JSON ``null`` in the Config Kong sends to
  StartInstance ("unset fields arrive as null");
- records are filled recursively (a missing, non-nullable record is filled from ``{}``), and so are
  records inside arrays, sets and map values.

Schemas here are Kong's dump format: ``fields`` is a list of one-key dicts ``{name: definition}``.
"""

from __future__ import annotations

import copy
from typing import Any

from kong_plugins.errors import ConfigError


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


def _fill_value(definition: dict[str, Any], value: Any, path: str) -> Any:
    kind = definition.get("type")
    if value is None:
        if "default" in definition:
            value = copy.deepcopy(definition["default"])
        elif kind == "record" and not definition.get("nullable", False):
            value = {}
        else:
            return None
    if kind == "record" and isinstance(value, dict):
        return fill_record(definition.get("fields", []), value, path)
    if kind in ("array", "set") and isinstance(value, list):
        element = definition.get("elements") or {}
        if element.get("type") == "record":
            return [_fill_value(element, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if kind == "map" and isinstance(value, dict):
        values = definition.get("values") or {}
        if values.get("type") == "record":
            return {k: _fill_value(values, v, f"{path}.{k}") for k, v in value.items()}
    return value


def fill_record(fields: Any, conf: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Return a copy of ``conf`` with Kong's defaults filled in (unknown keys are kept)."""
    out = dict(conf)
    for name, definition in _field_items(fields, path):
        sub = f"{path}.{name}" if path else name
        present = name in conf and conf[name] is not None
        if (
            not present
            and definition.get("required")
            and "default" not in definition
            and definition.get("type") != "record"
        ):
            continue
        filled = _fill_value(definition, conf.get(name), sub)
        out[name] = filled
    return out


def config_fields(plugin_schema: dict[str, Any]) -> list[Any]:
    """The ``fields`` of the ``config`` record of a dumped plugin schema (empty when absent)."""
    for name, definition in _field_items(plugin_schema.get("fields", []), ""):
        if name == "config":
            fields = definition.get("fields", [])
            return list(fields) if isinstance(fields, list) else []
    return []


def fill_plugin_config(plugin_schema: dict[str, Any], conf: dict[str, Any] | None) -> dict[str, Any]:
    """Fill a plugin instance's ``config`` from its plugin schema (``{"name":..., "fields":[...]}``)."""
    return fill_record(config_fields(plugin_schema), dict(conf or {}))


def required_missing(plugin_schema: dict[str, Any], conf: dict[str, Any]) -> list[str]:
    """Top-level required config fields still missing after filling (Kong rejects the file)."""
    missing: list[str] = []
    for name, definition in _field_items(config_fields(plugin_schema), "config"):
        if definition.get("required") and conf.get(name) is None:
            missing.append(name)
    return missing
