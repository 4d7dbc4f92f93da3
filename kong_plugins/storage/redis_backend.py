"""Redis backends: one node, Sentinel-discovered master, Cluster -- one class, three clients.

The three shapes differ only in the redis-py client behind :class:`RedisStorage`:

- ``redis``           ``redis.Redis`` on one connection pool;
- ``redis-sentinel``  ``Sentinel(...).master_for(name)``: its pool asks the Sentinels for the
  master on (re)connect, so after a failover the next connection goes to the promoted replica;
- ``redis-cluster``   ``RedisCluster``: routes each call by key slot and follows MOVED/ASK.

Error boundary: :meth:`RedisStorage._call` is the only place that talks to the client; it turns
every redis-py and socket exception into :class:`~kong_plugins.errors.StorageError`.

Retries are off (``Retry(NoBackoff(), 0)``): a script whose reply was lost may have run, and
running it again would consume twice; the plugin's fail-open / fail-closed setting handles the
one failed request, and the next one reconnects (or, for Sentinel, re-discovers the master).

Pools: :func:`redis_client`, :func:`sentinel_client` and :func:`cluster_client` keep one client
per distinct settings tuple in a module registry, so every plugin instance configured for the
same server shares one pool (Kong starts an instance per route/service/consumer binding).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import StorageError
from .base import Storage
from .keys import check_same_slot
from .scripting import Script, ScriptArg

T = TypeVar("T")

RedisClient = redis.Redis | RedisCluster
#: What a redis-py call may raise that means the storage failed (mapped to StorageError).
_CLIENT_ERRORS = (redis.RedisError, RedisClusterException, OSError)

_CLIENTS: dict[Hashable, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _shared(settings: Hashable, factory: Callable[[], T]) -> T:
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(settings)
        if client is None:
            client = _CLIENTS[settings] = factory()
        return client


def _ssl_options(ssl: bool, verify: bool) -> dict[str, Any]:
    if not ssl:
        return {}
    return {"ssl": True, "ssl_cert_reqs": "required" if verify else "none"}


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def redis_client(
    host: str,
    port: int,
    *,
    password: str | None = None,
    username: str | None = None,
    database: int = 0,
    ssl: bool = False,
    ssl_verify: bool = True,
    connect_timeout: float = 0.5,
    read_timeout: float = 0.5,
    max_connections: int = 64,
) -> redis.Redis:
    """A single-node client, shared by every caller passing the same settings."""
    settings = ("redis", host, port, username, password, database, ssl, ssl_verify, connect_timeout,
                read_timeout, max_connections)
    return _shared(settings, lambda: redis.Redis(
        host=host, port=port, username=username, password=password, db=database,
        **_ssl_options(ssl, ssl_verify), socket_connect_timeout=connect_timeout, socket_timeout=read_timeout,
        max_connections=max_connections, retry=_no_retry(), decode_responses=True,
    ))


def sentinel_client(
    master_name: str,
    sentinels: Sequence[tuple[str, int]],
    *,
    password: str | None = None,
    username: str | None = None,
    sentinel_password: str | None = None,
    database: int = 0,
    ssl: bool = False,
    ssl_verify: bool = True,
    connect_timeout: float = 0.5,
    read_timeout: float = 0.5,
    max_connections: int = 64,
) -> redis.Redis:
    """A client of the master the Sentinels currently name, shared per settings."""
    sentinels = tuple((h, int(p)) for h, p in sentinels)
    settings = ("sentinel", master_name, sentinels, username, password, sentinel_password, database, ssl,
                ssl_verify, connect_timeout, read_timeout, max_connections)

    def factory() -> redis.Redis:
        sentinel_kwargs: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout, "socket_timeout": read_timeout,
            "retry": _no_retry(),
        }
        if sentinel_password is not None:
            sentinel_kwargs["password"] = sentinel_password
        manager = Sentinel(list(sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
        client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call]
            master_name, username=username, password=password, db=database, **_ssl_options(ssl, ssl_verify),
            socket_connect_timeout=connect_timeout, socket_timeout=read_timeout,
            max_connections=max_connections, retry=_no_retry(), decode_responses=True,
        )
        return client

    return _shared(settings, factory)


def cluster_client(
    nodes: Sequence[tuple[str, int]],
    *,
    password: str | None = None,
    username: str | None = None,
    ssl: bool = False,
    ssl_verify: bool = True,
    connect_timeout: float = 0.5,
    read_timeout: float = 0.5,
    max_connections: int = 64,
) -> RedisCluster:
    """A Cluster client bootstrapped from ``nodes`` (any subset of the cluster), shared per settings."""
    nodes = tuple((h, int(p)) for h, p in nodes)
    settings = ("cluster", nodes, username, password, ssl, ssl_verify, connect_timeout, read_timeout,
                max_connections)
    startup = [ClusterNode(h, p) for h, p in nodes]  # type: ignore[no-untyped-call]
    return _shared(settings, lambda: RedisCluster(
        startup_nodes=startup, username=username, password=password,
        **_ssl_options(ssl, ssl_verify), socket_connect_timeout=connect_timeout, socket_timeout=read_timeout,
        max_connections=max_connections, retry=_no_retry(), decode_responses=True,
    ))


def close_shared_clients() -> None:
    """Close and forget every shared client (tests, and a worker shutting down)."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        with contextlib.suppress(redis.RedisError, RedisClusterException, OSError):
            client.close()


class RedisStorage(Storage):
    """:class:`Storage` over a redis-py client (single node, Sentinel master or Cluster).

    ``key_prefix`` is prepended to every key (it must not contain ``{`` or ``}``, which would
    change Cluster slots).
    """

    def __init__(
        self, client: RedisClient | Callable[[], RedisClient], *, kind: str = "redis", key_prefix: str = ""
    ) -> None:
        if "{" in key_prefix or "}" in key_prefix:
            raise ValueError("key_prefix must not contain '{' or '}' (it would change Cluster hashing)")
        # A factory defers connecting to the first call: RedisCluster reads the topology in its
        # constructor, and a Redis that is down at instance start is an outage, not bad config.
        self._client: RedisClient | None = None
        self._factory: Callable[[], RedisClient] | None = None
        if isinstance(client, redis.Redis | RedisCluster):
            self._client = client
        else:
            self._factory = client
        self.kind = kind
        self.key_prefix = key_prefix

    @property
    def client(self) -> RedisClient:
        """The redis-py client (created on first use when built from a factory)."""
        if self._client is None:
            assert self._factory is not None
            self._client = self._factory()
        return self._client

    def _call(self, what: str, fn: Callable[[RedisClient], T]) -> T:
        """The error boundary: every use of the client goes through here (or through :meth:`run`,
        which repeats it inline)."""
        try:
            return fn(self.client)
        except _CLIENT_ERRORS as exc:
            raise self._failure(what, exc) from exc

    def _failure(self, what: str, exc: BaseException) -> StorageError:
        # redis-py messages name the address and the failure, never credentials.
        return StorageError(f"{self.kind} storage: {what} failed: {type(exc).__name__}: {exc}")

    def _k(self, key: str) -> str:
        return self.key_prefix + key

    def run(
        self, script: Script, keys: Sequence[str], args: Sequence[ScriptArg], now: float | None = None
    ) -> Any:
        prefix = self.key_prefix
        full = [prefix + k for k in keys] if prefix else keys
        check_same_slot(full)
        # Every decision's one round trip: _call's error boundary inline, without a closure and
        # a message built per call.
        try:
            client = self.client
            try:
                return client.evalsha(script.sha, len(full), *full, *args)
            except NoScriptError:
                # EVAL runs the script and caches it on that node: later EVALSHAs hit.
                return client.eval(script.lua, len(full), *full, *args)
        except _CLIENT_ERRORS as exc:
            raise self._failure(f"script {script.name}", exc) from exc

    def run_many(
        self, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[ScriptArg]]], now: float | None = None
    ) -> list[Any]:
        if not calls:
            return []
        prepared = []
        for keys, args in calls:
            full = [self.key_prefix + k for k in keys]
            check_same_slot(full)
            prepared.append((full, args))

        def pipelined(client: RedisClient) -> list[Any]:
            # EVALSHA in one pipeline (a Cluster client splits it per node; its pipelines refuse the
            # evalsha method, not the raw command). A node without the script answers NOSCRIPT for
            # its calls only: those are run again one by one with run()'s EVAL fallback.
            pipe = client.pipeline(transaction=False)
            for full, args in prepared:
                pipe.execute_command("EVALSHA", script.sha, len(full), *full, *args)
            replies = list(pipe.execute(raise_on_error=False))
            for i, reply in enumerate(replies):
                if isinstance(reply, NoScriptError):
                    full, args = prepared[i]
                    try:
                        replies[i] = client.evalsha(script.sha, len(full), *full, *args)
                    except NoScriptError:
                        replies[i] = client.eval(script.lua, len(full), *full, *args)
                elif isinstance(reply, Exception):
                    raise reply
            return replies

        return self._call(f"pipelined script {script.name}", pipelined)

    def hgetall_many(self, keys: Sequence[str], now: float | None = None) -> list[dict[str, str]]:
        if not keys:
            return []

        def pipelined(client: RedisClient) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(self._k(key))
            return list(pipe.execute())

        replies = self._call("pipelined HGETALL", pipelined)
        return [{str(k): str(v) for k, v in reply.items()} for reply in replies]

    def get(self, key: str, now: float | None = None) -> str | None:
        value = self._call("GET", lambda c: c.get(self._k(key)))
        return None if value is None else str(value)

    def mget(self, keys: Sequence[str], now: float | None = None) -> list[str | None]:
        if not keys:
            return []
        full = [self._k(k) for k in keys]

        def mget(client: RedisClient) -> list[Any]:
            if isinstance(client, RedisCluster):
                return list(client.mget_nonatomic(full))
            return list(client.mget(full))

        values = self._call("MGET", mget)
        return [None if v is None else str(v) for v in values]

    def set(self, key: str, value: str, ttl: float | None = None, now: float | None = None) -> None:
        if ttl is not None and not ttl > 0:
            raise ValueError(f"a ttl must be a positive number of seconds, got {ttl!r}")
        px = None if ttl is None else max(1, round(ttl * 1000))
        self._call("SET", lambda c: c.set(self._k(key), value, px=px))

    def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        full = [self._k(k) for k in keys]
        return int(self._call("DEL", lambda c: c.delete(*full)))

    def hgetall(self, key: str, now: float | None = None) -> dict[str, str]:
        fields = self._call("HGETALL", lambda c: c.hgetall(self._k(key)))
        return {str(k): str(v) for k, v in fields.items()}

    def pfcount(self, key: str, now: float | None = None) -> int:
        return int(self._call("PFCOUNT", lambda c: c.pfcount(self._k(key))))

    def ping(self) -> None:
        self._call("PING", lambda c: c.ping())

    def server_time(self) -> float:
        """The server clock (seconds): what scripts decide with (tests, diagnostics)."""
        seconds, micros = self._call("TIME", lambda c: c.time())
        return float(seconds) + float(micros) / 1_000_000


__all__ = [
    "RedisClient",
    "RedisStorage",
    "close_shared_clients",
    "cluster_client",
    "redis_client",
    "sentinel_client",
]
