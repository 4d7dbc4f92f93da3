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
    admitted = 0
    lock = threading.Lock()

    def worker(n: int) -> None:
        nonlocal admitted
        mine = 0
        for i in range(attempts):
            if run(plugin, FakeKong(serialize(consumer=user, uri=f"/{n}/{i}"))) is None:
                mine += 1
        with lock:
            admitted += mine

    start.wait()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return admitted
