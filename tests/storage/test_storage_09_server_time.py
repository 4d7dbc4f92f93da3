"""Whose clock decides: the Redis server's on Redis (every gateway node agrees), the request's on memory.

Gateway nodes' clocks drift; if each node decided by its own clock, a node running ahead would see
windows end early. Redis scripts read ``TIME`` on the server and ignore the ``now`` the caller passes;
the memory backend (one process, replays) decides by that ``now``.
"""

from __future__ import annotations

import pytest

from kong_plugins.storage import CalendarRule, Limiter, MemoryStorage, RateRule, make_key

from .conftest import Backend

DAY = 86400.0


def test_a_gateway_clock_a_day_ahead_does_not_restart_a_daily_quota_on_redis(redis_backend: Backend) -> None:
    limiter = Limiter(redis_backend.storage)
    rule = CalendarRule("per_day", make_key("clock", "day", hash_tag="c"), limit=2, unit="day")
    now = redis_backend.now()
    assert [limiter.check_and_consume([rule], now).allowed for _ in range(3)] == [True, True, False]
    # A node whose clock is a day (or a year) ahead asks again: same server day, same spent quota.
    assert not limiter.check_and_consume([rule], now + DAY).allowed
    assert not limiter.check_and_consume([rule], now + 365 * DAY).allowed


def test_a_gateway_clock_behind_does_not_refill_a_rate_on_redis(redis_backend: Backend) -> None:
    limiter = Limiter(redis_backend.storage)
    rule = RateRule("per_minute", make_key("clock", "rate", hash_tag="c"), limit=3, period=60.0)
    now = redis_backend.now()
    assert sum(limiter.check_and_consume([rule], now).allowed for _ in range(4)) == 3
    for skew in (-3600.0, 3600.0):
        decision = limiter.check_and_consume([rule], now + skew)
        assert not decision.allowed
        # the server's view: the three leave the window a minute (plus at most a 3 s bucket) on
        assert 55.0 < decision.retry_after <= 63.0 + 1e-6


@pytest.mark.parametrize("skew", [DAY, 365 * DAY])
def test_memory_decides_by_the_request_time_it_is_given(skew: float) -> None:
    limiter = Limiter(MemoryStorage(clock=lambda: 0.0))
    rule = CalendarRule("per_day", make_key("clock", "day", hash_tag="c"), limit=2, unit="day")
    start = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert [limiter.check_and_consume([rule], start).allowed for _ in range(3)] == [True, True, False]
    assert limiter.check_and_consume([rule], start + skew).allowed  # a later day, a fresh quota
