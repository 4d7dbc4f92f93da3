"""Config: safe defaults, a dump Kong accepts, and invalid combinations rejected naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError
from kong_plugins.tier_quota import NAME, PRIORITY, SCHEMA, BufferingTierQuota, Schema, TierQuota
from kong_plugins.tier_quota.config import parse_config
from tests.tier_quota.quota_helpers import gateway_config, plugin


def test_dump_passes_kongs_metaschema_and_every_field_is_described() -> None:
    dump = {"name": NAME, "fields": [{"config": {"type": "record", "fields": Schema}}]}
    assert s.check_metaschema(dump, require_descriptions=True) == []
    assert SCHEMA.undescribed() == []
    assert 910 < PRIORITY < 950


def test_config_as_kong_sends_it_is_accepted() -> None:
    filled = s.fill_defaults(Schema, gateway_config())
    filled.update({"__plugin_id": "p-1", "__seq__": 1, "__key__": "k"})
    config = parse_config(filled)
    assert set(config.tiers) == {"free", "premium", "internal"}
    assert config.failure_mode == "open" and not config.shadow and not config.hide_client_headers
    assert config.storage["strategy"] == "memory"
    assert config.tokens.usage_source == "log"


def test_minimal_config_gets_safe_defaults() -> None:
    config = parse_config({"tiers": [{"name": "free", "models": ["textgen"]}]})
    assert config.default_tier == "free"
    assert config.unknown_tier == "default_tier"
    assert config.identity.jwt is None


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"tiers": []}, "tiers", "at least 1"),
    ({"default_tier": "gold"}, "default_tier", "no tier named"),
    ({"tiers": [{"name": "free", "models": ["a"]}, {"name": "free", "models": ["b"]}]}, "tiers[1].name", "twice"),
    ({"tiers": [{"name": "free", "models": ["a"], "limits": [{"limit_by": "ip"}]}]}, "tiers[0].limits[0]",
     "no quota"),
    ({"tiers": [{"name": "free", "models": ["a"], "limits": [{"per_second": 20, "per_minute": 10}]}]},
     "tiers[0].limits[0].per_minute", "could never be reached"),
    ({"tiers": [{"name": "free", "models": ["a"], "limits": [{"tokens_per_minute": 5000,
                                                              "tokens_per_day": 100}]}]},
     "tiers[0].limits[0].tokens_per_day", "could never be reached"),
    ({"tiers": [{"name": "free", "models": ["a"], "limits": [{"models": ["b"], "per_second": 1}]}]},
     "tiers[0].limits[0].models", "could never apply"),
    ({"tiers": [{"name": "free", "models": ["a"], "limits": [{"per_second": 0}]}]},
     "tiers[0].limits[0].per_second", "greater than 0"),
    ({"tiers": [{"name": "free tier", "models": ["a"]}]}, "tiers[0].name", "pattern"),
    ({"global_limits": [{"model": "m"}]}, "global_limits[0]", "no limit"),
    ({"global_limits": [{"model": "m", "per_second": 1}, {"model": "m", "per_second": 2}]},
     "global_limits[1].model", "already"),
    ({"tokens": {"usage_source": "response_body"}}, "tokens.usage_source", "AI_TIER_QUOTA_RESPONSE_PHASE"),
    ({"tokens": {"usage_source": "none", "usage_header": "x-usage"}}, "tokens.usage_header", "only read"),
    ({"fallback": {"enabled": True}}, "fallback", "without per_second"),
    ({"fallback": {"per_second": 5}}, "fallback.enabled", "not enabled"),
    ({"identity": {"tier_sources": ["jwt_claim"]}}, "identity.tier_sources", "jwt.enabled"),
    ({"storage": {"strategy": "redis-sentinel"}}, "storage.sentinel_master", "required"),
    ({"failure_mode": "maybe"}, "failure_mode", "expected one of"),
    ({"surprise": True}, "surprise", "unknown field"),
])
def test_invalid_configs_fail_at_instance_start_naming_the_field(
    overrides: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        plugin(gateway_config(**overrides))
    assert info.value.field == field
    assert words in info.value.message


def test_response_body_usage_is_accepted_by_the_buffering_variant_only() -> None:
    config = gateway_config(tokens={"usage_source": "response_body"})
    assert plugin(config, cls=BufferingTierQuota).config.tokens.usage_source == "response_body"
    assert not hasattr(TierQuota, "response")
    assert hasattr(BufferingTierQuota, "response")


def test_secrets_are_not_in_config_errors() -> None:
    config = gateway_config(storage={"strategy": "redis-cluster", "password": "hunter2-secret"})
    with pytest.raises(ConfigError) as info:
        plugin(config)
    assert "hunter2-secret" not in str(info.value)
