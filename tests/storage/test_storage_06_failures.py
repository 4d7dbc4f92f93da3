"""Outages: Redis down or silent -> StorageError within the timeout; recovery; Sentinel failover;
Cluster refuses cross-slot calls before sending anything."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kong_plugins.errors import StorageError
from kong_plugins.storage import CrossSlotError, Limiter, RateRule, Storage, build_storage, make_key
from kong_plugins.storage.base import INCR
from kong_plugins.testing.redis_servers import RedisServer, SentinelSet

from .conftest import storage_config

GUARD = 10.0  # hang guard for "fails fast": far above the 200 ms timeouts configured below


def fast_failing(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "connect_timeout": 200, "read_timeout": 200}


def eventually(action: Callable[[], Any], within: float = 30.0) -> Any:
    """Retry ``action`` while it raises StorageError (an outage in progress)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return action()
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def decide(storage: Storage) -> bool:
    rule = RateRule("rps", make_key("failover", "rps", hash_tag="c"), limit=1000, period=1)
    return Limiter(storage).check_and_consume([rule]).allowed


def test_redis_down_raises_storage_error_fast_and_recovers(
    redis_server_factory: Callable[[], RedisServer],
) -> None:
    server = redis_server_factory()
    storage = build_storage(fast_failing({
        "strategy": "redis", "host": server.host, "port": server.port, "password": None,
    }))
    assert decide(storage)
    server.stop()
    started = time.monotonic()
    with pytest.raises(StorageError) as caught:
        decide(storage)
    assert time.monotonic() - started < GUARD
    assert isinstance(caught.value.__cause__, Exception)
    server.start()
    assert eventually(lambda: decide(storage), within=GUARD)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """Accepts TCP connections (the kernel does) and never answers: a hung Redis."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()


def test_a_redis_that_never_answers_times_out_as_storage_error(silent_server: tuple[str, int]) -> None:
    host, port = silent_server
    storage = build_storage(fast_failing({"strategy": "redis", "host": host, "port": port}))
    started = time.monotonic()
    with pytest.raises(StorageError, match="Timeout"):
        storage.incr(make_key("silent", "n"))
    assert time.monotonic() - started < GUARD


def test_storage_errors_never_show_the_password(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory(["requirepass the-real-one"])
    storage = build_storage(fast_failing({
        "strategy": "redis", "host": server.host, "port": server.port, "password": "hunter2-secret",
    }))
    with pytest.raises(StorageError) as caught:  # wrong password: AUTH fails
        storage.get(make_key("auth", "x"))
    server.stop()
    with pytest.raises(StorageError) as down:
        storage.get(make_key("auth", "x"))
    for error in (caught.value, down.value):
        assert "hunter2-secret" not in str(error)
        assert "hunter2-secret" not in repr(error.__cause__)


@pytest.mark.timeout(90)
def test_sentinel_failover_is_followed_by_rediscovery(sentinel_set_factory: Callable[[], SentinelSet]) -> None:
    sentinels = sentinel_set_factory()
    storage = build_storage(fast_failing({
        "strategy": "redis-sentinel", "sentinel_master": sentinels.master_name,
        "sentinel_nodes": [{"host": h, "port": p} for h, p in sentinels.sentinels],
    }))
    assert decide(storage)
    old_master = sentinels.master_address()
    sentinels.master.kill()
    # Requests during the failover may fail (the plugin's fail-open/closed decides); then the
    # Sentinel names the promoted replica and the same storage object works again.
    assert eventually(lambda: decide(storage), within=45.0)
    assert sentinels.master_address() != old_master
    assert sentinels.master_address() == sentinels.replica.address
    assert storage.incr(make_key("failover", "n")) == 1


def test_cluster_refuses_keys_of_different_slots_before_sending(request: pytest.FixtureRequest) -> None:
    storage = build_storage(storage_config("redis-cluster", request))
    a, b = make_key("xs", "a", hash_tag="tenant-a"), make_key("xs", "b", hash_tag="tenant-b")
    with pytest.raises(CrossSlotError, match="hash_tag"):
        storage.run(INCR, [a, b], [1, 0, 0])
    assert storage.mget([a, b]) == [None, None]
    # keys with one tag are fine even though they live on some node other than the first
    tagged = [make_key("xs", str(i), hash_tag="tenant-c") for i in range(3)]
    assert storage.run(INCR, tagged[:1], [1, 0, 0]) == 1
