"""Evaluate the detector: TPR per attack family/source, FPR on benign prompts, tune vs held-out.

Usage (corpus packages: see :mod:`.corpora`)::

    python -m kong_plugins.prompt_inspector.training.evaluate [--sharegpt 20000] [--show-fp 20]

Every text goes through the same :class:`~kong_plugins.prompt_inspector.engine.Inspector` the plugin
uses, with the default configuration. Obfuscated rows apply each transform of :mod:`.obfuscate`
to attacks short enough for evasion tools to be practical (<= 600 characters).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

from ..engine import Inspector, default_inspector
from .corpora import Sample, load
from .obfuscate import TRANSFORMS


def _rate(hits: int, n: int) -> str:
    return f"{hits:>6}/{n:<6} {100.0 * hits / n:6.2f}%" if n else "     -"


def evaluate(inspector: Inspector, samples: list[Sample], show_fp: int, seed: int) -> None:
    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    fps: list[tuple[float, str, str]] = []
    misses: list[tuple[str, str]] = []
    rng = random.Random(seed)
    start = time.perf_counter()
    scanned = 0
    for sample in samples:
        verdict = inspector.detect_text(sample.text)
        scanned += 1
        row = rows[sample.group]
        row[0] += int(verdict.detected)
        row[1] += 1
        if sample.label == 0 and verdict.detected:
            fps.append((verdict.score, sample.group, ",".join(verdict.signals)))
            fps[-1] = (verdict.score, sample.group + " :: " + ",".join(verdict.signals), sample.text)
        # Held-out misses are never printed: reading them would turn held-out data into tuning data.
        if sample.label == 1 and not verdict.detected and sample.split == "tune":
            misses.append((sample.group, sample.text))
        if sample.label == 1 and len(sample.text) <= 600:
            for name, transform in TRANSFORMS.items():
                variant = transform(sample.text, rng)
                v = inspector.detect_text(variant)
                scanned += 1
                key = f"{sample.split}/obfuscated:{name}"
                rows[key][0] += int(v.detected)
                rows[key][1] += 1
    elapsed = time.perf_counter() - start
    print(f"{'group':<48} {'detected':>22}")
    for group in sorted(rows):
        hits, n = rows[group]
        print(f"{group:<48} {_rate(hits, n)}")
    for split in ("tune", "heldout"):
        atk = [s for s in samples if s.split == split and s.label == 1]
        ben = [s for s in samples if s.split == split and s.label == 0]
        a_hits = sum(rows[g][0] for g in {s.group for s in atk})
        b_hits = sum(rows[g][0] for g in {s.group for s in ben})
        print(f"{split:>8}: attacks TPR {_rate(a_hits, len(atk))}   benign FPR {_rate(b_hits, len(ben))}")
    print(f"scanned {scanned} texts in {elapsed:.1f}s ({1e6 * elapsed / max(scanned, 1):.0f} us/text)")
    for score, group, text in sorted(fps, reverse=True)[:show_fp]:
        print(f"FP {score:.3f} {group}: {text[:200]!r}")
    if show_fp:
        for group, text in misses[:show_fp]:
            print(f"MISS {group}: {text[:160]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharegpt", type=int, default=20_000, help="benign ShareGPT prompts to load")
    parser.add_argument("--show-fp", type=int, default=0, help="print this many false positives and misses")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    evaluate(default_inspector(), load(args.sharegpt), args.show_fp, args.seed)


if __name__ == "__main__":
    main()
