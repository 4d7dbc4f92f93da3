"""Small, deterministic sketches of prompts: an exact 64-bit hash and a 64-bit SimHash.

Hand-written rather than ``datasketch``: the guard needs one 64-bit fingerprint per prompt that is
identical on every gateway node and across restarts (so Python's salted ``hash`` is out) and costs
a few microseconds; ``datasketch.MinHash`` builds a 128-permutation signature per document, which is
an order of magnitude slower and far larger than the per-client ring we keep. SimHash (Charikar
2002) of word bigrams makes prompts that share a template land a few bits apart, while unrelated
prompts differ in ~32 of 64 bits.

The exact hash is MurmurHash3's 64-bit mixing (one lane of its x64 body over 8-byte words, then
its finaliser) of the normalised text: it only has to tell a client's own recent prompts apart
-- a client cannot write into another's state, so nothing needs a cryptographic hash -- and it is
computed in the pass that normalises the text, without the bytes being written anywhere.
"""

from __future__ import annotations

import itertools
import re
import zlib
from array import array
from collections.abc import Iterable

import numpy as np
from numba import types

from ._jit import CRC32_MASK, compiled, crc32_byte, direct, unsigned_index

_WORD = re.compile(r"\w+")
#: ``\w+`` on ASCII text, matched on its bytes: the same words, without encoding each bigram.
_WORD_ASCII = re.compile(rb"\w+")
_JOIN = " ".join
_JOIN_BYTES = b" ".join
_SEED_HI = 0x5BD1E995
#: Prompts are fingerprinted on their first characters only: bounded cost whatever the body size.
MAX_PROMPT_CHARS = 4096


def prompt_hash(text: str) -> int:
    """Exact fingerprint (whitespace- and case-insensitive) as a signed 64-bit int: ``hash64`` of
    the text lower-cased, its whitespace collapsed to single spaces (``str.split``'s), as UTF-8."""
    norm = " ".join(text[:MAX_PROMPT_CHARS].lower().split()).encode()
    return int(hash64(norm))


def prompt_sketches(text: str) -> tuple[int, int]:
    """``(prompt_hash(text), simhash64(text))``, for ASCII text (most prompts) out of one compiled
    pass over its bytes: the kernel that hashes the bigrams also hashes the lower-cased,
    whitespace-collapsed text as it reads it, instead of ``lower``, ``split`` and ``join`` building
    it (~3.5 us for a 60-word prompt) or a buffer receiving it. Other text takes the two
    functions, which define the values (the kernel's are tested equal)."""
    head = text[:MAX_PROMPT_CHARS]
    if not head.isascii():
        return prompt_hash(head), _simhash_python(head)
    exact, simhash = _sketch_ascii_direct(head.encode(), _ASCII_WORD, _ASCII_SPACE)
    return exact, simhash


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
        value = int(_simhash_ascii(head.encode(), _ASCII_WORD))
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


_ASCII_WORD = _ascii_word_table()
#: The ASCII characters ``str.split()`` splits on: 9-13, the separators 28-31 and the space.
_ASCII_SPACE = np.zeros(256, dtype=np.uint8)
_ASCII_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = 1


def _spread_table() -> np.ndarray:
    """Byte -> its eight bits spread over the eight bytes of a uint64 (bit i to byte i)."""
    table = np.zeros(256, dtype=np.uint64)
    for value in range(256):
        table[value] = sum(1 << (8 * i) for i in range(8) if value >> i & 1)
    return table


_SPREAD = _spread_table()
#: ``_simhash_ascii``'s indices, unsigned for its reads (``_jit.unsigned_index``: no wraparound test).
_at = unsigned_index
#: Shingles a byte lane counts before it is added to the 64-bit counts (a lane holds at most 255).
_LANE_FLUSH = 255


@compiled()
def _add_bits(lanes: np.ndarray, low: np.uint32, high: np.uint32) -> None:
    """Count the bits of a shingle's 64-bit hash (``low``, ``high`` halves): eight byte lanes per
    uint64, one table addition per byte of the hash instead of one addition per bit."""
    for k in range(4):
        lanes[k] += _SPREAD[(low >> np.uint32(8 * k)) & np.uint32(0xFF)]
        lanes[4 + k] += _SPREAD[(high >> np.uint32(8 * k)) & np.uint32(0xFF)]


@compiled()
def _flush_lanes(lanes: np.ndarray, counts: np.ndarray) -> None:
    """Add the byte lanes to the 64 bit counts (lane k, byte i counts bit 8k + i) and empty them."""
    for k in range(8):
        packed = lanes[k]
        for i in range(8):
            counts[8 * k + i] += (packed >> np.uint64(8 * i)) & np.uint64(0xFF)
        lanes[k] = 0


#: The text's bytes are taken as the ``bytes`` object itself: no copy, and no ``np.frombuffer``
#: view to make first (~0.4 us, a fifth of the kernel's own time on a 40-word prompt).
_TEXT = types.Bytes(types.uint8, 1, "C", readonly=True)


@compiled(types.uint64(_TEXT, types.uint8[::1]))
def _simhash_ascii(text: bytes, word: np.ndarray) -> np.uint64:
    """``_simhash_python`` of ASCII text (its bytes), unsigned: words are the runs of bytes
    ``word`` maps to non-zero (lower-cased); each bigram ``"a b"`` is CRC-32'd as it is scanned,
    once from 0 and once from ``_SEED_HI``, without building it.

    One pass: while a word is read, the CRCs of the bigram it ends (continuing those of the
    previous word and its space) and of the bigram it starts (from the initial values) run side by
    side -- four independent chains instead of reading each word twice, two chains at a time."""
    counts = np.zeros(64, dtype=np.int64)
    lanes = np.zeros(8, dtype=np.uint64)
    n = len(text)
    shingles = 0
    in_lanes = 0
    seen_word = False
    # the running CRCs of "<previous word> ", and of the first word alone (a one-word text's shingle)
    prev_low = prev_high = CRC32_MASK
    only_low = only_high = np.uint32(0)
    i = 0
    while i < n:
        if word[text[_at(i)]] == 0:
            i += 1
            continue
        low, high = prev_low, prev_high
        next_low, next_high = CRC32_MASK, CRC32_MASK ^ np.uint32(_SEED_HI)
        while i < n and word[text[_at(i)]] != 0:
            b = word[text[_at(i)]]
            low, high = crc32_byte(low, b), crc32_byte(high, b)
            next_low, next_high = crc32_byte(next_low, b), crc32_byte(next_high, b)
            i += 1
        if seen_word:
            _add_bits(lanes, low ^ CRC32_MASK, high ^ CRC32_MASK)
            shingles += 1
            in_lanes += 1
            if in_lanes == _LANE_FLUSH:
                _flush_lanes(lanes, counts)
                in_lanes = 0
        else:
            only_low, only_high = next_low ^ CRC32_MASK, next_high ^ CRC32_MASK
            seen_word = True
        prev_low, prev_high = crc32_byte(next_low, 32), crc32_byte(next_high, 32)
    if shingles == 0:
        if not seen_word:
            return np.uint64(0)
        # one word: the word itself is the shingle
        _add_bits(lanes, only_low, only_high)
        shingles = 1
    _flush_lanes(lanes, counts)
    value = np.uint64(0)
    for bit in range(64):
        if counts[bit] * 2 > shingles:
            value |= np.uint64(1) << np.uint64(bit)
    return value


_MASK64 = 0xFFFFFFFFFFFFFFFF


def hamming(a: int, b: int) -> int:
    """Bits in which two 64-bit sketches differ (kept as signed integers: the XOR is masked)."""
    return ((a ^ b) & _MASK64).bit_count()


def within_bits(value: int, sketches: Iterable[int], limit: int) -> bool:
    """Whether any of ``sketches`` is at most ``limit`` bits (``hamming``) from ``value``: the loop
    in one call, as the guard asks it of a client's 16 recent prompts on every LLM request."""
    for other in sketches:  # noqa: SIM110 -- any() over a generator: a frame per call, on every LLM request
        if ((value ^ other) & _MASK64).bit_count() <= limit:
            return True
    return False


#: MurmurHash3 x64's constants: its body's two multipliers and the finaliser's (fmix64).
_C1, _C2 = np.uint64(0x87C37B91114253D5), np.uint64(0x4CF5AD432745937F)
_F1, _F2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)


@compiled()
def _mix_word(h: np.uint64, word: np.uint64) -> np.uint64:
    """One 8-byte word (little-endian) into the running hash: MurmurHash3 x64's body, one lane."""
    k = word * _C1
    k = (k << np.uint64(31)) | (k >> np.uint64(33))
    h ^= k * _C2
    h = (h << np.uint64(27)) | (h >> np.uint64(37))
    return h * np.uint64(5) + np.uint64(0x52DCE729)


@compiled()
def _push_byte(h: np.uint64, word: np.uint64, at: int, byte: int) -> tuple[np.uint64, np.uint64]:
    """Byte ``at`` of the hashed text into its 8-byte word (little-endian); a full word is mixed
    into the running hash and the next one starts empty. ``(h, word)`` after it."""
    word |= np.uint64(byte) << np.uint64(8 * (at & 7))
    if at & 7 == 7:
        return _mix_word(h, word), np.uint64(0)
    return h, word


@compiled()
def _finish(h: np.uint64, length: int) -> np.int64:
    """The length folded in, then MurmurHash3's finaliser; as a signed 64-bit value (the bits)."""
    h ^= np.uint64(length)
    h ^= h >> np.uint64(33)
    h *= _F1
    h ^= h >> np.uint64(33)
    h *= _F2
    h ^= h >> np.uint64(33)
    signed: np.int64 = np.int64(h)
    return signed


@compiled(types.int64(_TEXT))
def hash64(data: bytes) -> np.int64:
    """The exact prompt hash of ``data``: its 8-byte words (the last one zero-padded) mixed in
    order, then its length and the finaliser."""
    h = np.uint64(0)
    word = np.uint64(0)
    n = len(data)
    for i in range(n):
        h, word = _push_byte(h, word, i, data[i])
    if n & 7:
        h = _mix_word(h, word)
    value: np.int64 = _finish(h, n)
    return value


@compiled()
def _hash_normalized_ascii(text: bytes, space: np.ndarray) -> np.int64:
    """``hash64`` of ``" ".join(text.lower().split())`` for ASCII text's bytes, each normalised
    byte mixed in as it is produced (nothing is written)."""
    h = np.uint64(0)
    word = np.uint64(0)
    size = 0
    pending = False  # a separator is due before the next word's first byte
    for i in range(len(text)):
        b = text[i]
        if space[b]:
            pending = size > 0
            continue
        if pending:
            h, word = _push_byte(h, word, size, 32)
            size += 1
            pending = False
        h, word = _push_byte(h, word, size, b + 32 if 65 <= b <= 90 else b)
        size += 1
    if size & 7:
        h = _mix_word(h, word)
    value: np.int64 = _finish(h, size)
    return value


@compiled(types.UniTuple(types.int64, 2)(  # type: ignore[no-untyped-call]
    _TEXT, types.uint8[::1], types.uint8[::1]))
def _sketch_ascii(text: bytes, word: np.ndarray, space: np.ndarray) -> tuple[np.int64, np.int64]:
    """``(prompt_hash, simhash64)`` of ASCII text's bytes in one call (one dispatch from Python),
    both as signed 64-bit values."""
    return _hash_normalized_ascii(text, space), np.int64(_simhash_ascii(text, word))


#: ``_sketch_ascii`` without its dispatcher (``_jit.direct``): its caller passes the text's bytes
#: and the two uint8 tables.
_sketch_ascii_direct = direct(_sketch_ascii)
