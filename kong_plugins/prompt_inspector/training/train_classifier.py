"""Train the shipped classifier (``data/classifier.npz``) from tuning corpora only. Reproducible.

Usage (corpus packages: see :mod:`.corpora`)::

    python -m kong_plugins.prompt_inspector.training.train_classifier [--benign 40000] [--out PATH]

Data, all of it on the *tuning* side of :mod:`.corpora` (held-out rows are never read here):

- attacks: every tuning attack source, plus character-level disguises of each (leetspeak, spaced
  letters, homoglyphs, zero-width characters, accents, fullwidth; seeded) as the normaliser leaves
  them -- so the model learns what survives normalisation imperfectly (spaced words of one or two
  letters, partial leetspeak);
- benign: the synthetic hard negatives, agent-injection-bench's control rows and ShareGPT's later
  human turns (never evaluated), of which one in four (by hash) is kept apart for calibration, plus
  short later turns inside agentprobe's carriers (so that the carriers' own text is no evidence);
  calibration also uses the *tuning* slice of the evaluated ShareGPT first turns (never trained on),
  so that the threshold is set on the kind of prompt the evaluation scores.

Each text becomes windows of :data:`~..classifier.WINDOW` positions, as inference sees them. A
logistic regression (L2, Adam, full batch, fixed seed) is fitted twice: first with every window of
an attack as positive, then -- since a long jailbreak also has neutral stretches -- with only the
two best-scoring windows of each attack (multiple-instance refinement). The decision threshold is
the logit that keeps the calibration prompts' false-positive rate at ``--target-fpr``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..classifier import BITS, ORDERS, WINDOW, Classifier, ngram_buckets
from ..normalise import expand
from .corpora import (
    EVAL_SHAREGPT,
    _agent_injection_bench,
    _slice,
    agentprobe_carriers,
    sharegpt_prompts,
    training_benign,
    tune_attacks,
)
from .hard_negatives import hard_negatives
from .obfuscate import TRANSFORMS

OUT = Path(__file__).resolve().parent.parent / "data" / "classifier.npz"
_DISGUISES = ("leetspeak", "spaced", "homoglyphs", "zero-width", "diacritics", "fullwidth")
_MAX_CHARS = 65_536


def _words(text: str) -> str:
    return expand(text[:_MAX_CHARS])[0].words


def _windows(words: str, rng: random.Random, limit: int) -> list[npt.NDArray[np.uint32]]:
    """Up to ``limit`` windows of a text as bucket arrays (the first, then random ones)."""
    buckets = ngram_buckets(words)
    positions = buckets.shape[1]
    if positions == 0:
        return []
    if positions <= WINDOW:
        return [buckets]
    starts = list(range(0, positions - WINDOW + 1, WINDOW // 2))
    chosen = [0, *rng.sample(starts[1:], min(limit - 1, len(starts) - 1))] if limit > 1 else [0]
    return [buckets[:, s:s + WINDOW] for s in chosen]


class _Batch:
    """Instances as one flat index array: logits with ``reduceat``, gradients with ``bincount``."""

    def __init__(self, instances: list[npt.NDArray[np.uint32]]) -> None:
        sizes = np.array([inst.size for inst in instances], dtype=np.int64)
        self.index = np.concatenate([inst.ravel() for inst in instances]).astype(np.int32)
        self.starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        self.sizes = sizes.astype(np.float64)

    def logits(self, w: npt.NDArray[np.float64], b: float) -> npt.NDArray[np.float64]:
        return b + np.add.reduceat(w[self.index], self.starts) / self.sizes

    def gradient(self, residual: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        per_entry = np.repeat(residual / self.sizes, self.sizes.astype(np.int64))
        return np.bincount(self.index, weights=per_entry, minlength=1 << BITS).astype(np.float64)


def _fit(batch: _Batch, labels: npt.NDArray[np.float64], sample_weight: npt.NDArray[np.float64],
         epochs: int, l2: float, w: npt.NDArray[np.float64] | None = None, b: float = 0.0,
         ) -> tuple[npt.NDArray[np.float64], float]:
    w = np.zeros(1 << BITS) if w is None else w.copy()
    m_w, v_w = np.zeros_like(w), np.zeros_like(w)
    m_b = v_b = 0.0
    lr, beta1, beta2, eps = 0.05, 0.9, 0.999, 1e-8
    total = sample_weight.sum()
    for step in range(1, epochs + 1):
        z = batch.logits(w, b)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        residual = (p - labels) * sample_weight / total
        g_w = batch.gradient(residual) + l2 * w
        g_b = float(residual.sum())
        m_w = beta1 * m_w + (1 - beta1) * g_w
        v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
        m_b = beta1 * m_b + (1 - beta1) * g_b
        v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
        w -= lr * (m_w / (1 - beta1 ** step)) / (np.sqrt(v_w / (1 - beta2 ** step)) + eps)
        b -= lr * (m_b / (1 - beta1 ** step)) / (np.sqrt(v_b / (1 - beta2 ** step)) + eps)
    return w, b


def _calibration(text: str) -> bool:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[1] % 4 == 0


def train(benign_count: int, target_fpr: float, epochs: int, seed: int) -> tuple[Classifier, dict[str, float]]:
    rng = random.Random(seed)
    attack_texts = [t for texts in tune_attacks().values() for t in texts]
    attack_words: list[str] = []
    for text in attack_texts:
        attack_words.append(_words(text))
        if len(text) <= 2000:
            attack_words.extend(_words(TRANSFORMS[name](text, rng)) for name in _DISGUISES)
    first_turns = [t for t in sharegpt_prompts(EVAL_SHAREGPT) if _slice(t) == "tune"]
    extra = training_benign(benign_count)
    train_benign = hard_negatives() + list(_agent_injection_bench(0)) + [t for t in extra if not _calibration(t)]
    # The same carriers the synthetic indirect attacks use, around ordinary short requests: the
    # carrier's own text (email headers, table borders) must not count as evidence.
    carriers = agentprobe_carriers()
    short = [t for t in extra if not _calibration(t) and len(t) <= 300][: 20 * len(carriers)]
    train_benign += [carriers[i % len(carriers)](t) for i, t in enumerate(short)]
    calibration = first_turns + [t for t in extra if _calibration(t)]

    pos: list[npt.NDArray[np.uint32]] = []
    owner: list[int] = []
    for i, words in enumerate(attack_words):
        wins = _windows(words, rng, 64)
        pos.extend(wins)
        owner.extend([i] * len(wins))
    neg = [win for text in train_benign for win in _windows(_words(text), rng, 3)]
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    # Each attack text weighs as much as its windows share; attacks as a class weigh a third of benign.
    per_text = np.bincount(np.array(owner), minlength=len(attack_words)).astype(np.float64)
    pos_weight = 1.0 / per_text[np.array(owner)]
    pos_weight *= (len(neg) / 3.0) / pos_weight.sum()
    weights = np.concatenate([pos_weight, np.ones(len(neg))])
    w, b = _fit(_Batch(pos + neg), labels, weights, epochs, l2=1e-6)

    # Multiple-instance refinement: keep the two best windows of each attack as its positives.
    z_pos = _Batch(pos).logits(w, b)
    best: dict[int, list[tuple[float, int]]] = {}
    for j, (i, z) in enumerate(zip(owner, z_pos, strict=True)):
        best.setdefault(i, []).append((float(z), j))
    keep = sorted(j for wins in best.values() for _, j in sorted(wins, reverse=True)[:2])
    pos2 = [pos[j] for j in keep]
    owner2 = np.array([owner[j] for j in keep])
    per_text2 = np.bincount(owner2, minlength=len(attack_words)).astype(np.float64)
    pos_weight2 = 1.0 / per_text2[owner2]
    pos_weight2 *= (len(neg) / 3.0) / pos_weight2.sum()
    labels2 = np.concatenate([np.ones(len(pos2)), np.zeros(len(neg))])
    w, b = _fit(_Batch(pos2 + neg), labels2, np.concatenate([pos_weight2, np.ones(len(neg))]),
                epochs, l2=1e-6, w=w, b=b)

    model = Classifier(weights=w.astype(np.float16).astype(np.float32), bias=float(b), threshold=0.0)
    calib_logits = np.array([model.logit(_words(t)) for t in calibration])
    k = int(np.floor(target_fpr * len(calib_logits)))
    ordered = np.sort(calib_logits)[::-1]
    threshold = float(ordered[k]) + 1e-6 if k < len(ordered) else float(ordered[-1])
    model = Classifier(weights=model.weights, bias=model.bias, threshold=threshold)
    attack_logits = np.array([model.logit(_words(t)) for t in attack_texts])
    stats = {
        "attack texts": float(len(attack_texts)), "attack windows": float(len(pos2)),
        "benign windows": float(len(neg)), "calibration prompts": float(len(calibration)),
        "threshold": threshold, "calibration FPR": float((calib_logits >= threshold).mean()),
        "tune attack TPR": float((attack_logits >= threshold).mean()),
    }
    return model, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benign", type=int, default=40_000,
                        help="ShareGPT later human turns to train and calibrate on")
    parser.add_argument("--target-fpr", type=float, default=0.001, help="false-positive rate on calibration prompts")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    started = time.perf_counter()
    model, stats = train(args.benign, args.target_fpr, args.epochs, args.seed)
    args.out.write_bytes(model.to_bytes())
    for key, value in stats.items():
        print(f"{key:>22}: {value:.4f}" if isinstance(value, float) and value % 1 else f"{key:>22}: {value:g}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, orders {ORDERS}, window {WINDOW}) "
          f"in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
