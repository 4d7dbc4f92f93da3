"""ai-tier-quota tenancy: model access per tenant, data residency, scopes, the stale fallback, lanes."""

from __future__ import annotations

from typing import Any

import pytest

from kong_plugins.errors import ConfigError
from kong_plugins.identity import Identity
from kong_plugins.storage import GlobalRule, MemoryStorage, RateRule
from kong_plugins.storage.keys import key_slot
from kong_plugins.tier_quota import TierQuota, decide
from kong_plugins.tier_quota.config import parse_config
from tests.tier_quota.quota_helpers import T0, FakeKong, consumer, run, serialize

REDIS = {"strategy": "redis", "host": "127.0.0.1", "port": 6379}


def config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "default_tier": "std",
        "tiers": [{"name": "std", "models": ["*"], "limits": [{"per_minute": 100}]}],
        "tenants": [
            {"name": "acme", "models": ["acme-chat", "shared-embed"], "regions": ["eu"]},
            {"name": "globex", "models": ["globex-vision", "shared-embed"]},
        ],
        "region": {"name": "eu", "regions": ["us", "eu", "apac"]},
    }
    base.update(overrides)
    return base


def plugin(cfg: dict[str, Any]) -> TierQuota:
    return TierQuota(cfg, storage=MemoryStorage(clock=lambda: T0), clock=lambda: T0)


def call(p: TierQuota, tenant: str, service: str, uri: str = "/v1/chat") -> Any:
    return run(p, FakeKong(serialize(consumer=consumer(f"c-{tenant}", tenant=tenant), service=service, uri=uri)))


def test_a_tenant_calls_only_the_models_it_owns_or_is_granted() -> None:
    p = plugin(config())
    assert call(p, "acme", "acme-chat") is None
    assert call(p, "acme", "shared-embed") is None
    denied = call(p, "acme", "globex-vision")
    assert denied.status == 403 and denied.body["denied_by"] == "tenant_access"
    assert call(p, "globex", "globex-vision") is None
    assert call(p, "globex", "acme-chat").body["denied_by"] == "tenant_access"


def test_an_unlisted_tenant_is_denied_unless_allowed() -> None:
    assert call(plugin(config()), "initech", "acme-chat").body["denied_by"] == "unknown_tenant"
    assert call(plugin(config(unknown_tenant="allow")), "initech", "acme-chat") is None


def test_a_pinned_tenant_is_refused_outside_its_regions_with_403_naming_the_rule() -> None:
    us = plugin(config(region={"name": "us", "regions": ["us", "eu", "apac"]}))
    refused = call(us, "acme", "acme-chat")
    assert refused.status == 403
    assert refused.body == {"message": "This tenant's requests are served only in region(s): eu",
                            "denied_by": "data_residency"}
    assert call(us, "globex", "globex-vision") is None  # not pinned: served everywhere


def test_residency_redirect_sends_307_to_the_home_region_keeping_the_uri() -> None:
    us = plugin(config(region={"name": "us", "regions": ["us", "eu", "apac"]}, residency_action="redirect",
                       region_urls={"eu": "https://eu.api.example.com/"}))
    moved = call(us, "acme", "acme-chat", uri="/v1/chat/completions?stream=false")
    assert moved.status == 307 and moved.body["denied_by"] == "data_residency"
    assert moved.headers["Location"] == "https://eu.api.example.com/v1/chat/completions?stream=false"


def test_residency_is_checked_before_any_counter_is_touched() -> None:
    storage = MemoryStorage(clock=lambda: T0)
    us = TierQuota(config(region={"name": "us", "regions": ["us", "eu"]}), storage=storage, clock=lambda: T0)
    for _ in range(5):
        assert call(us, "acme", "acme-chat").status == 403
    assert len(storage) == 0


@pytest.mark.parametrize(("overrides", "field"), [
    ({"tenants": [{"name": "a", "models": ["m"]}, {"name": "a", "models": ["n"]}]}, "tenants[1].name"),
    ({"tenants": [{"name": "a", "models": ["m"], "regions": ["mars"]}]}, "tenants[0].regions"),
    ({"region": {}, "tenants": [{"name": "a", "models": ["m"], "regions": ["eu"]}]}, "tenants[0].regions"),
    ({"residency_action": "redirect"}, "tenants[0].regions"),
    ({"region_urls": {"eu": "https://eu.example.com/x?y=1"}}, "region_urls[eu]"),
    ({"region": {"name": "eu", "regions": ["us"]}}, "region.regions"),
    ({"tiers": [{"name": "std", "models": ["*"], "limits": [{"per_minute": 5, "scope": "global-approximate"}]}],
      "storage": REDIS, "region": {}, "tenants": []}, "tiers[0].limits[0].scope"),
    ({"tiers": [{"name": "std", "models": ["*"], "limits": [{"per_minute": 5, "scope": "global-approximate"}]}]},
     "tiers[0].limits[0].scope"),  # memory storage
    ({"tiers": [{"name": "std", "models": ["*"], "limits": [{"per_minute": 5, "concurrency": 2,
                                                             "scope": "global-approximate"}]}], "storage": REDIS},
     "tiers[0].limits[0].concurrency"),
])
def test_contradicting_tenancy_and_scope_config_is_rejected_naming_the_field(overrides: dict[str, Any],
                                                                           field: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config(**overrides))
    assert err.value.field == field


def global_config(**region: Any) -> dict[str, Any]:
    return config(
        tiers=[{"name": "std", "models": ["*"], "limits": [
            {"per_minute": 60, "tokens_per_day": 1000, "limit_by": "tenant", "scope": "global-approximate"},
            {"per_second": 5},
        ]}],
        storage=REDIS, tenants=[], region={"name": "eu", "regions": ["us", "eu", "apac"], **region},
    )


IDENT = Identity(tier="std", tier_source="consumer_tag", tenant="acme", consumer_id="c1", credential_id=None,
                 client_ip="10.0.0.1")


def test_global_approximate_limits_become_global_rules_and_strict_ones_stay_exact() -> None:
    cfg = parse_config(global_config())
    plan = decide.build_plan(cfg, IDENT, cfg.tiers["std"], "chat", None)
    kinds = {r.name: type(r) for r in plan.rules}
    assert kinds == {"tier_rate:Minute:0": GlobalRule, "tier_tokens:Tokens-Day:0": GlobalRule,
                     "tier_rate:Second:1": RateRule}
    assert len({key_slot(r.key) for r in plan.rules}) == 1  # still one slot: one script


def test_a_stale_exchange_gives_global_limits_the_region_share() -> None:
    cfg = parse_config(global_config())
    plan = decide.build_plan(cfg, IDENT, cfg.tiers["std"], "chat", None, exchange_stale=True)
    limits = {r.name: r.limit for r in plan.rules}
    assert limits == {"tier_rate:Minute:0": 20, "tier_tokens:Tokens-Day:0": 333, "tier_rate:Second:1": 5}
    full = parse_config(global_config(exchange_fallback="full"))
    plan = decide.build_plan(full, IDENT, full.tiers["std"], "chat", None, exchange_stale=True)
    assert {r.name: r.limit for r in plan.rules}["tier_rate:Minute:0"] == 60


def test_lanes_move_all_global_decisions_to_another_slot_but_never_mix_with_strict_rules() -> None:
    only_global = config(
        tiers=[{"name": "std", "models": ["*"], "limits": [
            {"per_minute": 60, "limit_by": "tenant", "scope": "global-approximate"}]}],
        storage=REDIS, tenants=[], region={"name": "eu", "regions": ["us", "eu"], "lanes": 4})
    cfg = parse_config(only_global)
    base = decide.build_plan(cfg, IDENT, cfg.tiers["std"], "chat", None)
    slots = set()
    for lane in range(4):
        [rule] = decide.build_plan(cfg, IDENT, cfg.tiers["std"], "chat", None, lane=lane).rules
        assert isinstance(rule, GlobalRule) and rule.group == base.rules[0].key
        slots.add(key_slot(rule.key))
    assert len(slots) > 1
    mixed = parse_config(global_config(lanes=4))
    plan = decide.build_plan(mixed, IDENT, mixed.tiers["std"], "chat", None, lane=2)
    assert all(getattr(r, "group", r.key) == r.key for r in plan.rules)  # a strict rule keeps them un-laned


def test_flood_counters_are_consumed_but_never_shown_to_callers() -> None:
    cfg = {"default_tier": "std", "tiers": [{"name": "std", "models": ["*"], "limits": [{"per_minute": 50}]}],
           "global_limits": [{"model": "shared-embed", "per_minute": 5}]}
    p = plugin(cfg)
    kong = FakeKong(serialize(consumer=consumer("c1", tenant="acme"), service="shared-embed"))
    assert run(p, kong) is None
    assert kong.response_headers["X-RateLimit-Remaining-Minute"] == "49"  # the caller's own budget only
    for _ in range(4):
        run(p, FakeKong(serialize(consumer=consumer("c2", tenant="globex"), service="shared-embed")))
    flooded = run(p, FakeKong(serialize(consumer=consumer("c1", tenant="acme"), service="shared-embed")))
    assert flooded.status == 429 and flooded.body["denied_by"] == "global_flood"
    assert flooded.headers.get("X-RateLimit-Remaining-Minute") == "48"


class CountingStorage(MemoryStorage):
    def __init__(self) -> None:
        super().__init__(clock=lambda: T0)
        self.calls = 0

    def run(self, script: Any, keys: Any, args: Any, now: float | None = None) -> Any:
        self.calls += 1
        return super().run(script, keys, args, now)


def test_a_decision_with_global_and_strict_limits_is_one_storage_round_trip() -> None:
    storage = CountingStorage()
    cfg = config(tiers=[{"name": "std", "models": ["*"], "limits": [
        {"per_minute": 60, "per_day": 1000, "limit_by": "tenant", "scope": "global-approximate"},
        {"per_second": 5}]}], storage=REDIS, tenants=[])
    p = TierQuota(cfg, storage=storage, clock=lambda: T0)
    for _ in range(3):
        assert run(p, FakeKong(serialize(consumer=consumer("c1", tenant="acme"), service="chat"))) is None
    assert storage.calls == 3
