"""Per-client behavioural state: fixed-size, serialisable, shared through the storage layer.

One ``ClientState`` per client (and one per client group) is all the guard remembers: a few
decayed counters and scores, a ring of the last ``recent_inputs`` numeric rows (float32, at most
``MAX_FEATURES`` wide), rings of 16 prompt fingerprints, at most 128 distinct biased token ids and
a 256-cell coverage bitmap. Serialised (msgpack, before base64) a client of a 64-feature model is
about 0.5 KB after one request and 4.3 KB with a full ring of 16, whatever the client's volume
(``bench/bench_extraction_guard.py`` measures it); the number of clients is bounded by the storage
backend (LRU + TTL in memory, TTL in Redis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

PROMPT_RING = 16
MAX_BIASED_IDS = 128
_VERSION = 2


def decay(value: float, dt: float, tau: float) -> float:
    """Exponential decay over ``dt`` seconds with time constant ``tau`` (negative dt: no change)."""
    return value * math.exp(-dt / tau) if dt > 0 else value


@dataclass
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
    dup_ewma: float = 0.0
    near_ewma: float = 0.0
    ood_ewma: float = 0.0
    low_margin_ewma: float = 0.0
    template_ewma: float = 0.0
    coverage: int = 0
    level: int = 0
    level_until: float = 0.0
    blocks: int = 0
    axis_anchor: int = 0
    axis_coords: int = 0
    #: Rows of this client the route baseline has learned (capped: no client dominates a baseline).
    taught: int = 0
    contrib: dict[str, float] = field(default_factory=dict)
    rows: np.ndarray | None = None
    rows_n: int = 0
    last_diff: np.ndarray | None = None
    #: nearest recent input - x, for the last input that moved at least 4 coordinates.
    step_profile: np.ndarray | None = None
    prompts: list[int] = field(default_factory=list)
    simhashes: list[int] = field(default_factory=list)
    biased_ids: list[int] = field(default_factory=list)
    #: For a group: hashes of the last few distinct clients seen in it.
    members: list[int] = field(default_factory=list)

    @classmethod
    def new(cls, now: float) -> ClientState:
        return cls(t_first=now, t_last=now)

    def recent_rows(self) -> np.ndarray | None:
        if self.rows is None or self.rows_n == 0:
            return None
        return self.rows[: min(self.rows_n, self.rows.shape[0])]

    def push_row(self, row: np.ndarray, capacity: int) -> None:
        if self.rows is None or self.rows.shape != (capacity, row.shape[0]):
            self.rows = np.zeros((capacity, row.shape[0]), dtype=np.float32)
            self.rows_n = 0
            self.last_diff = None
            self.step_profile = None
        self.rows[self.rows_n % capacity] = row
        self.rows_n += 1

    def last_row(self) -> np.ndarray | None:
        if self.rows is None or self.rows_n == 0:
            return None
        row: np.ndarray = self.rows[(self.rows_n - 1) % self.rows.shape[0]]
        return row

    def coverage_fraction(self) -> float:
        return self.coverage.bit_count() / 256.0

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "v": _VERSION, "tf": self.t_first, "tl": self.t_last, "n": self.n,
            "rs": self.rate_short, "rl": self.rate_long, "sm": self.size_mu,
            "ex": self.extraction, "ab": self.abuse, "ot": self.out_tokens,
            "du": self.dup_ewma, "ne": self.near_ewma, "oo": self.ood_ewma,
            "lm": self.low_margin_ewma, "te": self.template_ewma,
            "cv": self.coverage.to_bytes(32, "little"),
            "lv": self.level, "lu": self.level_until, "bl": self.blocks, "ct": self.contrib,
            "aa": self.axis_anchor, "ac": self.axis_coords, "tg": self.taught,
            "pr": self.prompts, "sh": self.simhashes, "bi": self.biased_ids, "mb": self.members,
        }
        if self.rows is not None:
            # Only the filled part of the ring: most clients send a few requests, and a 64-feature
            # ring of 16 is 4 KB whether one slot is used or all of them.
            filled = min(self.rows_n, self.rows.shape[0])
            doc["rw"] = [self.rows.shape[0], self.rows.shape[1], self.rows[:filled].tobytes(), self.rows_n]
            if self.last_diff is not None:
                doc["ld"] = self.last_diff.astype(np.float32).tobytes()
            if self.step_profile is not None:
                doc["sp"] = self.step_profile.astype(np.float32).tobytes()
        return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def from_bytes(cls, data: bytes) -> ClientState | None:
        """Decode a stored state; ``None`` for bytes of another format version or corrupt bytes."""
        try:
            doc = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if not isinstance(doc, dict) or doc.get("v") != _VERSION:
                return None
            st = cls(
                t_first=float(doc["tf"]), t_last=float(doc["tl"]), n=int(doc["n"]),
                rate_short=float(doc["rs"]), rate_long=float(doc["rl"]), size_mu=float(doc["sm"]),
                extraction=float(doc["ex"]), abuse=float(doc["ab"]), out_tokens=float(doc["ot"]),
                dup_ewma=float(doc["du"]), near_ewma=float(doc["ne"]), ood_ewma=float(doc["oo"]),
                low_margin_ewma=float(doc["lm"]), template_ewma=float(doc["te"]),
                coverage=int.from_bytes(doc["cv"], "little"),
                level=int(doc["lv"]), level_until=float(doc["lu"]), blocks=int(doc["bl"]),
                axis_anchor=int(doc["aa"]), axis_coords=int(doc["ac"]), taught=int(doc["tg"]),
                contrib={str(k): float(v) for k, v in doc["ct"].items()},
                prompts=[int(x) for x in doc["pr"]], simhashes=[int(x) for x in doc["sh"]],
                biased_ids=[int(x) for x in doc["bi"]], members=[int(x) for x in doc["mb"]],
            )
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
        except (ValueError, KeyError, TypeError, msgpack.exceptions.ExtraData):
            return None
