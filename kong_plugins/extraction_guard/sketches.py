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
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, types

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
    CRC-32 seeded with ``_SEED_HI`` as the high half) have it set; a text of one word is its own
    shingle. ASCII text (most prompts) is hashed by a compiled kernel (``_simhash_ascii``, ~1 us
    where the Python below takes ~25 us for a 60-word prompt -- a quarter of the issue's budget
    per request); other text by the Python, which defines the result: the kernel gives the same
    value (tested on generated text).
    """
    head = text[:MAX_PROMPT_CHARS]
    if head.isascii():
        value = int(_simhash_ascii(np.frombuffer(head.encode(), dtype=np.uint8), _ASCII_WORD, _CRC_TABLE))
        return value - (1 << 64) if value >= 1 << 63 else value
    return _simhash_python(head)


def _simhash_python(head: str) -> int:
    """The reference SimHash of ``simhash64``, for any text: the per-bigram work stays in C
    (``map``), the bit counting is one unpack and one product; lower-cased text that is ASCII is
    split as bytes, which is what ``\\w+`` matches there."""
    low = head.lower()
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


def _ascii_word_table() -> np.ndarray:
    """Byte -> its lower-case form for the bytes ``\\w`` matches in ASCII text, 0 for the others."""
    table = np.zeros(256, dtype=np.uint8)
    for c in b"0123456789_abcdefghijklmnopqrstuvwxyz":
        table[c] = c
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = c + 32
    return table


def _crc32_table() -> np.ndarray:
    """The byte table of CRC-32 (polynomial 0xEDB88320, reflected: ``zlib.crc32``'s)."""
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


_ASCII_WORD = _ascii_word_table()
_CRC_TABLE = _crc32_table()


def compiled(signature: Any) -> Callable[[Callable[..., Any]], Any]:
    """Compiled now (at import, never on a request) for ``signature``, the machine code cached on
    disk where a cache location is writable (numba refuses ``cache=True`` when none is)."""

    def compile_(fn: Callable[..., Any]) -> Any:
        try:
            return njit(signature, cache=True, nogil=True)(fn)
        except RuntimeError:
            return njit(signature, nogil=True)(fn)

    return compile_


#: The text's bytes are read-only (``np.frombuffer`` of a ``bytes``): no copy.
@compiled(types.uint64(types.Array(types.uint8, 1, "C", readonly=True), types.uint8[::1], types.uint32[::1]))
def _simhash_ascii(text: np.ndarray, word: np.ndarray, crc: np.ndarray) -> np.uint64:  # pragma: no cover
    """``_simhash_python`` of ASCII text (its bytes), unsigned: words are the runs of bytes
    ``word`` maps to non-zero (lower-cased); each bigram ``"a b"`` is CRC-32'd as it is scanned,
    once from 0 and once from ``_SEED_HI``, without building it."""
    counts = np.zeros(64, dtype=np.int64)
    n = text.shape[0]
    shingles = 0
    prev_start = -1
    prev_end = -1
    i = 0
    while i < n:
        if word[text[i]] == 0:
            i += 1
            continue
        start = i
        while i < n and word[text[i]] != 0:
            i += 1
        if prev_start >= 0:
            low = np.uint32(0xFFFFFFFF)
            high = np.uint32(0xFFFFFFFF ^ 0x5BD1E995)
            for j in range(prev_start, prev_end):
                b = word[text[j]]
                low = crc[(low ^ b) & 0xFF] ^ (low >> 8)
                high = crc[(high ^ b) & 0xFF] ^ (high >> 8)
            low = crc[(low ^ 32) & 0xFF] ^ (low >> 8)
            high = crc[(high ^ 32) & 0xFF] ^ (high >> 8)
            for j in range(start, i):
                b = word[text[j]]
                low = crc[(low ^ b) & 0xFF] ^ (low >> 8)
                high = crc[(high ^ b) & 0xFF] ^ (high >> 8)
            low ^= np.uint32(0xFFFFFFFF)
            high ^= np.uint32(0xFFFFFFFF)
            for bit in range(32):
                counts[bit] += (low >> bit) & 1
                counts[32 + bit] += (high >> bit) & 1
            shingles += 1
        else:
            first_start = start
            first_end = i
        prev_start = start
        prev_end = i
    if shingles == 0:
        if prev_start < 0:
            return np.uint64(0)
        # one word: the word itself is the shingle
        low = np.uint32(0xFFFFFFFF)
        high = np.uint32(0xFFFFFFFF ^ 0x5BD1E995)
        for j in range(first_start, first_end):
            b = word[text[j]]
            low = crc[(low ^ b) & 0xFF] ^ (low >> 8)
            high = crc[(high ^ b) & 0xFF] ^ (high >> 8)
        low ^= np.uint32(0xFFFFFFFF)
        high ^= np.uint32(0xFFFFFFFF)
        for bit in range(32):
            counts[bit] += (low >> bit) & 1
            counts[32 + bit] += (high >> bit) & 1
        shingles = 1
    value = np.uint64(0)
    for bit in range(64):
        if counts[bit] * 2 > shingles:
            value |= np.uint64(1) << np.uint64(bit)
    return value


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & 0xFFFFFFFFFFFFFFFF).bit_count()
