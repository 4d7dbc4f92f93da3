"""Backends for the storage tests: every behavioural test runs on each, from a clean state.

The redis-server fixtures come from kong_plugins.testing.redis_servers (imported here until the
top-level conftest registers that module with ``pytest_plugins``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kong_plugins.storage import MemoryStorage, Storage, build_storage, close_shared_clients
from kong_plugins.testing.redis_servers import (  # noqa: F401 -- fixtures
    RedisClusterServers,
    RedisServer,
    SentinelSet,
    _redis_workdir,
    redis_cluster,
    redis_sentinel,
    redis_server,
    redis_server_binary,
    redis_server_factory,
    sentinel_set_factory,
)

BACKENDS = ["memory", "redis", "redis-cluster", "redis-sentinel"]
REDIS_BACKENDS = BACKENDS[1:]


class FakeClock:
    """Seconds since the epoch, moved only by the test."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """A storage under test, with the time it decides by.

    Memory decides by ``now`` (the fake clock); Redis by its own clock, so ``advance`` sleeps
    there -- tests keep such waits to fractions of a second.
    """

    kind: str
    storage: Storage
    clock: FakeClock
    config: dict[str, Any]

    @property
    def is_memory(self) -> bool:
        return self.kind == "memory"

    def now(self) -> float:
        return self.clock.now

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if not self.is_memory:
            time.sleep(seconds)


def storage_config(kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The validated-config form of a backend, flushing its server first."""
    base: dict[str, Any] = {"strategy": kind, "connect_timeout": 1000, "read_timeout": 2000}
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return {**base, "host": server.host, "port": server.port}
    if kind == "redis-cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return {**base, "cluster_nodes": [{"host": h, "port": p} for h, p in cluster.nodes]}
    if kind == "redis-sentinel":
        sentinels: SentinelSet = request.getfixturevalue("redis_sentinel")
        sentinels.flush()
        return {**base, "sentinel_master": sentinels.master_name,
                "sentinel_nodes": [{"host": h, "port": p} for h, p in sentinels.sentinels]}
    return base


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    clock = FakeClock()
    config = storage_config(request.param, request)
    if request.param == "memory":
        storage: Storage = MemoryStorage(clock=clock)
    else:
        storage = build_storage(config)
    yield Backend(request.param, storage, clock, config)


@pytest.fixture(params=REDIS_BACKENDS)
def redis_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    config = storage_config(request.param, request)
    yield Backend(request.param, build_storage(config), FakeClock(), config)


@pytest.fixture(scope="session", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    close_shared_clients()
