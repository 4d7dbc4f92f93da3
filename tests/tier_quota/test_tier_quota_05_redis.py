"""ai-tier-quota on real Redis: single node, Cluster and Sentinel; a failover; Redis down in both modes.

Redis decides by its own clock, so these tests use limits that cannot roll over during a test
(per minute / per day) rather than an injected clock (that is the memory backend's job, test 02).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from kong_plugins.storage import close_shared_clients
from kong_plugins.testing.redis_servers import RedisClusterServers, RedisServer, SentinelSet
from kong_plugins.tier_quota import TierQuota
from tests.tier_quota.quota_helpers import FakeKong, consumer, gateway_config, run, serialize

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

KINDS = ["redis", "redis-cluster", "redis-sentinel"]
USER = consumer("u-1", "premium", "acme")
FAST = {"connect_timeout": 300, "read_timeout": 500}


def storage_config(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return {"strategy": kind, "host": server.host, "port": server.port, **FAST}
    if kind == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return {"strategy": kind, "cluster_nodes": [{"host": h, "port": p} for h, p in cluster.nodes], **FAST}
    sentinels: SentinelSet = request.getfixturevalue("redis_sentinel")
    sentinels.flush()
    return {"strategy": kind, "sentinel_master": sentinels.master_name,
            "sentinel_nodes": [{"host": h, "port": p} for h, p in sentinels.sentinels], **FAST}


@pytest.fixture(autouse=True, scope="module")
def _close_pools() -> Iterator[None]:
    yield
    close_shared_clients()


def quota(storage: dict[str, Any], **overrides: Any) -> TierQuota:
    return TierQuota(gateway_config(storage=storage, **overrides))


@pytest.mark.parametrize("kind", KINDS)
def test_limits_hold_and_denied_requests_consume_nothing(kind: str, request: pytest.FixtureRequest) -> None:
    p = quota(storage_config(kind, request))
    for i in range(3):
        kong = FakeKong(serialize(consumer=USER, service="imagegen"))
        assert run(p, kong) is None
        assert kong.response_headers["X-RateLimit-Remaining-Minute"] == str(2 - i)
        run(p, FakeKong(serialize(consumer=USER, service="imagegen")), "log")
    for _ in range(3):
        denied = run(p, FakeKong(serialize(consumer=USER, service="imagegen")))
        assert denied is not None and denied.status == 429 and denied.body["denied_by"] == "tier_rate"
        assert int(denied.headers["Retry-After"]) >= 1
    # The global flood counter (5/s on imagegen) lives in the same Cluster slot and saw only 3.
    other = consumer("u-2", "premium", "acme")
    kong = FakeKong(serialize(consumer=other, service="imagegen"))
    assert run(p, kong) is None


@pytest.mark.parametrize("kind", KINDS)
def test_tokens_are_settled_against_redis(kind: str, request: pytest.FixtureRequest) -> None:
    config = gateway_config(storage=storage_config(kind, request), tiers=[
        {"name": "free", "models": ["*"], "limits": [{"tokens_per_minute": 1000, "tokens_per_day": 5000}]}])
    p = TierQuota(config)
    body = json.dumps({"messages": [{"role": "user", "content": "q" * 40}], "max_tokens": 590}).encode()
    data = serialize(consumer=USER)
    kong = FakeKong(data, body=body)
    assert run(p, kong) is None and kong.response_headers["X-RateLimit-Remaining-Tokens-Minute"] == "400"
    assert run(p, FakeKong(serialize(consumer=USER, uri="/2"), body=body)) is not None
    run(p, FakeKong({**data, "ai": {"ai-proxy": {"usage": {"total_tokens": 100}}}}), "log")
    kong = FakeKong(serialize(consumer=USER, uri="/3"), body=body)
    assert run(p, kong) is None
    assert kong.response_headers["X-RateLimit-Remaining-Tokens-Day"] == str(5000 - 100 - 600)


@pytest.mark.parametrize("kind", KINDS)
def test_one_redis_round_trip_per_decision(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = quota(storage_config(kind, request))
    run(p, FakeKong(serialize(consumer=USER, service="imagegen")))  # connects and loads the script
    sent: list[bytes] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        chunks = command if isinstance(command, list) else [command]
        sent.append(bytes(chunks[0])[:40])
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    for i in range(5):
        run(p, FakeKong(serialize(consumer=consumer(f"n{i}", "premium"), service="imagegen")))
    assert len(sent) == 5, sent
    assert all(b"EVALSHA" in chunk for chunk in sent)


def storage_down_plugin(factory: Callable[..., RedisServer], **overrides: Any) -> TierQuota:
    server = factory()
    p = quota({"strategy": "redis", "host": server.host, "port": server.port, **FAST}, **overrides)
    assert run(p, FakeKong(serialize(consumer=USER))) is None
    server.stop()
    return p


def test_redis_down_fail_open(redis_server_factory: Callable[..., RedisServer]) -> None:
    p = storage_down_plugin(redis_server_factory)
    started = time.monotonic()
    kong = FakeKong(serialize(consumer=USER))
    assert run(p, kong) is None
    assert kong.response_headers == {"X-AI-Quota-Degraded": "storage-unavailable"}
    assert time.monotonic() - started < 10  # bounded by the configured timeouts, not a hang


def test_redis_down_fail_closed(redis_server_factory: Callable[..., RedisServer]) -> None:
    p = storage_down_plugin(redis_server_factory, failure_mode="closed")
    exited = run(p, FakeKong(serialize(consumer=USER)))
    assert exited is not None and exited.status == 503
    assert exited.body == {"message": "The quota service is unavailable, retry later",
                           "denied_by": "storage_unavailable"}


def test_redis_down_with_local_fallback(redis_server_factory: Callable[..., RedisServer]) -> None:
    p = storage_down_plugin(redis_server_factory, failure_mode="closed",
                            fallback={"enabled": True, "per_minute": 2})
    assert run(p, FakeKong(serialize(consumer=USER))) is None
    assert run(p, FakeKong(serialize(consumer=USER))) is None
    exited = run(p, FakeKong(serialize(consumer=USER)))
    assert exited is not None and exited.status == 429 and exited.body["denied_by"] == "fallback"


@pytest.mark.timeout(90)
def test_sentinel_failover_resumes_enforcement(sentinel_set_factory: Callable[[], SentinelSet]) -> None:
    sentinels = sentinel_set_factory()
    storage = {"strategy": "redis-sentinel", "sentinel_master": sentinels.master_name,
               "sentinel_nodes": [{"host": h, "port": p} for h, p in sentinels.sentinels], **FAST}
    p = quota(storage, failure_mode="closed")
    assert run(p, FakeKong(serialize(consumer=USER))) is None
    old_master = sentinels.master_address()
    sentinels.master.kill()
    outcomes: list[int] = []
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        exited = run(p, FakeKong(serialize(consumer=USER, uri=f"/{len(outcomes)}")))
        outcomes.append(200 if exited is None else exited.status)
        if outcomes[-1] == 200 and sentinels.master_address() != old_master:
            break
        time.sleep(0.2)
    assert outcomes[-1] == 200, outcomes
    assert set(outcomes) <= {200, 503}  # during the failover: fail-closed answers, never a crash
    assert sentinels.master_address() != old_master
