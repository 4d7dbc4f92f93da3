"""``kong-ai-demo``: see the suite protect kong.yml's four models, with or without Docker.

With a Docker engine (``docker info`` succeeds) it brings up the real stack -- Kong 3.9 on kong.yml,
Redis, the demo models -- with ``docker compose -f docker/compose.yml up -d --build`` and prints how
to run the end-to-end specs against it. Without one (or with ``--standin``) it runs kong.yml's
scenarios through the Kong stand-in and the suite's real plugin servers on in-memory storage, and
prints who was allowed, limited or blocked, by which plugin and why, and the latency the plugins
added.

Exit status: 0 when every scenario ran (whatever the statuses: refusals are the point), 1 when the
demo could not run (kong.yml missing, a plugin server failed to start, compose failed).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from kong_plugins.errors import ConfigError
from kong_plugins.standin import PluginServerError, StandInResponse

from .reference import find_kong_yml, reference_gateway
from .scenarios import SCENARIOS, LatencyReport, ScenarioResult, Traffic, latency_report, run_scenarios

COMPOSE_FILE = Path("docker") / "compose.yml"


def docker_available() -> bool:
    """Whether a Docker engine answers (``docker info``), not merely whether the CLI is installed."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_docker(root: Path, out: TextIO) -> int:
    compose = root / COMPOSE_FILE
    if not compose.is_file():
        print(f"kong-ai-demo: {compose} not found; use --standin for the demo without Docker", file=out)
        return 1
    command = ["docker", "compose", "-f", str(compose), "up", "-d", "--build"]
    print("$ " + " ".join(command), file=out)
    done = subprocess.run(command, cwd=root)
    if done.returncode != 0:
        print("kong-ai-demo: docker compose failed; `kong-ai-demo --standin` runs the demo without Docker", file=out)
        return 1
    print("\nThe stack is up: Kong proxy on http://localhost:8000, Admin API on http://localhost:8001.", file=out)
    print("Try:  curl -s -X POST localhost:8000/v1/chat/completions -H 'apikey: free-demo-key' "
          "-H 'Content-Type: application/json' -d '{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'", file=out)
    print("End-to-end specs:  KONG_PROXY_URL=http://localhost:8000 KONG_ADMIN_URL=http://localhost:8001 "
          "python3 -m pytest spec/", file=out)
    print(f"   or inside the stack:  docker compose -f {COMPOSE_FILE} --profile spec run --rm spec", file=out)
    print(f"Stop it:  docker compose -f {COMPOSE_FILE} down", file=out)
    return 0


def _warm_up(traffic: Traffic) -> None:
    """One request per route on day 0, so that instance starts are not counted as latency."""
    from .reference import DOCQA_KEY, FREE_KEY, PREMIUM_KEY
    from .scenarios import EPOCH

    traffic.chat(EPOCH, FREE_KEY)
    traffic.image(EPOCH, PREMIUM_KEY)
    traffic.ask(EPOCH, DOCQA_KEY)
    traffic.predict(EPOCH, DOCQA_KEY)


def render(results: list[ScenarioResult], latency: LatencyReport, elapsed: float, out: TextIO) -> None:
    for number, result in enumerate(results, start=1):
        print(f"\n{number:2d}. {result.title}", file=out)
        for count, outcome in result.tally():
            print(f"      {count:4d} x {outcome.label}", file=out)
        if result.note:
            print(f"           {result.note}", file=out)
    print("\nLatency the plugins added in the access phase (RPC time to the plugin servers; "
          f"{latency.requests} requests):", file=out)
    p50, p99 = latency.per_request
    print(f"   per request          p50 {p50:6.2f} ms   p99 {p99:6.2f} ms", file=out)
    for plugin, (count, p50, p99) in latency.per_plugin.items():
        print(f"   {plugin:20s} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   ({count} requests)", file=out)
    print("   (Python stand-in and Python plugin servers on one machine; Kong's Lua side is faster than "
          "the stand-in's, the plugin side is the same code.)", file=out)
    print(f"\n{sum(len(r.responses) for r in results)} requests in {elapsed:.1f} s.", file=out)


def run_standin(deck: Path, out: TextIO) -> tuple[list[ScenarioResult], LatencyReport]:
    print(f"kong-ai-demo: {deck} on the Kong stand-in, the suite's plugin servers, in-memory storage\n"
          "(simulated time: a minute of traffic takes a moment, the outcome is the same on every run)", file=out)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kong-ai-demo-") as prefix, \
            reference_gateway(prefix, deck=deck) as gw:
        traffic = Traffic(gw)
        _warm_up(traffic)
        results = list(run_scenarios(gw, SCENARIOS))
        gw.wait_log_phase()
    responses: list[StandInResponse] = [r for result in results for r in result.responses]
    latency = latency_report(responses)
    render(results, latency, time.perf_counter() - started, out)
    return results, latency


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    parser = argparse.ArgumentParser(prog="kong-ai-demo", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--standin", action="store_true",
                        help="run the demo on the Kong stand-in even if Docker is available")
    parser.add_argument("--deck", help="decK file to run (default: kong.yml of this checkout)")
    args = parser.parse_args(argv)
    try:
        deck = find_kong_yml(args.deck)
    except FileNotFoundError as exc:
        print(f"kong-ai-demo: {exc}", file=stream)
        return 1
    if not args.standin and docker_available():
        return run_docker(deck.parent, stream)
    try:
        run_standin(deck, stream)
    except (ConfigError, PluginServerError) as exc:
        print(f"kong-ai-demo: {exc}", file=stream)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
