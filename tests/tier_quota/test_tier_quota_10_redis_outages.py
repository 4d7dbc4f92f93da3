"""Storage outages in every Redis shape, in both failure modes: bounded time, a defined answer.

An unreachable Redis (nothing listens: connection refused), an unreachable Cluster (no node
answers its bootstrap), Sentinels that cannot be reached (no master can be discovered) and a Redis
that accepts connections but never answers (a hung server: only the read timeout ends the wait).
A real server going away mid-life and a Sentinel failover are in test 05.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kong_plugins.storage import close_shared_clients
from kong_plugins.testing.redis_servers import free_port
from kong_plugins.tier_quota import TierQuota
from tests.tier_quota.quota_helpers import FakeKong, consumer, gateway_config, run, serialize

pytestmark = pytest.mark.timeout(60)

USER = consumer("u-1", "premium", "acme")
TIMEOUTS = {"connect_timeout": 200, "read_timeout": 300}
GUARD = 10.0  # seconds: a hang guard far above the configured timeouts, not a performance figure


@pytest.fixture(autouse=True)
def _fresh_pools() -> Iterator[None]:
    yield
    close_shared_clients()


@pytest.fixture
def silent_redis() -> Iterator[tuple[str, int]]:
    """Accepts TCP connections (the kernel does) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()


def unreachable(kind: str) -> dict[str, Any]:
    port = free_port()
    if kind == "redis":
        return {"strategy": kind, "host": "127.0.0.1", "port": port, **TIMEOUTS}
    if kind == "redis-cluster":
        return {"strategy": kind, "cluster_nodes": [{"host": "127.0.0.1", "port": port}], **TIMEOUTS}
    return {"strategy": kind, "sentinel_master": "mymaster",
            "sentinel_nodes": [{"host": "127.0.0.1", "port": port}], **TIMEOUTS}


def decide_timed(storage: dict[str, Any], **overrides: Any) -> tuple[Any, FakeKong, float]:
    plugin = TierQuota(gateway_config(storage=storage, **overrides))
    kong = FakeKong(serialize(consumer=USER))
    started = time.monotonic()
    exited = run(plugin, kong)
    return exited, kong, time.monotonic() - started


@pytest.mark.parametrize("kind", ["redis", "redis-cluster", "redis-sentinel"])
def test_unreachable_storage_fails_open_by_default(kind: str) -> None:
    exited, kong, took = decide_timed(unreachable(kind))
    assert exited is None
    assert kong.response_headers == {"X-AI-Quota-Degraded": "storage-unavailable"}
    assert took < GUARD


@pytest.mark.parametrize("kind", ["redis", "redis-cluster", "redis-sentinel"])
def test_unreachable_storage_fails_closed_with_a_503(kind: str) -> None:
    exited, _, took = decide_timed(unreachable(kind), failure_mode="closed")
    assert exited is not None and exited.status == 503
    assert exited.body == {"message": "The quota service is unavailable, retry later",
                           "denied_by": "storage_unavailable"}
    assert "127.0.0.1" not in str(exited.body)  # internals stay in the logs
    assert took < GUARD


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_a_redis_that_never_answers_is_cut_off_by_the_read_timeout(mode: str, silent_redis: tuple[str, int]) -> None:
    host, port = silent_redis
    storage = {"strategy": "redis", "host": host, "port": port, **TIMEOUTS}
    exited, kong, took = decide_timed(storage, failure_mode=mode)
    if mode == "open":
        assert exited is None and kong.response_headers["X-AI-Quota-Degraded"] == "storage-unavailable"
    else:
        assert exited is not None and exited.status == 503
    assert 0.25 <= took < GUARD  # it did wait for the reply, and no longer than the timeouts allow


def test_local_fallback_limits_apply_while_a_cluster_is_unreachable() -> None:
    storage = unreachable("redis-cluster")
    plugin = TierQuota(gateway_config(storage=storage, failure_mode="closed",
                                      fallback={"enabled": True, "per_minute": 2}))
    outcomes = [run(plugin, FakeKong(serialize(consumer=USER, uri=f"/{i}"))) for i in range(3)]
    assert [o is None for o in outcomes] == [True, True, False]
    assert outcomes[2] is not None and outcomes[2].body["denied_by"] == "fallback"
