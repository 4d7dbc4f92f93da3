"""Plugin-server runtimes side by side, driven by the Kong stand-in (issue 2 "Measure").

The same kong-pdk plugin (``kong_plugins/demo/hello.py``: HandleEvent + 2 or + 4 PDK calls) runs on

  floor    a bare server answering the same call script from its socket loop (bench/floor_server.py)
  stock    kong-pdk 0.36's dedicated server, default thread mode
  stock-g  kong-pdk 0.36's dedicated server with -g (gevent)
  ours     kong_plugins.runtime

Each is behind its own stand-in gateway. The figure per event is the stand-in's ``rpc_seconds``:
time from sending each RPC to receiving its answer, summed over the event's round trips -- the
stand-in's own routing and PDK emulation are excluded. The machine is shared and noisy, so rounds
are interleaved (every runtime measured in every round, in a shuffled order) and the report gives
ratios. A runtime's overhead is its time minus the floor's.

Concurrent clients are separate processes, as Kong's nginx workers are: each client process runs
its own stand-in gateway attached to the same plugin server (its ``start_cmd`` is a placeholder;
the server belongs to the first gateway, as it belongs to worker 0 in Kong). Threads in one Python
process would mostly measure the client's own GIL. Two concurrent measurements:

  closed loop  each client sends its next event as soon as the previous answer arrives. This gives
               the throughput (events/s), but its latency is taken at whatever load each runtime
               sustains: on 2 cores a runtime that serves more events/s also makes the clients and
               itself wait more for a CPU, so closed-loop latencies of different runtimes are not
               comparable.
  open loop    the clients send on a fixed schedule (Poisson arrivals, each client 1/N of a total
               rate R; in a round every runtime gets the same arrival times) and an event's figure
               is its RPC time plus any wait past its scheduled send -- a client still busy with
               the previous event counts that delay (coordinated omission is not hidden). R comes
               from a closed-loop capacity probe at the start of the run: a fraction (default 0.65)
               of the slowest runtime's throughput, so that none is saturated, and the same fraction
               of the slower of stock -g and ours, where stock default may be saturated. A runtime
               that falls behind the schedule (its last answer comes more than ~3% of the run after
               the last arrival: a growing backlog, not one event's latency) in most rounds is
               reported as saturated instead of with latencies.

    python bench/bench_runtime.py                 # full run (~8-10 minutes)
    python bench/bench_runtime.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from kong_plugins.standin import KongStandIn, PluginServerSpec

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "kong_plugins" / "demo" / "hello.py"
FLOOR = ROOT / "bench" / "floor_server.py"
KINDS = ("floor", "stock", "stock-g", "ours")
SCRIPTS = (2, 4)
#: A client gateway's "start_cmd": it must not start a second server on the shared socket.
PLACEHOLDER_START = ["sleep", "infinity"]
#: An open-loop run whose last answer came more than ~3% of the schedule's span after the last
#: arrival fell behind it: keeping up, that delay is one event's latency (ms) against a span of seconds.
KEPT_UP = 0.97


def deck() -> dict[str, object]:
    return {
        "_format_version": "3.0",
        "services": [
            {
                "name": f"svc{calls}",
                "url": "http://upstream.local",
                "routes": [{"name": f"calls{calls}", "paths": [f"/calls{calls}"]}],
                "plugins": [{"name": "hello", "config": {"calls": calls}}],
            }
            for calls in SCRIPTS
        ],
    }


def spec_for(kind: str, prefix: Path) -> PluginServerSpec:
    prefix.mkdir(parents=True, exist_ok=True)
    if kind == "ours":
        return PluginServerSpec.module(str(HELLO), prefix)
    if kind in ("stock", "stock-g"):
        return PluginServerSpec.stock_kong_pdk(str(HELLO), prefix, gevent=kind == "stock-g")
    socket = str(prefix / "hello.sock")
    floor = [sys.executable, str(FLOOR)]
    return PluginServerSpec("hello", [*floor, socket], [*floor, "--dump"], socket)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def run_sequential(gw: KongStandIn, calls: int, n: int) -> list[float]:
    out = []
    for _ in range(n):
        r = gw.request("GET", f"/calls{calls}")
        if r.status != 200:
            raise RuntimeError(f"unexpected status {r.status}: {r.body[:200]!r}")
        out.append(r.rpc_seconds)
    return out


# -- client processes ------------------------------------------------------------------------------

_CLIENT_GATEWAYS: dict[str, KongStandIn] = {}


def _client_gateway(kind: str, socket: str, query_cmd: list[str]) -> KongStandIn:
    gw = _CLIENT_GATEWAYS.get(kind)
    if gw is None:
        spec = PluginServerSpec("hello", PLACEHOLDER_START, query_cmd, socket)
        gw = _CLIENT_GATEWAYS[kind] = KongStandIn.from_deck(deck(), servers=[spec])
        gw.start()
        for calls in SCRIPTS:  # this "worker"'s own instances, and hot code paths
            run_sequential(gw, calls, 50)
    return gw


def _client_run(kind: str, socket: str, query_cmd: list[str], calls: int, n: int,
                barrier: Any) -> tuple[list[float], float, float]:
    gw = _client_gateway(kind, socket, query_cmd)
    barrier.wait()
    started = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
    samples = run_sequential(gw, calls, n)
    return samples, started, time.monotonic()


def _client_open_loop(kind: str, socket: str, query_cmd: list[str], calls: int, n: int, rate: float,
                      seed: int, barrier: Any) -> tuple[list[float], int, float, float, float]:
    """``n`` events at Poisson arrivals of ``rate``/s: (samples, late sends, start, last scheduled, end).

    A sample is the event's RPC time plus how late it was sent: when the previous event (or
    anything else) kept this client busy past an arrival, the wait is part of what that request
    would have seen. Oversleeping a future arrival is the client's own timer, not counted.
    """
    gw = _client_gateway(kind, socket, query_cmd)
    rng = random.Random(seed)  # the same seed gives every runtime the same arrival times
    gaps = [rng.expovariate(rate) for _ in range(n)]
    barrier.wait()
    started = scheduled = time.monotonic()
    samples, late = [], 0
    for gap in gaps:
        scheduled += gap
        now = time.monotonic()
        if now < scheduled:
            time.sleep(scheduled - now)
            behind = 0.0
        else:
            behind = now - scheduled
            late += 1
        r = gw.request("GET", f"/calls{calls}")
        if r.status != 200:
            raise RuntimeError(f"unexpected status {r.status}: {r.body[:200]!r}")
        samples.append(behind + r.rpc_seconds)
    return samples, late, started, scheduled, time.monotonic()


def _client_close() -> None:
    for gw in _CLIENT_GATEWAYS.values():
        gw.close()
    _CLIENT_GATEWAYS.clear()


class Clients:
    """``count`` client processes, each with its own stand-in gateway per runtime."""

    def __init__(self, count: int, specs: dict[str, PluginServerSpec]) -> None:
        self.count = count
        self.specs = specs
        ctx = multiprocessing.get_context("spawn")
        self._manager = ctx.Manager()
        self._barrier = self._manager.Barrier(count)
        self._pool = ctx.Pool(count)

    def run(self, kind: str, calls: int, total: int) -> tuple[list[float], float]:
        """``total`` events split over the clients, all at once; (per-event samples, events/s)."""
        spec = self.specs[kind]
        per_client = max(1, total // self.count)
        jobs = [self._pool.apply_async(_client_run, (kind, spec.socket, spec.query_cmd, calls, per_client,
                                                     self._barrier)) for _ in range(self.count)]
        results = [job.get(timeout=600) for job in jobs]
        samples = [s for r in results for s in r[0]]
        wall = max(r[2] for r in results) - min(r[1] for r in results)
        return samples, len(samples) / wall

    def run_open(self, kind: str, calls: int, total: int, rate: float, seed: int) -> tuple[list[float], float, float]:
        """``total`` events offered at ``rate``/s over all clients: (samples, kept-up share, late share).

        Kept-up share = the schedule's span / the time it took to serve it: about 1 when the runtime
        keeps up (the last answer comes one latency after the last arrival), well below when it
        cannot and the backlog grows until the end.
        """
        spec = self.specs[kind]
        per_client = max(1, total // self.count)
        jobs = [self._pool.apply_async(_client_open_loop, (kind, spec.socket, spec.query_cmd, calls, per_client,
                                                           rate / self.count, seed * 1000 + index, self._barrier))
                for index in range(self.count)]
        results = [job.get(timeout=600) for job in jobs]
        samples = [s for r in results for s in r[0]]
        start = min(r[2] for r in results)
        kept_up = (max(r[3] for r in results) - start) / (max(r[4] for r in results) - start)
        return samples, kept_up, sum(r[1] for r in results) / len(samples)

    def close(self) -> None:
        jobs = [self._pool.apply_async(_client_close) for _ in range(self.count * 4)]
        for job in jobs:
            job.get(timeout=60)
        self._pool.close()
        self._pool.join()
        self._manager.shutdown()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f}µ"


def ratio_line(label: str, data: dict[str, list[float]], round_p99: dict[str, list[float]],
               saturated: frozenset[str] = frozenset()) -> str:
    """One line of ratios: x floor, our p50 overhead against the stock servers', p99 ours vs stock -g."""
    if "floor" in saturated or "ours" in saturated:
        return f"  {label}: " + ", ".join(sorted(saturated)) + " saturated"
    median = {k: statistics.median(data[k]) for k in KINDS if k not in saturated}
    p99 = {k: pct(data[k], .99) for k in median}
    over = {k: median[k] - median["floor"] for k in median}
    over99 = {k: p99[k] - p99["floor"] for k in median}

    def share(other: str, over: dict[str, float]) -> str:
        """Our overhead as a share of ``other``'s: "0.21 of stock -g's"."""
        name = "stock -g's" if other == "stock-g" else "stock default's"
        if other in saturated:
            return f"n/a of {name} ({other} saturated)"
        if over["ours"] <= 0:
            return f"none (ours at or below the floor; {name}: {us(over[other])})"
        return f"{over['ours'] / over[other]:.2f} of {name}" if over[other] > 0 else f"n/a of {name}"

    times_floor = ", ".join(f"{k}/floor " + ("saturated" if k in saturated else f"{median[k] / median['floor']:.2f}x")
                            for k in ("stock-g", "stock", "ours"))
    tail = f"p99 ours {us(p99['ours'])} vs stock -g "
    if "stock-g" in saturated:
        tail += "saturated"
    else:
        tail += (f"{us(p99['stock-g'])} (median of the rounds' p99: {us(statistics.median(round_p99['ours']))} vs "
                 f"{us(statistics.median(round_p99['stock-g']))}); p99 overhead = {share('stock-g', over99)}")
    return (f"  {label}: {times_floor}; our overhead = {share('stock-g', over)} (target <= 0.33), "
            f"{share('stock', over)} (target <= 0.20); {tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="events per runtime, script and round")
    parser.add_argument("--open-events", type=int, default=2000,
                        help="open-loop events per runtime, script, load and round")
    parser.add_argument("--load-fraction", type=float, default=0.65,
                        help="open-loop rate as a fraction of the probed closed-loop capacity")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    parser.add_argument("--rss-events", type=int, default=100_000, help="events after the RSS warm-up")
    parser.add_argument("--rss-warmup", type=int, default=20_000, help="events before the first RSS reading")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.events, args.open_events, args.rounds, args.rss_events, args.rss_warmup = 200, 400, 2, 5000, 2000
    if not 0 < args.load_fraction <= 1:
        parser.error("--load-fraction must be in (0, 1]")

    work = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    specs = {kind: spec_for(kind, work / kind) for kind in KINDS}
    gateways = {kind: KongStandIn.from_deck(deck(), servers=[specs[kind]]) for kind in KINDS}
    for gw in gateways.values():
        gw.start()
    clients: Clients | None = None
    try:
        for gw in gateways.values():  # warm-up: instances started, code paths hot
            for calls in SCRIPTS:
                run_sequential(gw, calls, 300)
        clients = Clients(args.clients, specs)

        # Capacity probe (closed loop) for the open-loop rates. Load 1 sits below the slowest
        # runtime's capacity, so all four are compared unsaturated; load 2 below the slower of
        # stock -g and ours, the comparison the -g target is about, where stock default may not keep up.
        probe = {(kind, calls): clients.run(kind, calls, args.events)[1] for kind in KINDS for calls in SCRIPTS}
        loads: dict[str, dict[int, tuple[float, str]]] = {"load 1": {}, "load 2": {}}
        for calls in SCRIPTS:
            for load, candidates in (("load 1", ("stock", "stock-g", "ours")), ("load 2", ("stock-g", "ours"))):
                slowest = min(candidates, key=lambda k, calls=calls: probe[k, calls])
                capacity = probe[slowest, calls]
                loads[load][calls] = (args.load_fraction * capacity,
                                      f"{args.load_fraction:.2f} x {slowest}'s probed closed-loop {capacity:.0f}/s, "
                                      f"the slowest of {', '.join(candidates)}")

        seq: dict[tuple[str, int], list[float]] = defaultdict(list)
        conc: dict[tuple[str, int], list[float]] = defaultdict(list)
        throughput: dict[tuple[str, int], list[float]] = defaultdict(list)
        opened: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        kept_up: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        late: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        # p99 of each round apart: a burst of other work on the shared machine spoils one round's
        # tail, not the median of the rounds' tails.
        round_p99: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        rng = random.Random(7)
        for round_no in range(args.rounds):
            order = list(KINDS)
            rng.shuffle(order)
            for kind in order:
                for calls in SCRIPTS:
                    samples = run_sequential(gateways[kind], calls, args.events)
                    seq[kind, calls] += samples
                    round_p99["sequential", kind, calls].append(pct(samples, 0.99))
                    samples, rate = clients.run(kind, calls, args.events)
                    conc[kind, calls] += samples
                    round_p99["closed", kind, calls].append(pct(samples, 0.99))
                    throughput[kind, calls].append(rate)
                    for load_no, (load, rates) in enumerate(loads.items()):
                        seed = (round_no * 10 + load_no) * 100 + calls  # same arrivals for every runtime
                        samples, kept, late_share = clients.run_open(kind, calls, args.open_events, rates[calls][0],
                                                                     seed)
                        opened[load, kind, calls] += samples
                        kept_up[load, kind, calls].append(kept)
                        late[load, kind, calls].append(late_share)
                        round_p99[load, kind, calls].append(pct(samples, 0.99))

        print(f"\nPlugin RPC time per event (stand-in's own work excluded); {args.rounds} interleaved rounds "
              f"x {args.events} events per runtime and script. Closed loop = {args.clients} client processes, "
              "each sending its next event when the previous answer arrives: its latency is taken at the load "
              "each runtime sustains (more events/s = more CPU queueing on this machine), so compare runtimes' "
              "latency at equal offered load (open loop, below); events/s is the closed-loop throughput.\n")
        header = (f"{'runtime':8} {'script':10} {'seq p50':>9} {'seq p99':>9} {'overhead':>9} "
                  f"{'closed p50':>10} {'closed p99':>10} {'overhead':>9} {'events/s':>9}")
        print(header)
        print("-" * len(header))
        for calls in SCRIPTS:
            floor_seq = statistics.median(seq["floor", calls])
            floor_conc = statistics.median(conc["floor", calls])
            for kind in KINDS:
                s, c = seq[kind, calls], conc[kind, calls]
                print(f"{kind:8} HE+{calls} PDK  {us(statistics.median(s)):>9} {us(pct(s, .99)):>9} "
                      f"{us(statistics.median(s) - floor_seq):>9} {us(statistics.median(c)):>10} "
                      f"{us(pct(c, .99)):>10} {us(statistics.median(c) - floor_conc):>9} "
                      f"{statistics.median(throughput[kind, calls]):9.0f}")
            print()

        def saturated(load: str, calls: int) -> frozenset[str]:
            return frozenset(k for k in KINDS
                             if sum(v < KEPT_UP for v in kept_up[load, k, calls]) * 2 > args.rounds)

        print(f"Open loop, equal offered load: {args.clients} client processes, Poisson arrivals at R/{args.clients} "
              f"each (the same arrival times for every runtime in a round), {args.rounds} interleaved rounds x "
              f"{args.open_events} events per runtime, script and load. Per event: RPC time + any wait past its "
              "scheduled send. Rates from a closed-loop capacity probe at the start of this run "
              "(events/s: " + "; ".join(f"HE+{calls} " + ", ".join(f"{k} {probe[k, calls]:.0f}" for k in KINDS)
                                        for calls in SCRIPTS) + "):")
        for load, rates in loads.items():
            for calls in SCRIPTS:
                print(f"  {load}, HE+{calls}: R = {rates[calls][0]:.0f} events/s = {rates[calls][1]}")
        print(f"kept up = the schedule's span / the time taken to serve it (median of the rounds; saturated = "
              f"below {KEPT_UP} in most rounds); late = events sent after their scheduled time (client still busy)\n")
        header = (f"{'load':6} {'runtime':8} {'script':10} {'R/s':>6} {'kept up':>8} {'late':>6} {'p50':>8} "
                  f"{'p99':>8} {'over p50':>9} {'over p99':>9} {'rounds p99':>10}")
        print(header)
        print("-" * len(header))
        for load, rates in loads.items():
            for calls in SCRIPTS:
                sat = saturated(load, calls)
                floor = opened[load, "floor", calls]
                for kind in KINDS:
                    key = (load, kind, calls)
                    o, kept = opened[key], statistics.median(kept_up[key])
                    line = (f"{load:6} {kind:8} HE+{calls} PDK  {rates[calls][0]:6.0f} {kept:8.3f} "
                            f"{statistics.median(late[key]):6.0%} ")
                    if kind in sat:
                        fell = sum(v < KEPT_UP for v in kept_up[key])
                        print(line + f"saturated: fell behind the schedule in {fell}/{args.rounds} rounds")
                        continue
                    line += f"{us(statistics.median(o)):>8} {us(pct(o, .99)):>8} "
                    if "floor" in sat:
                        line += f"{'n/a':>9} {'n/a':>9} "
                    else:
                        line += (f"{us(statistics.median(o) - statistics.median(floor)):>9} "
                                 f"{us(pct(o, .99) - pct(floor, .99)):>9} ")
                    print(line + f"{us(statistics.median(round_p99[key])):>10}")
                print()

        print("Ratios (overhead = p50 minus the floor's p50, same run; p99 overhead likewise):")
        for calls in SCRIPTS:
            for mode, data in (("sequential", seq), ("closed", conc)):
                label = (f"HE+{calls} sequential" if mode == "sequential" else
                         f"HE+{calls} closed loop (latency at each runtime's own load, not comparable)")
                print(ratio_line(label, {k: data[k, calls] for k in KINDS},
                                 {k: round_p99[mode, k, calls] for k in KINDS}))
            for load, rates in loads.items():
                print(ratio_line(f"HE+{calls} open loop, {load} ({rates[calls][0]:.0f}/s)",
                                 {k: opened[load, k, calls] for k in KINDS},
                                 {k: round_p99[load, k, calls] for k in KINDS}, saturated(load, calls)))

        print(f"\nConcurrent cost per event from closed-loop throughput ({args.clients} client processes on this "
              "machine's cores: the wall time each event takes of the whole, 1 / events/s; "
              "overhead = minus the floor's):")
        for calls in SCRIPTS:
            per_event = {k: 1 / statistics.median(throughput[k, calls]) for k in KINDS}
            over = {k: per_event[k] - per_event["floor"] for k in KINDS}

            def share(other: str, over: dict[str, float] = over) -> str:
                return f"{over['ours'] / over[other]:.2f}" if over[other] > 0 else "n/a"

            print(f"  HE+{calls}: " + ", ".join(f"{k} {per_event[k] * 1e6:.0f}µ" for k in KINDS)
                  + f"; our overhead = {share('stock-g')} of stock -g's, {share('stock')} of stock default's")

        checkpoints = 4
        step = max(1, args.rss_events // checkpoints)
        print(f"\nServer RSS (KiB): after a warm-up of {args.rss_warmup:,} events, then every {step:,} events "
              f"up to {step * checkpoints:,} more ({args.clients} client processes, closed loop, HE+4)")
        for kind in KINDS:
            pid = gateways[kind].server("hello").pid
            if pid is None:
                print(f"  {kind:8} server not running")
                continue
            clients.run(kind, 4, args.rss_warmup)
            series = [rss_kib(pid)]
            for _ in range(checkpoints):
                clients.run(kind, 4, step)
                series.append(rss_kib(pid))
            print(f"  {kind:8} " + " -> ".join(f"{v:6d}" for v in series)
                  + f"   (since warm-up {series[-1] - series[0]:+d} KiB, last step {series[-1] - series[-2]:+d} KiB)")
    finally:
        if clients is not None:
            clients.close()
        for gw in gateways.values():
            gw.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
