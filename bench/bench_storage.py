"""Storage layer benchmark: printed figures, no pass/fail.

    python bench/bench_storage.py [--redis HOST:PORT] [--n 3000] [--rounds 5]

Without ``--redis`` a throwaway redis-server is started (kong_plugins.testing.redis_servers).

What it prints, side by side in one run:

1. memory backend: typical 3-rule decisions per second in-process (per second + per minute GCRA
   + daily calendar quota), and 1-rule;
2. Redis, same redis-py client: p50/p99 latency of PING, of one ``check_and_consume`` (1 and 3
   rules), of the ``limits`` library's moving-window and sliding-window strategies (1 limit, and
   3 limits = 3 hits), and of a Kong-style fixed window (INCRBY + EXPIRE pipelined per window);
3. for each Redis method: client round trips per decision, commands Redis executed per decision
   (``INFO commandstats``, script-internal commands included) and Redis CPU per decision
   (``INFO cpu``).

Methods are interleaved round by round so that machine noise hits them alike; compare ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kong_plugins.storage import (
    CalendarRule,
    Limiter,
    MemoryStorage,
    RateRule,
    RedisStorage,
    make_key,
)
from kong_plugins.storage.redis_backend import redis_client

BIG = 10**12  # limits nobody reaches: the benchmark measures the allow path


def three_rules(tag: str) -> list[RateRule | CalendarRule]:
    return [
        RateRule("per_second", make_key("bench", "s", hash_tag=tag), BIG, 1.0),
        RateRule("per_minute", make_key("bench", "m", hash_tag=tag), BIG, 60.0),
        CalendarRule("per_day", make_key("bench", "d", hash_tag=tag), BIG, "day"),
    ]


def bench_memory(n: int) -> None:
    print("== memory backend (in-process, one thread)")
    for label, rules in (("3 rules", three_rules("c")), ("1 rule", three_rules("c")[:1])):
        limiter = Limiter(MemoryStorage())
        now = time.time()
        best = 0.0
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(n):
                limiter.check_and_consume(rules, now)
            best = max(best, n / (time.perf_counter() - started))
        print(f"  check_and_consume, {label:8s} {best:12,.0f} decisions/s (best of 3 x {n:,})")
    # also with distinct clients: a realistic key spread through the LRU
    limiter = Limiter(MemoryStorage(max_keys=30_000))
    client_rules = [three_rules(f"client-{i}") for i in range(20_000)]
    now = time.time()
    started = time.perf_counter()
    for i in range(n):
        limiter.check_and_consume(client_rules[i % len(client_rules)], now)
    print(f"  3 rules, 20,000 clients, LRU of 30,000 keys "
          f"{n / (time.perf_counter() - started):10,.0f} decisions/s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def server_counters(client: redis.Redis) -> tuple[int, float]:
    stats = client.info("commandstats")
    commands = sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))
    cpu = client.info("cpu")
    return commands, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def bench_redis(host: str, port: int, n: int, rounds: int) -> None:
    import limits
    import limits.storage
    import limits.strategies

    client = redis_client(host, port, read_timeout=5.0, connect_timeout=5.0)
    admin = redis.Redis(host=host, port=port, decode_responses=True)
    admin.flushall()
    storage = RedisStorage(client)
    limiter = Limiter(storage)
    rules3, rules1 = three_rules("c"), three_rules("c")[:1]

    lim_storage = limits.storage.RedisStorage(f"redis://{host}:{port}")
    moving = limits.strategies.MovingWindowRateLimiter(lim_storage)
    sliding = limits.strategies.SlidingWindowCounterRateLimiter(lim_storage)
    per_s, per_m, per_d = (limits.parse(x) for x in ("1000000000/second", "1000000000/minute", "1000000000/day"))

    def kong_style(windows: tuple[tuple[str, int], ...]) -> Callable[[], Any]:
        def run() -> Any:
            pipe = client.pipeline(transaction=False)
            for key, ttl in windows:
                pipe.incrby(key, 1)
                pipe.expire(key, ttl)
            return pipe.execute()
        return run

    # (label, call, client round trips per call)
    methods: list[tuple[str, Callable[[], Any], int]] = [
        ("PING", client.ping, 1),
        ("ours: check_and_consume, 1 rule (GCRA)", lambda: limiter.check_and_consume(rules1), 1),
        ("ours: check_and_consume, 3 rules", lambda: limiter.check_and_consume(rules3), 1),
        ("limits: moving window, 1 limit", lambda: moving.hit(per_s, "k1"), 1),
        ("limits: sliding window counter, 1 limit", lambda: sliding.hit(per_s, "k1"), 1),
        ("limits: moving window, 3 limits", lambda: [moving.hit(x, "k3") for x in (per_s, per_m, per_d)], 3),
        ("limits: sliding window counter, 3 limits",
         lambda: [sliding.hit(x, "k3") for x in (per_s, per_m, per_d)], 3),
        ("Kong-style INCRBY+EXPIRE, 1 window", kong_style((("kong:s", 1),)), 1),
        ("Kong-style INCRBY+EXPIRE, 3 windows", kong_style((("kong:s", 1), ("kong:m", 60), ("kong:d", 86400))), 1),
    ]
    latencies: dict[str, list[float]] = {label: [] for label, _, _ in methods}
    commands: dict[str, int] = dict.fromkeys(latencies, 0)
    cpu: dict[str, float] = dict.fromkeys(latencies, 0.0)
    for _, call, _ in methods:  # warm up: connections, script caches
        for _ in range(200):
            call()
    for _ in range(rounds):
        for label, call, _ in methods:
            admin.config_resetstat()
            before_cmds, before_cpu = server_counters(admin)
            samples = latencies[label]
            for _ in range(n):
                started = time.perf_counter_ns()
                call()
                samples.append((time.perf_counter_ns() - started) / 1000)
            after_cmds, after_cpu = server_counters(admin)
            commands[label] += after_cmds - before_cmds
            cpu[label] += after_cpu - before_cpu
    total = n * rounds
    ping_p50 = statistics.median(latencies["PING"])
    print(f"== Redis {admin.info('server')['redis_version']} on {host}:{port}, same redis-py client, "
          f"{rounds} interleaved rounds x {n:,} calls")
    print(f"  {'method':44s} {'p50 us':>8s} {'p99 us':>8s} {'p50/PING':>9s} {'trips':>6s} "
          f"{'cmds':>6s} {'CPU us':>7s}")
    for label, _, trips in methods:
        values = latencies[label]
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        print(f"  {label:44s} {p50:8.1f} {p99:8.1f} {p50 / ping_p50:8.2f}x {trips:6d} "
              f"{commands[label] / total:6.1f} {cpu[label] / total * 1e6:7.1f}")
    print("  trips: client round trips per decision; cmds: commands Redis executed per decision "
          "(script-internal included); CPU: Redis user+sys CPU per decision")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", help="HOST:PORT of a Redis to use (default: start a throwaway one)")
    parser.add_argument("--n", type=int, default=3000, help="calls per method per round (Redis)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (Redis)")
    parser.add_argument("--memory-n", type=int, default=200_000, help="decisions per memory run")
    args = parser.parse_args()
    bench_memory(args.memory_n)
    if args.redis:
        host, _, port = args.redis.rpartition(":")
        bench_redis(host, int(port), args.n, args.rounds)
        return
    from kong_plugins.testing.redis_servers import RedisServer, find_redis_server

    binary = find_redis_server()
    if binary is None:
        print("no redis-server binary: Redis figures skipped")
        return
    with tempfile.TemporaryDirectory(prefix="kp-bench-") as workdir:
        server = RedisServer(binary, Path(workdir))
        try:
            bench_redis(server.host, server.port, args.n, args.rounds)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
