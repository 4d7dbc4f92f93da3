"""The cost of kong.yml's fail-closed wiring, side by side in one run.

Two stand-in gateways with the suite's real plugin servers: kong.yml as shipped (decision marks on,
a post-function guard per service) and the same file without the wiring (no marks, no guard).
Rounds are interleaved (both gateways measured in every round, in a shuffled order) because the
machine is shared. Reported per route and gateway:

- PDK calls per plugin in the access phase (HandleEvent comes on top of each);
- access-phase RPC time to the plugin servers (the stand-in's own work excluded), p50/p99;
- the whole request through the stand-in (routing, stock plugins, the guard's Lua in LuaJIT,
  the upstream call), p50/p99 -- the stand-in's Python is slower than Kong's, so read the delta.

    python bench/bench_fail_closed.py            # ~1 minute
    python bench/bench_fail_closed.py --rounds 50
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import yaml

from kong_plugins.demo.reference import (
    CHAT,
    CLASSIFIER,
    DOCQA,
    DOCQA_KEY,
    IMAGES,
    INTERNAL_IP,
    PREMIUM_KEY,
    find_kong_yml,
    jwt_token,
    reference_gateway,
)
from kong_plugins.demo.scenarios import percentile
from kong_plugins.standin import KongStandIn, StandInResponse

T0 = 1_709_510_400.0


def unwired(doc: dict[str, Any]) -> dict[str, Any]:
    plain = copy.deepcopy(doc)
    for plugin in plain["plugins"]:
        plugin.get("config", {}).pop("decision_mark", None)
    for service in plain["services"]:
        service["plugins"] = [p for p in service.get("plugins", []) if p["name"] != "post-function"]
        for plugin in service["plugins"]:
            plugin.get("config", {}).pop("decision_mark", None)
    return plain


def requests_for(gw: KongStandIn, at: float) -> dict[str, Callable[[], StandInResponse]]:
    json_headers = {"Content-Type": "application/json"}
    chat = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Summarise Hamlet."}],
                       "max_tokens": 50}).encode()
    token = jwt_token(at)
    return {
        "textgen": lambda: gw.request("POST", CHAT, headers={**json_headers, "Authorization": f"Bearer {token}"},
                                      body=chat, client_ip=INTERNAL_IP, start_time=at),
        "image-analysis": lambda: gw.request("POST", IMAGES, headers={**json_headers, "apikey": PREMIUM_KEY},
                                             body=b'{"image":"aGk="}', start_time=at),
        "docqa": lambda: gw.request("POST", DOCQA, headers={**json_headers, "apikey": DOCQA_KEY},
                                    body=b'{"question":"Leave policy?","documents":[{"text":"25 days."}]}',
                                    client_ip=INTERNAL_IP, start_time=at),
        "classifier": lambda: gw.request("POST", CLASSIFIER, headers={**json_headers, "apikey": DOCQA_KEY},
                                         body=b'{"instances":[[0.1,0.2]]}', client_ip=INTERNAL_IP, start_time=at),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="requests per route and gateway")
    args = parser.parse_args()
    doc = yaml.safe_load(find_kong_yml().read_text())
    rpc: dict[tuple[str, str], list[float]] = defaultdict(list)
    whole: dict[tuple[str, str], list[float]] = defaultdict(list)
    calls: dict[tuple[str, str], dict[str, int]] = {}
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b, \
            reference_gateway(a, deck=doc) as wired, reference_gateway(b, deck=unwired(doc)) as plain:
        gateways = {"fail-closed": wired, "plain": plain}
        for round_no in range(args.rounds + 5):
            at = T0 + round_no * 3.0  # under every quota of the routes measured
            order = list(gateways.items())
            random.shuffle(order)
            for name, gw in order:
                gw.clock = lambda at=at: at
                for route, send in requests_for(gw, at).items():
                    t0 = time.perf_counter()
                    r = send()
                    elapsed = time.perf_counter() - t0
                    if r.status != 200:
                        raise SystemExit(f"{name} {route}: {r.status} {r.body!r}")
                    if round_no < 5:  # warm-up: instance starts, first imports
                        continue
                    access = sum(s for (_, phase), s in r.rpc_seconds_by_plugin.items() if phase == "access")
                    rpc[(route, name)].append(access * 1000)
                    whole[(route, name)].append(elapsed * 1000)
                    calls[(route, name)] = {p: c.get("access", 0) for p, c in r.pdk_calls.items()}
            for gw in gateways.values():
                gw.wait_log_phase()
    print(f"{args.rounds} requests per route and gateway, interleaved rounds\n")
    print(f"{'route':15} {'gateway':12} {'PDK calls in access (+1 HandleEvent each)':52} "
          f"{'RPC p50':>8} {'RPC p99':>8} {'req p50':>8} {'req p99':>8}")
    for route in ("textgen", "image-analysis", "docqa", "classifier"):
        for name in ("plain", "fail-closed"):
            key = (route, name)
            pdk = ", ".join(f"{p} {n}" for p, n in sorted(calls[key].items()))
            print(f"{route:15} {name:12} {pdk:52} {percentile(rpc[key], 0.5):8.3f} {percentile(rpc[key], 0.99):8.3f}"
                  f" {percentile(whole[key], 0.5):8.3f} {percentile(whole[key], 0.99):8.3f}")
        d_rpc = percentile(rpc[(route, "fail-closed")], 0.5) - percentile(rpc[(route, "plain")], 0.5)
        d_req = percentile(whole[(route, "fail-closed")], 0.5) - percentile(whole[(route, "plain")], 0.5)
        print(f"{'':15} {'delta p50':12} {'':52} {d_rpc:+8.3f} {'':8} {d_req:+8.3f}\n")
    print("times in ms; RPC = access-phase time in plugin-server round trips, req = whole request in the stand-in")


if __name__ == "__main__":
    main()
