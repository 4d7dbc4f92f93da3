"""Config validation: defaults, bounds, types and error paths a plugin operator sees at StartInstance."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError

LIMIT = s.Record([
    s.Field("name", s.String(description="Name of this limit rule.", match="^[%w_-]+$"), required=True),
    s.Field("per_minute", s.Integer(gt=0, description="Requests allowed per minute.")),
    s.Field("burst", s.Number(default=1.0, between=(0, 10), description="Burst multiplier applied.")),
])

SCHEMA = s.Record([
    s.Field("default_tier", s.String(default="free", one_of=["free", "pro"], description="Tier of callers.")),
    s.Field("limits", s.Array(LIMIT, default=[], description="Limits applied to each request.")),
    s.Field("shadow", s.Boolean(default=False, description="Decide and report without blocking.")),
    s.Field("tags", s.Set(s.String(), description="Tags attached to decisions.")),
    s.Field("weights", s.Map(keys=s.String(), values=s.Integer(between=(1, 100)),
                             description="Weight of each model name.")),
    s.Field("redis", s.Record([
        s.Field("host", s.String(default="127.0.0.1", description="Redis host to connect to.")),
        s.Field("port", s.Integer(default=6379, between=(1, 65535), description="Redis TCP port number.")),
    ], description="Connection settings of Redis."), required=True),
])


def error_of(config: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        SCHEMA.validate(config)
    return info.value


def test_defaults_fill_an_empty_config_including_required_nested_records() -> None:
    assert SCHEMA.validate({}) == {
        "default_tier": "free", "limits": [], "shadow": False, "tags": None, "weights": None,
        "redis": {"host": "127.0.0.1", "port": 6379},
    }


def test_kong_extra_keys_are_dropped_and_nulls_take_defaults() -> None:
    config = {"__plugin_id": "abc", "__seq__": 3, "__key__": "k", "default_tier": None, "shadow": None}
    assert SCHEMA.validate(config)["default_tier"] == "free"
    assert "__plugin_id" not in SCHEMA.validate(config)


def test_scope_keys_of_a_service_or_route_plugin_are_dropped() -> None:
    # kong/runloop/plugins_iterator.lua adds these to the config of a scoped plugin instance
    scoped = {"service_id": "s-1", "route_id": "r-1", "consumer_id": None, "plugin_instance_name": "x"}
    assert SCHEMA.validate(scoped) == SCHEMA.validate({})
    with_field = s.Record([s.Field("route_id", s.String(description="A field that happens to be called so."))])
    assert with_field.validate({"route_id": "r-1"}) == {"route_id": "r-1"}
    with pytest.raises(ConfigError, match="unknown field"):
        SCHEMA.validate({"service": "s-1"})


def test_nested_error_names_the_field_path() -> None:
    err = error_of({"limits": [{"name": "a", "per_minute": 5}, {"name": "b", "per_minute": 0}]})
    assert err.field == "limits[1].per_minute"
    assert str(err) == "config.limits[1].per_minute: value must be greater than 0"


@pytest.mark.parametrize(("config", "field", "message"), [
    ({"nope": 1}, "nope", "unknown field"),
    ({"limits": [{"per_minute": 1}]}, "limits[0].name", "required field missing"),
    ({"limits": [{"name": "bad name!"}]}, "limits[0].name", "does not match"),
    ({"limits": [{"name": ""}]}, "limits[0].name", "length must be at least 1"),
    ({"limits": [{"name": "a", "burst": 11}]}, "limits[0].burst", "between 0 and 10"),
    ({"limits": [{"name": "a", "per_minute": 1.5}]}, "limits[0].per_minute", "expected an integer"),
    ({"limits": [{"name": "a", "per_minute": True}]}, "limits[0].per_minute", "expected an integer"),
    ({"default_tier": "gold"}, "default_tier", "expected one of: free, pro"),
    ({"shadow": "yes"}, "shadow", "expected a boolean"),
    ({"weights": {"m": 0}}, "weights[m]", "between 1 and 100"),
    ({"redis": {"port": 70000}}, "redis.port", "between 1 and 65535"),
    ({"redis": "localhost"}, "redis", "expected a record"),
    ({"limits": {"name": "a"}}, "limits", "expected an array"),
])
def test_bad_config_is_rejected_naming_the_field(config: dict[str, Any], field: str, message: str) -> None:
    err = error_of(config)
    assert err.field == field
    assert message in err.message


def test_error_messages_never_echo_the_value() -> None:
    err = error_of({"limits": [{"name": "sk-secret-value!"}]})
    assert "sk-secret-value" not in str(err)


def test_whole_floats_are_integers_and_sets_drop_duplicates() -> None:
    config = SCHEMA.validate({"limits": [{"name": "a", "per_minute": 5.0}], "tags": ["x", "y", "x"]})
    assert config["limits"][0]["per_minute"] == 5
    assert isinstance(config["limits"][0]["per_minute"], int)
    assert config["tags"] == ["x", "y"]


def test_result_is_a_copy_not_the_callers_object() -> None:
    config = {"limits": [{"name": "a"}]}
    result = SCHEMA.validate(config)
    result["limits"][0]["name"] = "changed"
    assert config["limits"][0]["name"] == "a"


def test_schema_definition_errors_are_caught_at_import_time() -> None:
    with pytest.raises(ValueError, match="description"):
        s.String(description="short")
    with pytest.raises(ValueError, match="default"):
        s.Integer(default=0, gt=0, description="a positive count")
    with pytest.raises(ValueError, match="duplicate"):
        s.Record([s.Field("a", s.Boolean()), s.Field("a", s.Boolean())])
    with pytest.raises(ValueError, match="not supported"):
        s.String(match="%b()", description="balanced parentheses")


def test_undescribed_lists_fields_lacking_a_description() -> None:
    record = s.Record([s.Field("a", s.Boolean()), s.Field("b", s.Array(s.Record([s.Field("c", s.Boolean())]),
                                                                       description="list of records"))])
    assert record.undescribed() == ["a", "b[].c"]
    assert SCHEMA.undescribed() == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
    max_leaves=10,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["default_tier", "limits", "shadow", "tags", "weights", "redis", "x"]),
                       json_values, max_size=4))
def test_any_json_config_either_validates_idempotently_or_raises_config_error(config: dict[str, Any]) -> None:
    try:
        result = SCHEMA.validate(config)
    except ConfigError as err:
        assert err.field.split("[")[0].split(".")[0] in config
        return
    assert SCHEMA.validate(result) == result
    json.dumps(result)
