"""Access decisions of the three-model gateway, run through the real handler with a fake PDK.

The clock is Kong's request start time (``started_at`` in serialize), injected per request.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kong_plugins.errors import StorageError
from kong_plugins.storage import MemoryStorage
from tests.tier_quota.quota_helpers import T0, FakeKong, consumer, gateway_config, plugin, run, serialize

FREE = consumer("alice", "free")
PREMIUM = consumer("bob", "premium")
CHAT = json.dumps({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "x" * 40}]}).encode()


def test_free_tier_calls_textgen_and_sees_kong_style_headers() -> None:
    p = plugin()
    kong = FakeKong(serialize(consumer=FREE), body=CHAT)
    assert run(p, kong) is None
    h = kong.response_headers
    assert h["X-RateLimit-Limit-Second"] == "2" and h["X-RateLimit-Remaining-Second"] == "1"
    assert h["X-RateLimit-Limit-Minute"] == "5" and h["X-RateLimit-Remaining-Minute"] == "4"
    assert h["X-RateLimit-Limit-Day"] == "100" and h["X-RateLimit-Remaining-Day"] == "99"
    assert h["X-RateLimit-Limit-Tokens-Minute"] == "2000"
    assert h["X-RateLimit-Remaining-Tokens-Minute"] == str(2000 - 110)
    assert (h["RateLimit-Limit"], h["RateLimit-Remaining"]) == ("2", "1")
    assert int(h["RateLimit-Reset"]) >= 1


def test_allow_path_costs_three_round_trips_with_handle_event() -> None:
    p = plugin()
    kong = FakeKong(serialize(consumer=PREMIUM))
    assert run(p, kong) is None
    assert kong.calls == ["kong.ctx.shared.get", "kong.response.set_headers"]


def test_token_limits_read_the_body_once() -> None:
    kong = FakeKong(serialize(consumer=FREE), body=CHAT)
    run(plugin(), kong)
    assert kong.calls == ["kong.ctx.shared.get", "kong.request.get_raw_body", "kong.response.set_headers"]
    kong = FakeKong(serialize(consumer=FREE), body=CHAT)
    run(plugin(gateway_config(tokens={"estimate_from": "request_size"})), kong)
    assert kong.calls == ["kong.ctx.shared.get", "kong.response.set_headers"]


def test_a_tier_cannot_call_a_model_it_is_not_allowed() -> None:
    exited = run(plugin(), FakeKong(serialize(consumer=FREE, service="imagegen")))
    assert exited is not None and exited.status == 403
    assert exited.body == {"message": "This tier may not call this model", "denied_by": "model_access"}


def test_over_the_limit_is_429_with_retry_after_and_the_rule_class() -> None:
    p = plugin()
    for _ in range(2):
        assert run(p, FakeKong(serialize(consumer=FREE), body=CHAT)) is None
    exited = run(p, FakeKong(serialize(consumer=FREE), body=CHAT))
    assert exited is not None and exited.status == 429
    assert exited.body == {"message": "API rate limit exceeded", "denied_by": "tier_rate"}
    # Admitted at T0, the two still count at T0 + 1 s (the window spans 1 s plus at most one
    # 50 ms bucket): they leave at T0 + 1.05 s, so an honest whole-second Retry-After is 2.
    assert exited.headers["Retry-After"] == "2"
    assert exited.headers["X-RateLimit-Remaining-Second"] == "0"
    assert "tq:" not in json.dumps(exited.body)


def edge_plugin(**limit: int) -> Any:
    return plugin(gateway_config(tiers=[{"name": "free", "models": ["*"], "limits": [limit]}]))


def test_no_double_burst_at_a_minute_edge() -> None:
    p = edge_plugin(per_minute=10)
    for i in range(10):
        assert run(p, FakeKong(serialize(consumer=FREE, at=T0 + 59 + i / 100))) is None
    # A fixed window would reset at T0 + 60 and admit ten more at once; a leaky bucket one more
    # every 6 s. The sliding window holds the ten until they leave it: their 3 s bucket
    # [T0 + 57, T0 + 60) leaves at T0 + 120, no rolling minute ever sees an eleventh.
    for at in (T0 + 60.05, T0 + 65.1, T0 + 119.09, T0 + 119.999):
        denied = run(p, FakeKong(serialize(consumer=FREE, at=at)))
        assert denied is not None and denied.status == 429
    assert denied.headers["Retry-After"] == "1"
    assert all(run(p, FakeKong(serialize(consumer=FREE, at=T0 + 120))) is None for _ in range(10))
    assert run(p, FakeKong(serialize(consumer=FREE, at=T0 + 120))) is not None


def test_daily_quota_restarts_at_utc_midnight() -> None:
    p = edge_plugin(per_day=3)
    last_second = T0 + 86400 - 1
    for _ in range(3):
        assert run(p, FakeKong(serialize(consumer=FREE, at=last_second))) is None
    denied = run(p, FakeKong(serialize(consumer=FREE, at=last_second + 0.5)))
    assert denied is not None and denied.headers["Retry-After"] == "1"
    assert run(p, FakeKong(serialize(consumer=FREE, at=T0 + 86400))) is None


def admit_and_finish(p: Any, data: dict[str, Any]) -> None:
    assert run(p, FakeKong(data)) is None
    assert run(p, FakeKong(data), "log") is None


def test_a_request_denied_by_one_limit_consumes_none_of_the_others() -> None:
    p = plugin()
    for _ in range(3):
        admit_and_finish(p, serialize(consumer=PREMIUM, service="imagegen"))
    for _ in range(5):
        denied = run(p, FakeKong(serialize(consumer=PREMIUM, service="imagegen")))
        assert denied is not None and denied.body["denied_by"] == "tier_rate"
    # The global flood limit (5/s on imagegen) saw only the 3 admitted requests.
    carol = consumer("carol", "premium")
    admit_and_finish(p, serialize(consumer=carol, service="imagegen"))
    admit_and_finish(p, serialize(consumer=carol, service="imagegen"))
    flood = run(p, FakeKong(serialize(consumer=carol, service="imagegen")))
    assert flood is not None and flood.body["denied_by"] == "global_flood"


def test_limit_by_tenant_shares_one_budget_between_a_tenants_consumers() -> None:
    config = gateway_config(tiers=[{"name": "free", "models": ["*"],
                                    "limits": [{"per_second": 3, "limit_by": "tenant"}]}])
    p = plugin(config)
    members = [consumer(f"c{i}", tenant="acme") for i in range(4)]
    results = [run(p, FakeKong(serialize(consumer=c))) for c in members]
    assert [r is None for r in results] == [True, True, True, False]
    assert run(p, FakeKong(serialize(consumer=consumer("z", tenant="other")))) is None


def test_anonymous_callers_get_the_default_tier_counted_per_ip() -> None:
    p = edge_plugin(per_second=1)
    assert run(p, FakeKong(serialize(client_ip="192.0.2.1"))) is None
    assert run(p, FakeKong(serialize(client_ip="192.0.2.1"))) is not None
    assert run(p, FakeKong(serialize(client_ip="192.0.2.2"))) is None


def test_forged_identity_headers_change_nothing() -> None:
    forged = {"x-consumer-id": "root", "x-consumer-username": "admin", "x-ai-tier": "internal",
              "x-tier": "internal", "x-consumer-custom-id": "internal:1"}
    exited = run(plugin(), FakeKong(serialize(consumer=FREE, service="imagegen", headers=forged)))
    assert exited is not None and exited.status == 403


def test_unknown_tier_falls_back_to_default_or_is_denied() -> None:
    platinum = consumer("dave", "platinum")
    assert run(plugin(), FakeKong(serialize(consumer=platinum, service="imagegen"))).status == 403  # type: ignore[union-attr]
    exited = run(plugin(gateway_config(unknown_tier="deny")), FakeKong(serialize(consumer=platinum)))
    assert exited is not None and exited.body["denied_by"] == "unknown_tier"


def test_shadow_mode_reports_without_blocking() -> None:
    p = plugin(gateway_config(shadow=True))
    kong = FakeKong(serialize(consumer=FREE, service="imagegen"))
    assert run(p, kong) is None
    assert kong.response_headers["X-AI-Quota-Shadow"] == "would-deny; rule=model_access"
    for _ in range(2):
        run(p, FakeKong(serialize(consumer=FREE), body=CHAT))
    kong = FakeKong(serialize(consumer=FREE), body=CHAT)
    assert run(p, kong) is None
    assert "tier_rate" in kong.response_headers["X-AI-Quota-Shadow"]


def test_hidden_headers_save_a_round_trip() -> None:
    kong = FakeKong(serialize(consumer=PREMIUM))
    assert run(plugin(gateway_config(hide_client_headers=True)), kong) is None
    assert kong.calls == ["kong.ctx.shared.get"]


def test_upstream_learns_tier_tenant_and_reservation() -> None:
    kong = FakeKong(serialize(consumer=consumer("erin", "free", "acme")), body=CHAT)
    assert run(plugin(gateway_config(upstream_headers=True)), kong) is None
    assert kong.upstream_headers == {"X-AI-Tier": "free", "X-AI-Tenant": "acme", "X-AI-Model": "textgen",
                                     "X-AI-Token-Reservation": "110"}


class BrokenStorage(MemoryStorage):
    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise StorageError("connection refused")


def test_storage_down_fail_open_lets_requests_through_and_says_so() -> None:
    kong = FakeKong(serialize(consumer=PREMIUM))
    assert run(plugin(storage=BrokenStorage()), kong) is None
    assert kong.response_headers == {"X-AI-Quota-Degraded": "storage-unavailable"}


def test_storage_down_fail_closed_answers_503() -> None:
    exited = run(plugin(gateway_config(failure_mode="closed"), storage=BrokenStorage()),
                 FakeKong(serialize(consumer=PREMIUM)))
    assert exited is not None and exited.status == 503
    assert exited.body["denied_by"] == "storage_unavailable"


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_storage_down_with_fallback_applies_local_limits(mode: str) -> None:
    config = gateway_config(failure_mode=mode, fallback={"enabled": True, "per_second": 1})
    p = plugin(config, storage=BrokenStorage())
    assert run(p, FakeKong(serialize(consumer=PREMIUM))) is None
    exited = run(p, FakeKong(serialize(consumer=PREMIUM)))
    assert exited is not None and exited.status == 429 and exited.body["denied_by"] == "fallback"
    # the local per-second window: the first request leaves it 1 s plus one 50 ms bucket later
    assert run(p, FakeKong(serialize(consumer=PREMIUM, at=T0 + 1))) is not None
    assert run(p, FakeKong(serialize(consumer=PREMIUM, at=T0 + 1.05))) is None


def test_invalid_jwt_is_401_and_forged_tokens_never_raise_the_tier() -> None:
    config = gateway_config(identity={"tier_sources": ["jwt_claim"], "jwt": {
        "enabled": True, "algorithms": ["HS256"], "keys": [{"key": "k" * 32}]}})
    kong = FakeKong(serialize(), headers={"authorization": "Bearer not.a.token"})
    exited = run(plugin(config), kong)
    assert exited is not None and exited.status == 401 and exited.body["denied_by"] == "invalid_token"
    assert kong.calls[:2] == ["kong.ctx.shared.get", "kong.request.get_header"]
