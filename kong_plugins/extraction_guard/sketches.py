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
from array import array

import numpy as np

_WORD = re.compile(r"\w+")
#: ``\w+`` on ASCII text, matched on its bytes: the same words, without encoding each bigram.
_WORD_ASCII = re.compile(rb"\w+")
_JOIN = " ".join
_JOIN_BYTES = b" ".join
_SEED_HI = 0x5BD1E995
#: Prompts are fingerprinted on their first characters only: bounded cost whatever the body size.
MAX_PROMPT_CHARS = 4096


def prompt_hash(text: str) -> int:
    """Exact fingerprint (whitespace- and case-insensitive) as a signed 64-bit int."""
    norm = " ".join(text[:MAX_PROMPT_CHARS].lower().split()).encode()
    return int.from_bytes(hashlib.blake2b(norm, digest_size=8).digest(), "little", signed=True)


def simhash64(text: str) -> int:
    """SimHash of word bigrams as a signed 64-bit int (0 for text without words).

    Bit ``j`` is set when more than half of the bigrams' 64-bit hashes (CRC-32 of the bigram, and
    CRC-32 seeded with ``_SEED_HI`` as the high half) have it set. Written for the log phase's
    budget: the per-bigram work stays in C (``map``), the bit counting is one unpack and one
    product; ASCII text (most prompts) is split as bytes, which is what ``\\w+`` matches there.
    """
    low = text[:MAX_PROMPT_CHARS].lower()
    shingles: list[bytes]
    if low.isascii():
        words = _WORD_ASCII.findall(low.encode())
        shingles = list(map(_JOIN_BYTES, itertools.pairwise(words))) or words[:1]
    else:
        found = _WORD.findall(low)
        shingles = list(map(str.encode, map(_JOIN, itertools.pairwise(found)))) or [w.encode() for w in found[:1]]
    n = len(shingles)
    if not n:
        return 0
    halves = array("I", map(zlib.crc32, shingles))
    halves.extend(map(zlib.crc32, shingles, itertools.repeat(_SEED_HI, n)))
    # (low halves, high halves) x bigram x bit, bit i of each 32-bit half at position i
    words32 = np.frombuffer(halves, dtype=np.uint32).astype("<u4", copy=False)
    bits = np.unpackbits(words32.view(np.uint8), bitorder="little")
    ones = np.ones(n, dtype=np.float32) @ bits.reshape(2, n, 32).astype(np.float32)
    packed = np.packbits(ones.ravel() * 2 > n, bitorder="little")
    return int.from_bytes(packed.tobytes(), "little", signed=True)


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()
