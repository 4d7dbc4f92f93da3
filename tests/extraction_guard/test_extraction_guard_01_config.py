"""Config: the dumped schema passes Kong's MetaSchema, defaults parse, bad config names its field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import kong_plugins.extraction_guard as plugin
from kong_plugins import schema as s
from kong_plugins.errors import ConfigError
from kong_plugins.extraction_guard import tap
from kong_plugins.extraction_guard.config import GuardConfig


def _cfg(raw: dict[str, Any]) -> GuardConfig:
    return GuardConfig.from_validated(plugin.SCHEMA.validate(raw))


@pytest.mark.parametrize("module", [plugin, tap])
def test_dumped_schema_is_accepted_by_kong_metaschema_with_descriptions(module: Any) -> None:
    dump = {"name": module.NAME, "fields": [{"config": {"type": "record", "fields": module.Schema}}]}
    assert s.check_metaschema(dump, require_descriptions=True) == []
    assert module.SCHEMA.undescribed() == []
    assert module.version == module.VERSION and module.priority == module.PRIORITY


def test_priority_runs_after_authentication_and_before_acl_and_rate_limiting() -> None:
    assert 990 < plugin.PRIORITY < 1250


def test_defaults_with_kong_extra_keys_parse_to_the_documented_values() -> None:
    cfg = _cfg({"__plugin_id": "x", "__seq__": 1, "__key__": "k", "webhook": None, "thresholds": None})
    assert cfg.client_by == "consumer" and cfg.group_by == "ip" and not cfg.shadow
    assert (cfg.thresholds.flag, cfg.thresholds.block) == (3.0, 8.0)
    assert cfg.webhook is None and cfg.feature_stats is None
    assert cfg.mitigations.max_top_logprobs is None


@pytest.mark.parametrize(("raw", "field"), [
    ({"thresholds": {"flag": 5, "throttle": 4}}, "thresholds.throttle"),
    ({"thresholds": {"block": 30}}, "thresholds.revoke"),
    ({"thresholds": {"abuse_flag": 9}}, "thresholds.abuse_throttle"),
    ({"client_by": "cookie"}, "client_by"),
    ({"webhook": {"url": "https://soar.example/hook"}}, "webhook.secret"),
    ({"webhook": {"url": "https://soar.example/hook", "secret": "short"}}, "webhook.secret"),
    ({"webhook": {"url": "ftp://soar.example", "secret": "x" * 20}}, "webhook.url"),
    ({"webhook": {"secret": "x" * 20}}, "webhook.url"),
    ({"feature_stats": {"mean": [1, 2], "std": [1], "min": [0, 0], "max": [2, 3]}}, "feature_stats.std"),
    ({"feature_stats": {"mean": [1], "std": [0], "min": [0], "max": [2]}}, "feature_stats.std"),
    ({"feature_stats": {"mean": [1], "std": [1], "min": [3], "max": [2]}}, "feature_stats.min"),
    ({"storage": {"strategy": "redis-cluster"}}, "storage.cluster_nodes"),
    ({"max_rows_per_request": 0}, "max_rows_per_request"),
    ({"unknown": 1}, "unknown"),
])
def test_bad_config_raises_config_error_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        plugin.Plugin(raw)
    assert err.value.field == field


def test_webhook_secret_never_appears_in_the_config_repr() -> None:
    cfg = _cfg({"webhook": {"url": "https://soar.example/hook", "secret": "s3cret-s3cret-s3cret"}})
    assert "s3cret" not in repr(cfg)


@given(st.floats(0.1, 50), st.floats(0.1, 50), st.floats(0.1, 50))
def test_threshold_ordering_is_enforced_for_any_values(flag: float, throttle: float, block: float) -> None:
    raw = {"thresholds": {"flag": flag, "throttle": throttle, "block": block, "revoke": 100}}
    if flag < throttle < block:
        assert _cfg(raw).thresholds.block == block
    else:
        with pytest.raises(ConfigError):
            _cfg(raw)
