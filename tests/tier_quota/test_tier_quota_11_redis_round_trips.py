"""Redis round trips per request on every Redis shape: one in access whatever the path, and for an
LLM request one more after the response that settles its tokens and releases its lease together."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from kong_plugins.tier_quota import TierQuota
from tests.tier_quota.quota_helpers import FakeKong, consumer, gateway_config, run, serialize
from tests.tier_quota.test_tier_quota_05_redis import KINDS, storage_config

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

USER = consumer("llm-user", "llm", "acme")
CHAT = json.dumps({"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 200}).encode()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The first bytes of every command redis-py sends from now on."""
    commands: list[bytes] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        chunks = command if isinstance(command, list) else [command]
        commands.append(bytes(chunks[0])[:40])
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    yield commands


def llm_plugin(kind: str, request: pytest.FixtureRequest) -> TierQuota:
    config = gateway_config(storage=storage_config(kind, request), tokens={"usage_header": "x-usage"}, tiers=[
        {"name": "free", "models": ["*"], "limits": [{"per_minute": 1}]},
        {"name": "llm", "models": ["*"], "limits": [{"per_minute": 100, "tokens_per_minute": 100_000,
                                                      "concurrency": 10}]}])
    return TierQuota(config)


def finished(data: dict[str, Any], usage: str) -> FakeKong:
    logged = dict(data)
    logged["response"] = {"status": 200, "headers": {"x-usage": usage}}
    return FakeKong(logged)


@pytest.mark.parametrize("kind", KINDS)
def test_an_llm_request_costs_one_round_trip_in_access_and_one_after_the_response(
    kind: str, request: pytest.FixtureRequest, sent: list[bytes]
) -> None:
    p = llm_plugin(kind, request)
    warm = serialize(consumer=USER, uri="/warm")  # connects and loads both scripts
    assert run(p, FakeKong(warm, body=CHAT)) is None
    run(p, finished(warm, "10"), "log")
    sent.clear()
    data = serialize(consumer=USER, uri="/measured")
    assert run(p, FakeKong(data, body=CHAT)) is None
    assert len(sent) == 1 and b"EVALSHA" in sent[0]
    run(p, finished(data, "42"), "log")
    assert len(sent) == 2 and b"EVALSHA" in sent[1], sent


@pytest.mark.parametrize("kind", KINDS)
def test_a_denied_request_costs_one_round_trip_and_nothing_after(
    kind: str, request: pytest.FixtureRequest, sent: list[bytes]
) -> None:
    p = llm_plugin(kind, request)
    anonymous = serialize(uri="/first")
    assert run(p, FakeKong(anonymous)) is None  # the free tier's only request this minute
    run(p, FakeKong(anonymous), "log")
    sent.clear()
    denied = serialize(uri="/second")
    exited = run(p, FakeKong(denied))
    assert exited is not None and exited.status == 429
    run(p, FakeKong(denied), "log")
    assert len(sent) == 1 and b"EVALSHA" in sent[0]
