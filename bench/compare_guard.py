"""ai-extraction-guard compute per request, two revisions side by side (issue 5 "Speed").

    python3 bench/compare_guard.py 85bc0ba HEAD            # two alternations (~8 minutes)
    python3 bench/compare_guard.py 85bc0ba HEAD --rounds 3

This machine is shared and noisy: absolute times drift by tens of percent between runs, so a
change is judged against its base measured in the same run, alternately. Each revision is exported
(``git archive``) to a temporary directory and measured there, with its own code:

- in process: the revision's own ``bench/bench_extraction_guard.py`` section 1 on the memory backend
  (one-row, 8-row and chat requests; p50 access, log, access + log);
- in the plugin server: the revision's runtime and plugin (``PYTHONPATH`` = the export) behind this
  checkout's Kong stand-in (and its ai-suite-context), for each kind of request (one-row predict,
  8-row predict, chat) 600 warm-up and 2,000 measured requests from 200 consumers, the runtime's
  ``--compute-times`` (each phase's handler time minus its PDK waits).
  Needs revisions with ``--compute-times`` (5b9a499 and later).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_extraction_guard as bench  # noqa: E402

from kong_plugins.standin import KongStandIn, PluginServerSpec  # noqa: E402

WARM = 600
MEASURED = 2000

IN_PROCESS = """
import sys
sys.path.insert(0, "bench")
from threadpoolctl import threadpool_limits
threadpool_limits(1)
import bench_extraction_guard as b
b.compute({"strategy": "memory"}, "memory", 2000)
"""


def export(revision: str, into: Path) -> Path:
    target = into / re.sub(r"[^\w.-]", "_", revision)
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def in_process(tree: Path) -> dict[str, tuple[int, int, int]]:
    """p50 (access, log, access + log) per request kind, from the revision's own section 1."""
    out = subprocess.run([sys.executable, "-c", IN_PROCESS], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*memory (\S+)\s+access p50\s+(\d+).*?log p50\s+(\d+).*?access\+log p50\s+(\d+)", line)
        if m:
            found[m[1]] = (int(m[2]), int(m[3]), int(m[4]))
    return found


KINDS = ("predict-1", "predict-8", "chat")


def in_server(tree: Path, work: Path, kind: str) -> tuple[float, float]:
    """p50 compute (access, log) of ``kind`` requests in the revision's plugin server."""
    times = work / "compute.tsv"
    spec = PluginServerSpec.suite(bench.GUARD, prefix=work)
    # The revision's runtime and plugin; PYTHONSAFEPATH: ``python -m`` would put the working
    # directory (this checkout) first on sys.path.
    env = {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1", "KONG_PLUGINS_COMPUTE_TIMES": str(times)}
    spec = dataclasses.replace(spec, env={**spec.env, **env})
    gw = KongStandIn.from_deck(bench.deck(bench.GUARD, {"storage": {"strategy": "memory"}}), servers=[spec],
                               upstreams=bench.upstreams())
    gw.start()
    rng = random.Random(4)
    t = bench.T0
    try:
        for i in range(WARM + MEASURED):
            t += 0.05
            client = i % 200 if i < WARM else rng.randrange(200)
            uri, body, _ = bench.workload(kind, i, rng)
            bench.send(gw, bench.GUARD, client, t, uri, body)
    finally:
        gw.close()  # the runtime writes the compute times when it stops
    phases: dict[str, list[float]] = {}
    for line in times.read_text().splitlines():
        phase, micros = line.split("\t")
        phases.setdefault(phase, []).append(float(micros))
    return statistics.median(phases["access"][WARM:]), statistics.median(phases["log"][WARM:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("change")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cmpguard") as tmp:
        work = Path(tmp)
        trees = {rev: export(rev, work) for rev in (args.base, args.change)}
        process: dict[str, list[dict[str, tuple[int, int, int]]]] = {rev: [] for rev in trees}
        server: dict[str, list[dict[str, tuple[float, float]]]] = {rev: [] for rev in trees}
        for round_ in range(args.rounds):
            for rev, tree in trees.items():
                process[rev].append(in_process(tree))
                server[rev].append({})
            for kind in KINDS:  # the revisions alternate kind by kind: each pair shares the machine's mood
                for rev, tree in trees.items():
                    run_dir = work / f"run-{round_}-{kind}-{tree.name}"
                    run_dir.mkdir()
                    server[rev][-1][kind] = in_server(tree, run_dir, kind)
            for rev in trees:
                cells = ", ".join(f"{kind} {a:.0f}+{lg:.0f}" for kind, (a, lg) in server[rev][-1].items())
                print(f"round {round_ + 1} {rev:>10}: in server {cells} us; in process {process[rev][-1]}", flush=True)
        print("\np50 access + log (microseconds), one value per alternation:")
        print("  in the plugin server:")
        for kind in KINDS:
            for rev in trees:
                print(f"    {kind:9} {rev:>10}  " + " / ".join(
                    f"{run[kind][0]:.0f}+{run[kind][1]:.0f}={run[kind][0] + run[kind][1]:.0f}" for run in server[rev]))
        print("  in process:")
        for kind in KINDS:
            for rev in trees:
                values = " / ".join(str(run[kind][2]) for run in process[rev] if kind in run)
                print(f"    {kind:9} {rev:>10}  {values}")


if __name__ == "__main__":
    main()
