"""The storage block every plugin's schema shares, and the factory that turns it into a Storage.

Plugins embed it as one record (Kong's plugins share one Redis schema the same way)::

    from kong_plugins import schema as s
    from kong_plugins.storage.config import STORAGE_RECORD, build_storage

    SCHEMA = s.Record([..., s.Field("storage", STORAGE_RECORD, required=True)])
    storage = build_storage(SCHEMA.validate(raw)["storage"], path="storage")

The field names follow Kong's ``kong/tools/redis/schema.lua`` (host, port, username, password,
database, ssl, ssl_verify, connect/read timeouts in milliseconds, sentinel_master,
sentinel_nodes, cluster_nodes) so operators recognise them. Cross-field rules that Kong's schema
language cannot express in a kong-pdk dump live in :func:`check_storage_config`, called by
:func:`build_storage` at instance start, and name the offending field.

Sharing: instances with equal settings get the same :class:`Storage` -- one connection pool per
Redis target, one memory store per ``memory_max_keys`` -- so Kong's one-instance-per-binding
model neither multiplies pools nor splits in-memory limits between routes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError

from .base import Storage
from .memory import DEFAULT_MAX_KEYS, MemoryStorage
from .redis_backend import RedisStorage, cluster_client, redis_client, sentinel_client

STRATEGIES = ("memory", "redis", "redis-sentinel", "redis-cluster")


def _node_record(what: str) -> s.Record:
    return s.Record([
        s.Field("host", s.String(description=f"Host name or IP address of a {what}."), required=True),
        s.Field("port", s.Integer(between=(1, 65535), description=f"TCP port of the {what}."), required=True),
    ])


STORAGE_FIELDS: tuple[s.Field, ...] = (
    s.Field("strategy", s.String(
        default="memory", one_of=STRATEGIES,
        description="Where counters live: memory (per Kong worker process, no infrastructure), redis (one "
                    "server), redis-sentinel (master found through Sentinel) or redis-cluster.",
    ), required=True),
    s.Field("host", s.String(
        default="127.0.0.1", description="Redis host for the redis strategy.",
    )),
    s.Field("port", s.Integer(
        default=6379, between=(1, 65535), description="Redis port for the redis strategy.",
    )),
    s.Field("username", s.String(
        description="Redis ACL user name (Redis 6+); leave unset for the default user.",
    )),
    s.Field("password", s.String(
        description="Password of the Redis server(s) for the data nodes; never logged.",
    )),
    s.Field("database", s.Integer(
        default=0, between=(0, 1023), description="Redis logical database; must be 0 for redis-cluster.",
    )),
    s.Field("ssl", s.Boolean(
        default=False, description="Connect to Redis with TLS.",
    )),
    s.Field("ssl_verify", s.Boolean(
        default=True, description="Verify the Redis server's TLS certificate when ssl is on.",
    )),
    s.Field("connect_timeout", s.Integer(
        default=500, between=(1, 60000),
        description="Milliseconds to wait for a Redis connection before the storage counts as down.",
    )),
    s.Field("read_timeout", s.Integer(
        default=500, between=(1, 60000),
        description="Milliseconds to wait for a Redis reply before the storage counts as down.",
    )),
    s.Field("pool_size", s.Integer(
        default=64, between=(1, 10000),
        description="Maximum Redis connections per plugin server process, shared by instances with "
                    "the same storage settings.",
    )),
    s.Field("sentinel_master", s.String(
        description="Name of the master group the Sentinels monitor (redis-sentinel).",
    )),
    s.Field("sentinel_nodes", s.Array(
        _node_record("Sentinel"),
        description="Sentinel addresses used to discover the current master (redis-sentinel).",
    )),
    s.Field("sentinel_password", s.String(
        description="Password of the Sentinels themselves, when they require one; never logged.",
    )),
    s.Field("cluster_nodes", s.Array(
        _node_record("Redis Cluster node"),
        description="Some nodes of the Redis Cluster to bootstrap from; the rest are discovered.",
    )),
    s.Field("key_prefix", s.String(
        default="", len_min=0, match="^[^{}]*$",
        description="Prepended to every key, to share a Redis with other applications; no braces.",
    )),
    s.Field("memory_max_keys", s.Integer(
        default=DEFAULT_MAX_KEYS, between=(1, 100_000_000),
        description="Most keys the memory strategy keeps per process; least recently used go first.",
    )),
)

#: The shared block as one record, for ``s.Field("storage", STORAGE_RECORD, required=True)``.
STORAGE_RECORD = s.Record(
    STORAGE_FIELDS, description="Where and how the plugin keeps its counters and state.",
)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def check_storage_config(config: Mapping[str, Any], path: str = "storage") -> None:
    """The cross-field rules of the storage block; raises ConfigError naming the field."""
    strategy = config.get("strategy") or "memory"
    if strategy not in STRATEGIES:
        raise ConfigError(_join(path, "strategy"), f"expected one of: {', '.join(STRATEGIES)}")
    if strategy == "redis" and not config.get("host"):
        raise ConfigError(_join(path, "host"), "required for strategy redis")
    if strategy == "redis-sentinel":
        if not config.get("sentinel_master"):
            raise ConfigError(_join(path, "sentinel_master"), "required for strategy redis-sentinel")
        if not config.get("sentinel_nodes"):
            raise ConfigError(_join(path, "sentinel_nodes"), "at least one Sentinel is required for "
                              "strategy redis-sentinel")
    if strategy == "redis-cluster":
        if not config.get("cluster_nodes"):
            raise ConfigError(_join(path, "cluster_nodes"), "at least one node is required for strategy "
                              "redis-cluster")
        if config.get("database") not in (None, 0):
            raise ConfigError(_join(path, "database"), "Redis Cluster only has database 0")
    if config.get("sentinel_password") is not None and strategy != "redis-sentinel":
        raise ConfigError(_join(path, "sentinel_password"), "only used by strategy redis-sentinel")


_MEMORY: dict[int, MemoryStorage] = {}
_MEMORY_LOCK = threading.Lock()


def shared_memory_storage(max_keys: int = DEFAULT_MAX_KEYS) -> MemoryStorage:
    """The process's memory store for ``max_keys`` (created on first use)."""
    with _MEMORY_LOCK:
        store = _MEMORY.get(max_keys)
        if store is None:
            store = _MEMORY[max_keys] = MemoryStorage(max_keys)
        return store


def reset_shared_memory_storages() -> None:
    """Forget the shared memory stores (tests that need a clean slate between cases)."""
    with _MEMORY_LOCK:
        _MEMORY.clear()


def _nodes(items: Any) -> list[tuple[str, int]]:
    return [(str(node["host"]), int(node["port"])) for node in items or ()]


def build_storage(
    config: Mapping[str, Any] | None,
    path: str = "storage",
    *,
    memory_clock: Callable[[], float] | None = None,
) -> Storage:
    """A :class:`Storage` for a storage block validated by :data:`STORAGE_RECORD`.

    ``memory_clock`` gives the memory strategy a private store with that clock (tests); without
    it instances share the process's store. Redis clients connect lazily: an unreachable server
    shows up as StorageError on first use, not as a config error.
    """
    if config is None:
        config = STORAGE_RECORD.coerce({}, path)
    check_storage_config(config, path)
    strategy = config.get("strategy") or "memory"
    max_keys = int(config.get("memory_max_keys") or DEFAULT_MAX_KEYS)
    if strategy == "memory":
        if memory_clock is not None:
            return MemoryStorage(max_keys, clock=memory_clock)
        return shared_memory_storage(max_keys)
    common: dict[str, Any] = {
        "username": config.get("username"),
        "password": config.get("password"),
        "ssl": bool(config.get("ssl")),
        "connect_timeout": int(config.get("connect_timeout") or 500) / 1000,
        "read_timeout": int(config.get("read_timeout") or 500) / 1000,
        "max_connections": int(config.get("pool_size") or 64),
    }
    if common["ssl"]:
        common["ssl_verify"] = config.get("ssl_verify") is not False
    prefix = str(config.get("key_prefix") or "")
    database = int(config.get("database") or 0)
    if strategy == "redis":
        port = int(config.get("port") or 6379)
        client = redis_client(str(config["host"]), port, database=database, **common)
        return RedisStorage(client, kind="redis", key_prefix=prefix)
    if strategy == "redis-sentinel":
        client = sentinel_client(
            str(config["sentinel_master"]), _nodes(config.get("sentinel_nodes")), database=database,
            sentinel_password=config.get("sentinel_password"), **common,
        )
        return RedisStorage(client, kind="redis-sentinel", key_prefix=prefix)
    nodes = _nodes(config.get("cluster_nodes"))
    return RedisStorage(lambda: cluster_client(nodes, **common), kind="redis-cluster", key_prefix=prefix)


__all__ = [
    "STORAGE_FIELDS",
    "STORAGE_RECORD",
    "STRATEGIES",
    "build_storage",
    "check_storage_config",
    "reset_shared_memory_storages",
    "shared_memory_storage",
]
