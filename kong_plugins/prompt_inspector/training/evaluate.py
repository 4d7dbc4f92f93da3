"""Evaluate the detector: TPR per attack family/source, FPR on benign prompts, tune vs held-out.

Usage (corpus packages: see :mod:`.corpora`)::

    python -m kong_plugins.prompt_inspector.training.evaluate [--sharegpt 20000] [--show-fp 20]

Every text goes through the same :class:`~kong_plugins.prompt_inspector.engine.Inspector` the plugin
uses, with the default configuration (signals + shipped classifier). Obfuscated rows apply each
transform of :mod:`.obfuscate` to attacks short enough for evasion tools to be practical
(<= 600 characters).

Only *tuning* false positives and misses are ever printed (``--show-fp``): reading held-out
mistakes would turn held-out data into tuning data.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

from ..engine import DetectionSettings, Inspector, default_inspector
from .corpora import EVAL_SHAREGPT, Hygiene, Sample, load
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
        # Held-out mistakes are never printed: reading them would turn held-out data into tuning data.
        if sample.label == 0 and verdict.detected and sample.split == "tune":
            fps.append((verdict.score, sample.group + " :: " + ",".join(verdict.signals), sample.text))
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
    print()
    print(f"{'summary':<48} {'detected':>22}")
    for split in ("tune", "heldout"):
        plain = [g for g in rows if g.startswith(f"{split}/") and "obfuscated:" not in g
                 and any(s.group == g and s.label == 1 for s in samples)]
        benign = {s.group for s in samples if s.split == split and s.label == 0}
        obfuscated = [g for g in rows if g.startswith(f"{split}/obfuscated:")]
        for label, groups in (("attacks, as written (TPR)", plain), ("attacks, obfuscated (TPR)", obfuscated),
                              ("benign incl. hard negatives (FPR)", sorted(benign))):
            hits = sum(rows[g][0] for g in groups)
            n = sum(rows[g][1] for g in groups)
            print(f"{split + ': ' + label:<48} {_rate(hits, n)}")
    print(f"scanned {scanned} texts in {elapsed:.1f}s ({1e6 * elapsed / max(scanned, 1):.0f} us/text)")
    for score, group, text in sorted(fps, reverse=True)[:show_fp]:
        print(f"FP {score:.3f} {group}: {text[:200]!r}")
    if show_fp:
        for group, text in misses[:show_fp]:
            print(f"MISS {group}: {text[:160]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sharegpt", type=int, default=EVAL_SHAREGPT, help="benign ShareGPT prompts to load")
    parser.add_argument("--show-fp", type=int, default=0, help="print this many false positives and misses")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--no-classifier", action="store_true", help="signals only (to see what the model adds)")
    args = parser.parse_args()
    hygiene = Hygiene()
    samples = load(args.sharegpt, hygiene)
    print(f"hygiene: {hygiene.heldout_attacks_copied_from_tune} held-out attacks dropped as near-copies of tuning "
          f"attacks; {hygiene.benign_copies_of_attacks} 'benign' prompts dropped as pasted known attacks")
    inspector = Inspector(DetectionSettings(disabled_families=frozenset({"classifier"}))) if args.no_classifier \
        else default_inspector()
    evaluate(inspector, samples, args.show_fp, args.seed)


if __name__ == "__main__":
    main()
