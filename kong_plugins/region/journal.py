"""Which global counters changed: noted in process, flushed to the region's dirty index off-path.

The request path stays at one Redis round trip: the limiter's script only counts. The
:class:`~kong_plugins.storage.Limiter` tells a :class:`UsageJournal` (in memory, no I/O) which
global rules an admitted request or a settlement changed; a :class:`JournalFlusher` thread (a
greenlet under the plugin server's gevent patching) writes the accumulated marks every
``journal_interval`` into the region's **dirty index** -- :data:`DIRTY_SHARDS` sets with distinct
hash tags, so that on a Cluster the index is spread over slots instead of being one hot key.
The sync worker drains the index (``drain.lua``: rename to a processing set, delete only once
every region has the usage, so a crashed worker loses nothing).

A mark names the rule by its *group* (the lane-independent key) and carries its window kind and
length, which is all the worker needs to read every lane and ship the buckets::

    ["kp:tq:{t|acme|chat}:acme:gold:l0:per_minute:chat:tenant:acme", 4, 60000000]

When the flush fails (the region's Redis is down), marks go back into the journal (bounded by
``max_marks``; the excess is dropped and counted in :attr:`UsageJournal.dropped`): the usage itself
is in Redis anyway, a lost mark only delays its exchange until the counter changes again.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from kong_plugins.errors import StorageError
from kong_plugins.storage import GlobalRule, Storage, make_key

from ._scripts import MARK

log = logging.getLogger("kong_plugins.region")

#: Sets the dirty index is split into (each its own hash tag, so its own Cluster slot).
DIRTY_SHARDS = 16


def dirty_key(shard: int) -> str:
    return make_key("rx", "dirty", str(shard), hash_tag=f"rx-dirty-{shard}")


def processing_key(shard: int) -> str:
    return make_key("rx", "processing", str(shard), hash_tag=f"rx-dirty-{shard}")


def shard_of(group: str) -> int:
    return zlib.crc32(group.encode("utf-8")) % DIRTY_SHARDS


@dataclass(frozen=True, slots=True)
class UsageMark:
    """A global rule whose usage changed: its group key, window kind (4 sliding, 5 calendar) and
    window parameter in microseconds (``GlobalRule.wire[2]``)."""

    group: str
    kind: int
    param: int

    def encode(self) -> str:
        return json.dumps([self.group, self.kind, self.param], separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, text: str) -> UsageMark | None:
        """The mark, or None for text that is not one (logged and skipped by the worker)."""
        try:
            group, kind, param = json.loads(text)
        except (ValueError, TypeError):
            return None
        if not isinstance(group, str) or kind not in (4, 5) or not isinstance(param, int) or param <= 0:
            return None
        return cls(group, kind, param)

    @classmethod
    def of(cls, rule: GlobalRule) -> UsageMark:
        return cls(rule.group, rule.wire[0], rule.wire[2])


class UsageJournal:
    """Marks noted since the last flush; thread-safe, bounded, never does I/O."""

    def __init__(self, max_marks: int = 200_000) -> None:
        self._marks: set[str] = set()
        self._lock = threading.Lock()
        self._max = max_marks
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._marks)

    def note(self, rules: Sequence[GlobalRule]) -> None:
        """The limiter's ``on_global_usage`` hook."""
        encoded = [UsageMark.of(rule).encode() for rule in rules]
        with self._lock:
            for mark in encoded:
                if len(self._marks) < self._max or mark in self._marks:
                    self._marks.add(mark)
                else:
                    self.dropped += 1

    def take(self) -> set[str]:
        with self._lock:
            marks, self._marks = self._marks, set()
        return marks

    def restore(self, marks: Iterable[str]) -> None:
        """Put back marks a flush could not write."""
        with self._lock:
            for mark in marks:
                if len(self._marks) < self._max:
                    self._marks.add(mark)
                else:
                    self.dropped += 1


class JournalFlusher:
    """Writes a journal's marks into the dirty index every ``interval`` seconds (daemon thread)."""

    def __init__(self, journal: UsageJournal, storage: Storage, interval: float) -> None:
        self.journal = journal
        self.storage = storage
        self.interval = interval
        self.flushes = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def flush(self) -> int:
        """Write pending marks now; how many were written. Failed shards go back to the journal."""
        marks = self.journal.take()
        if not marks:
            return 0
        by_shard: dict[int, list[str]] = {}
        for mark in marks:
            decoded = UsageMark.decode(mark)
            if decoded is not None:
                by_shard.setdefault(shard_of(decoded.group), []).append(mark)
        shards = sorted(by_shard)
        try:
            self.storage.run_many(MARK, [([dirty_key(s)], by_shard[s]) for s in shards])
        except StorageError as exc:
            self.failures += 1
            self.journal.restore(marks)
            log.warning("region journal: flush failed, %d marks kept for the next try: %s", len(marks),
                        type(exc.__cause__ or exc).__name__)
            return 0
        self.flushes += 1
        return len(marks)

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="region-journal", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
        self.flush()


_SHARED: dict[Hashable, tuple[UsageJournal, JournalFlusher]] = {}
_SHARED_LOCK = threading.Lock()


def shared_journal(settings: Hashable, storage: Storage, interval: float) -> UsageJournal:
    """The process's journal for one storage target (started on first use), shared by instances."""
    with _SHARED_LOCK:
        entry = _SHARED.get(settings)
        if entry is None:
            journal = UsageJournal()
            flusher = JournalFlusher(journal, storage, interval)
            flusher.start()
            entry = _SHARED[settings] = (journal, flusher)
        return entry[0]


def flush_shared_journals() -> None:
    """Flush every shared journal now (tests, and a server shutting down)."""
    with _SHARED_LOCK:
        entries = list(_SHARED.values())
    for _, flusher in entries:
        flusher.flush()


__all__ = [
    "DIRTY_SHARDS",
    "JournalFlusher",
    "UsageJournal",
    "UsageMark",
    "dirty_key",
    "flush_shared_journals",
    "processing_key",
    "shard_of",
    "shared_journal",
]
