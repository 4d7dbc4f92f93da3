"""The three-region simulation, reduced for CI: the stated bounds hold, nothing is lost in outages.

us (plain Redis), eu (3-master Cluster), apac (plain Redis, AOF); one gateway node per region (a
Kong stand-in with ai-extraction-guard and ai-tier-quota plugin-server processes); a real
``kong-ai-region-sync`` process per region. The full form with more nodes, longer runs and the
figures is ``python3 bench/bench_multiregion.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kong_plugins.region import Denylist
from kong_plugins.testing.multiregion import REGIONS, MultiRegionSim

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(240)]
LIMIT = 40


@pytest.fixture(scope="module")
def sim(redis_server_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiRegionSim]:
    with MultiRegionSim(redis_server_binary, Path(tmp_path_factory.mktemp("mr")), limit=LIMIT) as running:
        yield running


@pytest.mark.parametrize("pattern", ["steady", "bursty"])
def test_global_admission_stays_within_the_stated_bound(sim: MultiRegionSim, pattern: str) -> None:
    # every region offers the whole limit: three times what the world may admit
    result = sim.drive(pattern, 3.0, float(LIMIT))
    assert result.errors == 0
    assert sum(result.offered.values()) >= 2.5 * LIMIT * 3
    assert result.max_window <= result.bound, result
    assert result.bound < len(REGIONS) * LIMIT or pattern == "bursty"  # steady: a real bound, not S x L
    assert result.max_window >= 0.8 * LIMIT  # and the limit is actually usable


def test_strict_regional_limits_hold_per_region_only(sim: MultiRegionSim) -> None:
    result = sim.drive("steady", 2.0, float(LIMIT), path="/chat-strict")
    assert result.max_window > 2 * LIMIT  # each region admits its own limit: the trade-off, visible
    # per region GCRA admits at most limit + period x rate = 2 x limit in any window of one period
    assert result.max_window <= len(REGIONS) * 2 * LIMIT


def test_a_block_reaches_every_region_and_its_audit_trail(sim: MultiRegionSim) -> None:
    times = sim.denylist_propagation(5, origin="us")
    for region in ("eu", "apac"):
        assert len(times[region]["gateway"]) == 5  # every block refused by a gateway there
        audit = Denylist(sim.regions[region].storage(), region=region).audit(5)
        assert [(e.origin, e.who) for e in audit] == [("us", "bench")] * 5


def test_a_region_redis_outage_loses_nothing_once_it_returns(sim: MultiRegionSim) -> None:
    report = sim.region_down("apac", 1.5, 20.0)
    assert report["errors_while_down"] == 0  # fail-open: the region's gateways keep answering
    assert report["offered_while_down"] > 0
    assert report["usage_converged"], report["daily_usage"]
    _, remote = report["daily_usage"]["apac"]
    assert remote == sum(report["daily_usage"][r][0] for r in ("us", "eu")) > 0
    assert report["block_reached_returned_region"]


def test_with_the_exchange_down_regions_fall_back_to_their_share_and_catch_up(sim: MultiRegionSim) -> None:
    report = sim.exchange_down(2.0, float(LIMIT))
    during = report["during"]
    assert during.max_window <= LIMIT  # share fallback: a third of the limit each, the bound holds
    assert report["block_reached_during"] == []  # the exchange really was down
    assert report["block_everywhere"]
    assert report["usage_converged"], report["daily_usage"]
