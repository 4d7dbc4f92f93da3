"""Admitted requests waiting for their log phase: token reservations to settle, leases to release.

Handing state from ``access`` to ``log`` through ``kong.ctx.shared`` would cost a PDK round trip in
each phase. Instead both phases compute the same fingerprint from their one ``kong.log.serialize()``
answer -- Kong saves serialize data for the log phase (``kong/runloop/plugin_servers/plugin.lua``),
so the start time, client IP, request line, route and caller are the same in both.

Two concurrent requests can share a fingerprint only if they are indistinguishable: same caller,
route and URI within the same millisecond. Their reservations then hold the same rules on the same
keys, so settling one with the other's entry changes exactly the same counters: entries are a FIFO
list per fingerprint, and which identical twin gets which entry does not matter.

Bounded: entries older than the concurrency lease (whose counters expire anyway) are dropped, as
are the oldest beyond ``max_entries``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from kong_plugins.identity import RequestFacts
from kong_plugins.storage import Reservation


def fingerprint(facts: RequestFacts) -> tuple[object, ...]:
    consumer = facts.consumer.id if facts.consumer else None
    route = facts.route.id if facts.route else None
    return (round(facts.started_at * 1000), facts.client_ip, facts.method, facts.uri, route, consumer,
            facts.credential_id)


@dataclass(slots=True)
class PendingEntry:
    reservation: Reservation
    token_rules: tuple[str, ...]
    reserved_tokens: int
    created: float
    usage: int | None = None
    usage_known: bool = field(default=False)


class PendingSettlements:
    def __init__(self, clock: Callable[[], float], max_age: float, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max_age = max_age
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[object, ...], list[PendingEntry]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def add(self, key: tuple[object, ...], entry: PendingEntry) -> None:
        with self._lock:
            self._prune()
            self._entries.setdefault(key, []).append(entry)
            self._count += 1

    def record_usage(self, key: tuple[object, ...], usage: int | None) -> None:
        """Attach the usage seen in the response phase to the oldest entry still without one."""
        with self._lock:
            for entry in self._entries.get(key, ()):
                if not entry.usage_known:
                    entry.usage, entry.usage_known = usage, True
                    return

    def pop(self, key: tuple[object, ...]) -> PendingEntry | None:
        with self._lock:
            entries = self._entries.get(key)
            if not entries:
                return None
            entry = entries.pop(0)
            self._count -= 1
            if not entries:
                del self._entries[key]
            return entry

    def _prune(self) -> None:
        horizon = self._clock() - self._max_age
        while self._entries:
            key, entries = next(iter(self._entries.items()))
            if self._count < self._max_entries and entries[0].created >= horizon:
                break
            entries.pop(0)
            self._count -= 1
            if not entries:
                del self._entries[key]
