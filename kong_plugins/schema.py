"""Declarative plugin schemas: one definition, two outputs.

A plugin declares its configuration once::

    from kong_plugins import schema as s

    SCHEMA = s.Record([
        s.Field("default_tier", s.String(default="free", description="Tier of anonymous callers.")),
        s.Field("limits", s.Array(s.Record([...]), default=[], description="...")),
    ])

and gets

- ``SCHEMA.kong_fields()``: the kong-pdk ``Schema`` list that Kong's MetaSchema must accept when the
  plugin server is queried (``kong/db/schema/metaschema.lua``; Kong refuses to start otherwise);
- ``SCHEMA.validate(config)``: the config Kong sends at StartInstance, checked and normalised, with
  defaults applied and Kong's own keys (``__plugin_id``, ``__seq__``, ``__key__``) dropped; the first
  problem raises :class:`kong_plugins.errors.ConfigError` naming the field (``limits[0].per_minute``).

Two helpers serve the tests of every plugin and the Kong stand-in:

- :func:`check_metaschema` checks a dumped plugin schema against the MetaSchema rules;
- :func:`fill_defaults` fills a config from a dumped field list the way Kong's
  ``Schema:process_auto_fields`` / ``handle_missing_field`` do (``kong/db/schema/init.lua``).

Kong semantics reproduced on purpose (read from ``kong/db/schema/init.lua``, 3.9 line):

- ``match`` is a **Lua pattern** searched anywhere in the value (``value:match(pattern)``), not a
  regex; it is translated once to an equivalent Python regex (:func:`lua_pattern_to_regex`) so that
  Kong and the plugin accept exactly the same strings.
- A string field rejects ``""`` unless ``len_min=0`` (Kong's default ``len_min`` of 1 for strings).
- An integer is any whole number (``5.0`` is accepted as ``5``); booleans are never numbers.
- Sets drop duplicates and keep the first occurrence's order (``make_set``).

One deliberate leniency: ``validate`` treats an explicit ``null`` like an absent field and applies the
default, because Kong sends every unset field as ``null`` and a plugin should not care which.
Error messages never echo the offending value: config may hold secrets.
"""

from __future__ import annotations

import copy
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from kong_plugins.errors import ConfigError

#: Keys Kong adds to every plugin config it sends to a plugin server (kong/runloop/plugin_servers).
KONG_RESERVED_PREFIX: Final = "__"
#: Keys Kong adds to a scoped plugin's config (``kong/runloop/plugins_iterator.lua``).
KONG_SCOPE_KEYS: Final = frozenset({"route_id", "service_id", "consumer_id", "plugin_instance_name"})

DESCRIPTION_MIN: Final = 10
DESCRIPTION_MAX: Final = 500

#: Field types Kong's schema library knows (``Schema.valid_types`` in kong/db/schema/init.lua, 3.9).
KONG_VALID_TYPES: Final = frozenset(
    {"array", "set", "string", "number", "boolean", "integer", "foreign", "map", "record", "function", "json"}
)

#: Every attribute a field definition may carry (``field_schema`` + ``validators`` in metaschema.lua).
KONG_FIELD_ATTRIBUTES: Final = frozenset(
    {
        "type", "required", "reference", "description", "examples", "auto", "unique", "unique_across_ws",
        "on_delete", "default", "abstract", "generate_admin_api", "immutable", "err", "encrypted",
        "referenceable", "json_schema",
        "between", "eq", "ne", "gt", "len_eq", "len_min", "len_max", "match", "not_match", "match_all",
        "match_none", "match_any", "starts_with", "one_of", "not_one_of", "contains", "is_regex",
        "timestamp", "uuid", "custom_validator", "mutually_exclusive_subsets",
        "elements", "keys", "values", "fields", "entity_checks", "shorthand_fields",
    }
)

#: Attributes restricted to some field types (``attribute_types`` in metaschema.lua).
KONG_ATTRIBUTE_TYPES: Final[Mapping[str, frozenset[str]]] = {
    "between": frozenset({"integer", "number"}),
    "len_eq": frozenset({"array", "set", "string", "map"}),
    "match": frozenset({"string"}),
    "one_of": frozenset({"string", "number", "integer"}),
    "contains": frozenset({"array", "set"}),
    "is_regex": frozenset({"string"}),
    "timestamp": frozenset({"number", "integer"}),
    "uuid": frozenset({"string"}),
    "unique": frozenset({"string", "number", "integer", "foreign"}),
    "unique_across_ws": frozenset({"string", "number", "integer", "foreign"}),
    "abstract": frozenset({"string", "number", "integer", "record", "array", "set", "map"}),
    "json_schema": frozenset({"json"}),
}

#: Attributes a type must declare (``required_attributes`` in metaschema.lua).
KONG_REQUIRED_ATTRIBUTES: Final[Mapping[str, tuple[str, ...]]] = {
    "array": ("elements",),
    "set": ("elements",),
    "map": ("keys", "values"),
    "record": ("fields",),
    "json": ("json_schema",),
}


# --------------------------------------------------------------------------------------------------
# Lua patterns


_LUA_CLASSES: Final[Mapping[str, str]] = {
    "a": "A-Za-z",
    "c": "\\x00-\\x1f\\x7f",
    "d": "0-9",
    "g": "\\x21-\\x7e",
    "l": "a-z",
    "p": "".join("\\" + ch for ch in string.punctuation),
    "s": " \\t\\n\\r\\f\\v",
    "u": "A-Z",
    "w": "A-Za-z0-9",
    "x": "0-9A-Fa-f",
}


def _class_escape(ch: str) -> str:
    return "\\" + ch if ch in "\\]^-[" else ch


def lua_pattern_to_regex(pattern: str) -> str:
    """Translate a Lua 5.1 pattern (what Kong's ``match`` attribute holds) into a Python regex.

    Supported: character classes ``%a %c %d %g %l %p %s %u %w %x`` and their complements, ``%``
    escapes, ``.``, sets ``[...]`` / ``[^...]`` with ranges and classes, the quantifiers ``* + - ?``,
    captures and the ``^`` / ``$`` anchors. Refused with ``ValueError``: ``%b``, ``%f``,
    back-references and complemented classes inside a set, which Kong schemas do not use and Python's
    ``re`` cannot express one-to-one. The regex must be compiled with ``re.DOTALL`` (Lua's ``.``
    matches a newline) and applied with ``search`` (``string.match`` is unanchored).
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    if pattern.startswith("^"):
        out.append("^")
        i = 1
    while i < n:
        ch = pattern[i]
        if ch == "$" and i == n - 1:
            out.append(r"\Z")
            i += 1
            continue
        if ch in "()":
            out.append(ch)
            i += 1
            continue
        atom, i = _lua_single(pattern, i)
        if i < n and pattern[i] in "*+-?":
            atom += {"*": "*", "+": "+", "-": "*?", "?": "?"}[pattern[i]]
            i += 1
        out.append(atom)
    return "".join(out)


def _lua_single(pattern: str, i: int) -> tuple[str, int]:
    """One Lua single-character class starting at ``pattern[i]`` -> (regex atom, next index)."""
    ch = pattern[i]
    if ch == ".":
        return ".", i + 1
    if ch == "%":
        if i + 1 >= len(pattern):
            raise ValueError("malformed Lua pattern: ends with '%'")
        cls = pattern[i + 1]
        if cls.lower() in _LUA_CLASSES:
            body = _LUA_CLASSES[cls.lower()]
            return ("[^" if cls.isupper() else "[") + body + "]", i + 2
        if cls in "bf" or cls.isdigit():
            raise ValueError(f"Lua pattern item '%{cls}' is not supported")
        if cls.isalnum():
            # Lua 5.1 treats an unknown alphanumeric class as the letter itself.
            return re.escape(cls), i + 2
        return re.escape(cls), i + 2
    if ch == "[":
        return _lua_set(pattern, i)
    return re.escape(ch), i + 1


def _lua_set(pattern: str, i: int) -> tuple[str, int]:
    n = len(pattern)
    j = i + 1
    negate = j < n and pattern[j] == "^"
    if negate:
        j += 1
    parts: list[str] = []
    first = True
    while True:
        if j >= n:
            raise ValueError("malformed Lua pattern: missing ']'")
        ch = pattern[j]
        if ch == "]" and not first:
            j += 1
            break
        first = False
        if ch == "%":
            if j + 1 >= n:
                raise ValueError("malformed Lua pattern: missing ']'")
            cls = pattern[j + 1]
            if cls.lower() in _LUA_CLASSES:
                if cls.isupper():
                    raise ValueError(f"Lua pattern class '%{cls}' inside a set is not supported")
                parts.append(_LUA_CLASSES[cls])
            else:
                parts.append(_class_escape(cls))
            j += 2
        elif j + 2 < n and pattern[j + 1] == "-" and pattern[j + 2] != "]":
            lo, hi = ch, pattern[j + 2]
            # Lua accepts an empty range silently; Python rejects it, so drop it (it matches nothing).
            if lo <= hi:
                parts.append(_class_escape(lo) + "-" + _class_escape(hi))
            j += 3
        else:
            parts.append(_class_escape(ch))
            j += 1
    body = "".join(parts)
    if not body:
        return ("(?s:.)" if negate else "(?!)"), j
    return ("[^" if negate else "[") + body + "]", j


def compile_lua_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a Lua pattern for ``search`` with Lua's semantics; ``ValueError`` if unsupported."""
    try:
        return re.compile(lua_pattern_to_regex(pattern), re.DOTALL)
    except re.error as exc:
        raise ValueError(f"invalid Lua pattern: {exc}") from exc


# --------------------------------------------------------------------------------------------------
# Field types

_NO_DEFAULT: Final[Any] = None


def _check_description(description: str | None) -> None:
    if description is not None and not DESCRIPTION_MIN <= len(description) <= DESCRIPTION_MAX:
        raise ValueError(
            f"a description must be {DESCRIPTION_MIN} to {DESCRIPTION_MAX} characters, got {len(description)}"
        )


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class FieldType:
    """Base of every field type: Kong type name, default, description and the common checks."""

    kong_type: ClassVar[str] = ""

    def __init__(self, *, default: Any = _NO_DEFAULT, description: str | None = None) -> None:
        _check_description(description)
        self.description = description
        self.default = default

    def _finish(self) -> None:
        """Check the default against the type itself, like the MetaSchema's ``default = {type="self"}``."""
        if self.default is not None:
            try:
                self.coerce(copy.deepcopy(self.default), "default")
            except ConfigError as exc:
                raise ValueError(f"default does not satisfy its own field type: {exc}") from exc

    def _attributes(self) -> dict[str, Any]:
        return {}

    def to_kong(self) -> dict[str, Any]:
        """This type as a Kong field definition (the value side of ``{name: definition}``)."""
        spec: dict[str, Any] = {"type": self.kong_type}
        spec.update(self._attributes())
        if self.default is not None:
            spec["default"] = copy.deepcopy(self.default)
        if self.description is not None:
            spec["description"] = self.description
        return spec

    def coerce(self, value: Any, path: str) -> Any:
        """Check a non-null value and return its normalised form; raise ConfigError(path, ...)."""
        raise NotImplementedError

    def default_value(self) -> Any:
        """The value an unset field takes, or None."""
        return copy.deepcopy(self.default) if self.default is not None else None

    def undescribed(self, path: str) -> list[str]:
        """Paths below this type whose fields lack a description."""
        return []


class _Scalar(FieldType):
    def __init__(
        self,
        *,
        default: Any = _NO_DEFAULT,
        description: str | None = None,
        one_of: Sequence[Any] | None = None,
    ) -> None:
        super().__init__(default=default, description=description)
        self.one_of = tuple(one_of) if one_of is not None else None
        if self.one_of is not None and not self.one_of:
            raise ValueError("one_of needs at least one option")

    def _check_one_of(self, value: Any, path: str) -> None:
        if self.one_of is not None and value not in self.one_of:
            raise ConfigError(path, "expected one of: " + ", ".join(str(o) for o in self.one_of))

    def _attributes(self) -> dict[str, Any]:
        return {"one_of": list(self.one_of)} if self.one_of is not None else {}


class String(_Scalar):
    """A string; ``match`` is a Lua pattern, as in Kong."""

    kong_type = "string"

    def __init__(
        self,
        *,
        default: str | None = None,
        description: str | None = None,
        one_of: Sequence[str] | None = None,
        match: str | None = None,
        len_min: int | None = None,
        len_max: int | None = None,
        len_eq: int | None = None,
    ) -> None:
        super().__init__(default=default, description=description, one_of=one_of)
        self.match = match
        self._regex = compile_lua_pattern(match) if match is not None else None
        self.len_min, self.len_max, self.len_eq = len_min, len_max, len_eq
        self._finish()

    def _attributes(self) -> dict[str, Any]:
        spec = super()._attributes()
        for name in ("match", "len_min", "len_max", "len_eq"):
            if getattr(self, name) is not None:
                spec[name] = getattr(self, name)
        return spec

    def coerce(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(path, "expected a string")
        self._check_one_of(value, path)
        _check_length(value, len(value), self.len_eq, 1 if self.len_min is None else self.len_min,
                      self.len_max, path)
        if self._regex is not None and self._regex.search(value) is None:
            raise ConfigError(path, f"invalid value: does not match the pattern '{self.match}'")
        return value


def _check_length(
    value: Any, length: int, len_eq: int | None, len_min: int | None, len_max: int | None, path: str
) -> None:
    del value
    if len_eq is not None and length != len_eq:
        raise ConfigError(path, f"length must be {len_eq}")
    if len_min is not None and length < len_min:
        raise ConfigError(path, f"length must be at least {len_min}")
    if len_max is not None and length > len_max:
        raise ConfigError(path, f"length must be at most {len_max}")


class _Numeric(_Scalar):
    def __init__(
        self,
        *,
        default: float | None = None,
        description: str | None = None,
        one_of: Sequence[float] | None = None,
        between: tuple[float, float] | None = None,
        gt: float | None = None,
    ) -> None:
        super().__init__(default=default, description=description, one_of=one_of)
        if between is not None and (len(between) != 2 or between[0] > between[1]):
            raise ValueError("between must be (low, high) with low <= high")
        self.between = between
        self.gt = gt

    def _attributes(self) -> dict[str, Any]:
        spec = super()._attributes()
        if self.between is not None:
            spec["between"] = list(self.between)
        if self.gt is not None:
            spec["gt"] = self.gt
        return spec

    def _check_bounds(self, value: float, path: str) -> None:
        self._check_one_of(value, path)
        if self.gt is not None and not value > self.gt:
            raise ConfigError(path, f"value must be greater than {_fmt(self.gt)}")
        if self.between is not None and not self.between[0] <= value <= self.between[1]:
            raise ConfigError(
                path, f"value should be between {_fmt(self.between[0])} and {_fmt(self.between[1])}"
            )


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


class Number(_Numeric):
    """A finite number (int or float in JSON); normalised to ``float``."""

    kong_type = "number"

    def __init__(
        self,
        *,
        default: float | None = None,
        description: str | None = None,
        one_of: Sequence[float] | None = None,
        between: tuple[float, float] | None = None,
        gt: float | None = None,
    ) -> None:
        super().__init__(default=default, description=description, one_of=one_of, between=between, gt=gt)
        self._finish()

    def coerce(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, "expected a number")
        number = float(value)
        if not math.isfinite(number):
            raise ConfigError(path, "expected a finite number")
        self._check_bounds(number, path)
        return number


class Integer(_Numeric):
    """A whole number; ``5.0`` is accepted as ``5`` (JSON and Lua do not tell them apart)."""

    kong_type = "integer"

    def __init__(
        self,
        *,
        default: int | None = None,
        description: str | None = None,
        one_of: Sequence[int] | None = None,
        between: tuple[int, int] | None = None,
        gt: float | None = None,
    ) -> None:
        super().__init__(default=default, description=description, one_of=one_of, between=between, gt=gt)
        self._finish()

    def coerce(self, value: Any, path: str) -> int:
        if isinstance(value, bool):
            raise ConfigError(path, "expected an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(path, "expected an integer")
            value = int(value)
        if not isinstance(value, int):
            raise ConfigError(path, "expected an integer")
        self._check_bounds(value, path)
        return value


class Boolean(FieldType):
    kong_type = "boolean"

    def __init__(self, *, default: bool | None = None, description: str | None = None) -> None:
        super().__init__(default=default, description=description)
        self._finish()

    def coerce(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(path, "expected a boolean")
        return value


class _Collection(FieldType):
    def __init__(
        self,
        *,
        default: Any = None,
        description: str | None = None,
        len_min: int | None = None,
        len_max: int | None = None,
        len_eq: int | None = None,
    ) -> None:
        super().__init__(default=default, description=description)
        self.len_min, self.len_max, self.len_eq = len_min, len_max, len_eq

    def _attributes(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("len_min", "len_max", "len_eq") if getattr(self, k) is not None}

    def _check_len(self, value: Any, length: int, path: str) -> None:
        _check_length(value, length, self.len_eq, self.len_min, self.len_max, path)


class Array(_Collection):
    kong_type = "array"

    def __init__(
        self,
        elements: FieldType,
        *,
        default: Sequence[Any] | None = None,
        description: str | None = None,
        len_min: int | None = None,
        len_max: int | None = None,
        len_eq: int | None = None,
    ) -> None:
        super().__init__(
            default=list(default) if default is not None else None, description=description,
            len_min=len_min, len_max=len_max, len_eq=len_eq,
        )
        self.elements = elements
        self._finish()

    def _attributes(self) -> dict[str, Any]:
        return {"elements": self.elements.to_kong(), **super()._attributes()}

    def coerce(self, value: Any, path: str) -> list[Any]:
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
            raise ConfigError(path, f"expected an {self.kong_type}")
        items = [self._element(item, f"{path}[{i}]") for i, item in enumerate(value)]
        self._check_len(value, len(items), path)
        return items

    def _element(self, item: Any, path: str) -> Any:
        if item is None:
            item = self.elements.default_value()
            if item is None and isinstance(self.elements, Record):
                item = {}
            if item is None:
                raise ConfigError(path, "required field missing")
        return self.elements.coerce(item, path)

    def undescribed(self, path: str) -> list[str]:
        return self.elements.undescribed(path + "[]")


class Set(Array):
    """An array whose duplicates are dropped, first occurrence kept (Kong's ``make_set``)."""

    kong_type = "set"

    def coerce(self, value: Any, path: str) -> list[Any]:
        items = super().coerce(value, path)
        unique: list[Any] = []
        for item in items:
            if item not in unique:
                unique.append(item)
        self._check_len(value, len(unique), path)
        return unique


class Map(_Collection):
    kong_type = "map"

    def __init__(
        self,
        *,
        keys: FieldType,
        values: FieldType,
        default: Mapping[str, Any] | None = None,
        description: str | None = None,
        len_min: int | None = None,
        len_max: int | None = None,
        len_eq: int | None = None,
    ) -> None:
        super().__init__(
            default=dict(default) if default is not None else None, description=description,
            len_min=len_min, len_max=len_max, len_eq=len_eq,
        )
        self.keys, self.values = keys, values
        self._finish()

    def _attributes(self) -> dict[str, Any]:
        return {"keys": self.keys.to_kong(), "values": self.values.to_kong(), **super()._attributes()}

    def coerce(self, value: Any, path: str) -> dict[Any, Any]:
        if not isinstance(value, Mapping):
            raise ConfigError(path, "expected a map")
        result: dict[Any, Any] = {}
        for key, item in value.items():
            item_path = f"{path}[{key}]"
            normal_key = self.keys.coerce(key, item_path)
            if item is None:
                raise ConfigError(item_path, "required field missing")
            result[normal_key] = self.values.coerce(item, item_path)
        self._check_len(value, len(result), path)
        return result

    def undescribed(self, path: str) -> list[str]:
        return self.values.undescribed(path + "[]")


@dataclass(frozen=True)
class Field:
    """A named field of a record; ``required`` fields may not be null after defaults."""

    name: str
    type: FieldType
    required: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith(KONG_RESERVED_PREFIX):
            raise ValueError(f"invalid field name {self.name!r}")

    def to_kong(self) -> dict[str, Any]:
        spec = self.type.to_kong()
        if self.required:
            spec["required"] = True
        return {self.name: spec}


class Record(FieldType):
    """A record of named fields; also the type of a whole plugin config (``SCHEMA``)."""

    kong_type = "record"

    def __init__(
        self,
        fields: Iterable[Field],
        *,
        default: Mapping[str, Any] | None = None,
        description: str | None = None,
    ) -> None:
        super().__init__(default=dict(default) if default is not None else None, description=description)
        self.fields: tuple[Field, ...] = tuple(fields)
        self._by_name = {f.name: f for f in self.fields}
        if len(self._by_name) != len(self.fields):
            names = [f.name for f in self.fields]
            raise ValueError(f"duplicate field names: {sorted({n for n in names if names.count(n) > 1})}")
        self._finish()

    def field(self, name: str) -> Field:
        """The field called ``name``; KeyError if there is none."""
        return self._by_name[name]

    def _attributes(self) -> dict[str, Any]:
        return {"fields": self.kong_fields()}

    def kong_fields(self) -> list[dict[str, Any]]:
        """The kong-pdk ``Schema`` list: ``[{"name": {"type": ..., ...}}, ...]``."""
        return [f.to_kong() for f in self.fields]

    def default_value(self) -> Any:
        return copy.deepcopy(self.default) if self.default is not None else None

    def coerce(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise ConfigError(path, "expected a record")
        for key in value:
            if key not in self._by_name:
                raise ConfigError(_join(path, str(key)), "unknown field")
        result: dict[str, Any] = {}
        for f in self.fields:
            sub = _join(path, f.name)
            raw = value.get(f.name)
            if raw is None:
                raw = f.type.default_value()
            if raw is None and isinstance(f.type, Record) and f.required:
                raw = {}
            if raw is None:
                if f.required:
                    raise ConfigError(sub, "required field missing")
                result[f.name] = None
                continue
            result[f.name] = f.type.coerce(raw, sub)
        return result

    def validate(self, config: Mapping[str, Any] | None) -> dict[str, Any]:
        """Check a config as Kong sends it; return a new dict with defaults applied.

        Kong's own keys are dropped at the top level: ``__plugin_id``, ``__seq__``, ``__key__``
        (anything starting with ``__``) and the scope of a plugin attached to a route, service or
        consumer (``route_id``, ``service_id``, ``consumer_id``, ``plugin_instance_name``, set by
        ``get_plugin_config`` in ``kong/runloop/plugins_iterator.lua``) unless the schema has a field
        of that name; every other unknown key is an error.
        """
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise ConfigError("", "the plugin config must be a JSON object")
        own_fields = {f.name for f in self.fields}
        own = {
            k: v for k, v in config.items()
            if not (isinstance(k, str) and (k.startswith(KONG_RESERVED_PREFIX)
                                            or (k in KONG_SCOPE_KEYS and k not in own_fields)))
        }
        return self.coerce(own, "")

    def undescribed(self, path: str = "") -> list[str]:
        """Paths of fields without a description (house rule: every field has one)."""
        missing: list[str] = []
        for f in self.fields:
            sub = _join(path, f.name)
            if f.type.description is None:
                missing.append(sub)
            missing.extend(f.type.undescribed(sub))
        return missing


# --------------------------------------------------------------------------------------------------
# Kong emulation on dumped schemas


def check_metaschema(dump: Mapping[str, Any], *, require_descriptions: bool = False) -> list[str]:
    """Problems Kong's MetaSchema would report for a dumped plugin schema (empty list: accepted).

    ``dump`` is the ``Schema`` object of a plugin-server dump:
    ``{"name": ..., "fields": [{"config": {"type": "record", "fields": [...]}}]}``. Rules from
    ``kong/db/schema/metaschema.lua``: known types only, known attributes only, type-restricted
    attributes (``one_of``/``between``/``match``/``len_eq``...), required ``elements`` / ``keys`` +
    ``values`` / ``fields``, a 10..500 character ``description``, and a ``default`` of the field's own
    type. With ``require_descriptions`` a missing description is reported too (our house rule).
    """
    errors: list[str] = []
    if not isinstance(dump, Mapping):
        return ["schema: must be a table"]
    if not isinstance(dump.get("name"), str) or not dump.get("name"):
        errors.append("name: required field missing")
    fields = dump.get("fields")
    if not isinstance(fields, list):
        errors.append("fields: 'fields' must be a table")
        return errors
    _check_fields(fields, "", errors, require_descriptions, top=True)
    return errors


def _check_fields(fields: Any, path: str, errors: list[str], require_desc: bool, top: bool = False) -> None:
    if not isinstance(fields, list):
        errors.append(f"{path or 'fields'}: 'fields' must be an array")
        return
    for item in fields:
        if not isinstance(item, Mapping):
            errors.append(f"{path or 'fields'}: each entry in fields must be a sub-table")
            continue
        if len(item) != 1:
            errors.append(f"{path or 'fields'}: each entry in fields must have exactly one key")
            continue
        ((name, spec),) = item.items()
        if not isinstance(name, str):
            errors.append(f"{path or 'fields'}: each key in fields must be a string")
            continue
        sub = _join(path, name)
        if not isinstance(spec, Mapping):
            errors.append(f"{sub}: '{name}' must be a table")
            continue
        if top:
            # kong-pdk's `config` wrapper and Kong's own plugin fields carry no description.
            _check_field(spec, sub, errors, False, require_desc and name == "config")
        else:
            _check_field(spec, sub, errors, require_desc, require_desc)


def _check_field(
    spec: Mapping[str, Any], path: str, errors: list[str], require_desc: bool, children_desc: bool
) -> None:
    ftype = spec.get("type")
    if ftype is None:
        errors.append(f"{path}: missing type declaration")
        return
    if ftype not in KONG_VALID_TYPES:
        errors.append(f"{path}: unknown type '{ftype}'")
        return
    for attr in spec:
        if attr not in KONG_FIELD_ATTRIBUTES:
            errors.append(f"{path}: unknown field attribute '{attr}'")
        elif attr in KONG_ATTRIBUTE_TYPES and ftype not in KONG_ATTRIBUTE_TYPES[attr]:
            errors.append(f"{path}: field of type '{ftype}' cannot have attribute '{attr}'")
    for required in KONG_REQUIRED_ATTRIBUTES.get(ftype, ()):
        if ftype == "record" and spec.get("abstract"):
            break
        # Lua: an empty table is truthy, so only an absent attribute fails.
        if spec.get(required) is None:
            errors.append(f"{path}: field of type '{ftype}' must declare '{required}'")
    description = spec.get("description")
    if description is not None:
        if not isinstance(description, str):
            errors.append(f"{path}: description: expected a string")
        elif not DESCRIPTION_MIN <= len(description) <= DESCRIPTION_MAX:
            errors.append(
                f"{path}: description: length must be between {DESCRIPTION_MIN} and {DESCRIPTION_MAX}"
            )
    elif require_desc:
        errors.append(f"{path}: description missing")
    _check_attribute_values(spec, path, errors)
    if "default" in spec and spec["default"] is not None:
        problem = _type_problem(spec, spec["default"])
        if problem:
            errors.append(f"{path}: default: {problem}")
    for nested in ("elements", "keys", "values"):
        if nested in spec:
            if isinstance(spec[nested], Mapping):
                _check_field(spec[nested], f"{path}.{nested}", errors, False, children_desc)
            else:
                errors.append(f"{path}: '{nested}' must be a table")
    if "fields" in spec:
        _check_fields(spec["fields"], path, errors, children_desc)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_attribute_values(spec: Mapping[str, Any], path: str, errors: list[str]) -> None:
    checks: dict[str, Callable[[Any], bool]] = {
        "required": lambda v: isinstance(v, bool),
        "between": lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v),
        "gt": _is_number,
        "len_eq": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "len_min": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "len_max": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "match": lambda v: isinstance(v, str),
        "not_match": lambda v: isinstance(v, str),
        "starts_with": lambda v: isinstance(v, str),
        "one_of": lambda v: isinstance(v, list),
        "not_one_of": lambda v: isinstance(v, list),
    }
    for attr, ok in checks.items():
        if attr in spec and not ok(spec[attr]):
            errors.append(f"{path}: {attr}: invalid value")


def _type_problem(spec: Mapping[str, Any], value: Any) -> str | None:
    """Why ``value`` is not of the field's type (shallow for containers, deep for their items)."""
    ftype = spec.get("type")
    if ftype == "string":
        return None if isinstance(value, str) else "expected a string"
    if ftype == "number":
        return None if _is_number(value) else "expected a number"
    if ftype == "integer":
        ok = _is_number(value) and float(value).is_integer()
        return None if ok else "expected an integer"
    if ftype == "boolean":
        return None if isinstance(value, bool) else "expected a boolean"
    if ftype in ("array", "set"):
        if not isinstance(value, list):
            return f"expected a{'n' if ftype == 'array' else ''} {ftype}"
        elements = spec.get("elements")
        if isinstance(elements, Mapping):
            for item in value:
                problem = _type_problem(elements, item)
                if problem:
                    return problem
        return None
    if ftype in ("map", "record"):
        return None if isinstance(value, Mapping) else f"expected a {ftype}"
    return None


def _spec_of(item: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    ((name, spec),) = item.items()
    return name, spec


def fill_defaults(fields: Sequence[Mapping[str, Any]], conf: Mapping[str, Any] | None) -> dict[str, Any]:
    """Fill a config from a dumped field list as Kong does before sending it to a plugin server.

    Emulates ``Schema:process_auto_fields`` on insert followed by a read, from
    ``kong/db/schema/init.lua`` (``adjust_field_for_context``, ``handle_missing_field``,
    ``should_recurse_record``): an absent field takes a deep copy of its default; an absent field
    without default becomes null (``None``) unless it is a required record, which is expanded to
    obtain its nested defaults; a present record is filled recursively; arrays, sets and maps have
    their items filled the same way; an explicit null stays null. Unknown keys are kept, as Kong
    would have rejected them earlier, at validation.
    """
    data: dict[str, Any] = dict(copy.deepcopy(conf)) if conf else {}
    for item in fields:
        name, spec = _spec_of(item)
        present = name in data
        data[name] = _fill_field(spec, data.get(name), present)
    return data


def _fill_field(spec: Mapping[str, Any], value: Any, present: bool) -> Any:
    ftype = spec.get("type")
    if present and value is None:
        return None
    if not present:
        if "default" in spec and spec["default"] is not None:
            value = copy.deepcopy(spec["default"])
        elif ftype == "record" and spec.get("required") is True:
            value = {}
        else:
            return None
    if ftype == "record" and isinstance(value, Mapping):
        return fill_defaults(spec.get("fields", []), value)
    if ftype in ("array", "set") and isinstance(value, list):
        elements = spec.get("elements", {})
        return [_fill_field(elements, v, True) for v in value]
    if ftype == "map" and isinstance(value, Mapping):
        values = spec.get("values", {})
        return {k: _fill_field(values, v, True) for k, v in value.items()}
    return value


__all__ = [
    "KONG_VALID_TYPES",
    "Array",
    "Boolean",
    "Field",
    "FieldType",
    "Integer",
    "Map",
    "Number",
    "Record",
    "Set",
    "String",
    "check_metaschema",
    "compile_lua_pattern",
    "fill_defaults",
    "lua_pattern_to_regex",
]
