"""HyperLogLog for the memory backend: the same estimator and precision as Redis's PFCOUNT.

Why not an exact set: distinct-count state (prompts, tokens, models seen per client) is kept per
client for hours, and an exact set grows with the client's traffic -- an attacker would choose
our memory use. Like Redis, this keeps 2**14 registers (0.81% standard error): a sparse dict of
the touched registers while few are set (small, exact at low cardinality via linear counting),
then a dense 16 KiB bytearray. Memory per key is therefore bounded by 16 KiB plus the sparse
phase's ceiling, whatever is added. No maintained pure-Python package offers this with typing and
a stable API; the algorithm fits in this file (Flajolet et al. 2007, with the linear-counting
small-range correction that HyperLogLog++ and Redis use; a 64-bit hash makes the large-range
correction unnecessary).
"""

from __future__ import annotations

import hashlib
import math

_P = 14
_M = 1 << _P
_ALPHA = 0.7213 / (1 + 1.079 / _M)
_SPARSE_MAX = 1024  # a dict of 1024 small ints is about the size of the dense array


class HyperLogLog:
    """A distinct counter with bounded memory; ``add`` says whether the estimate may change."""

    __slots__ = ("_cached", "_dense", "_sparse")

    def __init__(self) -> None:
        self._sparse: dict[int, int] | None = {}
        self._dense: bytearray | None = None
        self._cached: int | None = 0

    def add(self, element: str) -> bool:
        h = int.from_bytes(hashlib.blake2b(element.encode("utf-8"), digest_size=8).digest(), "little")
        index = h & (_M - 1)
        rest = h >> _P
        rank = (64 - _P) - rest.bit_length() + 1
        if self._sparse is not None:
            if self._sparse.get(index, 0) >= rank:
                return False
            self._sparse[index] = rank
            if len(self._sparse) > _SPARSE_MAX:
                self._densify()
        else:
            assert self._dense is not None
            if self._dense[index] >= rank:
                return False
            self._dense[index] = rank
        self._cached = None
        return True

    def _densify(self) -> None:
        assert self._sparse is not None
        dense = bytearray(_M)
        for index, rank in self._sparse.items():
            dense[index] = rank
        self._dense, self._sparse = dense, None

    def count(self) -> int:
        if self._cached is not None:
            return self._cached
        if self._sparse is not None:
            zeros = _M - len(self._sparse)
            total = zeros + sum(2.0**-r for r in self._sparse.values())
        else:
            assert self._dense is not None
            zeros = self._dense.count(0)
            total = sum(2.0**-r for r in self._dense)
        estimate = _ALPHA * _M * _M / total
        if estimate <= 2.5 * _M and zeros:
            estimate = _M * math.log(_M / zeros)
        self._cached = round(estimate)
        return self._cached


__all__ = ["HyperLogLog"]
