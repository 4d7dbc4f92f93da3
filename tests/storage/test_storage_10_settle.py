"""Settling a request -- token refund or extra charge, and its concurrency lease -- in one script."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from kong_plugins.storage import CalendarRule, ConcurrencyRule, Limiter, RateRule, make_key

from .conftest import Backend


def rules(tag: str) -> list[Any]:
    return [
        RateRule("tokens_per_minute", make_key("settle", "tpm", hash_tag=tag), limit=1000, period=60.0, cost=600),
        CalendarRule("tokens_per_day", make_key("settle", "tpd", hash_tag=tag), limit=5000, unit="day", cost=600),
        ConcurrencyRule("in_flight", make_key("settle", "conc", hash_tag=tag), limit=1, lease_ttl=600.0),
    ]


def test_settle_refunds_and_releases_together(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    first = limiter.check_and_consume(rules("a"), backend.now())
    assert first.allowed and first.reservation is not None
    busy = limiter.check_and_consume(rules("a"), backend.now())
    assert not busy.allowed and busy.denied_by is not None  # 600 + 600 > 1000 tokens, and 1 in flight
    released = limiter.settle(first.reservation, {"tokens_per_minute": -500, "tokens_per_day": -500},
                              backend.now())
    assert released == 1
    again = limiter.check_and_consume(rules("a"), backend.now())
    assert again.allowed  # 100 + 600 tokens fit, the slot is free
    states = {s.rule.name: s for s in again.states}
    assert states["tokens_per_day"].remaining == 5000 - 100 - 600
    assert states["tokens_per_minute"].remaining <= 1000 - 100 - 600 + 5  # a few tokens drained meanwhile
    assert again.reservation is not None
    assert limiter.settle(again.reservation, {}, backend.now()) == 1  # nothing to refund: release only
    assert limiter.settle(again.reservation, {}, backend.now()) == 0  # released already


def test_settle_refuses_what_it_cannot_settle(backend: Backend) -> None:
    limiter = Limiter(backend.storage)
    decision = limiter.check_and_consume(rules("b"), backend.now())
    assert decision.reservation is not None
    with pytest.raises(ValueError, match="released, not adjusted"):
        limiter.settle(decision.reservation, {"in_flight": 1})
    with pytest.raises(ValueError, match="no rule named"):
        limiter.settle(decision.reservation, {"unknown": 1})


def test_settle_is_one_redis_round_trip(redis_backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = Limiter(redis_backend.storage)
    warm = limiter.check_and_consume(rules("c"))
    assert warm.reservation is not None
    # The script gets loaded on the node holding the keys; the refund makes room for the next one.
    limiter.settle(warm.reservation, {"tokens_per_minute": -600, "tokens_per_day": -600})
    decision = limiter.check_and_consume(rules("c"))
    assert decision.reservation is not None
    sent: list[bytes] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        chunks = command if isinstance(command, list) else [command]
        sent.append(bytes(chunks[0])[:40])
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    assert limiter.settle(decision.reservation, {"tokens_per_minute": -100, "tokens_per_day": -100}) == 1
    assert len(sent) == 1 and b"EVALSHA" in sent[0]
