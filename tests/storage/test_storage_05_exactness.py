"""Exact admission under concurrency: racing callers admit exactly ``limit``, never one more.

Redis: 4 processes x 8 threads on one key. Memory: 8 threads in one process, and greenlets under
gevent's monkey patching (how the plugin runtime runs) in a subprocess.
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest

from kong_plugins.storage import CalendarRule, Limiter, MemoryStorage, RateRule, build_storage, make_key

from .conftest import Backend

LIMIT = 200
DAILY = 10_000
PROCESSES, THREADS, ATTEMPTS = 4, 8, 20  # 640 attempts for 200 places


def rules() -> list[RateRule | CalendarRule]:
    tag = "racer"
    return [
        RateRule("per_hour", make_key("race", "rate", hash_tag=tag), limit=LIMIT, period=3600),
        CalendarRule("per_day", make_key("race", "daily", hash_tag=tag), limit=DAILY, unit="day"),
    ]


def race_in_threads(limiter: Limiter, threads: int, attempts: int, start_at: float) -> int:
    admitted = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal admitted
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)  # align the racers; correctness never depends on it
        mine = sum(limiter.check_and_consume(rules()).allowed for _ in range(attempts))
        with lock:
            admitted += mine

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return admitted


def race_process(config: dict[str, Any], start_at: float) -> int:
    """One racing process: its own storage client and 8 threads."""
    return race_in_threads(Limiter(build_storage(config)), THREADS, ATTEMPTS, start_at)


def consumed_daily(limiter: Limiter) -> int:
    probe = CalendarRule("per_day", make_key("race", "daily", hash_tag="racer"), limit=DAILY, unit="day", cost=0)
    return DAILY - limiter.check_and_consume([probe]).states[0].remaining


@pytest.mark.timeout(120)
def test_processes_and_threads_racing_on_redis_admit_exactly_the_limit(redis_backend: Backend) -> None:
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 1.5
    with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
        futures = [pool.submit(race_process, redis_backend.config, start_at) for _ in range(PROCESSES)]
        admitted = sum(f.result() for f in futures)
    assert admitted == LIMIT
    # denied requests consumed nothing from the daily quota
    assert consumed_daily(Limiter(redis_backend.storage)) == LIMIT


def test_threads_racing_on_memory_admit_exactly_the_limit() -> None:
    limiter = Limiter(MemoryStorage())
    admitted = race_in_threads(limiter, threads=8, attempts=80, start_at=time.time() + 0.1)
    assert admitted == LIMIT
    assert consumed_daily(limiter) == LIMIT


GEVENT_RACE = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    import gevent
    from kong_plugins.storage import CalendarRule, Limiter, MemoryStorage, RateRule, build_storage, make_key

    config = json.loads(sys.argv[1])
    storage = build_storage(config) if config else MemoryStorage()
    rule = RateRule("per_hour", make_key("race", "gevent", hash_tag="g"), limit=150, period=3600)
    limiter = Limiter(storage)
    results = []

    def racer():
        for _ in range(4):
            results.append(limiter.check_and_consume([rule]).allowed)
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(racer) for _ in range(100)])
    print(sum(results))
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", ["memory", "redis"])
def test_greenlets_under_monkey_patching_admit_exactly_the_limit(shape: str, request: pytest.FixtureRequest) -> None:
    config: dict[str, Any] = {}
    if shape == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        config = {"strategy": "redis", "host": server.host, "port": server.port, "read_timeout": 5000}
    done = subprocess.run([sys.executable, "-c", GEVENT_RACE, json.dumps(config)], capture_output=True,
                          text=True, timeout=50, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == 150
