"""What the guard's compiled (numba) code shares: how it is compiled, and CRC-32 inside a kernel.

Every kernel is compiled before the first request (see ``kernels.warm`` and the explicit
signatures in ``sketches`` and ``payloads``) and its machine code cached on disk next to the
module, or under ``NUMBA_CACHE_DIR``, where that is writable: numba refuses ``cache=True`` at
decoration when no cache location is, and then compiles at every start instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numba import njit


def compiled(signature: Any = None, *, fastmath: Any = False,
             error_model: Literal["python", "numpy"] = "python") -> Callable[[Callable[..., Any]], Any]:
    """A decorator compiling ``fn``: at once for ``signature`` if given, else on its first call.

    ``fastmath={"reassoc", "contract"}`` lets sums be reordered (vectorised), as a BLAS product's are.
    ``error_model="numpy"``: a float division by zero gives inf or NaN instead of raising
    ``ZeroDivisionError`` -- the same quotients otherwise, and a loop of divisions vectorises
    without a test of each divisor.
    """
    def jit(cache: bool) -> Any:
        if signature is None:
            return njit(cache=cache, nogil=True, fastmath=fastmath, error_model=error_model)
        return njit(signature, cache=cache, nogil=True, fastmath=fastmath, error_model=error_model)

    def compile_(fn: Callable[..., Any]) -> Any:
        try:
            return jit(cache=True)(fn)
        except RuntimeError:
            return jit(cache=False)(fn)

    return compile_


#: An index converted to this unsigned type before an array read (``buf[unsigned_index(i)]``; a
#: no-op in the machine code): numba wraps a negative signed index around (``buf[-1]`` is the last
#: item), a compare and a conditional move on every read whose index it cannot prove
#: non-negative -- one advanced in a ``while`` loop, say -- which an index counted up from 0 never
#: needs. The body reader and the prompt sketch read every byte so (~27 % and ~13 % faster).
unsigned_index = np.uint64


#: Set (to anything but "" or "0") to check, on every call, that the arguments of a ``direct`` kernel
#: have the types it was compiled for: the test suite runs with it (``tests/conftest.py``).
CHECK_KERNEL_ARGS_ENV = "KONG_PLUGINS_CHECK_KERNEL_ARGS"


def direct(dispatcher: Any) -> Callable[..., Any]:
    """The one compiled version of ``dispatcher``, callable without the dispatcher.

    A call through numba's dispatcher first types every argument to choose (or compile) a
    version: ~0.3 us for a request's 16-operand ``score_rows`` in a hot loop, 1.5-2 us in a
    plugin server woken by Kong's answer. A kernel a request calls is compiled for one set of
    types before the first request, and its callers pass exactly those types (a ring is float32,
    rows float64, a body bytes: by construction), so the choice is known in advance: this is
    the chosen version's own entry point, which unboxes its arguments as compiled. It checks
    little: an array of another dtype with the same item size, or another layout, would be read
    as the compiled one -- hence ``CHECK_KERNEL_ARGS_ENV``, with which every call is checked
    first (``TypeError`` naming the kernel and the argument).

    Raises ``RuntimeError`` unless exactly one version is compiled (compile it first: ``warm``,
    or an explicit signature). Falls back to the dispatcher if numba no longer exposes the
    entry point.
    """
    versions = list(dispatcher.overloads.values())
    if len(versions) != 1:
        raise RuntimeError(f"{dispatcher.__name__}: {len(versions)} compiled versions, a direct call needs one")
    entry: Callable[..., Any] | None = getattr(versions[0], "entry_point", None)
    if entry is None:  # pragma: no cover -- a numba without CompileResult.entry_point
        return dispatcher  # type: ignore[no-any-return]
    if os.environ.get(CHECK_KERNEL_ARGS_ENV, "") not in ("", "0"):
        return _checked(dispatcher, tuple(versions[0].signature.args), entry)
    return entry


def _checked(dispatcher: Any, compiled_for: tuple[Any, ...], entry: Callable[..., Any]) -> Callable[..., Any]:
    """``entry``, after checking each argument's numba type against the compiled one."""
    name = dispatcher.__name__

    def call(*args: Any) -> Any:
        if len(args) != len(compiled_for):
            raise TypeError(f"{name}: {len(args)} arguments, compiled for {len(compiled_for)}")
        for i, (arg, expected) in enumerate(zip(args, compiled_for, strict=True)):
            got = dispatcher.typeof_pyval(arg)
            if got != expected:
                raise TypeError(f"{name}: argument {i} is {got}, compiled for {expected}")
        return entry(*args)

    return call


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
