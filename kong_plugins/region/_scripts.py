"""The region exchange's atomic scripts: Lua for Redis (``scripts/*.lua``), Python twins for memory.

The memory twins keep the same shapes as Redis would: sets as ``set``, hashes as ``dict`` of
strings, the audit stream as a list of ``(id, [field, value, ...])`` with Redis-style ids
(``<ms>-<seq>``), the active index as a ``dict`` member -> score. Each script's header comment
in its ``.lua`` file is the contract; the twins follow it line by line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kong_plugins.storage import MemoryState, Script, ScriptArg, register_script

_PKG = "kong_plugins.region"
_FOREVER: int | None = None


def _set_of(state: MemoryState, key: str) -> set[str]:
    value = state.get(key)
    if value is None:
        return set()
    if not isinstance(value, set):
        raise TypeError(f"{key!r} does not hold a set")
    return value


def _hash_of(state: MemoryState, key: str) -> dict[str, str]:
    value = state.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{key!r} does not hold a hash")
    return value


def _mark_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> int:
    members = _set_of(state, keys[0])
    members.update(str(a) for a in args)
    state.set(keys[0], members, _FOREVER)
    return len(members)


def _drain_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> list[str]:
    dirty, processing = keys
    if state.get(processing) is None:
        members = state.get(dirty)
        if members is None:
            return []
        state.delete(dirty)
        state.set(processing, members, _FOREVER)
    return sorted(_set_of(state, processing))


def _setops_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> Any:
    op = str(args[0])
    members = _set_of(state, keys[0])
    if op == "members":
        return sorted(members)
    items = [str(a) for a in args[1:]]
    if op == "add":
        members.update(items)
        state.set(keys[0], members, _FOREVER)
        return len(members)
    removed = len(members.intersection(items))
    members.difference_update(items)
    if members:
        state.set(keys[0], members, _FOREVER)
    else:
        state.delete(keys[0])
    return removed


def _merge_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> int:
    inbox_key, remote_key = keys
    version, lo, ttl_ms = int(args[0]), int(args[1]), int(args[2])
    stored = dict(_hash_of(state, inbox_key))
    i = 3
    while i < len(args):
        source, pairs_n = str(args[i]), int(args[i + 1])
        prefix = source + "|"
        seen = int(stored.get(prefix + "v", "-1"))
        if version >= seen:
            for name in [f for f in stored if f.startswith(prefix)]:
                del stored[name]
            stored[prefix + "v"] = str(args[0])
            for p in range(pairs_n):
                name, count = str(args[i + 2 + 2 * p]), str(args[i + 3 + 2 * p])
                if int(name) >= lo and int(count) > 0:
                    stored[prefix + name] = count
        i += 2 + 2 * pairs_n
    sums: dict[int, int] = {}
    for name, value in list(stored.items()):
        _, _, tail = name.rpartition("|")
        if tail.lstrip("-").isdigit():
            bucket = int(tail)
            if bucket < lo:
                del stored[name]
            else:
                sums[bucket] = sums.get(bucket, 0) + int(value)
    expires = now_us + ttl_ms * 1000
    state.set(inbox_key, stored, expires)
    if sums:
        state.set(remote_key, dict(sums), expires)
    else:
        state.delete(remote_key)
    return len(sums)


def _heartbeat_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> list[str]:
    health = _hash_of(state, keys[0])
    now_ms = now_us // 1000
    if str(args[0]):
        health[str(args[0])] = str(now_ms)
        state.set(keys[0], health, _FOREVER)
    flat: list[str] = []
    for name, value in health.items():
        flat += (name, value)
    return [*flat, "now", str(now_ms)]


def _next_stream_id(entries: list[tuple[str, list[str]]], now_us: int) -> str:
    ms = now_us // 1000
    if entries:
        last_ms, last_seq = (int(x) for x in entries[-1][0].split("-"))
        if last_ms >= ms:
            return f"{last_ms}-{last_seq + 1}"
    return f"{ms}-0"


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _record_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> str:
    audit_key, active_key = keys
    maxlen, entry_id, until = int(args[0]), str(args[1]), float(args[2])
    entries: list[tuple[str, list[str]]] = state.get(audit_key) or []
    stream_id = _next_stream_id(entries, now_us)
    entries.append((stream_id, [str(a) for a in args[3:]]))
    del entries[: max(0, len(entries) - maxlen)]
    state.set(audit_key, entries, _FOREVER)
    active: dict[str, float] = state.get(active_key) or {}
    if until > 0:
        active[entry_id] = until
    else:
        active.pop(entry_id, None)
    now = now_us / 1_000_000
    for member in [m for m, score in active.items() if score <= now]:
        del active[member]
    state.set(active_key, active, _FOREVER)
    return stream_id


def _audit_range_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> Any:
    audit_key, active_key = keys
    if str(args[2]) == "active":
        now = now_us / 1_000_000
        active: dict[str, float] = state.get(active_key) or {}
        flat: list[str] = []
        for member, score in sorted(active.items(), key=lambda item: item[1]):
            if score > now:
                flat += (member, repr(score))
        return flat
    after, count = _id_tuple(str(args[0])), int(args[1])
    entries: list[tuple[str, list[str]]] = state.get(audit_key) or []
    return [[sid, list(fields)] for sid, fields in entries if _id_tuple(sid) > after][:count]


def _apply_twin(state: MemoryState, keys: Sequence[str], args: Sequence[ScriptArg], now_us: int) -> int:
    if str(args[0]) == "del":
        return int(state.delete(keys[0]))
    ttl_ms = int(args[2])
    if ttl_ms <= 0:
        return 0
    state.set(keys[0], str(args[1]), now_us + ttl_ms * 1000)
    return 1


MARK = register_script(Script.from_package(_PKG, "scripts/mark.lua", _mark_twin, name="kp.region.mark"))
DRAIN = register_script(Script.from_package(_PKG, "scripts/drain.lua", _drain_twin, name="kp.region.drain"))
SETOPS = register_script(Script.from_package(_PKG, "scripts/setops.lua", _setops_twin, name="kp.region.setops"))
MERGE = register_script(Script.from_package(_PKG, "scripts/merge.lua", _merge_twin, name="kp.region.merge"))
HEARTBEAT = register_script(
    Script.from_package(_PKG, "scripts/heartbeat.lua", _heartbeat_twin, name="kp.region.heartbeat"))
RECORD = register_script(Script.from_package(_PKG, "scripts/record.lua", _record_twin, name="kp.denylist.record"))
AUDIT_RANGE = register_script(
    Script.from_package(_PKG, "scripts/audit_range.lua", _audit_range_twin, name="kp.denylist.range"))
APPLY = register_script(Script.from_package(_PKG, "scripts/apply.lua", _apply_twin, name="kp.denylist.apply"))

__all__ = ["APPLY", "AUDIT_RANGE", "DRAIN", "HEARTBEAT", "MARK", "MERGE", "RECORD", "SETOPS"]
