"""Global denylists: blocks and revocations decided in one region, honoured in every region.

Who decides: the extraction guard (log phase), an operator (``kong-ai-ops``) or a SOAR playbook
(``kong-ai-ops callback``). Every decision goes through :meth:`Denylist.record`, which

1. writes the **denylist key** the extraction guard reads on every request, with its TTL -- a
   verdict (``xg:<tenant>:verdict:<subject>``), a revocation (``xg:<tenant>:revoked:<credential>``)
   or a cross-tenant IP block (``xg-global:verdict:ip:<address>``) -- so the region that decided
   enforces it at once, and the guard's request path stays one MGET;
2. appends an **audit event** (who, why, when, until, origin region, the key and value) to the
   region's audit stream and updates its **active index** (a sorted set by expiry), in one script.

The sync worker's :class:`DenylistReplicator` reads the local audit stream from a cursor kept per
destination region and re-applies every event that *originated* here to each other region (key +
audit event there, origin unchanged, so it is never sent back). The cursor only moves after a
destination accepted the events: a region that is down receives them, in order, when it returns.
The worker wakes up on a new event (``XREAD BLOCK``), so propagation is one exchange round trip.

Survives restarts: the keys, the audit stream, the index and the cursors are all in Redis (give
the regional Redis AOF persistence; nothing lives only in a gateway process). Expiry: every
region's key carries the remaining TTL of the absolute ``until`` (an event arriving after it is
recorded but not applied); the index drops expired entries.

Keys of one tenant share a hash tag (``xg|<tenant>``), so the guard's MGET of client verdict,
group verdict and revocation is one slot on a Cluster; the audit stream and index share ``dl``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import redis
from redis.exceptions import RedisClusterException

from kong_plugins.errors import StorageError
from kong_plugins.storage import RedisStorage, ScriptArg, Storage, make_key

from ._scripts import APPLY, AUDIT_RANGE, RECORD

#: The extraction guard's levels that the denylist writes (``extraction_guard.detector``).
BLOCK_LEVEL = 3
REVOKE_LEVEL = 4
NS = "xg"
GLOBAL_NS = "xg-global"
AUDIT_KEY = make_key("dl", "audit", hash_tag="dl")
ACTIVE_KEY = make_key("dl", "active", hash_tag="dl")
DEFAULT_AUDIT_MAXLEN = 100_000

Action = Literal["block", "unblock", "revoke", "unrevoke"]
_ACTIONS = ("block", "unblock", "revoke", "unrevoke")


def _tag(tenant: str) -> str:
    return f"xg|{tenant}"


def verdict_key(tenant: str, subject: str) -> str:
    """The guard's verdict of a client or group of one tenant."""
    return make_key(NS, tenant, "verdict", subject, hash_tag=_tag(tenant))


def revoked_key(tenant: str, credential: str) -> str:
    """The revocation of a credential of one tenant."""
    return make_key(NS, tenant, "revoked", credential, hash_tag=_tag(tenant))


def state_key(tenant: str, subject: str) -> str:
    """The guard's behavioural state of a client or group of one tenant."""
    return make_key(NS, tenant, "state", subject, hash_tag=_tag(tenant))


def throttle_key(tenant: str, subject: str) -> str:
    return make_key(NS, tenant, "throttle", subject, hash_tag=_tag(tenant))


def global_verdict_key(subject: str) -> str:
    """A block of an IP address across every tenant (operators and SOAR only)."""
    return make_key(GLOBAL_NS, "verdict", subject, hash_tag=GLOBAL_NS)


def cursor_key(destination: str) -> str:
    return make_key("dl", "cursor", destination, hash_tag="dl")


def verdict_value(level: int, until: float, score: float) -> str:
    """A verdict as the guard stores it (``guard.Verdict.encode``): ``level|until|score``."""
    return f"{level}|{until:.3f}|{score:.2f}"


@dataclass(frozen=True, slots=True)
class DenylistEvent:
    """One audited decision. ``tenant`` is ``""`` for a cross-tenant (global) IP block."""

    action: Action
    tenant: str
    subject: str
    until: float
    who: str
    why: str
    origin: str
    at: float
    key: str
    value: str
    stream_id: str = ""

    @property
    def scope(self) -> str:
        return "tenant" if self.tenant else "global"

    @property
    def entry_id(self) -> str:
        """Names the denied thing (not the event) in the active index; unambiguous JSON."""
        kind = "revoke" if self.action in ("revoke", "unrevoke") else "block"
        return json.dumps([kind, self.tenant, self.subject], separators=(",", ":"), ensure_ascii=False)

    def fields(self) -> list[str]:
        return ["action", self.action, "tenant", self.tenant, "subject", self.subject,
                "until", f"{self.until:.3f}", "who", self.who, "why", self.why, "origin", self.origin,
                "at", f"{self.at:.6f}", "key", self.key, "value", self.value]

    @classmethod
    def from_fields(cls, stream_id: str, flat: Sequence[Any]) -> DenylistEvent | None:
        data = {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
        try:
            action = data["action"]
            if action not in _ACTIONS:
                return None
            return cls(action=action, tenant=data["tenant"], subject=data["subject"],  # type: ignore[arg-type]
                       until=float(data["until"]), who=data["who"], why=data["why"], origin=data["origin"],
                       at=float(data["at"]), key=data["key"], value=data["value"], stream_id=stream_id)
        except (KeyError, ValueError):
            return None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.stream_id, "action": self.action, "scope": self.scope, "tenant": self.tenant,
                "subject": self.subject, "until": self.until, "who": self.who, "why": self.why,
                "origin": self.origin, "at": self.at}


@dataclass(frozen=True, slots=True)
class ActiveEntry:
    kind: str
    tenant: str
    subject: str
    until: float


def _check_text(name: str, value: str, limit: int = 512) -> None:
    if not value or len(value) > limit:
        raise ValueError(f"{name} must be 1 to {limit} characters")


class Denylist:
    """Blocks, revocations and their audit trail in one region's storage."""

    def __init__(self, storage: Storage, *, region: str | None, clock: Callable[[], float] = time.time,
                 audit_maxlen: int = DEFAULT_AUDIT_MAXLEN) -> None:
        self.storage = storage
        self.region = region or ""
        self.clock = clock
        self.audit_maxlen = audit_maxlen

    # -- decisions ---------------------------------------------------------------------------

    def block(self, subject: str, *, tenant: str | None, ttl: float, who: str, why: str,
              level: int = BLOCK_LEVEL, score: float = 0.0, now: float | None = None) -> DenylistEvent:
        """Refuse ``subject`` (``consumer:<id>``, ``ip:<address>``...) of ``tenant`` for ``ttl``
        seconds; ``tenant=None`` blocks an ``ip:`` subject for every tenant."""
        at = self.clock() if now is None else now
        if not ttl > 0:
            raise ValueError("a block needs a positive ttl")
        key = self._block_key(subject, tenant)
        until = at + ttl
        return self.record(DenylistEvent("block", tenant or "", subject, until, who, why, self.region, at, key,
                                         verdict_value(level, until, score)))

    def unblock(self, subject: str, *, tenant: str | None, who: str, why: str,
                now: float | None = None) -> DenylistEvent:
        at = self.clock() if now is None else now
        key = self._block_key(subject, tenant)
        return self.record(DenylistEvent("unblock", tenant or "", subject, 0.0, who, why, self.region, at, key, ""))

    def revoke(self, credential: str, *, tenant: str, ttl: float, who: str, why: str, client: str = "",
               now: float | None = None) -> DenylistEvent:
        """Put ``credential`` of ``tenant`` on the revocation list for ``ttl`` seconds."""
        at = self.clock() if now is None else now
        _check_text("tenant", tenant)
        _check_text("credential", credential)
        if not ttl > 0:
            raise ValueError("a revocation needs a positive ttl")
        value = json.dumps({"t": at, "client": client, "who": who}, separators=(",", ":"))
        return self.record(DenylistEvent("revoke", tenant, credential, at + ttl, who, why, self.region, at,
                                         revoked_key(tenant, credential), value))

    def unrevoke(self, credential: str, *, tenant: str, who: str, why: str,
                 now: float | None = None) -> DenylistEvent:
        at = self.clock() if now is None else now
        _check_text("tenant", tenant)
        return self.record(DenylistEvent("unrevoke", tenant, credential, 0.0, who, why, self.region, at,
                                         revoked_key(tenant, credential), ""))

    @staticmethod
    def _block_key(subject: str, tenant: str | None) -> str:
        _check_text("subject", subject)
        if tenant is None:
            if not subject.startswith("ip:"):
                raise ValueError("only ip:<address> subjects can be blocked for every tenant; name a tenant")
            return global_verdict_key(subject)
        _check_text("tenant", tenant)
        return verdict_key(tenant, subject)

    def record(self, event: DenylistEvent) -> DenylistEvent:
        """Apply ``event``'s key here and append it to the audit trail (two round trips)."""
        _check_text("who", event.who, 200)
        _check_text("why", event.why, 2000)
        if event.action in ("block", "revoke"):
            self.storage.run(APPLY, [event.key], ["set", event.value, _ttl_ms(event)], now=event.at)
        else:
            self.storage.run(APPLY, [event.key], ["del", "", 0], now=event.at)
        stream_id = self.storage.run(RECORD, [AUDIT_KEY, ACTIVE_KEY],
                                     [self.audit_maxlen, event.entry_id, repr(event.until), *event.fields()],
                                     now=event.at)
        return replace(event, stream_id=str(stream_id))

    # -- reading -----------------------------------------------------------------------------

    def events_after(self, after: str = "0-0", count: int = 100, now: float | None = None) -> list[DenylistEvent]:
        """Audit events after stream id ``after``, oldest first."""
        raw = self.storage.run(AUDIT_RANGE, [AUDIT_KEY, ACTIVE_KEY], [after, count, "range"], now=now)
        events = []
        for stream_id, flat in raw:
            event = DenylistEvent.from_fields(str(stream_id), flat)
            if event is not None:
                events.append(event)
        return events

    def audit(self, count: int = 100, now: float | None = None) -> list[DenylistEvent]:
        """The last ``count`` audit events, oldest first."""
        events: list[DenylistEvent] = []
        after = "0-0"
        while True:
            page = self.events_after(after, 1000, now)
            if not page:
                return events[-count:]
            events.extend(page)
            events = events[-count:]
            after = page[-1].stream_id

    def active(self, now: float | None = None) -> list[ActiveEntry]:
        """Blocks and revocations in force, soonest expiry first."""
        flat = self.storage.run(AUDIT_RANGE, [AUDIT_KEY, ACTIVE_KEY], ["0-0", 0, "active"], now=now)
        out = []
        for i in range(0, len(flat), 2):
            kind, tenant, subject = json.loads(flat[i])
            out.append(ActiveEntry(str(kind), str(tenant), str(subject), float(flat[i + 1])))
        return out


def _ttl_ms(event: DenylistEvent) -> int:
    """The event's TTL as decided (``until - at``, both on the decider's request clock)."""
    return round((event.until - event.at) * 1000)


def _stream_ms(stream_id: str) -> int:
    """When the origin region recorded the event (its Redis clock): a stream id is ``<ms>-<seq>``.

    Replicated TTLs are shortened by the time since then, so a block lasts as long everywhere
    whatever the request clock said (replays of old traffic included).
    """
    try:
        return int(stream_id.split("-", 1)[0])
    except ValueError:
        return 0


class DenylistReplicator:
    """Re-applies the events that originated in ``local`` to every other region, in order."""

    def __init__(self, local: str, stores: Mapping[str, Storage], *, batch: int = 500,
                 clock: Callable[[], float] = time.time) -> None:
        self.local = local
        self.stores = dict(stores)
        self.batch = batch
        self.clock = clock
        self.applied: dict[str, int] = {name: 0 for name in self.stores if name != local}

    @property
    def peers(self) -> list[str]:
        return [name for name in self.stores if name != self.local]

    def replicate_once(self) -> dict[str, str]:
        """One pass over every destination; failures by destination (empty when all went through)."""
        local = Denylist(self.stores[self.local], region=self.local, clock=self.clock)
        failures: dict[str, str] = {}
        for peer in self.peers:
            try:
                after = self.stores[self.local].get(cursor_key(peer)) or "0-0"
                events = local.events_after(after, self.batch)
            except StorageError as exc:
                return {self.local: type(exc.__cause__ or exc).__name__}
            if not events:
                continue
            own = [e for e in events if e.origin == self.local]
            try:
                self._apply(peer, own)
                self.stores[self.local].set(cursor_key(peer), events[-1].stream_id)
            except StorageError as exc:
                failures[peer] = type(exc.__cause__ or exc).__name__
                continue
            self.applied[peer] += len(own)
        return failures

    def _apply(self, peer: str, events: Sequence[DenylistEvent]) -> None:
        if not events:
            return
        store = self.stores[peer]
        now_ms = round(self.clock() * 1000)
        keys: list[tuple[Sequence[str], Sequence[ScriptArg]]] = [
            ([e.key], ["set", e.value, _ttl_ms(e) - max(0, now_ms - _stream_ms(e.stream_id))]
             if e.action in ("block", "revoke") else ["del", "", 0]) for e in events]
        store.run_many(APPLY, keys)
        store.run_many(RECORD, [([AUDIT_KEY, ACTIVE_KEY],
                                 [DEFAULT_AUDIT_MAXLEN, e.entry_id, repr(e.until), *e.fields()]) for e in events])

    def wait_for_events(self, timeout: float) -> None:
        """Sleep until the local audit stream may have new events, at most ``timeout`` seconds.

        On Redis this is ``XREAD BLOCK`` from the newest cursor, so an event wakes the replicator
        at once; other backends sleep the timeout.
        """
        store = self.stores[self.local]
        if not isinstance(store, RedisStorage) or timeout <= 0:
            time.sleep(max(0.0, timeout))
            return
        try:
            cursors = [store.get(cursor_key(peer)) or "0-0" for peer in self.peers]
            oldest = min(cursors, key=lambda c: tuple(int(x) for x in c.split("-"))) if cursors else "$"
            # Below the client's socket timeout (0.5 s by default), or the wait itself would time out.
            block_ms = max(1, int(min(timeout, 0.25) * 1000))
            store.client.xread({store.key_prefix + AUDIT_KEY: oldest}, count=1, block=block_ms)
        except (redis.RedisError, RedisClusterException, OSError):
            # A failed wait is only a shorter sleep; the next pass reports the error.
            time.sleep(min(timeout, 0.05))


__all__ = [
    "ACTIVE_KEY",
    "AUDIT_KEY",
    "BLOCK_LEVEL",
    "REVOKE_LEVEL",
    "ActiveEntry",
    "Denylist",
    "DenylistEvent",
    "DenylistReplicator",
    "cursor_key",
    "global_verdict_key",
    "revoked_key",
    "state_key",
    "throttle_key",
    "verdict_key",
    "verdict_value",
]
