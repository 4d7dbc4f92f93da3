"""The limits engine on every backend: bursts, edges, all-or-nothing, leases, reservations.

Memory decides by the fake clock; Redis by its own clock, so on Redis the tests that let time
pass sleep fractions of a second and bound their assertions by the time that really elapsed.
"""

from __future__ import annotations

import pytest

from kong_plugins.storage import (
    CalendarRule,
    ConcurrencyRule,
    CrossSlotError,
    Limiter,
    MemoryStorage,
    RateRule,
    make_key,
)
from kong_plugins.storage.redis_backend import RedisStorage

from .conftest import Backend, FakeClock

TAG = "consumer-1"


def key(name: str, tag: str = TAG) -> str:
    return make_key("test-limits", name, hash_tag=tag)


def clock_of(backend: Backend) -> float:
    """What the backend decides by: the fake clock, or the Redis server's."""
    storage = backend.storage
    if isinstance(storage, RedisStorage):
        return storage.server_time()
    return backend.now()


def test_a_burst_admits_exactly_the_limit_then_says_when_to_retry(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    rule = RateRule("per_second", key("rps"), limit=5, period=1.0)
    decisions = [limiter.check_and_consume([rule], backend.now()) for _ in range(8)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert [d.states[0].remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    denied = decisions[5]
    assert denied.denied_by == rule
    assert denied.reservation is None
    # the burst leaves the window one period (plus at most one 50 ms bucket) after it came
    assert 0.9 < denied.retry_after <= 1.05 + 1e-6
    assert 0.9 < denied.states[0].reset_after <= 1.05 + 1e-6


def test_no_second_burst_right_after_a_window_edge(backend: Backend) -> None:
    """Fixed windows let 2 x limit through around an edge, a leaky bucket the limit plus its drain;
    a sliding window gives nothing back until the burst has left it."""
    limiter = Limiter(backend.storage)
    rule = RateRule("per_second", key("edge"), limit=10, period=1.0)
    start = clock_of(backend)
    assert sum(limiter.check_and_consume([rule], backend.now()).allowed for _ in range(10)) == 10
    backend.advance(0.3)
    assert sum(limiter.check_and_consume([rule], backend.now()).allowed for _ in range(20)) == 0
    backend.advance(0.8 if backend.is_memory else max(0.0, start + 1.1 - clock_of(backend)))
    assert sum(limiter.check_and_consume([rule], backend.now()).allowed for _ in range(20)) == 10


def test_a_request_denied_by_one_rule_consumes_none_of_the_others(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    wide = RateRule("per_minute", key("wide"), limit=100, period=60)
    daily = CalendarRule("per_day", key("daily"), limit=100, unit="day")
    narrow = RateRule("per_second", key("narrow"), limit=2, period=60)
    slots = ConcurrencyRule("in_flight", key("slots"), limit=50, lease_ttl=30)
    results = [limiter.check_and_consume([wide, daily, slots, narrow], backend.now()) for _ in range(6)]
    assert [r.allowed for r in results] == [True, True, False, False, False, False]
    assert all(r.denied_by == narrow for r in results[2:])
    alone = limiter.check_and_consume([wide, daily, slots], backend.now())
    remaining = {s.rule.name: s.remaining for s in alone.states}
    assert remaining == {"per_minute": 97, "per_day": 97, "in_flight": 47}


def test_the_decision_reports_every_rule(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    rules = [RateRule("rps", key("r1"), 3, 1.0), CalendarRule("daily", key("r2"), 10, "day", cost=4)]
    decision = limiter.check_and_consume(rules, backend.now())
    assert decision.allowed and decision.denied_by is None and decision.retry_after == 0
    rps, daily = decision.states
    assert (rps.limit, rps.remaining, rps.allowed) == (3, 2, True)
    assert (daily.limit, daily.remaining, daily.allowed) == (10, 6, True)
    assert 0 < daily.reset_after <= 86400


def test_daily_quota_resets_at_utc_midnight(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    rule = CalendarRule("daily", key("day"), limit=3, unit="day")
    decisions = [limiter.check_and_consume([rule], backend.now()) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    server_now = clock_of(backend)
    to_midnight = 86400 - server_now % 86400
    assert decisions[3].retry_after == pytest.approx(to_midnight, abs=1.0)
    assert decisions[3].denied_by == rule


def test_concurrency_leases_are_released_and_capacity_returns(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    rule = ConcurrencyRule("in_flight", key("conc"), limit=2, lease_ttl=30)
    first = limiter.check_and_consume([rule], backend.now())
    second = limiter.check_and_consume([rule], backend.now())
    third = limiter.check_and_consume([rule], backend.now())
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert 0 < third.retry_after <= 30
    assert first.reservation is not None
    assert limiter.release(first.reservation, backend.now()) == 1
    assert limiter.release(first.reservation, backend.now()) == 0  # releasing twice frees nothing more
    assert limiter.check_and_consume([rule], backend.now()).allowed
    assert not limiter.check_and_consume([rule], backend.now()).allowed


def test_a_crashed_request_does_not_leak_its_slot(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    rule = ConcurrencyRule("in_flight", key("lease"), limit=1, lease_ttl=0.3)
    assert limiter.check_and_consume([rule], backend.now()).allowed  # never released
    assert not limiter.check_and_consume([rule], backend.now()).allowed
    backend.advance(0.4)
    assert limiter.check_and_consume([rule], backend.now()).allowed


def test_token_reservations_are_settled_with_refunds_and_extra_charges(backend: Backend) -> None:
    limiter = Limiter(backend.storage)

    def tokens(cost: int) -> RateRule:
        return RateRule("tokens_per_hour", key("tokens"), limit=1000, period=3600, cost=cost)

    reserved = limiter.check_and_consume([tokens(600)], backend.now())
    assert reserved.allowed and reserved.states[0].remaining == 400
    assert not limiter.check_and_consume([tokens(600)], backend.now()).allowed
    assert reserved.reservation is not None
    limiter.adjust(reserved.reservation, {"tokens_per_hour": 100 - 600}, backend.now())  # used 100
    again = limiter.check_and_consume([tokens(600)], backend.now())
    assert again.allowed and again.states[0].remaining == 300
    assert again.reservation is not None
    limiter.adjust(again.reservation, {"tokens_per_hour": 1200}, backend.now())  # the model used far more
    after_debt = limiter.check_and_consume([tokens(1)], backend.now())
    assert not after_debt.allowed
    # 1,900 counted: nothing fits until they leave the window, an hour (plus one 180 s bucket) on
    assert 3600 - 60 < after_debt.retry_after <= 3780 + 1e-6


def test_daily_token_quota_refunds_within_the_day(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    rule = CalendarRule("tokens_per_day", key("dtok"), limit=1000, unit="day", cost=800)
    first = limiter.check_and_consume([rule], backend.now())
    assert first.allowed and first.reservation is not None
    limiter.adjust(first.reservation, {"tokens_per_day": -700}, backend.now())
    second = limiter.check_and_consume([rule], backend.now())
    assert second.allowed and second.states[0].remaining == 100


def test_a_cost_above_the_limit_never_fits(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    decision = limiter.check_and_consume([RateRule("tokens", key("huge"), 100, 60, cost=101)], backend.now())
    assert not decision.allowed
    assert decision.states[0].remaining == 100  # nothing was consumed


def test_keys_of_one_decision_must_share_a_slot(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    rules = [RateRule("a", key("x", tag="tenant-a"), 5, 1), RateRule("b", key("x", tag="tenant-b"), 5, 1)]
    with pytest.raises(CrossSlotError):
        limiter.check_and_consume(rules, backend.now())


def test_misuse_is_rejected_before_storage(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    with pytest.raises(ValueError):
        limiter.check_and_consume([RateRule("a", key("k"), 5, 1), RateRule("b", key("k"), 5, 1)])
    with pytest.raises(ValueError):
        RateRule("a", key("k"), limit=0, period=1)
    with pytest.raises(ValueError):
        CalendarRule("a", key("k"), limit=1, unit="week")  # type: ignore[arg-type]
    decision = limiter.check_and_consume([ConcurrencyRule("c", key("c"), 1, 5)], backend.now())
    assert decision.reservation is not None
    with pytest.raises(ValueError):
        limiter.adjust(decision.reservation, {"c": 1})
    with pytest.raises(ValueError):
        limiter.adjust(decision.reservation, {"unknown": 1})


# -- memory only: exact arithmetic under an injected clock -----------------------------------------


def test_capacity_comes_back_when_the_burst_leaves_the_window_injected_clock() -> None:
    clock = FakeClock()  # a whole second: the start of a 50 ms bucket
    limiter = Limiter(MemoryStorage(clock=clock))
    rule = RateRule("rps", key("refill"), limit=4, period=1.0)
    assert sum(limiter.check_and_consume([rule]).allowed for _ in range(6)) == 4
    clock.advance(0.25)
    assert not limiter.check_and_consume([rule]).allowed
    clock.advance(0.75)  # one period later: the bucket still counts (the window spans 1 to 1.05 s)
    assert not limiter.check_and_consume([rule]).allowed
    clock.advance(0.05)
    assert sum(limiter.check_and_consume([rule]).allowed for _ in range(6)) == 4


def test_fixed_window_edge_burst_is_impossible_with_an_injected_clock() -> None:
    """Around a whole-second edge a fixed window would admit 2 x limit; the sliding window none."""
    clock = FakeClock(start=1_767_225_600.0 - 0.01)  # 10 ms before a second (and a day) starts
    limiter = Limiter(MemoryStorage(clock=clock))
    rule = RateRule("rps", key("edge-exact"), limit=10, period=1.0)
    before = sum(limiter.check_and_consume([rule]).allowed for _ in range(10))
    clock.advance(0.02)
    after = sum(limiter.check_and_consume([rule]).allowed for _ in range(10))
    assert (before, after) == (10, 0)


def test_daily_quota_restarts_exactly_at_midnight_utc() -> None:
    clock = FakeClock(start=1_767_225_600.0 - 0.5)  # 23:59:59.5 on 2025-12-31
    limiter = Limiter(MemoryStorage(clock=clock))
    rule = CalendarRule("daily", key("midnight"), limit=2, unit="day")
    assert [limiter.check_and_consume([rule]).allowed for _ in range(3)] == [True, True, False]
    denied = limiter.check_and_consume([rule])
    assert denied.retry_after == pytest.approx(0.5)
    clock.advance(0.5)
    assert [limiter.check_and_consume([rule]).allowed for _ in range(3)] == [True, True, False]


def test_replaying_requests_reproduces_the_decisions() -> None:
    rules = [RateRule("rps", key("replay-r"), 3, 1.0), CalendarRule("hour", key("replay-c"), 7, "hour", cost=2)]
    times = [1_767_225_600.0 + i * 0.13 for i in range(25)]

    def run() -> list[tuple[bool, tuple[int, ...], float]]:
        limiter = Limiter(MemoryStorage(clock=lambda: 0.0))
        out = []
        for t in times:
            d = limiter.check_and_consume(rules, t)
            out.append((d.allowed, tuple(s.remaining for s in d.states), d.retry_after))
        return out

    first = run()
    assert first == run()
    assert {allowed for allowed, _, _ in first} == {True, False}
