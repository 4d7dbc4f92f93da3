"""The memory backend's own promises: bounded by max_keys, expired keys gone, thread-safe state."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from kong_plugins.errors import StorageError
from kong_plugins.storage import Limiter, MemoryStorage, RateRule, make_key
from kong_plugins.storage.hyperloglog import HyperLogLog

from .conftest import FakeClock


def test_the_store_never_holds_more_than_max_keys_and_evicts_the_least_recently_used() -> None:
    clock = FakeClock()
    store = MemoryStorage(max_keys=3, clock=clock)
    for name in ("a", "b", "c"):
        store.set(name, name)
    assert store.get("a") == "a"  # "a" is now the most recently used
    store.set("d", "d")
    assert len(store) == 3
    assert store.mget(["a", "b", "c", "d"]) == ["a", None, "c", "d"]


def test_limiter_keys_for_many_clients_stay_within_the_bound() -> None:
    store = MemoryStorage(max_keys=100)
    limiter = Limiter(store)
    for client in range(1000):
        rule = RateRule("rps", make_key("clients", str(client), hash_tag=str(client)), 5, 1)
        assert limiter.check_and_consume([rule], 1_767_225_600.0).allowed
    assert len(store) == 100


def test_expired_keys_read_as_absent_and_are_dropped() -> None:
    clock = FakeClock()
    store = MemoryStorage(clock=clock)
    store.set("k", "v", ttl=10)
    clock.advance(9.999)
    assert store.get("k") == "v"
    clock.advance(0.002)
    assert store.get("k") is None
    assert len(store) == 0


def test_a_hyperloglog_stays_small_whatever_is_added() -> None:
    hll = HyperLogLog()
    for i in range(50_000):
        hll.add(f"element-{i}")
    assert abs(hll.count() - 50_000) < 50_000 * 0.03
    dense = hll._dense
    assert dense is not None and sys.getsizeof(dense) < 17 * 1024


def test_hyperloglog_is_exact_enough_for_small_sets() -> None:
    hll = HyperLogLog()
    for i in range(100):
        hll.add(str(i))
        hll.add(str(i))
    assert hll.count() == 100


def test_state_operations_from_many_threads_lose_no_update() -> None:
    store = MemoryStorage()

    def worker() -> None:
        for _ in range(500):
            store.incr("shared")
            store.hincr("hash", {"n": 1})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.get("shared") == "4000"
    assert store.hgetall("hash") == {"n": "4000"}


def test_mget_reads_each_key_as_get_does() -> None:
    clock = FakeClock()
    store = MemoryStorage(clock=clock)
    store.set("short", "gone soon", ttl=1)
    store.set("long", "stays", ttl=100)
    store.incr("count", 3)
    store.hincr("hash", {"f": 1})
    clock.advance(2)
    assert store.mget(["short", "long", "count", "absent"]) == [None, "stays", "3", None]
    assert len(store) == 3  # the expired key was dropped by the read
    with pytest.raises(StorageError, match="'hash' does not hold a string"):
        store.mget(["long", "hash"])


def test_mget_refreshes_what_it_reads_in_the_lru_as_get_does() -> None:
    store = MemoryStorage(max_keys=3, clock=FakeClock())
    for key in ("a", "b", "c"):
        store.set(key, key)
    assert store.mget(["a", "absent"]) == ["a", None]
    store.set("d", "d")  # evicts the least recently used: b, not a (just read)
    assert store.mget(["a", "b", "c", "d"]) == ["a", None, "c", "d"]


class _Counter:
    """A live object as a caller keeps it with set_object: changed in place, read as text."""

    def __init__(self) -> None:
        self.n = 0

    def to_text(self) -> str:
        return f"n={self.n}"


def test_an_object_kept_by_set_object_is_returned_itself_read_as_its_text_and_expires_and_evicts_as_text() -> None:
    clock = FakeClock()
    store = MemoryStorage(max_keys=3, clock=clock)
    counter = _Counter()
    store.set_object("obj", counter, ttl=10)
    store.set("text", "t")
    assert store.get_objects(["obj", "text", "absent"]) == [counter, "t", None]
    counter.n = 7  # the caller's change, no write needed for readers to see it
    assert store.get("obj") == "n=7" and store.mget(["obj", "text"]) == ["n=7", "t"]
    with pytest.raises(ValueError, match="ttl"):
        store.set_object("obj", counter, ttl=0)
    clock.advance(11)
    assert store.get_objects(["obj"]) == [None] and store.get("obj") is None
    store.set_object("obj", counter, ttl=10)
    for name in ("a", "b", "c"):  # least recently used first out, objects as any value
        store.set(name, name)
    assert store.get_objects(["obj"]) == [None] and len(store) == 3


def test_reading_objects_with_renew_ttl_renews_the_objects_read_and_not_the_text() -> None:
    clock = FakeClock()
    store = MemoryStorage(clock=clock)
    counter = _Counter()
    store.set_object("obj", counter, ttl=10)
    store.set("text", "t", ttl=10)
    clock.advance(8)
    assert store.get_objects(["obj", "text", "absent"], renew_ttl=10) == [counter, "t", None]
    clock.advance(5)  # 13 s after the writes, 5 s after the read
    assert store.get_objects(["obj", "text"]) == [counter, None]
    with pytest.raises(ValueError, match="ttl"):
        store.get_objects(["obj"], renew_ttl=-1)


_UNDER_GEVENT = """
from gevent import monkey
monkey.patch_all()
import threading, gevent
from gevent.threadpool import ThreadPool
from kong_plugins.storage import MemoryStorage
store = MemoryStorage()
def work(n):
    for i in range(n):
        store.incr("shared")
        if i % 50 == 0:
            gevent.sleep(0)  # switch greenlets between operations, never inside one
pool = ThreadPool(2)  # real threads next to the greenlets
jobs = [gevent.spawn(work, 500) for _ in range(8)] + [pool.spawn(work, 500) for _ in range(2)]
gevent.joinall(jobs[:8], timeout=60)
for job in jobs[8:]:
    job.get(timeout=60)
print(store.get("shared"), type(store._lock).__module__)
"""


def test_under_gevent_greenlets_and_real_threads_share_the_store_without_losing_an_update() -> None:
    # The plugin server monkey-patches; the store keeps the operating system's lock (cheaper than
    # gevent's, and right because nothing yields while it is held).
    done = subprocess.run([sys.executable, "-c", _UNDER_GEVENT], capture_output=True, text=True, timeout=120,
                          check=True)
    count, lock_module = done.stdout.split()
    assert count == "5000"
    assert not lock_module.startswith("gevent")
