"""``cd bench && python -m extraction_sim [--small] [--seed N]``: print the quality report."""

from __future__ import annotations

import argparse
import dataclasses
import time

from .runner import Scale, run_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="the reduced form the tests run")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    scale = Scale.small() if args.small else Scale.full()
    if args.seed is not None:
        scale = dataclasses.replace(scale, seed=args.seed)
    start = time.perf_counter()
    report = run_simulation(scale)
    elapsed = time.perf_counter() - start
    print(report.format())
    print(f"\n{report.requests} requests simulated in {elapsed:.1f} s wall "
          f"({elapsed / max(1, report.requests) * 1e6:.0f} us per request, simulation included)")


if __name__ == "__main__":
    main()
