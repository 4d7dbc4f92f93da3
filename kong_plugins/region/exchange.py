"""The usage exchange: each region ships its global counters to every other region, asynchronously.

One :class:`UsageExchange` runs per region (in the sync worker, ``kong-ai-region-sync``). A round:

1. **drain** the local dirty index (:mod:`.journal`) and add the marks still **pending** for a
   destination that was down last time;
2. **read** every lane of each marked rule from the local Redis (one pipeline) and sum the lanes
   into the region's usage per bucket;
3. **merge** into every other region: one ``merge.lua`` call per rule and destination lane, which
   stores the snapshot as the source's (``region:<name>``) and recomputes the rule's remote-usage
   hash -- the hash the limiter script adds to the local count. With lanes, the same is done
   inside the local region (sources ``lane:<n>``), so lanes see each other;
4. a destination that fails keeps the marks in its **pending** set (in the local Redis), retried
   every round until it answers: snapshots are absolute per-bucket counts, so late or repeated
   deliveries never double-count, and nothing is lost while a region or the link is down;
5. **acknowledge** (delete the processing sets) and write a **heartbeat** (``from:<region>``) into
   every region reached, which plugins read to notice a stale exchange.

The bound this gives (stated once, measured by ``bench/bench_multiregion.py``): a global-approximate
limit ``L`` over a window ``P`` admits, in any window of length ``P``, at most

    L + A(delta)            and never more than  S x L

where ``delta`` is the staleness of a region's view of the others (journal interval + sync interval
+ exchange time), ``A(delta)`` the cost the *other* sources admitted during the last ``delta``, and
``S`` the number of sources (regions x lanes). With every region admitting at most a rate ``r``,
``A(delta) <= (regions - 1) x r x delta``: ``L x (1 + (regions - 1) x delta x r / L)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from kong_plugins.errors import StorageError
from kong_plugins.storage import GLOBAL_BUCKETS, ScriptArg, Storage, make_key
from kong_plugins.storage.keys import inbox_key_of, lane_key, remote_key_of

from ._scripts import DRAIN, HEARTBEAT, MERGE, SETOPS
from .journal import DIRTY_SHARDS, UsageMark, dirty_key, processing_key

log = logging.getLogger("kong_plugins.region")

HEALTH_KEY = make_key("rx", "health", hash_tag="rx-health")
_TTL_MARGIN_MS = 5000


def pending_key(destination: str) -> str:
    return make_key("rx", "pending", destination, hash_tag=f"rx-pending-{destination}")


def lane_keys(group: str, lanes: int) -> list[str]:
    """Every key one global rule may be counted under in a region: the group key, and its lanes."""
    if lanes <= 1:
        return [group]
    return [group, *(lane_key(group, lane) for lane in range(lanes))]


def lane_source(index: int) -> str:
    """Source id of lane ``index`` of :func:`lane_keys` (0 is the un-laned key)."""
    return "lane:-" if index == 0 else f"lane:{index - 1}"


def window_of(mark: UsageMark, now_us: int) -> tuple[int, int]:
    """(lowest bucket worth shipping, TTL of the remote keys in ms) for a mark at ``now_us``."""
    if mark.kind == 4:
        width = mark.param // GLOBAL_BUCKETS
        span = (GLOBAL_BUCKETS + 1) * width
        return now_us // width - GLOBAL_BUCKETS - 1, span // 1000 + _TTL_MARGIN_MS
    return now_us // mark.param - 1, mark.param // 1000 + _TTL_MARGIN_MS


def _buckets(raw: Mapping[str, str], lo: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for name, value in raw.items():
        try:
            bucket, count = int(name), int(float(value))
        except ValueError:
            continue
        if bucket >= lo and count > 0:
            out[bucket] = count
    return out


def _pairs(buckets: Mapping[int, int]) -> list[ScriptArg]:
    flat: list[ScriptArg] = []
    for bucket in sorted(buckets):
        flat += (bucket, buckets[bucket])
    return flat


@dataclass
class SyncReport:
    """What one round did: marks handled, merges per destination, destinations that failed."""

    marks: int = 0
    merged: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class UsageExchange:
    """Ships one region's global usage to the others (see the module docstring)."""

    def __init__(
        self,
        local: str,
        stores: Mapping[str, Storage],
        *,
        lanes: int = 1,
        clock: Callable[[], float] = time.time,
        batch: int = 500,
    ) -> None:
        if local not in stores:
            raise ValueError(f"the local region {local!r} has no storage")
        self.local = local
        self.stores = dict(stores)
        self.lanes = lanes
        self.clock = clock
        self.batch = batch
        self.rounds = 0

    @property
    def peers(self) -> list[str]:
        return [name for name in self.stores if name != self.local]

    # -- one round ---------------------------------------------------------------------------

    def sync_once(self) -> SyncReport:
        started = time.perf_counter()
        report = SyncReport()
        store = self.stores[self.local]
        shards = list(range(DIRTY_SHARDS))
        try:
            drained = store.run_many(DRAIN, [([dirty_key(s), processing_key(s)], []) for s in shards])
        except StorageError as exc:
            report.failed[self.local] = _reason(exc)
            self._heartbeat(report)
            report.seconds = time.perf_counter() - started
            return report
        fresh: set[str] = {str(m) for marks in drained for m in marks}
        pending: dict[str, set[str]] = {}
        for peer in self.peers:
            try:
                pending[peer] = {str(m) for m in store.run(SETOPS, [pending_key(peer)], ["members"])}
            except StorageError as exc:
                report.failed[self.local] = _reason(exc)
                report.seconds = time.perf_counter() - started
                return report
        everything = fresh.union(*pending.values())
        marks = {text: mark for text in everything if (mark := UsageMark.decode(text)) is not None}
        report.marks = len(marks)
        now_us = round(self.clock() * 1_000_000)
        usage = self._read(store, marks, now_us) if marks else {}
        if usage is None:
            report.failed[self.local] = "local read failed"
            report.seconds = time.perf_counter() - started
            return report
        ack = True
        if self.lanes > 1 and fresh:
            ack &= self._deliver(self.local, [t for t in fresh if t in marks], marks, usage, now_us, report, None)
        for peer in self.peers:
            texts = [t for t in fresh.union(pending[peer]) if t in marks]
            ack &= self._deliver(peer, texts, marks, usage, now_us, report, pending[peer])
        if ack:
            try:
                store.delete(*[processing_key(s) for s in shards])
            except StorageError as exc:
                report.failed.setdefault(self.local, _reason(exc))
        self._heartbeat(report)
        self.rounds += 1
        report.seconds = time.perf_counter() - started
        return report

    def _read(
        self, store: Storage, marks: Mapping[str, UsageMark], now_us: int
    ) -> dict[str, list[dict[int, int]]] | None:
        """Per mark: the buckets of each lane (index as in :func:`lane_keys`)."""
        keys: list[str] = []
        spans: list[tuple[str, int, int]] = []
        for text, mark in marks.items():
            lanes = lane_keys(mark.group, self.lanes)
            spans.append((text, len(keys), len(lanes)))
            keys.extend(lanes)
        try:
            raw = store.hgetall_many(keys)
        except StorageError as exc:
            log.warning("region exchange: reading local usage failed: %s", _reason(exc))
            return None
        out: dict[str, list[dict[int, int]]] = {}
        for text, start, count in spans:
            lo, _ = window_of(marks[text], now_us)
            out[text] = [_buckets(raw[i], lo) for i in range(start, start + count)]
        return out

    def _deliver(
        self,
        destination: str,
        texts: Sequence[str],
        marks: Mapping[str, UsageMark],
        usage: Mapping[str, list[dict[int, int]]],
        now_us: int,
        report: SyncReport,
        was_pending: set[str] | None,
    ) -> bool:
        """Merge ``texts`` into ``destination``; False when marks could not be kept for a retry."""
        if not texts:
            if was_pending is not None:
                report.pending[destination] = 0
            return True
        version = now_us
        calls: list[tuple[Sequence[str], Sequence[ScriptArg]]] = []
        for text in texts:
            mark = marks[text]
            lo, ttl_ms = window_of(mark, now_us)
            lanes = usage[text]
            keys = lane_keys(mark.group, self.lanes)
            if destination == self.local:
                for index, key in enumerate(keys):
                    args: list[ScriptArg] = [version, lo, ttl_ms]
                    for other, buckets in enumerate(lanes):
                        if other != index:
                            args += (lane_source(other), len(buckets), *_pairs(buckets))
                    calls.append(([inbox_key_of(key), remote_key_of(key)], args))
            else:
                total: dict[int, int] = {}
                for buckets in lanes:
                    for bucket, count in buckets.items():
                        total[bucket] = total.get(bucket, 0) + count
                pairs = _pairs(total)
                for key in keys:
                    calls.append(([inbox_key_of(key), remote_key_of(key)],
                                  [version, lo, ttl_ms, f"region:{self.local}", len(total), *pairs]))
        try:
            for start in range(0, len(calls), self.batch):
                self.stores[destination].run_many(MERGE, calls[start:start + self.batch])
        except StorageError as exc:
            report.failed[destination] = _reason(exc)
            if destination == self.local:
                return False
            return self._keep_pending(destination, texts, report)
        report.merged[destination] = len(calls)
        if was_pending:
            try:
                self.stores[self.local].run(SETOPS, [pending_key(destination)], ["remove", *was_pending])
            except StorageError as exc:
                # Still pending: they are sent again next round, which is harmless (absolute snapshots).
                log.warning("region exchange: clearing pending marks of %s failed: %s", destination, _reason(exc))
        report.pending[destination] = 0
        return True

    def _keep_pending(self, destination: str, texts: Sequence[str], report: SyncReport) -> bool:
        try:
            size = self.stores[self.local].run(SETOPS, [pending_key(destination)], ["add", *texts])
        except StorageError as exc:
            log.warning("region exchange: keeping marks for %s failed: %s", destination, _reason(exc))
            return False
        report.pending[destination] = int(size)
        return True

    def _heartbeat(self, report: SyncReport) -> None:
        for name, store in self.stores.items():
            if name in report.failed:
                continue
            try:
                store.run(HEARTBEAT, [HEALTH_KEY], [f"from:{self.local}"])
            except StorageError as exc:
                report.failed[name] = _reason(exc)


def read_health(store: Storage) -> dict[str, float]:
    """``from:<region>`` -> seconds since that region's exchange last reached ``store``."""
    flat = store.run(HEARTBEAT, [HEALTH_KEY], [""])
    values = {str(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
    now_ms = values.pop("now")
    return {name: (now_ms - ms) / 1000 for name, ms in values.items()}


def _reason(exc: StorageError) -> str:
    cause = exc.__cause__
    return type(cause).__name__ if cause is not None else str(exc)


__all__ = [
    "HEALTH_KEY",
    "SyncReport",
    "UsageExchange",
    "lane_keys",
    "lane_source",
    "pending_key",
    "read_health",
    "window_of",
]
