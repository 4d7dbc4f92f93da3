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
the server belongs to the first gateway, as it belongs to worker 0 in Kong) and sends requests one
after another. Threads in one Python process would mostly measure the client's own GIL.

    python bench/bench_runtime.py                 # full run (~6-8 minutes)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="events per runtime, script and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    parser.add_argument("--rss-events", type=int, default=100_000, help="events after the RSS warm-up")
    parser.add_argument("--rss-warmup", type=int, default=20_000, help="events before the first RSS reading")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rounds, args.rss_events, args.rss_warmup = 200, 2, 5000, 2000

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

        seq: dict[tuple[str, int], list[float]] = defaultdict(list)
        conc: dict[tuple[str, int], list[float]] = defaultdict(list)
        throughput: dict[tuple[str, int], list[float]] = defaultdict(list)
        # p99 of each round apart: a burst of other work on the shared machine spoils one round's
        # tail, not the median of the rounds' tails.
        round_p99: dict[tuple[str, str, int], list[float]] = defaultdict(list)
        rng = random.Random(7)
        for _ in range(args.rounds):
            order = list(KINDS)
            rng.shuffle(order)
            for kind in order:
                for calls in SCRIPTS:
                    samples = run_sequential(gateways[kind], calls, args.events)
                    seq[kind, calls] += samples
                    round_p99["sequential", kind, calls].append(pct(samples, 0.99))
                    samples, rate = clients.run(kind, calls, args.events)
                    conc[kind, calls] += samples
                    round_p99["concurrent", kind, calls].append(pct(samples, 0.99))
                    throughput[kind, calls].append(rate)

        print(f"\nPlugin RPC time per event (stand-in's own work excluded); {args.rounds} interleaved rounds "
              f"x {args.events} events per runtime and script; concurrent = {args.clients} client processes\n")
        header = (f"{'runtime':8} {'script':10} {'seq p50':>9} {'seq p99':>9} {'overhead':>9} "
                  f"{'conc p50':>9} {'conc p99':>9} {'overhead':>9} {'events/s':>9}")
        print(header)
        print("-" * len(header))
        for calls in SCRIPTS:
            floor_seq = statistics.median(seq["floor", calls])
            floor_conc = statistics.median(conc["floor", calls])
            for kind in KINDS:
                s, c = seq[kind, calls], conc[kind, calls]
                print(f"{kind:8} HE+{calls} PDK  {statistics.median(s) * 1e6:8.0f}µ {pct(s, .99) * 1e6:8.0f}µ "
                      f"{(statistics.median(s) - floor_seq) * 1e6:8.0f}µ {statistics.median(c) * 1e6:8.0f}µ "
                      f"{pct(c, .99) * 1e6:8.0f}µ {(statistics.median(c) - floor_conc) * 1e6:8.0f}µ "
                      f"{statistics.median(throughput[kind, calls]):9.0f}")
            print()

        print("Ratios (overhead = p50 minus the floor's p50, same run):")
        for calls in SCRIPTS:
            for mode, data in (("sequential", seq), ("concurrent", conc)):
                floor = statistics.median(data["floor", calls])
                over = {k: statistics.median(data[k, calls]) - floor for k in KINDS}
                ours = over["ours"]

                def ratio(other: str, ours: float = ours, over: dict[str, float] = over) -> str:
                    return f"{ours / over[other]:.2f}" if over[other] > 0 else "n/a"

                stock_g = statistics.median(data["stock-g", calls])
                print(f"  HE+{calls} {mode:10}: stock-g/floor {stock_g / floor:.2f}x, "
                      f"stock/floor {statistics.median(data['stock', calls]) / floor:.2f}x, "
                      f"ours/floor {statistics.median(data['ours', calls]) / floor:.2f}x; "
                      f"our overhead = {ratio('stock-g')} of stock -g's (target <= 0.33), "
                      f"{ratio('stock')} of stock default's (target <= 0.20); "
                      f"p99 ours {pct(data['ours', calls], .99) * 1e6:.0f}µ vs stock -g "
                      f"{pct(data['stock-g', calls], .99) * 1e6:.0f}µ (median of the rounds' p99: "
                      f"{statistics.median(round_p99[mode, 'ours', calls]) * 1e6:.0f}µ vs "
                      f"{statistics.median(round_p99[mode, 'stock-g', calls]) * 1e6:.0f}µ)")

        print(f"\nConcurrent cost per event from throughput ({args.clients} client processes on this machine's "
              "cores: the wall time each event takes of the whole, 1 / events/s; overhead = minus the floor's):")
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
              f"up to {step * checkpoints:,} more ({args.clients} client processes, HE+4)")
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
