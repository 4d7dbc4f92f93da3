"""Small, deterministic sketches of prompts: an exact 64-bit hash and a 64-bit SimHash.

Hand-written rather than ``datasketch``: the guard needs one 64-bit fingerprint per prompt that is
identical on every gateway node and across restarts (so Python's salted ``hash`` is out) and costs
a few microseconds; ``datasketch.MinHash`` builds a 128-permutation signature per document, which is
an order of magnitude slower and far larger than the per-client ring we keep. SimHash (Charikar
2002) of word bigrams makes prompts that share a template land a few bits apart, while unrelated
prompts differ in ~32 of 64 bits.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import zlib

import numpy as np

_WORD = re.compile(r"\w+")
_SHIFTS = np.arange(64, dtype=np.uint64)
_ONE = np.uint64(1)
_SEED_HI = 0x5BD1E995
#: Prompts are fingerprinted on their first characters only: bounded cost whatever the body size.
MAX_PROMPT_CHARS = 4096


def prompt_hash(text: str) -> int:
    """Exact fingerprint (whitespace- and case-insensitive) as a signed 64-bit int."""
    norm = " ".join(text[:MAX_PROMPT_CHARS].lower().split()).encode()
    return int.from_bytes(hashlib.blake2b(norm, digest_size=8).digest(), "little", signed=True)


def simhash64(text: str) -> int:
    """SimHash of word bigrams as a signed 64-bit int (0 for text without words)."""
    words = _WORD.findall(text[:MAX_PROMPT_CHARS].lower())
    if not words:
        return 0
    shingles = [f"{a} {b}".encode() for a, b in itertools.pairwise(words)] or [words[0].encode()]
    hashes = np.fromiter(
        ((zlib.crc32(s) | (zlib.crc32(s, _SEED_HI) << 32)) for s in shingles),
        dtype=np.uint64, count=len(shingles),
    )
    ones = ((hashes[:, None] >> _SHIFTS) & _ONE).sum(axis=0)
    bits = ones * 2 > len(shingles)
    value = int((bits.astype(np.uint64) << _SHIFTS).sum(dtype=np.uint64))
    return value - (1 << 64) if value >= (1 << 63) else value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()
