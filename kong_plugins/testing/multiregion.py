"""Three regions on one machine: the simulation behind ``bench/bench_multiregion.py`` and its CI form.

::

    us    plain redis-server         N gateway nodes   kong-ai-region-sync --region us
    eu    3-master Redis Cluster     N gateway nodes   kong-ai-region-sync --region eu
    apac  plain redis-server (AOF)   N gateway nodes   kong-ai-region-sync --region apac

A gateway node is a Kong stand-in driving its own plugin-server processes (ai-extraction-guard and
ai-tier-quota on our runtime), exactly as a Kong node would. Each region's gateways are configured
with that region's storage and ``region`` block; the sync workers are real ``kong-ai-region-sync``
processes reading one regions file. Tenant ``acme`` calls two models with the same per-tenant
limit: ``chat`` (``global-approximate``) and ``chat-strict`` (``strict-regional``); ``chat-daily`` has a
global per-day limit nobody reaches, whose usage outlives an outage (what was lost would show).

Scenarios (each returns plain numbers; the bench prints them, the CI test asserts the bounds):

- :meth:`MultiRegionSim.drive` -- steady or bursty load from every region; the most requests the
  world admitted in any window of the limit's period, against the limit and the stated bound;
- :meth:`MultiRegionSim.denylist_propagation` -- a block recorded in one region, time until a
  gateway of every other region refuses the client (and until its Redis has the key);
- :meth:`MultiRegionSim.decision_latency` -- access-phase RPC time, global vs strict, interleaved;
- :meth:`MultiRegionSim.region_down` / :meth:`MultiRegionSim.exchange_down` -- outages and what
  was (not) lost when they end.

Time: decisions are taken on each Redis server's clock; all servers share this machine's clock,
and admissions are stamped with the driver's wall clock when the answer arrives.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kong_plugins.region import Denylist
from kong_plugins.region.denylist import global_verdict_key
from kong_plugins.standin import KongStandIn, PluginServerSpec
from kong_plugins.storage import GLOBAL_BUCKETS, Storage, build_storage, close_shared_clients, make_key
from kong_plugins.storage.keys import remote_key_of

from .redis_servers import RedisClusterServers, RedisServer

REGIONS = ("us", "eu", "apac")
TENANT = "acme"
#: A global per-day limit nobody reaches: its usage outlives outages, so losses would show.
DAILY_LIMIT = 1_000_000


def over_admission_bound(limit: int, sources: int, staleness_s: float, rate_per_source: float) -> float:
    """The most a global-approximate limit admits in any window: ``min(S x L, L + (S-1) x min(r x d, L))``.

    A decision sees its own source's usage exactly and every other source's as of ``staleness_s``
    ago; what the others admitted in that gap (at most ``rate_per_source x staleness_s`` each, and
    never more than a limit each) is the over-admission.
    """
    unseen = min(rate_per_source * staleness_s, float(limit))
    return min(float(sources * limit), limit + (sources - 1) * unseen)


def max_in_window(times: Sequence[float], window: float) -> int:
    """The most events in any half-open interval of length ``window`` (two pointers)."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass
class DriveResult:
    pattern: str
    seconds: float
    offered: dict[str, int]
    admitted: dict[str, int]
    errors: int
    max_window: int
    limit: int
    bound: float
    staleness_s: float
    per_window: list[int] = field(default_factory=list)

    @property
    def over_admission(self) -> float:
        return self.max_window / self.limit - 1


@dataclass
class Region:
    name: str
    storage_config: dict[str, Any]
    gateways: list[KongStandIn] = field(default_factory=list)
    worker: subprocess.Popen[bytes] | None = None
    worker_log: Path | None = None

    def storage(self) -> Storage:
        return build_storage(self.storage_config)


class MultiRegionSim:
    """Start with :meth:`start`, stop with :meth:`close` (or use as a context manager)."""

    def __init__(self, binary: str, workdir: Path, *, nodes_per_region: int = 1, limit: int = 40,
                 sync_interval_ms: int = 100, journal_interval_ms: int = 50, stale_after_ms: int = 1000,
                 lanes: int = 1, denylist_wait_ms: int = 50) -> None:
        self.binary = binary
        self.workdir = workdir
        self.nodes_per_region = nodes_per_region
        self.limit = limit
        self.sync_interval_ms = sync_interval_ms
        self.journal_interval_ms = journal_interval_ms
        self.stale_after_ms = stale_after_ms
        self.lanes = lanes
        self.denylist_wait_ms = denylist_wait_ms
        self.regions: dict[str, Region] = {}
        self.servers: dict[str, Any] = {}
        self.regions_file = workdir / "regions.yml"
        self.worker_ms: list[float] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> MultiRegionSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        us = RedisServer(self.binary, self.workdir / "redis-us")
        eu = RedisClusterServers(self.binary, self.workdir / "redis-eu")
        apac = RedisServer(self.binary, self.workdir / "redis-apac", ["appendonly yes", "appendfsync everysec"])
        self.servers = {"us": us, "eu": eu, "apac": apac}
        timeouts = {"connect_timeout": 300, "read_timeout": 1000}
        configs = {
            "us": {"strategy": "redis", "host": us.host, "port": us.port, **timeouts},
            "eu": {"strategy": "redis-cluster", "cluster_nodes": [{"host": h, "port": p} for h, p in eu.nodes],
                   **timeouts},
            "apac": {"strategy": "redis", "host": apac.host, "port": apac.port, **timeouts},
        }
        self.regions = {name: Region(name, configs[name]) for name in REGIONS}
        self.regions_file.write_text(yaml.safe_dump({
            "regions": {name: {"storage": cfg} for name, cfg in configs.items()},
            "exchange": {"sync_interval_ms": self.sync_interval_ms, "lanes": self.lanes,
                         "denylist_wait_ms": self.denylist_wait_ms},
        }))
        try:
            for region in self.regions.values():
                for node in range(self.nodes_per_region):
                    region.gateways.append(self._gateway(region, node))
            for name in REGIONS:
                self.start_worker(name)
            # every plugin server must have heard from every peer before a global limit is global
            time.sleep(self.stale_after_ms / 1000 + 1.2)
        except BaseException:
            self.close()
            raise

    def _gateway(self, region: Region, node: int) -> KongStandIn:
        prefix = self.workdir / f"{region.name}{node}"
        prefix.mkdir(parents=True, exist_ok=True)
        region_block = {"name": region.name, "regions": list(REGIONS), "lanes": self.lanes,
                        "journal_interval_ms": self.journal_interval_ms, "stale_after_ms": self.stale_after_ms}
        quota = {
            "default_tier": "std",
            "tiers": [{"name": "std", "models": ["*"], "limits": [
                {"models": ["chat"], "per_second": self.limit, "limit_by": "tenant", "scope": "global-approximate"},
                {"models": ["chat-strict"], "per_second": self.limit, "limit_by": "tenant"},
                {"models": ["chat-daily"], "per_day": DAILY_LIMIT, "limit_by": "tenant", "scope": "global-approximate"},
            ]}],
            "storage": region.storage_config, "region": region_block,
        }
        guard = {"storage": region.storage_config, "region": region_block}
        deck = {
            "_format_version": "3.0",
            "services": [{"name": m, "url": f"http://{m}.models.internal", "routes": [
                {"name": m, "paths": [f"/{m}"]}]} for m in ("chat", "chat-strict", "chat-daily")],
            "consumers": [{"username": f"user{i}", "tags": ["tier:std", f"tenant:{TENANT}"],
                           "keyauth_credentials": [{"key": f"key{i}"}]} for i in range(4)],
            "plugins": [{"name": "key-auth", "config": {"key_names": ["apikey"]}},
                        {"name": "ai-extraction-guard", "config": guard},
                        {"name": "ai-tier-quota", "config": quota}],
        }
        gw = KongStandIn.from_deck(deck, servers=[PluginServerSpec.suite("ai-tier-quota", prefix),
                                                  PluginServerSpec.suite("ai-extraction-guard", prefix)],
                                   node_id=f"{region.name}-{node}")
        gw.start()
        return gw

    def start_worker(self, name: str) -> None:
        region = self.regions[name]
        region.worker_log = self.workdir / f"sync-{name}.log"
        log = open(region.worker_log, "ab")  # noqa: SIM115 -- handed to the child process
        region.worker = subprocess.Popen(
            [sys.executable, "-m", "kong_plugins.region.sync", "--regions", str(self.regions_file), "--region", name],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()

    def stop_worker(self, name: str) -> None:
        region = self.regions[name]
        if region.worker is not None and region.worker.poll() is None:
            region.worker.terminate()
            region.worker.wait(timeout=20)
        region.worker = None

    def close(self) -> None:
        for region in self.regions.values():
            try:
                self.stop_worker(region.name)
            finally:
                for gw in region.gateways:
                    gw.close()
        for server in self.servers.values():
            server.stop()
        close_shared_clients()

    def worker_round_ms(self) -> list[float]:
        """Durations of the usage rounds that shipped something, from every worker's log."""
        import json

        values: list[float] = []
        for region in self.regions.values():
            if region.worker_log is None or not region.worker_log.exists():
                continue
            for line in region.worker_log.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"event":"usage"' in line:
                    values.append(float(json.loads(line)["ms"]))
        return values

    def staleness_s(self) -> float:
        """The stated staleness: journal interval + sync interval + the p99 of an exchange round."""
        rounds = self.worker_round_ms()
        return (self.journal_interval_ms + self.sync_interval_ms + (percentile(rounds, 99) if rounds else 0)) / 1000

    # -- load ------------------------------------------------------------------------------------

    def _send(self, gw: KongStandIn, path: str, key: str = "key0") -> int:
        return gw.request("GET", path, headers={"apikey": key}).status

    def drive(self, pattern: str, seconds: float, rate_per_region: float, *, path: str = "/chat",
              burst_every: float = 0.5, regions: Sequence[str] = REGIONS) -> DriveResult:
        """Load from every region: ``steady`` (evenly spaced) or ``bursty`` (all regions send
        ``rate x burst_every`` requests at the same instants). Returns admissions per window."""
        stamps: list[tuple[float, str, int]] = []
        lock = threading.Lock()
        start = time.time() + 0.2

        def worker(region: str, gw: KongStandIn, share: float, offset: float) -> None:
            local: list[tuple[float, str, int]] = []
            if pattern == "steady":
                interval = 1.0 / (rate_per_region * share)
                due = start + offset * interval
                while due < start + seconds:
                    delay = due - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    status = self._send(gw, path)
                    local.append((time.time(), region, status))
                    due += interval
            else:
                per_burst = max(1, round(rate_per_region * burst_every * share))
                due = start
                while due < start + seconds:
                    delay = due - time.time()
                    if delay > 0:
                        time.sleep(delay)
                    for _ in range(per_burst):
                        status = self._send(gw, path)
                        local.append((time.time(), region, status))
                    due += burst_every
            with lock:
                stamps.extend(local)

        threads = []
        for name in regions:
            gws = self.regions[name].gateways
            for i, gw in enumerate(gws):
                threads.append(threading.Thread(target=worker, args=(name, gw, 1 / len(gws), i / len(gws))))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        admitted_times = [t for t, _, status in stamps if status == 200]
        offered = {name: sum(1 for _, r, _ in stamps if r == name) for name in regions}
        admitted = {name: sum(1 for _, r, s in stamps if r == name and s == 200) for name in regions}
        errors = sum(1 for _, _, s in stamps if s not in (200, 429))
        staleness = self.staleness_s()
        rate = rate_per_region if pattern == "steady" else rate_per_region * burst_every / max(staleness, 1e-3)
        # sources: every key a region may count the rule under (the un-laned key and each lane)
        keys_per_region = self.lanes + 1 if self.lanes > 1 else 1
        bound = over_admission_bound(self.limit, len(regions) * keys_per_region, staleness, rate)
        per_window = [sum(1 for t in admitted_times if start + k <= t < start + k + 1) for k in range(int(seconds))]
        return DriveResult(pattern, seconds, offered, admitted, errors, max_in_window(admitted_times, 1.0),
                           self.limit, bound, staleness, per_window)

    # -- denylist --------------------------------------------------------------------------------

    def denylist_propagation(self, count: int, origin: str = "us", poll_s: float = 0.002,
                             timeout: float = 10.0) -> dict[str, dict[str, list[float]]]:
        """Blocks recorded in ``origin``; per destination, seconds until (a) its Redis holds the
        key and (b) a gateway there refuses the client. IP blocks for every tenant, distinct IPs."""
        deny = Denylist(self.regions[origin].storage(), region=origin)
        destinations = [r for r in REGIONS if r != origin]
        stores = {r: self.regions[r].storage() for r in destinations}
        out: dict[str, dict[str, list[float]]] = {r: {"storage": [], "gateway": []} for r in destinations}
        for i in range(count):
            ip = f"198.18.{i // 250}.{i % 250 + 1}"
            key = global_verdict_key(f"ip:{ip}")
            t0 = time.perf_counter()
            deny.block(f"ip:{ip}", tenant=None, ttl=300, who="bench", why=f"propagation probe {i}")
            pending = set(destinations)
            seen_storage: dict[str, float] = {}
            while pending:
                elapsed = time.perf_counter() - t0
                if elapsed > timeout:
                    raise TimeoutError(f"block {i} did not reach {sorted(pending)} within {timeout}s")
                for name in list(pending):
                    if name not in seen_storage and stores[name].get(key) is not None:
                        seen_storage[name] = time.perf_counter() - t0
                    gw = self.regions[name].gateways[0]
                    status = gw.request("GET", "/chat-strict", headers={"apikey": "key3"}, client_ip=ip).status
                    if status == 403:
                        refused = time.perf_counter() - t0
                        out[name]["gateway"].append(refused)
                        # the key was there by the time the gateway refused, at the latest
                        out[name]["storage"].append(min(seen_storage.get(name, refused), refused))
                        pending.discard(name)
                time.sleep(poll_s)
        return out

    # -- latency ---------------------------------------------------------------------------------

    def decision_latency(self, requests: int, region: str = "eu") -> dict[str, list[float]]:
        """ai-tier-quota's access-phase RPC seconds per request, ``chat`` (global) and
        ``chat-strict`` interleaved on one gateway (other load off)."""
        gw = self.regions[region].gateways[0]
        out: dict[str, list[float]] = {"global-approximate": [], "strict-regional": []}
        keys = [f"key{i}" for i in range(1, 4)]
        for i in range(requests):
            for path, label in (("/chat", "global-approximate"), ("/chat-strict", "strict-regional")):
                r = gw.request("GET", path, headers={"apikey": keys[i % 3]}, client_ip=f"10.9.{i % 200}.1")
                spent = r.rpc_seconds_by_phase.get("access")
                if spent is not None and r.status in (200, 429):
                    out[label].append(spent)
        return out

    # -- outages ---------------------------------------------------------------------------------

    def daily_usage(self, region: str) -> tuple[int, int]:
        """(local, remote) usage the region's Redis holds for acme's global per-day limit, summed."""
        key = make_key("tq", TENANT, "std", "l2", "per_day", "chat-daily", "tenant", TENANT,
                       hash_tag=f"t|{TENANT}|chat-daily")
        store = self.regions[region].storage()
        local = store.hgetall(key)
        remote = store.hgetall(remote_key_of(key))
        return sum(int(v) for v in local.values()), sum(int(v) for v in remote.values())

    def _wait_converged(self, timeout: float = 15.0) -> tuple[bool, dict[str, tuple[int, int]], float]:
        """Until every region's remote per-day usage equals the others' local usage."""
        t0 = time.perf_counter()
        usage: dict[str, tuple[int, int]] = {}
        while True:
            usage = {r: self.daily_usage(r) for r in REGIONS}
            total = sum(local for local, _ in usage.values())
            if all(remote == total - local for local, remote in usage.values()):
                return True, usage, time.perf_counter() - t0
            if time.perf_counter() - t0 > timeout:
                return False, usage, time.perf_counter() - t0
            time.sleep(0.02)

    def region_down(self, region: str, seconds: float, rate_per_region: float) -> dict[str, Any]:
        """``region``'s Redis stops under load (per-day global usage in the other regions, a block
        recorded elsewhere), then starts again: what it answered meanwhile, and whether every
        region's view of the per-day usage and the block converge once it is back."""
        server = self.servers[region]
        others = [r for r in REGIONS if r != region]
        server.stop()
        try:
            down = self.drive("steady", seconds, rate_per_region, path="/chat-daily")
            block = Denylist(self.regions[others[0]].storage(), region=others[0]).block(
                "ip:198.19.1.1", tenant=None, ttl=300, who="bench", why="recorded while a region is down")
        finally:
            server.start()
        converged, usage, after = self._wait_converged()
        key = global_verdict_key("ip:198.19.1.1")
        t0 = time.perf_counter()
        while self.regions[region].storage().get(key) is None and time.perf_counter() - t0 < 15:
            time.sleep(0.01)
        return {"down_region": region, "offered_while_down": down.offered[region],
                "answered_while_down": down.admitted[region], "errors_while_down": down.errors,
                "admitted_elsewhere": {r: down.admitted[r] for r in others},
                "usage_converged": converged, "usage_converged_after_s": after, "daily_usage": usage,
                "block_origin": block.origin,
                "block_reached_returned_region": self.regions[region].storage().get(key) is not None}

    def exchange_down(self, seconds: float, rate_per_region: float) -> dict[str, Any]:
        """Every sync worker stops under load: the plugins fall back (``share``: a third of the
        limit each), a block and per-day usage are recorded meanwhile; the workers restart and
        everything recorded during the outage must reach every region."""
        for name in REGIONS:
            self.stop_worker(name)
        try:
            time.sleep(self.stale_after_ms / 1000 + 1.2)  # the plugins notice and fall back
            during = self.drive("steady", seconds, rate_per_region)
            self.drive("steady", 1.0, rate_per_region / 4, path="/chat-daily")
            Denylist(self.regions["eu"].storage(), region="eu").block(
                "ip:198.19.0.1", tenant=None, ttl=300, who="bench", why="recorded while the exchange is down")
            key = global_verdict_key("ip:198.19.0.1")
            reached_during = [r for r in ("us", "apac") if self.regions[r].storage().get(key) is not None]
        finally:
            for name in REGIONS:
                self.start_worker(name)
        t0 = time.perf_counter()
        while any(self.regions[r].storage().get(key) is None for r in ("us", "apac")):
            if time.perf_counter() - t0 > 20:
                break
            time.sleep(0.01)
        delivered_after = time.perf_counter() - t0
        converged, usage, after = self._wait_converged()
        time.sleep(self.stale_after_ms / 1000 + 1.2)  # healthy again before the next scenario
        return {"during": during, "block_reached_during": reached_during,
                "block_delivered_after_restart_s": delivered_after,
                "block_everywhere": all(self.regions[r].storage().get(key) is not None for r in REGIONS),
                "usage_converged": converged, "usage_converged_after_s": after, "daily_usage": usage}


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "mean": statistics.fmean(values) if values else math.nan}


def bucket_width_s(window_s: float) -> float:
    return window_s / GLOBAL_BUCKETS


Clock = Callable[[], float]

__all__ = ["REGIONS", "DriveResult", "MultiRegionSim", "max_in_window", "over_admission_bound", "percentile",
           "summary"]
