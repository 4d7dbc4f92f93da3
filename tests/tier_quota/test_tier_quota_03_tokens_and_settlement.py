"""LLM tokens: reserved before the call, settled in the log phase; leases released; tenants isolated."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins.tier_quota import BufferingTierQuota
from kong_plugins.tier_quota.config import parse_config
from kong_plugins.tier_quota.tokens import estimate, usage_from_body, usage_from_log
from tests.tier_quota.quota_helpers import T0, FakeKong, consumer, gateway_config, plugin, run, serialize

TOKENS = parse_config(gateway_config()).tokens
USER = consumer("u1", "llm")


def llm_config(**overrides: Any) -> dict[str, Any]:
    return gateway_config(tiers=[{"name": "free", "models": ["*"]}, {
        "name": "llm", "models": ["*"], "limits": [{"tokens_per_minute": 1000, "concurrency": 2}]}],
        **overrides)


def chat(max_tokens: int | None = 500, prompt: str = "p" * 400) -> bytes:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "system", "content": "s" * 0},
                                                       {"role": "user", "content": prompt}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return json.dumps(body).encode()


def test_estimate_is_prompt_plus_requested_max_tokens() -> None:
    est = estimate(chat(500), 0, TOKENS)
    assert (est.prompt, est.max_tokens, est.reservation) == (100, 500, 600)
    assert estimate(chat(None), 0, TOKENS).max_tokens == TOKENS.default_max_tokens
    parts = json.dumps({"messages": [{"role": "user", "content": [{"type": "text", "text": "abcd" * 10}]}],
                        "max_completion_tokens": 7}).encode()
    assert estimate(parts, 0, TOKENS).reservation == 17


@pytest.mark.parametrize("body", [b"not json", b"", b"[1,2]", b'{"max_tokens": "lots"}', b"\xff\xfe"])
def test_odd_bodies_are_estimated_from_their_size(body: bytes) -> None:
    est = estimate(body, 999, TOKENS)
    assert est.max_tokens == TOKENS.default_max_tokens
    assert est.prompt == -(-len(body) // 4)


@pytest.mark.parametrize(("usage", "expected"), [
    ({"total_tokens": 42}, 42),
    ({"prompt_tokens": 40, "completion_tokens": 2}, 42),
    ({"input_tokens": 40, "output_tokens": 2}, 42),
    ({"total_tokens": -1}, None),
    ({"total_tokens": "42"}, None),
    ({"total_tokens": 1e12}, None),
    ({"total_tokens": 4.5}, None),
    ({"total_tokens": True}, None),
    ("oops", None),
    (None, None),
])
def test_usage_is_read_strictly(usage: Any, expected: int | None) -> None:
    assert usage_from_body(json.dumps({"usage": usage}).encode(), TOKENS) == expected
    assert usage_from_log({"ai-proxy": {"usage": usage}}, None, TOKENS) == expected


def test_log_phase_refund_makes_room_for_the_next_request() -> None:
    p = plugin(llm_config())
    first = serialize(consumer=USER, at=T0)
    assert run(p, FakeKong(first, body=chat(500))) is None  # reserves 600 of 1000
    denied = run(p, FakeKong(serialize(consumer=USER, at=T0 + 0.1), body=chat(500)))
    assert denied is not None and denied.body["denied_by"] == "tier_tokens"
    settled = serialize(consumer=USER, at=T0, ai={"ai-proxy": {"usage": {"total_tokens": 150}}})
    assert run(p, FakeKong(settled), "log") is None  # 600 reserved -> 150 used
    assert run(p, FakeKong(serialize(consumer=USER, at=T0 + 0.2), body=chat(500))) is None


def test_absurd_or_missing_usage_keeps_the_reservation() -> None:
    p = plugin(llm_config())
    assert run(p, FakeKong(serialize(consumer=USER, at=T0), body=chat(500))) is None
    run(p, FakeKong(serialize(consumer=USER, at=T0, ai={"ai-proxy": {"usage": {"total_tokens": -999}}})), "log")
    denied = run(p, FakeKong(serialize(consumer=USER, at=T0 + 0.1), body=chat(500)))
    assert denied is not None and denied.body["denied_by"] == "tier_tokens"


def test_usage_above_the_reservation_is_charged() -> None:
    p = plugin(llm_config(tokens={"usage_header": "x-llm-total-tokens"}))
    assert run(p, FakeKong(serialize(consumer=USER, at=T0), body=chat(100))) is None  # reserves 200
    log_data = serialize(consumer=USER, at=T0)
    log_data["response"] = {"status": 200, "headers": {"x-llm-total-tokens": "900"}}
    run(p, FakeKong(log_data), "log")
    denied = run(p, FakeKong(serialize(consumer=USER, at=T0 + 0.1), body=chat(100)))
    assert denied is not None and denied.body["denied_by"] == "tier_tokens"


def test_concurrency_leases_are_released_in_the_log_phase() -> None:
    p = plugin(llm_config())
    a, b = serialize(consumer=USER, at=T0, uri="/a"), serialize(consumer=USER, at=T0, uri="/b")
    assert run(p, FakeKong(a, body=chat(1))) is None
    assert run(p, FakeKong(b, body=chat(1))) is None
    third = run(p, FakeKong(serialize(consumer=USER, at=T0 + 1, uri="/c"), body=chat(1)))
    assert third is not None and third.body["denied_by"] == "tier_concurrency"
    run(p, FakeKong(a), "log")
    assert run(p, FakeKong(serialize(consumer=USER, at=T0 + 1, uri="/c"), body=chat(1))) is None
    assert len(p.pending) == 2


def test_log_phase_does_nothing_without_token_or_concurrency_limits() -> None:
    p = plugin(gateway_config(tiers=[{"name": "free", "models": ["*"], "limits": [{"per_second": 5}]}]))
    kong = FakeKong(serialize())
    run(p, kong, "log")
    assert kong.calls == []


def test_response_body_usage_with_the_buffering_variant() -> None:
    p = plugin(llm_config(tokens={"usage_source": "response_body"}), cls=BufferingTierQuota)
    data = serialize(consumer=USER, at=T0)
    assert run(p, FakeKong(data, body=chat(500))) is None
    response = FakeKong(data)
    response.response_body = json.dumps({"usage": {"prompt_tokens": 90, "completion_tokens": 10}}).encode()
    run(p, response, "response")
    assert response.calls == ["kong.ctx.shared.get", "kong.service.response.get_raw_body"]
    run(p, FakeKong(data), "log")
    assert run(p, FakeKong(serialize(consumer=USER, at=T0 + 0.1), body=chat(500))) is None


names = st.text(alphabet="ab:{}%|-", min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names, names, names, names)
def test_tenants_never_share_counters(tenant_a: str, tenant_b: str, user_a: str, user_b: str) -> None:
    if tenant_a == tenant_b:
        return
    p = plugin(gateway_config(tiers=[{"name": "free", "models": ["*"], "limits": [{"per_minute": 2}]}]))
    a = consumer(user_a, tenant=tenant_a)
    for _ in range(2):
        assert run(p, FakeKong(serialize(consumer=a))) is None
    assert run(p, FakeKong(serialize(consumer=a))) is not None
    b = consumer(user_b, tenant=tenant_b)
    assert run(p, FakeKong(serialize(consumer=b))) is None
