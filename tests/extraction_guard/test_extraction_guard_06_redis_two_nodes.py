"""Two gateway nodes (two stand-ins, two plugin-server processes) sharing state through real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kong_plugins.standin import KongStandIn, PluginServerSpec

from .guard_helpers import DIM, FEATURE_STATS, TRAIN, guard_deck, llm_upstream, predict_body, predict_upstream

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]
T0 = 1_700_000_000.0


@pytest.fixture
def two_nodes(redis_server: Any, tmp_path: Path) -> Iterator[tuple[KongStandIn, KongStandIn]]:
    redis_server.flush()
    config = {"feature_stats": FEATURE_STATS,
              "storage": {"strategy": "redis", "host": redis_server.host, "port": redis_server.port}}
    nodes = []
    for name in ("node-a", "node-b"):
        prefix = tmp_path / name
        prefix.mkdir()
        gw = KongStandIn.from_deck(guard_deck(config), servers=[PluginServerSpec.suite("ai-extraction-guard", prefix)],
                                   upstreams={"classifier": predict_upstream, "llm": llm_upstream}, node_id=name)
        gw.start()
        nodes.append(gw)
    try:
        yield nodes[0], nodes[1]
    finally:
        for gw in nodes:
            gw.close()


def _send(gw: KongStandIn, key: str, body: bytes, t: float, ip: str) -> int:
    r = gw.request("POST", "/v1/models/classifier:predict", headers={"apikey": key}, body=body, client_ip=ip,
                   start_time=t)
    gw.wait_log_phase()
    return r.status


def test_an_attack_spread_over_two_nodes_is_seen_as_one_and_blocked_on_both(
        two_nodes: tuple[KongStandIn, KongStandIn]) -> None:
    a, b = two_nodes
    rng = np.random.default_rng(2)
    t = T0
    for i in range(20):  # benign traffic on both nodes
        t += 1
        assert _send((a, b)[i % 2], "key1", predict_body(TRAIN[rng.integers(len(TRAIN))]), t, "10.0.0.9") == 200
    x0 = TRAIN[0].copy()
    statuses = []
    for i in range(-1, DIM):  # finite differences, alternating nodes: neither node alone sees d+1 queries
        x = x0.copy()
        if i >= 0:
            x[i] += 0.3
        t += 1
        statuses.append(_send((a, b)[(i + 1) % 2], "key2", predict_body(x), t, "10.0.0.5"))
    assert 403 in statuses and statuses.index(403) + 1 <= DIM + 1, statuses
    # the block is honoured by both nodes, for the attacker only
    assert _send(a, "key2", predict_body(TRAIN[1]), t + 1, "10.0.0.5") == 403
    assert _send(b, "key2", predict_body(TRAIN[1]), t + 2, "10.0.0.5") == 403
    assert _send(b, "key1", predict_body(TRAIN[1]), t + 3, "10.0.0.9") == 200


def test_storage_down_fails_open_by_default(two_nodes: tuple[KongStandIn, KongStandIn], redis_server: Any) -> None:
    a, _ = two_nodes
    redis_server.stop()
    try:
        r = a.request("POST", "/v1/models/classifier:predict", headers={"apikey": "key1"},
                      body=predict_body(TRAIN[0]), client_ip="10.0.0.9", start_time=T0)
        a.wait_log_phase()
        assert r.status == 200
        assert any("storage failed" in e for e in r.errors), r.errors
    finally:
        redis_server.start()
