"""The shared storage block: Kong accepts its dump, defaults are safe, bad combinations fail at start."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError
from kong_plugins.storage import STORAGE_RECORD, MemoryStorage, RedisStorage, build_storage
from kong_plugins.storage.config import STRATEGIES

PLUGIN = s.Record([s.Field("storage", STORAGE_RECORD, required=True)])


def storage_of(raw: dict[str, Any]) -> dict[str, Any]:
    return PLUGIN.validate({"storage": raw})["storage"]


def test_kong_metaschema_accepts_the_block_and_every_field_is_described() -> None:
    dump = {"name": "x", "fields": [{"config": {"type": "record", "fields": PLUGIN.kong_fields()}}]}
    assert s.check_metaschema(dump, require_descriptions=True) == []
    assert PLUGIN.undescribed() == []


def test_defaults_give_the_zero_infrastructure_memory_backend() -> None:
    config = PLUGIN.validate({"__plugin_id": "x", "storage": None})["storage"]
    assert config["strategy"] == "memory"
    assert isinstance(build_storage(config), MemoryStorage)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"strategy": "redis-sentinel", "sentinel_master": "m"}, "storage.sentinel_nodes"),
        ({"strategy": "redis-sentinel", "sentinel_nodes": [{"host": "h", "port": 1}]},
         "storage.sentinel_master"),
        ({"strategy": "redis-cluster"}, "storage.cluster_nodes"),
        ({"strategy": "redis-cluster", "cluster_nodes": [{"host": "h", "port": 1}], "database": 2},
         "storage.database"),
        ({"strategy": "redis", "sentinel_password": "x"}, "storage.sentinel_password"),
    ],
)
def test_contradicting_settings_are_rejected_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_storage(storage_of(raw))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"strategy": "etcd"}, "storage.strategy"),
        ({"port": 70000}, "storage.port"),
        ({"connect_timeout": 0}, "storage.connect_timeout"),
        ({"key_prefix": "a{b}"}, "storage.key_prefix"),
        ({"sentinel_nodes": [{"host": "h"}]}, "storage.sentinel_nodes[0].port"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        storage_of(raw)
    assert caught.value.field == field


def test_error_messages_never_carry_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        build_storage(storage_of({"strategy": "redis-cluster", "password": "s3cret-value"}))
    assert "s3cret-value" not in str(caught.value)


def test_instances_with_the_same_settings_share_one_pool() -> None:
    raw = {"strategy": "redis", "host": "127.0.0.1", "port": 1, "password": "p"}
    a, b = build_storage(storage_of(raw)), build_storage(storage_of(raw))
    c = build_storage(storage_of({**raw, "database": 1}))
    assert isinstance(a, RedisStorage) and isinstance(b, RedisStorage) and isinstance(c, RedisStorage)
    assert a.client is b.client
    assert a.client is not c.client


def test_memory_instances_share_one_store_unless_given_a_clock() -> None:
    config = storage_of({})
    assert build_storage(config) is build_storage(config)
    assert build_storage(config, memory_clock=lambda: 0.0) is not build_storage(config)


NODES = st.lists(st.fixed_dictionaries({"host": st.text(max_size=3), "port": st.integers(0, 9)}), max_size=2)
VALUES = st.none() | st.integers(-5, 70000) | st.text(max_size=5) | st.sampled_from(STRATEGIES) | NODES
FIELDS = st.sampled_from(["strategy", "host", "port", "database", "cluster_nodes", "sentinel_master",
                          "sentinel_nodes", "connect_timeout"])


@given(st.dictionaries(FIELDS, VALUES))
def test_any_config_either_builds_or_fails_with_a_config_error(raw: dict[str, Any]) -> None:
    try:
        build_storage(storage_of(raw))
    except ConfigError as exc:
        assert exc.field.startswith("storage")
