"""Regions for the multi-region tests: real Redis servers (plain and a 3-master Cluster), or memory.

``three_regions`` gives us (plain), eu (the session's 3-master Cluster) and apac (plain, AOF
persistence on, so it can be restarted without losing its keys), all flushed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kong_plugins.storage import Storage, build_storage, close_shared_clients
from kong_plugins.testing.redis_servers import RedisClusterServers, RedisServer

REGIONS = ("us", "eu", "apac")


@dataclass
class Regions:
    configs: dict[str, dict[str, Any]]
    servers: dict[str, Any]

    def storage(self, name: str) -> Storage:
        return build_storage(self.configs[name])

    def stores(self) -> dict[str, Storage]:
        return {name: self.storage(name) for name in self.configs}

    def regions_file(self, **exchange: Any) -> dict[str, Any]:
        return {"regions": {name: {"storage": cfg} for name, cfg in self.configs.items()}, "exchange": exchange}


def plain_config(server: RedisServer) -> dict[str, Any]:
    return {"strategy": "redis", "host": server.host, "port": server.port, "connect_timeout": 300,
            "read_timeout": 1000}


def cluster_config(cluster: RedisClusterServers) -> dict[str, Any]:
    return {"strategy": "redis-cluster", "cluster_nodes": [{"host": h, "port": p} for h, p in cluster.nodes],
            "connect_timeout": 300, "read_timeout": 1000}


@pytest.fixture
def three_regions(redis_server_factory: Callable[..., RedisServer], redis_cluster: RedisClusterServers) -> Iterator[
        Regions]:
    us = redis_server_factory()
    apac = redis_server_factory(["appendonly yes", "appendfsync always"])
    redis_cluster.flush()
    regions = Regions(
        configs={"us": plain_config(us), "eu": cluster_config(redis_cluster), "apac": plain_config(apac)},
        servers={"us": us, "eu": redis_cluster, "apac": apac},
    )
    try:
        yield regions
    finally:
        close_shared_clients()
