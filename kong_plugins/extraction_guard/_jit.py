"""What the guard's compiled (numba) code shares: how it is compiled, and CRC-32 inside a kernel.

Every kernel is compiled before the first request (see ``kernels.warm`` and the explicit
signatures in ``sketches`` and ``payloads``) and its machine code cached on disk next to the
module, or under ``NUMBA_CACHE_DIR``, where that is writable: numba refuses ``cache=True`` at
decoration when no cache location is, and then compiles at every start instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit


def compiled(signature: Any = None, *, fastmath: Any = False) -> Callable[[Callable[..., Any]], Any]:
    """A decorator compiling ``fn``: at once for ``signature`` if given, else on its first call.

    ``fastmath={"reassoc", "contract"}`` lets sums be reordered (vectorised), as a BLAS product's are.
    """
    def jit(cache: bool) -> Any:
        if signature is None:
            return njit(cache=cache, nogil=True, fastmath=fastmath)
        return njit(signature, cache=cache, nogil=True, fastmath=fastmath)

    def compile_(fn: Callable[..., Any]) -> Any:
        try:
            return jit(cache=True)(fn)
        except RuntimeError:
            return jit(cache=False)(fn)

    return compile_


def _crc32_table() -> np.ndarray:
    """The byte table of CRC-32 (polynomial 0xEDB88320, reflected: ``zlib.crc32``'s)."""
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table[i] = c
    return table


CRC32_TABLE = _crc32_table()
#: The running value a CRC-32 starts from and is finished with (``crc ^ CRC32_MASK``).
CRC32_MASK = np.uint32(0xFFFFFFFF)


@compiled()
def crc32_byte(crc: np.uint32, byte: int) -> np.uint32:
    """A running CRC-32 (``zlib.crc32``'s, pre-inverted) after one more byte."""
    updated: np.uint32 = CRC32_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return updated
