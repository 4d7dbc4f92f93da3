"""The compiled predict-body scanner (payloads.body_predict_rows) against the general parser, for any bytes.

``build_observation`` reads a body with the scanner first and falls back to ``parse_json`` +
``predict_rows`` when it answers ``None``: whatever the bytes, an answer from the scanner must be
the general path's answer bit for bit (shape, values, sign of zero), and it must never raise or
touch memory outside the body and its own buffers. numba kernels do not check indices, so every
body here also goes through a copy of the kernel compiled with bounds checks, where an
out-of-range read or write is an ``IndexError`` instead of silent garbage.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from kong_plugins.extraction_guard.config import GuardConfig
from kong_plugins.extraction_guard.guard import build_observation
from kong_plugins.extraction_guard.payloads import (
    MAX_FEATURES,
    _scan_instances,
    body_predict_rows,
    parse_json,
    predict_rows,
)

#: The production kernel's own code, compiled with index checks (compiled on first use, once).
_checked_scan = njit(boundscheck=True)(_scan_instances.py_func)


def _general_rows(body: bytes, max_rows: int) -> np.ndarray | None:
    doc = parse_json(body)
    return predict_rows(doc, max_rows) if doc is not None else None


def _scanned_rows(body: bytes, max_rows: int) -> np.ndarray | None:
    """``body_predict_rows``, after checking its kernel stays inside its arrays on these bytes."""
    checked = _checked_scan(body, max_rows)  # IndexError on any out-of-range access
    fast = _scan_instances(body, max_rows)
    assert (checked[1], checked[2]) == (fast[1], fast[2])
    n, d = fast[1], fast[2]
    assert checked[0][: n * d].tobytes() == fast[0][: n * d].tobytes()
    return body_predict_rows(body, max_rows)


def _assert_agrees(body: bytes, max_rows: int) -> np.ndarray | None:
    """The scanner's answer, asserted equal to the general path's whenever it gives one."""
    general = _general_rows(body, max_rows)  # must not raise either: the log phase calls it
    fast = _scanned_rows(body, max_rows)
    if fast is not None:
        assert general is not None, f"scanner read rows from a body the parser rejects: {body[:200]!r}"
        assert fast.dtype == general.dtype == np.float64
        assert fast.shape == general.shape, (fast.shape, general.shape)
        # bit for bit: -0.0 against 0.0 and the last ulp of every value count
        assert fast.tobytes() == general.tobytes(), (body[:200], fast, general)
    return fast


# -- numbers in every spelling JSON allows, and some it does not -------------------------------------

def _spelled(sign: bool, whole: str, frac: str | None, exp: str | None) -> str:
    return f"{'-' if sign else ''}{whole}{'.' + frac if frac is not None else ''}{exp or ''}"


_DIGITS = st.text("0123456789", min_size=1, max_size=24)
_WHOLE = st.one_of(st.just("0"), st.integers(1, 10**25).map(str), st.integers(1, 10**4).map(str))
_EXPONENT = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["e", "E"]), st.sampled_from(["", "+", "-"]),
              st.sampled_from(["", "0", "00000"]), st.integers(0, 400).map(str)).map("".join),
)
_EXOTIC = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, -(2**53), 10**18 - 1, 10**18, 2**63, -(2**63) - 1]).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.17g}"),
    st.tuples(st.floats(-1e30, 1e30, allow_nan=False), st.integers(0, 20), st.sampled_from("eEf")).map(
        lambda t: f"{t[0]:.{t[1]}{t[2]}}"),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(st.booleans(), _WHOLE, st.none() | _DIGITS, _EXPONENT).map(lambda t: _spelled(*t)),
    # leading zeros after the point shift the exponent the scanner keeps: long runs of them
    st.tuples(st.booleans(), st.integers(0, 40), _DIGITS, _EXPONENT).map(
        lambda t: _spelled(t[0], "0", "0" * t[1] + t[2], t[3])),
    st.sampled_from(["0", "-0", "0.0", "-0.0", "-0e0", "-0E-0", "0e999999999999", "-0.000e-99999999999",
                     "1e22", "1e-22", "1e23", "1e-23", "9007199254740992e22", "4.9e-324", "5e-324",
                     "2.2250738585072014e-308", "1.7976931348623157e308", "1.7976931348623159e308",
                     "1e308", "1e309", "-1e400", "1e-400", "123456789012345678", "1234567890123456789",
                     "0.1", "0.30000000000000004", "100000000000000000000000"]),
)


@st.composite
def _exact_decimals(draw: Any) -> str:
    """A number the scanner converts itself (<= 2**53 written, within 1e+-22), spelled many ways."""
    digits = str(draw(st.integers(0, 2**53) | st.integers(0, 999)))
    point = draw(st.integers(0, len(digits) + 3))  # digits after the point (leading zeros past the end)
    whole, frac = digits[: max(0, len(digits) - point)], digits[max(0, len(digits) - point):]
    frac = "0" * max(0, point - len(digits)) + frac
    whole = whole.lstrip("0") or "0"
    if frac and draw(st.booleans()):
        frac += "0" * draw(st.integers(0, 2))  # trailing zeros (while the digits still fit)
    exp = None
    if draw(st.booleans()):
        value = draw(st.integers(-8, 8))
        exp = (draw(st.sampled_from(["e", "E"])) + ("-" if value < 0 else draw(st.sampled_from(["", "+"])))
               + "0" * draw(st.integers(0, 2)) + str(abs(value)))
    return _spelled(draw(st.booleans()), whole, frac or None, exp)


#: Mostly numbers the scanner reads (else almost no body would be read), the rest anything.
_NUMBERS = st.one_of(_exact_decimals(), _exact_decimals(), _exact_decimals(), _EXOTIC)
#: What JSON allows between tokens (and the same characters where it does not: inside numbers).
_SPACE = st.sampled_from(["", "", "", " ", "\n", "\t", "\r", "\r\n", "  \t\n "])


@st.composite
def _predict_bodies(draw: Any, ragged: bool = True, readable: bool | None = None) -> tuple[bytes, int]:
    """A ``{"instances": [[...], ...]}`` body (rows of one width, or sometimes not) and a max_rows."""
    width = draw(st.integers(1, 6))
    n_rows = draw(st.integers(1, 10))
    if readable is None:
        readable = draw(st.booleans())  # half the bodies have numbers the scanner reads throughout
    numbers = _exact_decimals() if readable else _NUMBERS
    rows = [[draw(numbers) for _ in range(width)] for _ in range(n_rows)]
    if ragged and draw(st.integers(0, 4)) == 0:  # one row one shorter or longer
        r = draw(st.integers(0, n_rows - 1))
        rows[r] = rows[r][:-1] if draw(st.booleans()) else [*rows[r], draw(_NUMBERS)]

    def gap() -> str:
        return str(draw(_SPACE))

    def seq(items: list[str]) -> str:
        return ",".join(f"{gap()}{x}{gap()}" for x in items)

    body = (f'{gap()}{{{gap()}"instances"{gap()}:{gap()}[{seq([f"[{seq(r)}]" for r in rows])}]{gap()}}}'
            f"{gap()}")
    max_rows = draw(st.sampled_from([1, 2, 3, n_rows - 1, n_rows, n_rows + 1, 8, 256]) | st.integers(1, 12))
    return body.encode(), max(1, max_rows)


@settings(max_examples=400, deadline=None)
@given(_predict_bodies())
def test_every_body_read_by_the_scanner_is_read_as_the_parser_reads_it(case: tuple[bytes, int]) -> None:
    _assert_agrees(*case)


_PLAIN_NUMBERS = st.one_of(
    st.integers(-(2**53), 2**53).map(str),
    st.tuples(st.integers(-(10**15), 10**15), st.integers(0, 15)).map(
        lambda t: f"{'-' if t[0] < 0 else ''}{abs(t[0]) // 10**t[1]}.{abs(t[0]) % 10**t[1]:0{t[1]}d}"
        if t[1] else str(t[0])),
    st.tuples(st.integers(1, 10**15), st.integers(-22, 22)).map(lambda t: f"{t[0]}e{t[1]}"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_PLAIN_NUMBERS, min_size=3, max_size=3), min_size=1, max_size=9),
       st.integers(1, 9), _SPACE)
def test_plain_bodies_are_read_by_the_scanner_not_handed_on(rows: list[list[str]], max_rows: int,
                                                            gap: str) -> None:
    # Exact decimals of at most 15-16 digits within 1e+-22 are what the scanner is for: it must
    # take them (the general path costs twice as much) and agree.
    body = f'{{"instances":{gap}[{f",{gap}".join("[" + f",{gap}".join(r) + "]" for r in rows)}]}}'.encode()
    fast = _assert_agrees(body, max_rows)
    assert fast is not None and fast.shape == (min(len(rows), max_rows), 3)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(MAX_FEATURES - 2, 3 * MAX_FEATURES), st.integers(1, 4))
def test_wide_rows_are_narrowed_to_the_same_columns(seed: int, width: int, n_rows: int) -> None:
    rng = random.Random(seed)
    spell: list[Callable[[], str]] = [lambda: str(rng.randint(-999, 999)), lambda: repr(rng.uniform(-1e3, 1e3)),
             lambda: f"{rng.randint(1, 99999)}e-{rng.randint(0, 30)}", lambda: "-0.0"]
    rows = [[rng.choice(spell)() for _ in range(width)] for _ in range(n_rows)]
    body = ('{"instances": [' + ", ".join("[" + ",".join(r) + "]" for r in rows) + "]}").encode()
    fast = _assert_agrees(body, 8)
    if fast is not None:
        assert fast.shape == (n_rows, min(width, MAX_FEATURES))


# -- any bytes: mutations of predict bodies --------------------------------------------------------

_TOKENS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"[", b"]", b"[[", b"]]", b",",
           b",,", b"{", b"}", b":", b'"', b'"instances"', b'"inputs"', b'"x"', b'"instances": [[9]]', b"null",
           b"true", b"false", b"\xef\xbb\xbf", b"\xc2\xa0", b"\x00", b"\x0b", b"\x0c", b"\xff", b"\xed\xa0\x80",
           b"1.", b".5", b"+1", b"1e", b"1e+", b"01", b"-", b"--1", b"0x10", b"9" * 30, b"0." + b"0" * 30 + b"1",
           b"1e99999999999", b"1" + b"0" * 400, b"\\u0030", b"/*c*/", b" ", b"\t", b"\r\n", b"-0", b"-0.0",
           b"[1,2]", b"[]", b"[[]]", b'{"x": [1]}']


@st.composite
def _mutated(draw: Any) -> tuple[bytes, int]:
    body, max_rows = draw(_predict_bodies(readable=draw(st.integers(0, 3)) > 0))
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 8))
        digits = [i for i, c in enumerate(data) if 48 <= c <= 57]
        if kind in (5, 7) and digits:  # another digit: still a body the scanner may read
            data[draw(st.sampled_from(digits))] = draw(st.integers(48, 57))
        elif kind in (6, 8):  # whitespace: JSON's between tokens, breaking inside a number or the key
            data[at:at] = draw(_SPACE).encode()
        elif kind == 0:
            del data[at:]
        elif kind == 1 and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif kind == 2:
            data[at:at] = bytes([draw(st.integers(0, 255))])
        elif kind == 3:
            del data[at:at + draw(st.integers(1, 8))]
        else:
            data[at:at] = draw(st.sampled_from(_TOKENS))
    return bytes(data), max_rows


@settings(max_examples=700, deadline=None)
@given(_mutated())
def test_mutated_bodies_are_never_misread(case: tuple[bytes, int]) -> None:
    _assert_agrees(*case)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(1, 10))
def test_arbitrary_bytes_after_the_key_are_never_misread(tail: bytes, max_rows: int) -> None:
    _assert_agrees(b'{"instances":' + tail, max_rows)
    _assert_agrees(b'{"instances": [[' + tail, max_rows)


_BODIES = [
    b' {"instances" :\n[[0.0, 16, -3.25, 1e2, 2.5E-3, -0, -0.0, -0e1],[1,2,3,4,5,6,7,8]]} ',
    b'{"instances": [[1, 2], [3, 4], [5, 6]]}',
    b'{"instances":[[0.5,-1e-7],[12345678901234.5,1E+22]]}',
]


@pytest.mark.parametrize("body", _BODIES, ids=["spellings", "three-rows", "exponents"])
def test_every_truncation_and_splice_of_a_body_is_never_misread(body: bytes) -> None:
    assert _assert_agrees(body, 2) is not None
    for at in range(len(body) + 1):
        for max_rows in (1, 2, 3):
            _assert_agrees(body[:at], max_rows)
            _assert_agrees(body[at:], max_rows)
        for token in _TOKENS:
            _assert_agrees(body[:at] + token + body[at:], 2)


# -- what these properties found --------------------------------------------------------------------

def test_a_row_one_number_longer_than_the_first_in_the_last_kept_row_stays_inside_the_buffer() -> None:
    # The longer row's extra number was written before its length was checked: with max_rows
    # rows, one float64 past the end of the row buffer (silent heap corruption without checks).
    for body, max_rows in [(b'{"instances": [[1],[2,3]]}', 2), (b'{"instances": [[1,2],[3,4],[5,6,7]]}', 3),
                           (b'{"instances": [[1],[2],[3,4,5,6]]}', 3)]:
        assert _assert_agrees(body, max_rows) is None


def test_an_exponent_too_long_to_keep_is_not_wrapped_into_range() -> None:
    # The exponent stopped accumulating at 6 digits: 1e1000000 after 99,999 zeros past the point
    # was read as 1e0, i.e. 1.0, where the parser reads infinity (and rejects the row).
    zeros = b"0" * 99_999
    for exponent, max_rows in [(b"1000000", 8), (b"10000000", 8), (b"1000001", 1)]:
        body = b'{"instances": [[0.' + zeros + b"1e" + exponent + b"]]}"
        assert _assert_agrees(body, max_rows) is None
    body = b'{"instances": [[0.' + zeros + b"1e100002]]}"  # within reach: 1e2, read by the parser alike
    general = _general_rows(body, 8)
    assert general is not None and general[0, 0] == 100.0
    _assert_agrees(body, 8)


@pytest.mark.parametrize("number", [b"1" + b"0" * 400, b"-" + b"9" * 309, b"1" + b"0" * 5000],
                         ids=["1e400", "-1e309", "1e5000"])
def test_an_integer_beyond_any_float_is_not_a_row_and_does_not_break_the_log_phase(number: bytes) -> None:
    # orjson refuses integers beyond 64 bits, json reads them exactly, and numpy raised
    # OverflowError converting one beyond 1.8e308: the log phase lost the request's observation.
    body = b'{"instances": [[1, ' + number + b"]]}"
    assert _assert_agrees(body, 8) is None
    assert build_observation(GuardConfig(), 0.0, "r", body).rows is None
    assert predict_rows({"instances": [[10**400]]}, 8) is None


def test_a_single_wide_row_does_not_reserve_room_for_rows_the_body_cannot_hold() -> None:
    # The row buffer was max_rows x width floats whatever the body: one row of 8 million zeros
    # (a 16 MB body, max_body_bytes allows it) reserved 16 GB at max_rows 256.
    width = 2_000_000
    body = b'{"instances": [[' + b"0," * (width - 1) + b"0]]}"
    values, n, d = _scan_instances(body, 256)
    # room for the one row and one spare (rows past the kept ones are read into it), not 256
    assert (n, d) == (1, width) and values.size == 2 * width
    _assert_agrees(body, 256)
    # sized by the bytes, the buffer has no room for a row the body's end cuts short: not written
    for cut, max_rows in [(b'{"instances": [[1, 2], [3', 2), (b'{"instances": [[1],[2],[3', 8)]:
        assert _assert_agrees(cut, max_rows) is None


def test_rows_past_max_rows_are_read_into_their_own_row_not_over_the_kept_ones() -> None:
    # Rows past max_rows are still read (the body must be well formed to the end) into one more
    # row of the buffer, which is dropped: over a kept row, the last kept values would be theirs.
    rows = [[r * 10 + c for c in range(3)] for r in range(6)]
    body = ('{"instances": [' + ", ".join(str(r) for r in rows) + "]}").encode()
    for max_rows in (1, 2, 5, 6, 7):
        fast = _assert_agrees(body, max_rows)
        assert fast is not None and fast.tolist() == rows[:max_rows]
    assert _assert_agrees(body[:-3] + b", 9]]}", 2) is None  # a longer row past the kept ones
