"""Global denylists: blocks and revocations written with a TTL, audited, replicated in order."""

from __future__ import annotations

import time

import pytest

from kong_plugins.extraction_guard.guard import Verdict
from kong_plugins.region import Denylist, DenylistReplicator
from kong_plugins.region.denylist import global_verdict_key, revoked_key, verdict_key
from kong_plugins.storage import MemoryStorage, build_storage

from .conftest import Regions

T0 = 1_767_225_600.0


def test_a_block_writes_the_verdict_the_guard_reads_and_an_audit_event() -> None:
    clock = [T0]
    store = MemoryStorage(clock=lambda: clock[0])
    deny = Denylist(store, region="eu", clock=lambda: clock[0])
    event = deny.block("consumer:c-1", tenant="acme", ttl=60, who="alice", why="scraping the catalogue")
    verdict = Verdict.decode(store.get(verdict_key("acme", "consumer:c-1")))
    assert verdict is not None and verdict.level == 3 and verdict.until == pytest.approx(T0 + 60)
    [audited] = deny.audit()
    assert (audited.action, audited.who, audited.why, audited.origin) == ("block", "alice", "scraping the catalogue",
                                                                          "eu")
    assert audited.stream_id == event.stream_id and audited.at == pytest.approx(T0)
    assert [(a.kind, a.tenant, a.subject) for a in deny.active()] == [("block", "acme", "consumer:c-1")]
    clock[0] += 61  # the TTL passes: gone from storage and from the active index, still in the audit
    assert store.get(verdict_key("acme", "consumer:c-1")) is None
    assert deny.active() == [] and len(deny.audit()) == 1


def test_blocks_are_tenant_scoped_unless_an_ip_is_blocked_for_everyone() -> None:
    store = MemoryStorage(clock=lambda: T0)
    deny = Denylist(store, region=None, clock=lambda: T0)
    deny.block("ip:203.0.113.9", tenant="acme", ttl=60, who="op", why="noisy")
    assert store.get(verdict_key("other", "ip:203.0.113.9")) is None
    deny.block("ip:203.0.113.9", tenant=None, ttl=60, who="op", why="botnet")
    assert store.get(global_verdict_key("ip:203.0.113.9")) is not None
    with pytest.raises(ValueError, match="only ip"):
        deny.block("consumer:c-1", tenant=None, ttl=60, who="op", why="x")
    with pytest.raises(ValueError, match="who"):
        deny.block("consumer:c-1", tenant="acme", ttl=60, who="", why="x")


def test_unblock_and_unrevoke_remove_the_entry_and_are_audited() -> None:
    store = MemoryStorage(clock=lambda: T0)
    deny = Denylist(store, region="us", clock=lambda: T0)
    deny.revoke("cred-9", tenant="acme", ttl=3600, who="soar:xsoar", why="key leaked on GitHub")
    assert store.get(revoked_key("acme", "cred-9")) is not None
    deny.unrevoke("cred-9", tenant="acme", who="bob", why="rotated, false alarm")
    assert store.get(revoked_key("acme", "cred-9")) is None
    assert [e.action for e in deny.audit()] == ["revoke", "unrevoke"]
    assert deny.active() == []


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_a_decision_in_one_region_reaches_every_region_in_order(three_regions: Regions) -> None:
    stores = three_regions.stores()
    us = Denylist(stores["us"], region="us")
    us.block("consumer:c-1", tenant="acme", ttl=120, who="ai-extraction-guard@us", why="score 9.1")
    us.revoke("cred-1", tenant="acme", ttl=120, who="alice", why="leaked")
    us.unblock("consumer:c-1", tenant="acme", who="alice", why="false positive")
    failures = DenylistReplicator("us", stores).replicate_once()
    assert failures == {}
    for name in ("eu", "apac"):
        store = stores[name]
        assert store.get(verdict_key("acme", "consumer:c-1")) is None  # block then unblock, in order
        assert store.get(revoked_key("acme", "cred-1")) is not None
        remote = Denylist(store, region=name)
        assert [(e.action, e.origin) for e in remote.audit()] == [("block", "us"), ("revoke", "us"),
                                                                   ("unblock", "us")]
        assert [a.subject for a in remote.active()] == ["cred-1"]
    # replicated events are never sent back: eu's replicator finds nothing of its own to send
    assert DenylistReplicator("eu", stores).replicate_once() == {}
    assert len(Denylist(stores["us"], region="us").audit()) == 3


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_a_region_down_gets_the_events_when_it_returns_and_ttls_still_hold(three_regions: Regions) -> None:
    stores = three_regions.stores()
    eu = Denylist(stores["eu"], region="eu")
    replicator = DenylistReplicator("eu", stores)
    apac = three_regions.servers["apac"]
    apac.stop()
    try:
        eu.block("ip:198.51.100.7", tenant=None, ttl=1.5, who="op", why="short block")
        eu.block("consumer:c-2", tenant="globex", ttl=600, who="op", why="long block")
        assert set(replicator.replicate_once()) == {"apac"}
        assert stores["us"].get(verdict_key("globex", "consumer:c-2")) is not None
    finally:
        apac.start()
    assert replicator.replicate_once() == {}
    assert stores["apac"].get(verdict_key("globex", "consumer:c-2")) is not None
    time.sleep(1.6)
    assert stores["apac"].get(global_verdict_key("ip:198.51.100.7")) is None  # its TTL passed meanwhile


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_blocks_and_the_audit_survive_a_redis_restart(three_regions: Regions) -> None:
    """apac runs with AOF: a restarted Redis still enforces and still remembers who decided."""
    store = three_regions.storage("apac")
    Denylist(store, region="apac").block("consumer:c-3", tenant="acme", ttl=600, who="alice", why="abuse")
    three_regions.servers["apac"].stop()
    three_regions.servers["apac"].start()
    fresh = build_storage(three_regions.configs["apac"])
    assert Verdict.decode(fresh.get(verdict_key("acme", "consumer:c-3"))) is not None
    assert [e.who for e in Denylist(fresh, region="apac").audit()] == ["alice"]
