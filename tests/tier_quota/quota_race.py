"""A worker process for the exactness test: 8 threads hammer one consumer's quota through the plugin."""

from __future__ import annotations

import threading
from typing import Any

from kong_plugins.tier_quota import TierQuota
from tests.tier_quota.quota_helpers import FakeKong, consumer, gateway_config, run, serialize


def race(storage: dict[str, Any], limit: int, threads: int, attempts: int, start: Any) -> int:
    config = gateway_config(storage=storage, tiers=[{"name": "free", "models": ["*"],
                                                     "limits": [{"per_day": limit}]}])
    plugin = TierQuota(config)
    user = consumer("racer", "free", "acme")
    # Warm up off the raced key (same tenant and model, so the same Cluster slot): the first call
    # connects, reads the Cluster topology and loads the script. Without it the process that
    # finishes this last can find the quota already spent and the race is not a race.
    warm = consumer("warm-up", "free", "acme")
    ready = threading.Barrier(threads + 1)

    admitted = 0
    lock = threading.Lock()

    def worker(n: int) -> None:
        nonlocal admitted
        run(plugin, FakeKong(serialize(consumer=warm, uri=f"/warm/{n}")))  # one pooled connection each
        ready.wait()
        mine = 0
        for i in range(attempts):
            if run(plugin, FakeKong(serialize(consumer=user, uri=f"/{n}/{i}"))) is None:
                mine += 1
        with lock:
            admitted += mine

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    start.wait()  # every process has connected: now all of them race
    ready.wait()
    for t in pool:
        t.join()
    return admitted
