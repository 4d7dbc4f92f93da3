"""Per-client behavioural state: fixed-size, serialisable, shared through the storage layer.

One ``ClientState`` per client (and one per client group) is all the guard remembers: a few
decayed counters and scores, a ring of the last ``recent_inputs`` numeric rows (float32, at most
``MAX_FEATURES`` wide), rings of 16 prompt fingerprints, at most 128 distinct biased token ids and
a 256-cell coverage bitmap. Serialised, a client of a 64-feature model is about 0.5 KB after one
request and 4.3 KB with a full ring of 16, whatever the client's volume
(``bench/bench_extraction_guard.py`` measures it); the number of clients is bounded by the storage
backend (LRU + TTL in memory, TTL in Redis).

The serialised form is a fixed binary layout (``struct`` for the scalars, raw little-endian arrays
for the rings) read and written once per request and state: every client and group state is
decoded and re-encoded on every request it sees, so the codec is on the log phase's budget. A
general-purpose format (msgpack, version 2) cost ~20 us per state to decode into fields; this one
costs a few. Version 2 blobs are still read, so an upgrade keeps every client's score.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

PROMPT_RING = 16
MAX_BIASED_IDS = 128
_VERSION = 3
_MSGPACK_VERSION = 2

#: The scalars, in field order, then the lengths of the variable parts that follow them:
#: contrib names (UTF-8, NUL-separated) and values, prompts, simhashes, biased ids, members
#: (signed 64-bit each), the ring's filled rows, last_diff and step_profile (float32).
_HEAD = struct.Struct("<B2dq11dbdIIQI32s" "BHBBHB" "HHqHH")
_F32 = np.dtype("<f4")
_U64 = np.dtype("<u8")
#: ``kernels.KEPT_STEP`` and ``kernels.KEPT_LINE`` (this module does not import the compiled code).
_KEPT_STEP, _KEPT_LINE = 1, 2
_I64 = "q"
assert array(_I64).itemsize == 8


_NOTHING = b""


def _f32_bytes(values: np.ndarray) -> bytes:
    return values.tobytes() if values.dtype == _F32 else values.astype(_F32).tobytes()


@dataclass(slots=True)
class ClientState:
    t_first: float
    t_last: float
    n: int = 0
    rate_short: float = 0.0
    rate_long: float = 0.0
    size_mu: float = 0.0
    extraction: float = 0.0
    abuse: float = 0.0
    out_tokens: float = 0.0
    low_margin_ewma: float = 0.0
    template_ewma: float = 0.0
    level: int = 0
    level_until: float = 0.0
    blocks: int = 0
    #: Rows of this client the route baseline has learned (capped: no client dominates a baseline).
    taught: int = 0
    #: Extraction evidence per signal, decayed as the score is. Replaced, never changed in place:
    #: the detector's assessments share it as their totals.
    contrib: dict[str, float] = field(default_factory=dict)
    # The parts ``kernels.score_rows`` reads and changes in place, kept in the arrays it takes so
    # that a numeric request converts nothing on its way in or out (the properties below give
    # them by name): ``ratios`` the duplicate, near-duplicate and off-model ratios (EWMAs);
    # ``words`` the 256-bit coverage sketch as four little-endian words, then the axis anchor and
    # the coordinates moved from it; ``kept`` the step profile (row 0: nearest recent input - x,
    # for the last input that moved at least 4 coordinates) and the last step (row 1), each valid
    # per ``kept_bits`` (``kernels.KEPT_STEP``, ``kernels.KEPT_LINE``).
    ratios: np.ndarray = field(default_factory=lambda: np.zeros(3))
    words: np.ndarray = field(default_factory=lambda: np.zeros(6, dtype=np.uint64))
    rows: np.ndarray | None = None
    rows_n: int = 0
    kept: np.ndarray | None = None
    kept_bits: int = 0
    # Tuples, replaced rather than changed: a tuple of integers is one object the cyclic garbage
    # collector stops tracking after its first look (a list stays tracked), and the memory
    # backend keeps every client's state -- four lists a state made full collections scan ~4x
    # more objects (220 ms at 50,000 clients).
    prompts: tuple[int, ...] = ()
    simhashes: tuple[int, ...] = ()
    biased_ids: tuple[int, ...] = ()
    #: For a group: hashes of the last few distinct clients seen in it.
    members: tuple[int, ...] = ()

    @property
    def dup_ewma(self) -> float:
        return float(self.ratios[0])

    @property
    def near_ewma(self) -> float:
        return float(self.ratios[1])

    @property
    def ood_ewma(self) -> float:
        return float(self.ratios[2])

    @property
    def coverage(self) -> int:
        """The coverage sketch: which of 256 input-space cells the client's inputs landed in."""
        return int.from_bytes(self.words[:4].astype(_U64, copy=False).tobytes(), "little")

    @coverage.setter
    def coverage(self, value: int) -> None:
        self.words[:4] = np.frombuffer(value.to_bytes(32, "little"), dtype=_U64)

    @property
    def axis_anchor(self) -> int:
        return int(self.words[4])

    @property
    def axis_coords(self) -> int:
        return int(self.words[5])

    @property
    def step_profile(self) -> np.ndarray | None:
        return self._kept_row(0, _KEPT_STEP)

    @step_profile.setter
    def step_profile(self, value: np.ndarray | None) -> None:
        self._set_kept_row(0, _KEPT_STEP, value)

    @property
    def last_diff(self) -> np.ndarray | None:
        return self._kept_row(1, _KEPT_LINE)

    @last_diff.setter
    def last_diff(self, value: np.ndarray | None) -> None:
        self._set_kept_row(1, _KEPT_LINE, value)

    def _kept_row(self, row: int, bit: int) -> np.ndarray | None:
        return self.kept[row] if self.kept is not None and self.kept_bits & bit else None

    def _set_kept_row(self, row: int, bit: int, value: np.ndarray | None) -> None:
        if value is None:
            self.kept_bits &= ~bit
            return
        if self.kept is None or self.kept.shape[1] != len(value):
            self.kept, self.kept_bits = np.zeros((2, len(value)), dtype=np.float32), 0
        self.kept[row] = value
        self.kept_bits |= bit

    @classmethod
    def new(cls, now: float) -> ClientState:
        return cls(t_first=now, t_last=now)

    def push_row(self, row: np.ndarray, capacity: int) -> None:
        self.push_rows(row[None, :], capacity)

    def push_rows(self, rows: np.ndarray, capacity: int) -> None:
        """Into the ring's next slots in order, as slices (only the last ``capacity`` rows stay);
        a ring of another shape starts again, without the steps kept from it."""
        dim = rows.shape[1]
        ring = self.rows
        if ring is None or ring.shape != (capacity, dim):
            ring = self.rows = np.zeros((capacity, dim), dtype=np.float32)
            self.rows_n = 0
            self.kept, self.kept_bits = None, 0
        count = len(rows)
        done = max(0, count - capacity)
        while done < count:
            at = (self.rows_n + done) % capacity
            take = min(count - done, capacity - at)
            ring[at:at + take] = rows[done:done + take]
            done += take
        self.rows_n += count

    def to_text(self) -> str:
        """The state's bytes as text, one code point per byte (latin-1): what storage holds.

        Storage values are text. Mapping bytes to code points 0-255 is a copy in either direction
        (~0.2 us for a full 64-feature ring, where base64 cost ~15 us to decode it): the memory
        backend's readers of text see it as a one-byte-per-character string, and the Redis
        client sends it as UTF-8, where a byte >= 0x80 takes two (float32 rings of real data are
        mostly small bytes: about the size base64 would be).
        """
        return self.to_bytes().decode("latin-1")

    def to_bytes(self) -> bytes:
        contrib = self.contrib
        prompts, simhashes, biased, members = self.prompts, self.simhashes, self.biased_ids, self.members
        rows = self.rows
        k = d = n_ld = n_sp = 0
        # Buffers, joined once below without a copy each (arrays and numpy arrays are bytes-like);
        # the parts most states lack are the empty bytes, without building anything.
        names = ld = sp = _NOTHING
        values: Any = _NOTHING
        ints: Any = _NOTHING
        ring: Any = _NOTHING
        if contrib:
            names = "\0".join(contrib).encode()
            values = array("d", contrib.values())
        if prompts or simhashes or biased or members:
            # consecutive in the format: one array
            ints = array(_I64, [*prompts, *simhashes, *biased, *members])
        if rows is not None:
            # Only the filled part of the ring: most clients send a few requests, and a 64-feature
            # ring of 16 is 4 KB whether one slot is used or all of them.
            k, d = rows.shape
            filled = min(self.rows_n, k)
            ring = rows if filled == k else rows[:filled]  # a full ring is not sliced
            if ring.dtype != _F32:
                ring = ring.astype(_F32)
            kept, bits = self.kept, self.kept_bits
            if kept is not None and bits & _KEPT_LINE:
                ld = _f32_bytes(kept[1])
                n_ld = len(ld) // 4
            if kept is not None and bits & _KEPT_STEP:
                sp = _f32_bytes(kept[0])
                n_sp = len(sp) // 4
        dup, near, ood = self.ratios.tolist()
        words = self.words
        head = _HEAD.pack(
            _VERSION, self.t_first, self.t_last, self.n, self.rate_short, self.rate_long, self.size_mu,
            self.extraction, self.abuse, self.out_tokens, dup, near, ood,
            self.low_margin_ewma, self.template_ewma, self.level, self.level_until, self.blocks,
            int(words[4]), int(words[5]), self.taught, words[:4].astype(_U64, copy=False).tobytes(),
            len(contrib), len(names), len(prompts), len(simhashes), len(biased), len(members), k, d,
            self.rows_n, n_ld, n_sp)
        return b"".join((head, names, values, ints, ring, ld, sp))

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientState | None:
        """Decode a stored state; ``None`` for bytes of an unknown format version or corrupt bytes."""
        if data[:1] != b"\x03":
            return cls._from_msgpack(data)
        try:
            (_, t_first, t_last, n, rate_short, rate_long, size_mu, extraction, abuse, out_tokens, dup_ewma,
             near_ewma, ood_ewma, low_margin_ewma, template_ewma, level, level_until, blocks, axis_anchor,
             axis_coords, taught, coverage, n_contrib, names_len, n_prompts, n_simhashes, n_biased, n_members,
             k, d, rows_n, ld_len, sp_len) = _HEAD.unpack_from(data)
            at = _HEAD.size
            contrib: dict[str, float] = {}
            if n_contrib or names_len:
                names = data[at:at + names_len].decode().split("\0") if n_contrib else []
                at += names_len
                contrib = dict(zip(names, array("d", data[at:at + 8 * n_contrib]), strict=True))
                at += 8 * n_contrib
            # The four integer lists are consecutive: one read, then cut.
            n_ints = n_prompts + n_simhashes + n_biased + n_members
            if n_ints:
                ints = array(_I64, data[at:at + 8 * n_ints]).tolist()
                if len(ints) != n_ints:
                    return None
                at += 8 * n_ints
                cut = n_prompts + n_simhashes
                lists = [tuple(ints[:n_prompts]), tuple(ints[n_prompts:cut]), tuple(ints[cut:cut + n_biased]),
                         tuple(ints[cut + n_biased:])]
            else:
                lists = [(), (), (), ()]
            words = np.empty(6, dtype=np.uint64)
            words[:4] = np.frombuffer(coverage, dtype=_U64)
            words[4], words[5] = axis_anchor, axis_coords
            st = cls(t_first, t_last, n, rate_short, rate_long, size_mu, extraction, abuse, out_tokens,
                     low_margin_ewma, template_ewma, level, level_until, blocks, taught, contrib,
                     np.array((dup_ewma, near_ewma, ood_ewma)), words, None, 0, None, 0, *lists)
            if k:
                # The ring is writable (the kernel fills its slots) and its own copy (a view of
                # ``data`` would keep the whole state's bytes alive, uncounted by StateCache).
                size = 4 * min(rows_n, k) * d
                if size == 4 * k * d:  # a full ring: one copy
                    ring = bytearray(memoryview(data)[at:at + size])
                else:
                    ring = bytearray(4 * k * d)
                    ring[:size] = memoryview(data)[at:at + size]
                st.rows = np.ndarray((k, d), dtype=_F32, buffer=ring)
                st.rows_n = rows_n
                at += size
                # the kept steps: copied into the state's own array (which the kernel changes in
                # place), so nothing keeps the whole state's bytes alive, uncounted by StateCache
                if ld_len:
                    st.last_diff = np.frombuffer(data, _F32, ld_len, at)
                    at += 4 * ld_len
                if sp_len:
                    st.step_profile = np.frombuffer(data, _F32, sp_len, at)
                    at += 4 * sp_len
            if at != len(data):
                return None
            return st
        except (ValueError, TypeError, struct.error):
            return None

    @classmethod
    def _from_msgpack(cls, data: bytes) -> ClientState | None:
        """The version 2 (msgpack) format of earlier releases."""
        try:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if not isinstance(doc, dict) or doc.get("v") != _MSGPACK_VERSION:
                return None
            st = cls(
                t_first=float(doc["tf"]), t_last=float(doc["tl"]), n=int(doc["n"]),
                rate_short=float(doc["rs"]), rate_long=float(doc["rl"]), size_mu=float(doc["sm"]),
                extraction=float(doc["ex"]), abuse=float(doc["ab"]), out_tokens=float(doc["ot"]),
                ratios=np.array((float(doc["du"]), float(doc["ne"]), float(doc["oo"]))),
                words=np.array((0, 0, 0, 0, int(doc["aa"]), int(doc["ac"])), dtype=np.uint64),
                low_margin_ewma=float(doc["lm"]), template_ewma=float(doc["te"]),
                level=int(doc["lv"]), level_until=float(doc["lu"]), blocks=int(doc["bl"]), taught=int(doc["tg"]),
                contrib={str(k): float(v) for k, v in doc["ct"].items()},
                prompts=tuple(int(x) for x in doc["pr"]), simhashes=tuple(int(x) for x in doc["sh"]),
                biased_ids=tuple(int(x) for x in doc["bi"]), members=tuple(int(x) for x in doc["mb"]),
            )
            st.coverage = int.from_bytes(doc["cv"], "little")
            if "rw" in doc:
                k, d, raw, n = doc["rw"]
                filled = np.frombuffer(raw, dtype=np.float32).reshape(-1, int(d))
                if len(filled) != min(int(n), int(k)):
                    return None
                st.rows = np.zeros((int(k), int(d)), dtype=np.float32)
                st.rows[: len(filled)] = filled
                st.rows_n = int(n)
                if "ld" in doc:
                    st.last_diff = np.frombuffer(doc["ld"], dtype=np.float32).copy()
                if "sp" in doc:
                    st.step_profile = np.frombuffer(doc["sp"], dtype=np.float32).copy()
            return st
        except (ValueError, KeyError, TypeError, OverflowError, msgpack.exceptions.ExtraData):
            return None
