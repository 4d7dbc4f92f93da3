"""Global rules in the limiter: local usage plus remote usage, one round trip, Lua and twin alike."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins.region._scripts import MERGE
from kong_plugins.storage import (
    GLOBAL_BUCKETS,
    GlobalRule,
    Limiter,
    MemoryStorage,
    RateRule,
    Storage,
    build_storage,
    make_key,
)
from kong_plugins.storage.keys import inbox_key_of, lane_key, remote_key_of
from kong_plugins.storage.redis_backend import RedisStorage
from kong_plugins.testing.redis_servers import RedisClusterServers, RedisServer

from .conftest import cluster_config, plain_config

T0 = 1_767_225_600.0


def rule(name: str = "g", limit: int = 10, window: Any = 60.0, cost: int = 1, tag: str = "t") -> GlobalRule:
    return GlobalRule(name, make_key("test-global", name, hash_tag=tag), limit, window, cost)


def now_of(storage: Storage) -> float:
    return storage.server_time() if isinstance(storage, RedisStorage) else T0


def bucket_of(storage: Storage, r: GlobalRule) -> int:
    return round(now_of(storage) * 1_000_000) // r.bucket_width_us()


def give_remote(storage: Storage, r: GlobalRule, buckets: dict[int, int], source: str = "region:eu") -> None:
    pairs: list[Any] = []
    for b, c in buckets.items():
        pairs += (b, c)
    storage.run(MERGE, [inbox_key_of(r.key), remote_key_of(r.key)],
                [1, min(buckets) - 1, 60_000, source, len(buckets), *pairs], now=T0)


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
def storage(request: pytest.FixtureRequest) -> Storage:
    if request.param == "memory":
        return MemoryStorage(clock=lambda: T0)
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return build_storage(plain_config(server))
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return build_storage(cluster_config(cluster))


def test_a_global_rule_alone_admits_exactly_its_limit(storage: Storage) -> None:
    limiter = Limiter(storage)
    g = rule(limit=5)
    decisions = [limiter.check_and_consume([g], now=T0) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.states[0].remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    # the usage is in the current bucket; it leaves the window one period (plus a bucket) later
    assert 0 < decisions[-1].retry_after <= 60 * (1 + 1 / GLOBAL_BUCKETS) + 1e-6


def test_remote_usage_counts_against_the_limit(storage: Storage) -> None:
    limiter = Limiter(storage)
    g = rule(limit=10)
    give_remote(storage, g, {bucket_of(storage, g): 7})
    admitted = [limiter.check_and_consume([g], now=T0).allowed for _ in range(5)]
    assert admitted == [True, True, True, False, False]


def test_remote_usage_outside_the_window_does_not_count(storage: Storage) -> None:
    limiter = Limiter(storage)
    g = rule(limit=3)
    old = bucket_of(storage, g) - GLOBAL_BUCKETS - 1
    give_remote(storage, g, {old: 100})
    assert limiter.check_and_consume([g], now=T0).allowed


def test_a_denied_global_rule_consumes_none_of_the_others(storage: Storage) -> None:
    limiter = Limiter(storage)
    g = rule(limit=2)
    strict = RateRule("strict", make_key("test-global", "strict", hash_tag="t"), 100, 60)
    results = [limiter.check_and_consume([strict, g], now=T0) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, False, False]
    assert results[-1].denied_by == g
    assert limiter.check_and_consume([strict], now=T0).states[0].remaining == 97


def test_calendar_global_rule_and_settlement(storage: Storage) -> None:
    limiter = Limiter(storage)
    g = rule(limit=1000, window="day", cost=600)
    first = limiter.check_and_consume([g], now=T0)
    assert first.allowed and first.states[0].remaining == 400
    assert not limiter.check_and_consume([g], now=T0).allowed
    assert first.reservation is not None
    limiter.adjust(first.reservation, {"g": -500}, now=T0)  # the call used 100 tokens, not 600
    second = limiter.check_and_consume([g], now=T0)
    assert second.allowed and second.states[0].remaining == 300


def test_admitted_global_usage_is_reported_to_the_journal_hook(storage: Storage) -> None:
    seen: list[str] = []
    limiter = Limiter(storage, on_global_usage=lambda rules: seen.extend(r.group for r in rules))
    g = rule(limit=1)
    assert limiter.check_and_consume([g], now=T0).allowed
    assert not limiter.check_and_consume([g], now=T0).allowed  # a denial changes nothing: not reported
    assert seen == [g.key]


def test_lane_keys_stay_in_their_own_slot_and_keep_the_parts() -> None:
    from kong_plugins.storage.keys import key_slot

    base = make_key("tq", "acme", "per_minute", hash_tag="t|acme|chat")
    lanes = [lane_key(base, n) for n in range(4)]
    assert len({*lanes, base}) == 5
    assert all(lane.endswith(":acme:per_minute") for lane in lanes)
    assert len({key_slot(k) for k in lanes}) > 1  # spread over slots
    assert key_slot(remote_key_of(lanes[2])) == key_slot(lanes[2])


# -- Lua and twin parity ------------------------------------------------------------------------

step = st.tuples(st.sampled_from(["check", "adjust"]), st.sampled_from(["hour", "day"]), st.integers(0, 9),
                 st.integers(-9, 9))


def replay(limiter: Limiter, steps: list[tuple[str, str, int, int]], now: float | None) -> list[Any]:
    seen: list[Any] = []
    reservations: dict[str, Any] = {}
    for action, which, cost, delta in steps:
        # an hour-long sliding window: the few ms Redis's clock moves during a test stay in one bucket
        g = rule(which, limit=20, window=3600.0 if which == "hour" else "day", cost=cost)
        if action == "check" or which not in reservations:
            d = limiter.check_and_consume([g], now)
            seen.append((d.allowed, d.states[0].remaining))
            if d.reservation is not None:
                reservations[which] = d.reservation
        else:
            limiter.adjust(reservations[which], {which: delta}, now)
    return seen


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(step, min_size=1, max_size=20))
def test_lua_and_python_twin_decide_global_rules_alike(redis_server: RedisServer, steps: list[Any]) -> None:
    redis_server.flush()
    on_redis = replay(Limiter(build_storage(plain_config(redis_server))), steps, None)
    on_memory = replay(Limiter(MemoryStorage(clock=lambda: T0)), steps, T0)
    assert on_redis == on_memory
