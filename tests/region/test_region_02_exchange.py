"""The usage exchange between three real regions (plain Redis, a 3-master Cluster, plain Redis)."""

from __future__ import annotations

import time

import pytest

from kong_plugins.region import ExchangeHealth, UsageExchange, UsageJournal, read_health
from kong_plugins.region._scripts import DRAIN, SETOPS
from kong_plugins.region.exchange import pending_key
from kong_plugins.region.journal import DIRTY_SHARDS, JournalFlusher, dirty_key, processing_key
from kong_plugins.storage import GlobalRule, Limiter, MemoryStorage, Storage, make_key
from kong_plugins.storage.keys import lane_key

from .conftest import Regions

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


def chat_limit(limit: int = 10, key: str | None = None) -> GlobalRule:
    return GlobalRule("tenant-minute", key or make_key("tq", "acme", "per_minute", hash_tag="t|acme|chat"), limit,
                      60.0)


class Region:
    """One region: its storage, a journal flushed into it, a limiter reporting to the journal."""

    def __init__(self, name: str, storage: Storage) -> None:
        self.name = name
        self.storage = storage
        self.journal = UsageJournal()
        self.flusher = JournalFlusher(self.journal, storage, interval=3600)
        self.limiter = Limiter(storage, on_global_usage=self.journal.note)

    def admit(self, rule: GlobalRule, n: int) -> int:
        return sum(self.limiter.check_and_consume([rule]).allowed for _ in range(n))


def build(regions: Regions) -> tuple[dict[str, Region], dict[str, UsageExchange]]:
    stores = regions.stores()
    gateways = {name: Region(name, store) for name, store in stores.items()}
    exchanges = {name: UsageExchange(name, stores) for name in stores}
    return gateways, exchanges


def sync_all(gateways: dict[str, Region], exchanges: dict[str, UsageExchange]) -> None:
    for gw in gateways.values():
        gw.flusher.flush()
    for ex in exchanges.values():
        ex.sync_once()


def test_usage_admitted_in_one_region_is_counted_in_the_others(three_regions: Regions) -> None:
    gateways, exchanges = build(three_regions)
    g = chat_limit(10)
    assert gateways["us"].admit(g, 6) == 6
    sync_all(gateways, exchanges)
    # eu (the Cluster) and apac now know of 6: 4 left for the world
    assert gateways["eu"].admit(g, 3) == 3
    sync_all(gateways, exchanges)
    assert gateways["apac"].admit(g, 5) == 1
    sync_all(gateways, exchanges)
    assert gateways["us"].admit(g, 1) == 0


def test_before_a_sync_each_region_admits_on_its_own_within_the_bound(three_regions: Regions) -> None:
    gateways, exchanges = build(three_regions)
    g = chat_limit(10)
    # nothing exchanged yet: the worst case of the bound, every region admits the whole limit
    admitted = sum(gw.admit(g, 10) for gw in gateways.values())
    assert admitted == 30  # = regions x limit, the stated ceiling
    sync_all(gateways, exchanges)
    assert sum(gw.admit(g, 5) for gw in gateways.values()) == 0


def test_a_region_that_was_down_receives_everything_when_it_returns(three_regions: Regions) -> None:
    gateways, exchanges = build(three_regions)
    g = chat_limit(100)
    apac = three_regions.servers["apac"]
    apac.stop()
    try:
        assert gateways["us"].admit(g, 30) == 30
        gateways["us"].flusher.flush()
        report = exchanges["us"].sync_once()
        assert "apac" in report.failed and report.merged.get("eu")
        assert report.pending["apac"] == 1
        assert gateways["us"].admit(g, 10) == 10  # more usage while apac is away
        gateways["us"].flusher.flush()
        exchanges["us"].sync_once()
    finally:
        apac.start()
    report = exchanges["us"].sync_once()  # nothing new was marked: the pending mark carries it
    assert report.merged.get("apac") and report.pending["apac"] == 0
    assert gateways["apac"].admit(g, 100) == 60  # 40 of 100 used in us


def test_a_worker_that_dies_mid_round_leaves_the_marks_for_the_next(three_regions: Regions) -> None:
    gateways, exchanges = build(three_regions)
    g = chat_limit(10)
    us = gateways["us"]
    assert us.admit(g, 4) == 4
    us.flusher.flush()
    # a round that drained the index but never acknowledged it (the worker was killed)
    drained = us.storage.run_many(DRAIN, [([dirty_key(s), processing_key(s)], []) for s in range(DIRTY_SHARDS)])
    assert sum(len(m) for m in drained) == 1
    exchanges["us"].sync_once()  # the restarted worker serves the processing set first
    assert gateways["eu"].admit(g, 10) == 6


def test_lanes_split_a_hot_key_and_see_each_other(three_regions: Regions) -> None:
    stores = three_regions.stores()
    eu = stores["eu"]
    journal = UsageJournal()
    limiter = Limiter(eu, on_global_usage=journal.note)
    base = make_key("tq", "acme", "per_minute", hash_tag="t|acme|chat")
    lanes = [GlobalRule("m", lane_key(base, n), 12, 60.0, group=base) for n in range(3)]
    exchange = UsageExchange("eu", stores, lanes=3)
    assert sum(limiter.check_and_consume([lanes[0]]).allowed for _ in range(5)) == 5
    assert sum(limiter.check_and_consume([lanes[1]]).allowed for _ in range(4)) == 4
    JournalFlusher(journal, eu, 3600).flush()
    exchange.sync_once()
    # lane 2 sees the 9 of lanes 0 and 1; the other regions see the region's total
    assert sum(limiter.check_and_consume([lanes[2]]).allowed for _ in range(5)) == 3
    us = Limiter(stores["us"])
    assert sum(us.check_and_consume([GlobalRule("m", base, 12, 60.0)]).allowed for _ in range(5)) == 3


def test_journal_keeps_marks_while_the_region_redis_is_down(three_regions: Regions) -> None:
    stores = three_regions.stores()
    journal = UsageJournal()
    limiter = Limiter(stores["us"], on_global_usage=journal.note)
    g = chat_limit(5)
    assert limiter.check_and_consume([g]).allowed
    flusher = JournalFlusher(journal, stores["us"], 3600)
    three_regions.servers["us"].stop()
    try:
        assert flusher.flush() == 0 and len(journal) == 1 and flusher.failures == 1
    finally:
        three_regions.servers["us"].start()
    assert flusher.flush() == 1 and len(journal) == 0


def test_health_reports_peers_as_stale_until_their_exchange_runs(three_regions: Regions) -> None:
    stores = three_regions.stores()
    health = ExchangeHealth(stores["eu"], peers=["us", "apac"], stale_after=0.5)
    assert health.degraded  # never heard from anyone
    assert health.check() == {"us", "apac"}
    UsageExchange("us", stores).sync_once()
    assert health.check() == {"apac"}
    UsageExchange("apac", stores).sync_once()
    assert health.check() == frozenset() and not health.degraded
    time.sleep(0.6)
    assert health.check() == {"us", "apac"}
    ages = read_health(stores["eu"])
    assert ages["from:us"] >= 0.5


def test_the_exchange_works_on_memory_stores_too() -> None:
    stores: dict[str, Storage] = {"a": MemoryStorage(), "b": MemoryStorage()}
    journal = UsageJournal()
    g = chat_limit(4)
    assert sum(Limiter(stores["a"], on_global_usage=journal.note).check_and_consume([g]).allowed
               for _ in range(3)) == 3
    JournalFlusher(journal, stores["a"], 3600).flush()
    UsageExchange("a", stores).sync_once()
    assert sum(Limiter(stores["b"]).check_and_consume([g]).allowed for _ in range(3)) == 1
    assert not stores["a"].run(SETOPS, [pending_key("b")], ["members"])  # nothing left to retry


def test_a_local_outage_is_reported_not_raised(three_regions: Regions) -> None:
    stores = three_regions.stores()
    three_regions.servers["us"].stop()
    try:
        report = UsageExchange("us", stores).sync_once()
    finally:
        three_regions.servers["us"].start()
    assert "us" in report.failed and not report.merged
