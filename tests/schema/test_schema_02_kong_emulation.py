"""What Kong does with a dumped schema: MetaSchema acceptance and default filling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError

DESC = "A field used by the schema tests."


def dump_of(record: s.Record) -> dict[str, Any]:
    """The shape kong-pdk's query_cmd dump puts under ``Schema``."""
    return {"name": "test-plugin", "fields": [{"config": {"type": "record", "fields": record.kong_fields()}}]}


def test_kong_fields_is_plain_json_in_kong_pdk_shape() -> None:
    rate = s.Number(default=1.0, between=(0, 10), description=DESC)
    record = s.Record([s.Field("rate", rate, required=True)])
    assert json.loads(json.dumps(record.kong_fields())) == [{"rate": {
        "type": "number", "between": [0, 10], "default": 1.0, "description": DESC, "required": True,
    }}]


@pytest.mark.parametrize(("spec", "problem"), [
    ({"type": "boolean", "one_of": [True]}, "cannot have attribute 'one_of'"),
    ({"type": "string", "between": [1, 2]}, "cannot have attribute 'between'"),
    ({"type": "integer", "match": "^a"}, "cannot have attribute 'match'"),
    ({"type": "boolean", "len_eq": 1}, "cannot have attribute 'len_eq'"),
    ({"type": "array"}, "must declare 'elements'"),
    ({"type": "set"}, "must declare 'elements'"),
    ({"type": "map", "keys": {"type": "string"}}, "must declare 'values'"),
    ({"type": "record"}, "must declare 'fields'"),
    ({"type": "string", "description": "too short"}, "description"),
    ({"type": "string", "description": "x" * 501}, "description"),
    ({"type": "string", "nilable": True}, "unknown field attribute 'nilable'"),
    ({"type": "text"}, "unknown type 'text'"),
    ({"default": 1}, "missing type declaration"),
    ({"type": "integer", "default": "1"}, "default: expected an integer"),
    ({"type": "array", "elements": {"type": "integer", "match": "x"}}, "cannot have attribute 'match'"),
])
def test_check_metaschema_reports_what_kong_refuses(spec: dict[str, Any], problem: str) -> None:
    dump = {"name": "p", "fields": [{"config": {"type": "record", "fields": [{"f": spec}]}}]}
    errors = s.check_metaschema(dump)
    assert any(problem in e for e in errors), errors
    assert all(e.startswith("config.f") for e in errors)


def test_check_metaschema_can_require_descriptions_on_config_fields_only() -> None:
    dump = {"name": "p", "fields": [
        {"protocols": {"type": "set", "elements": {"type": "string"}}},
        {"config": {"type": "record", "fields": [{"f": {"type": "string"}}]}},
    ]}
    assert s.check_metaschema(dump) == []
    assert s.check_metaschema(dump, require_descriptions=True) == ["config.f: description missing"]


def test_fill_defaults_follows_kong_for_records_arrays_and_nulls() -> None:
    fields = [
        {"a": {"type": "string", "default": "x"}},
        {"b": {"type": "integer"}},
        {"req": {"type": "record", "required": True, "fields": [{"c": {"type": "integer", "default": 5}}]}},
        {"opt": {"type": "record", "fields": [{"d": {"type": "integer", "default": 6}}]}},
        {"list": {"type": "array", "elements": {"type": "record", "fields": [
            {"e": {"type": "boolean", "default": True}}]}}},
    ]
    filled = s.fill_defaults(fields, {"a": None, "list": [{}, {"e": False}]})
    assert filled == {"a": None, "b": None, "req": {"c": 5}, "opt": None, "list": [{"e": True}, {"e": False}]}


# -- property: any schema we can build is accepted by Kong, and Kong's filling equals ours ----------

descriptions = st.text(alphabet="abcdefgh ", min_size=10, max_size=40)


@st.composite
def scalar_types(draw: st.DrawFn) -> s.FieldType:
    kind = draw(st.sampled_from(["string", "integer", "number", "boolean"]))
    desc = draw(st.none() | descriptions)
    if kind == "string":
        words = st.text(alphabet="xyz", min_size=1, max_size=3)
        options = draw(st.none() | st.lists(words, min_size=1, max_size=3))
        default = draw(st.none() | (st.sampled_from(options) if options else words))
        return s.String(default=default, description=desc, one_of=options)
    if kind == "boolean":
        return s.Boolean(default=draw(st.none() | st.booleans()), description=desc)
    low = draw(st.integers(-5, 5))
    high = low + draw(st.integers(0, 10))
    default = draw(st.none() | st.integers(low, high))
    if kind == "integer":
        return s.Integer(default=default, between=(low, high), description=desc)
    number_default = None if default is None else float(default)
    return s.Number(default=number_default, between=(low, high), description=desc)


def field_types(depth: int) -> st.SearchStrategy[s.FieldType]:
    if depth == 0:
        return scalar_types()
    return st.one_of(
        scalar_types(),
        st.builds(lambda e, d: s.Array(e, description=d), field_types(depth - 1), st.none() | descriptions),
        st.builds(lambda v, d: s.Map(keys=s.String(), values=v, description=d), scalar_types(),
                  st.none() | descriptions),
        records(depth - 1),
    )


def records(depth: int) -> st.SearchStrategy[s.Record]:
    names = st.lists(st.sampled_from(["alpha", "beta", "gamma", "delta"]), unique=True, max_size=4)

    @st.composite
    def build(draw: st.DrawFn) -> s.Record:
        fields = [s.Field(n, draw(field_types(depth)), required=draw(st.booleans())) for n in draw(names)]
        return s.Record(fields, description=draw(st.none() | descriptions))

    return build()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(2))
def test_every_buildable_schema_passes_the_metaschema(record: s.Record) -> None:
    assert s.check_metaschema(dump_of(record)) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records(2))
def test_kong_default_filling_matches_validate_on_an_empty_config(record: s.Record) -> None:
    try:
        ours = record.validate({})
    except ConfigError:
        return  # a required field without default: Kong's own validation refuses the config too
    assert s.fill_defaults(record.kong_fields(), {}) == ours
