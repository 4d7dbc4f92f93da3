"""Pure pieces of the stand-in: mp_rpc.lua's quirks, Lua value shapes, query parsing, config filling."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kong_plugins.errors import ConfigError
from kong_plugins.standin._context import parse_query
from kong_plugins.standin._defaults import fill_plugin_config, required_missing
from kong_plugins.standin._pdk import fix_mmap, fix_raw, get_step_method, lua_value, make_error, make_exit
from kong_plugins.standin._process import PluginServerError, PluginServerSpec, query_plugin_info
from kong_plugins.standin._rpc import LuaError


def test_fix_mmap_turns_single_values_and_flags_into_lists() -> None:
    assert fix_mmap({"a": "1", "b": ["1", "2"], "flag": True}) == {"a": ["1"], "b": ["1", "2"], "flag": []}
    packed = msgpack.packb(fix_mmap({}))
    assert msgpack.unpackb(packed) == {}  # an empty multimap is a map, not Lua's default empty array


def test_fix_raw_sends_binary() -> None:
    assert msgpack.unpackb(msgpack.packb(fix_raw("hé"), use_bin_type=True), raw=False) == "hé".encode()


def test_step_method_selection() -> None:
    assert get_step_method("kong.request.get_headers", {}) == ("plugin.StepMultiMap", {})
    assert get_step_method("kong.client.get_consumer", None) == ("plugin.StepConsumer", None)
    assert get_step_method("kong.client.authenticate", None)[0] == "plugin.StepCredential"
    assert get_step_method("kong.node.get_memory_stats", {})[0] == "plugin.StepMemoryStats"
    assert get_step_method("kong.router.get_route", {})[0] == "plugin.StepRoute"
    assert get_step_method("kong.router.get_service", {})[0] == "plugin.StepService"
    assert get_step_method("kong.request.get_header", "v") == ("plugin.Step", "v")
    assert get_step_method("x", {"_method": "plugin.StepCustom"})[0] == "plugin.StepCustom"
    assert get_step_method("kong.request.get_raw_body", None, "too big") == ("plugin.StepError", "too big")


def test_lua_value_shapes() -> None:
    assert lua_value(3.0) == 3 and isinstance(lua_value(3.0), int)
    assert lua_value({}) == []
    assert lua_value({1: "a", 2: "b"}) == ["a", "b"]
    assert lua_value({"k": {"n": 2.5}}) == {"k": {"n": 2.5}}


@given(st.dictionaries(st.text(alphabet="abcxyz", min_size=1, max_size=4),
                       st.text(alphabet="abc123 ", max_size=5), max_size=5))
def test_parse_query_round_trips_simple_args(args: dict[str, str]) -> None:
    from urllib.parse import urlencode

    assert parse_query(urlencode(args)) == args


def test_parse_query_flags_repeats_and_limits() -> None:
    assert parse_query("a=1&a=2&flag&e=") == {"a": ["1", "2"], "flag": True, "e": ""}
    assert parse_query("a=1&b=2&c=3", max_args=2) == {"a": "1", "b": "2"}


def test_exit_and_error_bodies() -> None:
    r = make_exit(200, {"ok": True}, {"X-A": ["1", "2"]})
    assert r.body == b'{"ok":true}' and ("X-A", "2") in r.headers
    assert make_exit(204, None, None).body == b""
    assert make_error(503).body == b'{"message":"The upstream server is currently unavailable"}'
    with pytest.raises(LuaError, match="body must be"):
        make_exit(200, 3.5, None)


SCHEMA: dict[str, Any] = {"name": "p", "fields": [
    {"protocols": {"type": "set", "elements": {"type": "string"}}},
    {"config": {"type": "record", "fields": [
        {"mode": {"type": "string", "default": "strict"}},
        {"limit": {"type": "integer", "required": True}},
        {"tags": {"type": "array", "elements": {"type": "string"}, "default": ["a"]}},
        {"unset": {"type": "string"}},
    ]}},
]}


def test_config_defaults_and_required_fields() -> None:
    conf = fill_plugin_config(SCHEMA, {"limit": 5})
    assert conf == {"mode": "strict", "limit": 5, "tags": ["a"], "unset": None}
    assert required_missing(SCHEMA, fill_plugin_config(SCHEMA, {})) == ["limit"]


def test_query_cmd_output_is_validated(tmp_path: Any) -> None:
    import sys

    spec = PluginServerSpec("bad", ["true"], [sys.executable, "-c", "print('not json')"], str(tmp_path / "s"))
    with pytest.raises(PluginServerError, match="failed decoding plugin info"):
        query_plugin_info(spec)
    empty = PluginServerSpec("e", ["true"], [sys.executable, "-c", "print('[]')"], str(tmp_path / "s"))
    with pytest.raises(PluginServerError, match="no plugin"):
        query_plugin_info(empty)


def test_spec_constructors() -> None:
    suite = PluginServerSpec.suite("ai-tier-quota", "/tmp/k")
    assert suite.socket == "/tmp/k/ai-tier-quota.sock"
    assert suite.start_cmd[1:5] == ["-m", "kong_plugins.runtime.cli", "ai-tier-quota", "--kong-prefix"]
    assert suite.query_cmd[-1] == "--dump"
    mod = PluginServerSpec.module("pkg.my_plugin", "/tmp/k")
    assert mod.socket == "/tmp/k/my_plugin.sock" and "--socket-name" in mod.start_cmd


def test_malformed_schema_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        fill_plugin_config({"fields": "nope"}, {})
