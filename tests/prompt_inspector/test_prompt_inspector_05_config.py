"""Config: Kong accepts the dumped schema; bad config fails at instance start naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

import kong_plugins.prompt_inspector as plugin_module
from kong_plugins import SUITE_PLUGINS, schema
from kong_plugins.errors import ConfigError
from kong_plugins.prompt_inspector import SCHEMA, Plugin


def test_module_contract() -> None:
    assert SUITE_PLUGINS[plugin_module.NAME] == "kong_plugins.prompt_inspector"
    assert plugin_module.Schema == SCHEMA.kong_fields()
    assert plugin_module.version == plugin_module.VERSION and plugin_module.priority == plugin_module.PRIORITY
    # After auth (key-auth 1250, jwt 1450), before stock ai-prompt-guard (771).
    assert 771 < plugin_module.PRIORITY < 1250


def test_dumped_schema_passes_kongs_metaschema_with_descriptions() -> None:
    dump = {"name": plugin_module.NAME, "fields": [{"config": {"type": "record", "fields": SCHEMA.kong_fields()}}]}
    assert schema.check_metaschema(json.loads(json.dumps(dump)), require_descriptions=True) == []
    assert SCHEMA.undescribed() == []


def test_kong_style_config_with_nulls_and_private_keys_is_accepted() -> None:
    kong_conf: dict[str, Any] = {field.name: None for field in SCHEMA.fields}
    kong_conf.update({"__plugin_id": "abc", "__seq__": 1, "__key__": "k", "route_id": "r", "service_id": "s",
                      "consumer_id": None, "plugin_instance_name": "pi"})
    p = Plugin(kong_conf)
    assert p.conf.action == "block" and p.failure_mode == "closed"


@pytest.mark.parametrize(
    ("conf", "field"),
    [
        ({"action": "explode"}, "action"),
        ({"threshold": 2}, "threshold"),
        ({"deny_patterns": ["(a)\\1"]}, "deny_patterns[0]"),
        ({"allow_patterns": ["ok", "(?<=x)y"]}, "allow_patterns[1]"),
        ({"json_schema": "{not json"}, "json_schema"),
        ({"json_schema": "{\"type\": 12}"}, "json_schema"),
        ({"text_paths": [{"path": "$$..!", "role": "user"}]}, "text_paths[0].path"),
        ({"family_actions": {"nope": "block"}}, "family_actions"),
        ({"predict": {"min_value": 5, "max_value": 1}}, "predict.min_value"),
        ({"inspect_roles": []}, "inspect_roles"),
        ({"block_status": 500}, "block_status"),
    ],
)
def test_bad_config_names_the_field(conf: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        Plugin(conf)
    assert info.value.field.startswith(field), info.value


def test_pathological_patterns_are_accepted_and_linear() -> None:
    # The classic ReDoS pattern is harmless under RE2: construction succeeds, matching is linear.
    p = Plugin({"deny_patterns": ["(a+)+$", "(x|x)*y"]})
    decision = p.decide("application/json", json.dumps({"prompt": "a" * 50_000 + "!"}).encode())
    assert decision.action == "allow"
