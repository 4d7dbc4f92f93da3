"""The storage interface every backend implements, and the generic state operations built on it.

Backends differ in how they run an atomic :class:`~kong_plugins.storage.scripting.Script`
(Redis: EVALSHA; memory: the Python twin under a lock) and in a handful of plain reads and
writes. Everything else -- counters with a TTL, hash increments, HyperLogLog adds -- is a script,
so it is atomic and one round trip on every backend.

Errors: every backend failure leaves a backend as :class:`~kong_plugins.errors.StorageError`
(raised at one boundary per backend). Two programming errors are *not* storage failures and keep
their own types: :class:`~kong_plugins.storage.keys.CrossSlotError` and ``ValueError`` for
arguments no backend could accept.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from .scripting import MemoryState, Script, ScriptArg, register_script


def _ttl_ms(ttl: float | None) -> int:
    if ttl is None:
        return 0
    if not ttl > 0 or math.isinf(ttl):
        raise ValueError(f"a ttl must be a positive finite number of seconds, got {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


def _expiry(state: MemoryState, key: str, ttl_ms: int, refresh: bool, now_us: int) -> int | None:
    """Expiry a key should get after a write, with Redis's "set it unless it has one" rule."""
    current = state.expires_at(key)
    if ttl_ms <= 0:
        return current
    if refresh or current is None:
        return now_us + ttl_ms * 1000
    return current


def _incr_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> int:
    key = keys[0]
    amount, ttl_ms, refresh = int(args[0]), int(args[1]), bool(int(args[2]))
    current = state.get(key)
    try:
        value = (0 if current is None else int(current)) + amount
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{key!r} does not hold an integer") from exc
    state.set(key, value, _expiry(state, key, ttl_ms, refresh, now_us))
    return value


def _hincr_twin(
    state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int
) -> list[str]:
    key = keys[0]
    ttl_ms, refresh = int(args[0]), bool(int(args[1]))
    current = state.get(key)
    if current is None:
        current = {}
    elif not isinstance(current, dict):
        raise TypeError(f"{key!r} does not hold a hash")
    replies = []
    for i in range(2, len(args), 2):
        name = str(args[i])
        value = float(current.get(name, 0)) + float(args[i + 1])
        current[name] = _format_float(value)
        replies.append(current[name])
    state.set(key, current, _expiry(state, key, ttl_ms, refresh, now_us))
    return replies


def _format_float(value: float) -> str:
    # HINCRBYFLOAT prints integral values without a fraction ("3", not "3.0").
    return str(int(value)) if value.is_integer() else repr(value)


def _pfadd_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> int:
    from .hyperloglog import HyperLogLog

    key = keys[0]
    ttl_ms, refresh = int(args[0]), bool(int(args[1]))
    current = state.get(key)
    # PFADD without elements answers whether it created the key.
    changed = current is None and len(args) == 2
    if current is None:
        current = HyperLogLog()
    elif not isinstance(current, HyperLogLog):
        raise TypeError(f"{key!r} does not hold a HyperLogLog")
    for element in args[2:]:
        changed = current.add(str(element)) or changed
    state.set(key, current, _expiry(state, key, ttl_ms, refresh, now_us))
    return int(changed)


_PKG = "kong_plugins.storage"
INCR = register_script(Script.from_package(_PKG, "scripts/incr.lua", _incr_twin, name="kp.incr"))
HINCR = register_script(Script.from_package(_PKG, "scripts/hincr.lua", _hincr_twin, name="kp.hincr"))
PFADD = register_script(Script.from_package(_PKG, "scripts/pfadd.lua", _pfadd_twin, name="kp.pfadd"))


class Storage(ABC):
    """Counters and small state shared by the gateway's workers, in memory or in Redis.

    Thread- and greenlet-safe. ``now`` parameters are seconds since the epoch; only the memory
    backend uses them (Redis scripts read the server's clock); ``None`` means the backend's
    injected clock.
    """

    #: Short backend name for logs and metrics: memory, redis, redis-sentinel, redis-cluster.
    kind: str = "abstract"

    @abstractmethod
    def run(
        self, script: Script, keys: Sequence[str], args: Sequence[ScriptArg], now: float | None = None
    ) -> Any:
        """Run ``script`` atomically over ``keys`` in one round trip and return its reply.

        All ``keys`` must share a Redis Cluster slot (one ``hash_tag``), on every backend.
        """

    @abstractmethod
    def get(self, key: str, now: float | None = None) -> str | None:
        """The string value under ``key``, ``None`` when absent or expired."""

    @abstractmethod
    def mget(self, keys: Sequence[str], now: float | None = None) -> list[str | None]:
        """Values of several keys (any slots; not atomic across Cluster slots)."""

    @abstractmethod
    def set(self, key: str, value: str, ttl: float | None = None, now: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds when given."""

    @abstractmethod
    def delete(self, *keys: str) -> int:
        """Remove keys; how many existed."""

    @abstractmethod
    def hgetall(self, key: str, now: float | None = None) -> dict[str, str]:
        """All fields of the hash under ``key`` (empty when absent)."""

    @abstractmethod
    def pfcount(self, key: str, now: float | None = None) -> int:
        """Estimated number of distinct elements added to the HyperLogLog under ``key``."""

    @abstractmethod
    def ping(self) -> None:
        """Raise :class:`StorageError` unless the backend answers."""

    def run_many(
        self, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[ScriptArg]]], now: float | None = None
    ) -> list[Any]:
        """Run ``script`` once per ``(keys, args)`` call, pipelined where the backend can.

        Not atomic across calls (each call is). Off the request path: the region exchange ships
        many small updates per round with it. Redis sends them in one pipeline per node.
        """
        return [self.run(script, keys, args, now) for keys, args in calls]

    def hgetall_many(self, keys: Sequence[str], now: float | None = None) -> list[dict[str, str]]:
        """:meth:`hgetall` of several keys (any slots), pipelined where the backend can."""
        return [self.hgetall(key, now) for key in keys]

    def close(self) -> None:  # noqa: B027 -- optional hook, most backends share pools
        """Release what this instance owns (shared connection pools stay open)."""

    def incr(
        self,
        key: str,
        amount: int = 1,
        ttl: float | None = None,
        *,
        refresh_ttl: bool = False,
        now: float | None = None,
    ) -> int:
        """Add ``amount`` to the integer under ``key`` and return the new value.

        ``ttl`` is set when the key has no expiry yet (a fixed window that starts at its first
        increment); ``refresh_ttl=True`` restarts it on every call (expire after inactivity).
        """
        return int(self.run(INCR, [key], [amount, _ttl_ms(ttl), int(refresh_ttl)], now))

    def hincr(
        self,
        key: str,
        increments: Mapping[str, float],
        ttl: float | None = None,
        *,
        refresh_ttl: bool = False,
        now: float | None = None,
    ) -> dict[str, float]:
        """Add to several fields of the hash under ``key``; the new values by field.

        The TTL rule is :meth:`incr`'s.
        """
        if not increments:
            return {}
        args: list[ScriptArg] = [_ttl_ms(ttl), int(refresh_ttl)]
        for name, amount in increments.items():
            if not math.isfinite(amount):
                raise ValueError(f"increment of {name!r} must be finite, got {amount!r}")
            args.extend((name, repr(float(amount))))
        reply = self.run(HINCR, [key], args, now)
        return {name: float(value) for name, value in zip(increments, reply, strict=True)}

    def pfadd(
        self,
        key: str,
        elements: Sequence[str],
        ttl: float | None = None,
        *,
        refresh_ttl: bool = False,
        now: float | None = None,
    ) -> bool:
        """Add ``elements`` to the HyperLogLog under ``key``; whether its estimate changed.

        The TTL rule is :meth:`incr`'s.
        """
        return bool(self.run(PFADD, [key], [_ttl_ms(ttl), int(refresh_ttl), *elements], now))


__all__ = ["HINCR", "INCR", "PFADD", "Storage"]
