"""Window edges on an injected clock, replayable decisions, and tenant isolation as a property.

The memory backend decides by Kong's request start time (``started_at`` in serialize), so these
tests move time by setting it per request: no sleeping, exact edges.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tier_quota.quota_helpers import T0, FakeKong, consumer, gateway_config, plugin, run, serialize

USER = consumer("alice", "free", "acme")


def limited(**limit: Any) -> Any:
    return plugin(gateway_config(tiers=[{"name": "free", "models": ["*"], "limits": [limit]}]))


def admitted(p: Any, at: float, n: int = 1, body: bytes | None = None) -> int:
    count = 0
    for i in range(n):
        if run(p, FakeKong(serialize(consumer=USER, at=at, uri=f"/{at}/{i}"), body=body)) is None:
            count += 1
    return count


@pytest.mark.parametrize(("window", "period", "limit"), [
    ("per_second", 1.0, 5),
    ("per_minute", 60.0, 10),
    ("per_hour", 3600.0, 120),
])
def test_no_second_burst_across_a_window_edge(window: str, period: float, limit: int) -> None:
    p = limited(**{window: limit})
    edge = T0 + 10 * period  # a multiple of the period: where a fixed window would restart
    burst = edge - period / 1000
    assert admitted(p, burst, limit + 1) == limit
    # A fixed window (Kong's rate-limiting) would admit `limit` more right after the edge, a
    # leaky bucket one more every period / limit.
    assert admitted(p, edge + period / 1000, limit) == 0
    assert admitted(p, burst + period / limit + period / 10_000, 2) == 0
    # One period after the burst it still counts: the window spans the period plus at most one
    # of its 20 buckets (the burst's bucket [edge - period/20, edge) leaves at edge + period).
    assert admitted(p, burst + period, 1) == 0
    assert admitted(p, edge + period, limit + 1) == limit


@pytest.mark.parametrize(("window", "period", "limit"), [("per_second", 1.0, 10), ("per_minute", 60.0, 100)])
def test_a_client_hammering_at_5x_gets_the_limit_in_every_rolling_window_and_no_more(
    window: str, period: float, limit: int
) -> None:
    """The demo's premium client: "100/minute" from a standing start admitted 199 in its first
    minute with a leaky bucket. Every window starting at an admission is checked."""
    p = limited(**{window: limit})
    start = T0 + 0.37 * period
    gap = period / (5 * limit)
    times = [start + i * gap for i in range(5 * limit * 3)]  # three periods at five times the rate
    ok = [t for t in times if admitted(p, t) == 1]
    busiest = max(sum(1 for u in ok if t <= u <= t + period) for t in ok)
    assert busiest == limit
    assert sum(1 for t in ok if t < start + period) == limit  # the first period: the limit, no bonus
    assert len(ok) >= 2 * limit


def test_tokens_per_minute_is_a_sliding_window_too() -> None:
    p = limited(tokens_per_minute=1000)
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 500}).encode()
    edge = T0 + 600  # reservation: 100 prompt + 500 completion = 600 tokens
    assert admitted(p, edge - 0.001, 2, body) == 1
    assert admitted(p, edge + 0.001, 1, body) == 0
    # The 600 reserved in the 3 s bucket [edge - 3, edge) count until it leaves at edge + 60:
    # no rolling minute holds more than 1,000 reserved tokens.
    assert admitted(p, edge + 12.001, 1, body) == 0
    assert admitted(p, edge + 59.999, 1, body) == 0
    assert admitted(p, edge + 60, 2, body) == 1


@pytest.mark.parametrize("window", ["per_day", "tokens_per_day"])
def test_daily_quotas_follow_the_utc_calendar(window: str) -> None:
    p = limited(**{window: 3})
    body = json.dumps({"prompt": "", "max_tokens": 1}).encode() if window == "tokens_per_day" else None
    last_moment = T0 + 86400 - 0.001  # 23:59:59.999 UTC
    assert admitted(p, last_moment, 4, body) == 3
    denied = run(p, FakeKong(serialize(consumer=USER, at=last_moment), body=body))
    assert denied is not None and denied.headers["Retry-After"] == "1"
    assert admitted(p, T0 + 86400, 4, body) == 3  # 00:00:00.000: a new day, a new quota


requests = st.lists(
    st.tuples(st.floats(min_value=0, max_value=180, allow_nan=False), st.sampled_from(["a", "b", "c"])),
    min_size=1, max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests)
def test_replaying_the_same_requests_reproduces_every_decision(sequence: list[tuple[float, str]]) -> None:
    """Decisions depend on Kong's start times only: a replay on a fresh store, on another day of the
    wall clock, gives the same answers and headers."""
    config = gateway_config(tiers=[{"name": "free", "models": ["*"],
                                    "limits": [{"per_second": 2, "per_minute": 6, "per_day": 20}]}])

    def outcomes(wall_clock: float) -> list[tuple[int, dict[str, Any]]]:
        p = plugin(config, clock=lambda: wall_clock)
        seen = []
        for offset, who in sorted(sequence):
            kong = FakeKong(serialize(consumer=consumer(who, "free"), at=T0 + offset))
            exited = run(p, kong)
            seen.append((200, kong.response_headers) if exited is None else (exited.status, exited.headers))
        return seen

    assert outcomes(T0) == outcomes(T0 + 7 * 86400 + 1234.5)


# -- tenant isolation ----------------------------------------------------------------------------------

#: Names built from the characters that carry structure in keys, hash tags and tags.
crafted = st.text(alphabet="ab:{}%|-\\ ", min_size=1, max_size=5)
callers = st.tuples(st.none() | crafted, crafted, st.sampled_from(["10.0.0.1", "10.0.0.2"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["consumer", "tenant", "ip"]), st.lists(callers, min_size=1, max_size=30))
def test_counters_never_leak_across_tenants(limit_by: str, sequence: list[tuple[str | None, str, str]]) -> None:
    """Against a model where every (tenant, subject) pair has its own counter: whatever the names,
    a tenant's requests never spend another tenant's quota, and a tenant's callers share exactly
    what ``limit_by`` says they share."""
    limit = 2
    p = plugin(gateway_config(tiers=[{"name": "free", "models": ["*"],
                                      "limits": [{"per_minute": limit, "limit_by": limit_by}]}]))
    used: dict[tuple[str, str], int] = {}
    for i, (tenant, consumer_id, ip) in enumerate(sequence):
        caller = consumer(consumer_id, "free", tenant)
        subject = {"consumer": consumer_id, "tenant": "", "ip": ip}[limit_by]
        counter = (tenant or "default", subject)
        expected = used.get(counter, 0) < limit
        got = run(p, FakeKong(serialize(consumer=caller, client_ip=ip, uri=f"/{i}"))) is None
        assert got == expected, (counter, used)
        if got:
            used[counter] = used.get(counter, 0) + 1
