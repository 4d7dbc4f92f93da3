"""What the guard reads from request and response bodies: TF-Serving rows, OpenAI-style parameters.

Parsing is tolerant (an unknown body shape yields ``None`` and only the volume signals apply) but
never guesses: a body that is not JSON is not a predict or LLM call. Response parsing is used by
the response tap (``kong_plugins.extraction_guard.tap``) when an operator enables it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numba import types

from kong_plugins.frozen import positional_builder

from ._jit import compiled, direct, unsigned_index
from .config import Mitigations
from .sketches import prompt_sketches


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """The parameters of an OpenAI-style completion that matter for extraction."""

    prompt_hash: int
    prompt_simhash: int
    biased_ids: tuple[int, ...]
    logprobs: bool
    top_logprobs: int
    max_tokens: int | None


def parse_json(body: bytes | None) -> Any:
    """The JSON document of a body, ``None`` when it is not one.

    orjson parses a predict body of 8 rows in ~10 us where the standard library takes ~85 (its
    number parsing is per-token Python work); a body orjson refuses but ``json`` accepts (NaN and
    Infinity literals, integers beyond 64 bits, lone surrogate escapes, UTF-16/32 text) is read
    by ``json`` as before -- what the guard reads must not depend on the parser a client targets.
    """
    if not body:
        return None
    head = body.lstrip()[:1]
    if head not in (b"{", b"["):
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


#: Features of one input the guard profiles at most. Wider inputs (a 28x28 image has 784) are
#: profiled on an evenly spaced, fixed subset of their features: per-client state (a ring of recent
#: inputs) and per-route baselines (1024 benign rows and a covariance) stay bounded whatever a
#: client sends -- a 64 KB body of "0," would otherwise be 32,000 features and 128 KB per input.
MAX_FEATURES = 256
_INT64 = 1 << 63


def predict_rows(doc: Any, max_rows: int) -> np.ndarray | None:
    """Rows of a TF-Serving ``:predict`` body (row or columnar-free ``inputs`` form) as float64.

    Each instance is flattened (an 8x8 image becomes 64 features), wider ones reduced to
    ``MAX_FEATURES`` columns. Returns ``None`` when the body is not a numeric predict call or
    rows have different widths.
    """
    if not isinstance(doc, dict):
        return None
    rows = doc.get("instances", doc.get("inputs"))
    if not isinstance(rows, list) or not rows:
        return None
    picked = rows[:max_rows]
    if isinstance(picked[0], dict):
        # TF-Serving named-input form: [{"x": [...]}, ...]; only single-input models are profiled.
        if len(picked[0]) != 1:
            return None
        key = next(iter(picked[0]))
        picked = [r.get(key) if isinstance(r, dict) else None for r in picked]
    try:
        arr = np.asarray(picked, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # OverflowError: an integer beyond 1.8e308 (json reads any)
        return None
    if arr.ndim == 1:
        arr = arr[:, None]
    arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[1] == 0 or not np.isfinite(arr).all():
        return None
    return _narrowed(arr)


def body_predict_rows(body: bytes, max_rows: int) -> np.ndarray | None:
    """``predict_rows(parse_json(body), max_rows)`` for the common body ``{"instances": [[n, ...],
    ...]}``, read straight from the bytes; ``None`` when the body is not exactly that shape.

    For a batch of 8 digits rows the general path costs ~23 us (orjson makes 512 Python floats,
    numpy reads them back); this one ~5 (~2 for one row). ``None`` means "take the general path", never "not a
    predict call": anything unusual -- other keys, nested or ragged rows, a number whose exact
    value needs more than the fast decimal conversion below, non-ASCII bytes -- goes there.
    """
    if max_rows < 1 or body.find(b'"instances"', 0, 64) < 0:
        return None
    rows: np.ndarray = _scan_rows_direct(body, max_rows)
    # At least one column, every value finite (the scanner's decimals are): only the width check.
    if not rows.shape[0]:
        return None
    return rows if rows.shape[1] <= MAX_FEATURES else _narrowed(rows)


def _narrowed(arr: np.ndarray) -> np.ndarray:
    """Rows wider than ``MAX_FEATURES`` reduced to that many evenly spaced columns."""
    if arr.shape[1] > MAX_FEATURES:
        arr = arr[:, np.linspace(0, arr.shape[1] - 1, MAX_FEATURES).astype(np.intp)]
    return arr


#: Powers of ten a double holds exactly (10**22 is the largest): a decimal ``m * 10**e`` with
#: ``m <= 2**53`` and ``|e| <= 22`` is one correctly rounded product or quotient of two exact
#: doubles (Clinger's fast path), i.e. the value orjson, ``json`` and ``float()`` give.
_EXACT_POWERS = np.array([10.0 ** i for i in range(23)])
_MAX_EXACT = 1 << 53
#: Where the scanner stops accumulating a written exponent: far beyond any body's length, so an
#: exponent that reaches it cannot be brought back within +-22 by the digits after the point.
_EXPONENT_CEILING = 1 << 48
#: A mantissa at or above it has 18 significant digits already: one more would not fit an int64.
_SIGNIFICANT_LIMIT = 10 ** 17
#: The one key the scanner reads (a global array: compiled in as constant data).
_INSTANCES_KEY = np.frombuffer(b'"instances"', dtype=np.uint8).copy()


#: The scanner's indices, unsigned for its reads (``_jit.unsigned_index``: no wraparound test).
_at = unsigned_index


@compiled()
def _is_space(b: int) -> bool:
    """JSON whitespace: space, tab, LF, CR."""
    return b == 32 or b == 9 or b == 10 or b == 13


@compiled(types.Tuple((types.float64[::1], types.int64, types.int64))(  # type: ignore[no-untyped-call]
    types.Bytes(types.uint8, 1, "C", readonly=True), types.int64))
def _scan_instances(buf: bytes, max_rows: int) -> tuple[np.ndarray, int, int]:  # pragma: no cover
    """Validate ``{"instances": [[n, ...], ...]}`` (JSON whitespace anywhere between tokens, one
    key, rows of one width, JSON numbers) and convert the first ``max_rows`` rows. Returns
    ``(values, rows, width)``; ``rows`` is 0 when the body is anything else.

    Written for speed (~1.4 ns a byte, ~4.4 us a call for 8 digits rows, where a first version
    took ~7 ns a byte): the body's last non-whitespace byte must be the closing ``}``, so every
    scan forward -- digits, whitespace -- stops on it at the latest and needs no end-of-body test
    of its own; the first row's commas, counted before it is read, size the one buffer; and a
    number's range and its row's width are checked once it is read. What the number loop keeps
    in registers counts as much as what it does (a value spilled to the stack and reloaded costs
    more than a branch), so it keeps few: no empty array made up front for the rejections, no
    "is this row kept" test. Checking a number's digit count once instead of its mantissa per
    digit, or taking a second digit without a branch, measured slower: more live values."""
    size = len(buf)
    if max_rows < 1:
        return np.empty(0, dtype=np.float64), 0, 0
    last = size - 1
    while last >= 0 and _is_space(buf[_at(last)]):
        last -= 1
    if last < 0 or buf[_at(last)] != 125:  # } -- the sentinel every scan below stops on
        return np.empty(0, dtype=np.float64), 0, 0
    # From here on buf[last] is '}': any forward scan over digits or whitespace ends by it.
    i = 0
    while _is_space(buf[_at(i)]):
        i += 1
    if buf[_at(i)] != 123:  # {
        return np.empty(0, dtype=np.float64), 0, 0
    i += 1
    while _is_space(buf[_at(i)]):
        i += 1
    key = _INSTANCES_KEY
    if i + key.size > last:
        return np.empty(0, dtype=np.float64), 0, 0
    for j in range(key.size):
        if buf[_at(i + j)] != key[j]:
            return np.empty(0, dtype=np.float64), 0, 0
    i += key.size
    while _is_space(buf[_at(i)]):
        i += 1
    if buf[_at(i)] != 58:  # :
        return np.empty(0, dtype=np.float64), 0, 0
    i += 1
    while _is_space(buf[_at(i)]):
        i += 1
    if buf[_at(i)] != 91:  # [
        return np.empty(0, dtype=np.float64), 0, 0
    i += 1
    while _is_space(buf[_at(i)]):
        i += 1
    if buf[_at(i)] != 91:  # the first row's [
        return np.empty(0, dtype=np.float64), 0, 0
    # The first row's width: one more than its commas up to its ']' (a well-formed row has
    # exactly that many numbers; any other is rejected while it is read). The rows the body can
    # still hold after it -- each at least ',[' + width one-digit numbers and their commas + ']'
    # -- bound the buffer, not max_rows x width whatever the body.
    close = i + 1
    commas = 0
    while close < last and buf[_at(close)] != 93:  # ]
        commas += buf[_at(close)] == 44
        close += 1
    if close >= last:
        return np.empty(0, dtype=np.float64), 0, 0
    width = commas + 1
    capacity = min(max_rows, 1 + (last - close) // (2 * width + 2))
    # One row more than is kept: rows past capacity are read into it (and dropped), so a number
    # is written without asking whether its row is kept -- one value fewer live in the loop.
    out = np.empty((capacity + 1) * width, dtype=np.float64)
    rows = 0
    while True:  # one row per turn, at its '['
        i += 1
        at = min(rows, capacity) * width
        row_end = at + width  # the row's values go to out[at:row_end]
        while True:  # one number per turn
            while _is_space(buf[_at(i)]):
                i += 1
            negative = buf[_at(i)] == 45  # -
            if negative:
                i += 1
            first = buf[_at(i)]
            if first < 48 or first > 57:
                return out, 0, 0
            # At most 18 significant digits (they fit an int64): a digit is taken while the
            # mantissa, leading zeros aside, has fewer -- while it is below 10**17.
            mantissa = 0
            exponent = 0
            integral = True
            i += 1
            if first != 48:  # a leading 0 stands alone
                mantissa = first - 48
                while 48 <= buf[_at(i)] <= 57:
                    if mantissa >= _SIGNIFICANT_LIMIT:
                        return out, 0, 0
                    mantissa = mantissa * 10 + (buf[_at(i)] - 48)
                    i += 1
            if buf[_at(i)] == 46:  # .
                integral = False
                i += 1
                if buf[_at(i)] < 48 or buf[_at(i)] > 57:
                    return out, 0, 0
                while 48 <= buf[_at(i)] <= 57:
                    if mantissa >= _SIGNIFICANT_LIMIT:
                        return out, 0, 0
                    mantissa = mantissa * 10 + (buf[_at(i)] - 48)
                    exponent -= 1
                    i += 1
            if buf[_at(i)] == 101 or buf[_at(i)] == 69:  # e E
                integral = False
                i += 1
                exp_negative = False
                if buf[_at(i)] == 43 or buf[_at(i)] == 45:
                    exp_negative = buf[_at(i)] == 45
                    i += 1
                if buf[_at(i)] < 48 or buf[_at(i)] > 57:
                    return out, 0, 0
                written = 0
                while 48 <= buf[_at(i)] <= 57:
                    if written < _EXPONENT_CEILING:
                        written = written * 10 + (buf[_at(i)] - 48)
                    i += 1
                exponent += -written if exp_negative else written
            if mantissa == 0:
                value = 0.0
            elif mantissa <= _MAX_EXACT and -22 <= exponent <= 22:
                value = float(mantissa)
                if exponent >= 0:
                    value *= _EXACT_POWERS[exponent]
                else:
                    value /= _EXACT_POWERS[-exponent]
            else:
                return out, 0, 0
            if negative and not (integral and mantissa == 0):  # the integer -0 is 0
                value = -value
            if at >= row_end:  # longer than the first row: checked before it is written
                return out, 0, 0
            out[_at(at)] = value
            at += 1
            while _is_space(buf[_at(i)]):
                i += 1
            if buf[_at(i)] == 44:  # ,
                i += 1
                continue
            if buf[_at(i)] == 93:  # ]
                i += 1
                break
            return out, 0, 0
        if at != row_end:
            return out, 0, 0
        rows += 1
        while _is_space(buf[_at(i)]):
            i += 1
        if buf[_at(i)] == 44:  # ,
            i += 1
            while _is_space(buf[_at(i)]):
                i += 1
            if buf[_at(i)] != 91:  # the next row's [
                return out, 0, 0
            continue
        if buf[_at(i)] == 93:  # ]
            i += 1
            break
        return out, 0, 0
    while _is_space(buf[_at(i)]):
        i += 1
    if i != last:  # the '}' closing the object is the body's last non-whitespace byte
        return out, 0, 0
    kept = min(rows, max_rows)
    if kept > capacity:  # a complete body cannot have more rows than its bytes hold; never garbage
        return out, 0, 0
    return out, kept, width


@compiled(types.float64[:, ::1](types.Bytes(types.uint8, 1, "C", readonly=True), types.int64))
def _scan_rows(buf: bytes, max_rows: int) -> np.ndarray:  # pragma: no cover
    """``_scan_instances``'s rows as a (rows, width) array, (0, 0) for any other body: shaped in
    the compiled call rather than sliced and reshaped in Python on every request."""
    out, n, d = _scan_instances(buf, max_rows)
    if n <= 0:
        return np.empty((0, 0))
    rows: np.ndarray = out[: n * d].reshape((n, d))
    return rows


#: ``_scan_rows`` without its dispatcher (``_jit.direct``): its caller passes bytes and an int.
_scan_rows_direct = direct(_scan_rows)


def instance_count(doc: Any) -> int:
    if isinstance(doc, dict):
        rows = doc.get("instances", doc.get("inputs"))
        if isinstance(rows, list):
            return len(rows)
    return 0


def _prompt_text(doc: dict[str, Any]) -> str | None:
    messages = doc.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        for m in messages:
            if isinstance(m, dict):
                content = m.get("content")
                if isinstance(content, str):
                    parts.append(content)
                elif isinstance(content, list):
                    parts.extend(c.get("text", "") for c in content
                                 if isinstance(c, dict) and isinstance(c.get("text"), str))
        return "\n".join(parts)
    prompt = doc.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return "\n".join(prompt)
    return None


def llm_request(doc: Any) -> LLMRequest | None:
    """Chat-completions or completions parameters; ``None`` if the body is neither."""
    if not isinstance(doc, dict):
        return None
    text = _prompt_text(doc)
    if text is None:
        return None
    bias = doc.get("logit_bias")
    ids: list[int] = []
    if isinstance(bias, dict):
        for k in bias:
            try:
                token = int(k)
            except (TypeError, ValueError):
                continue
            # a token id is a vocabulary index; the state stores ids as signed 64-bit integers
            if -_INT64 <= token < _INT64:
                ids.append(token)
    lp = doc.get("logprobs")
    # chat-completions: logprobs is a boolean and top_logprobs a count; completions: logprobs is the count
    top = doc.get("top_logprobs")
    top_n = top if isinstance(top, int) and not isinstance(top, bool) else 0
    if isinstance(lp, int) and not isinstance(lp, bool):
        top_n = max(top_n, lp)
    max_tokens = doc.get("max_tokens", doc.get("max_completion_tokens"))
    exact, simhash = prompt_sketches(text)
    return _build_llm_request(
        exact,  # prompt_hash
        simhash,  # prompt_simhash
        tuple(sorted(set(ids)))[:256] if ids else (),  # biased_ids
        bool(lp) or top_n > 0,  # logprobs
        top_n,  # top_logprobs
        max_tokens if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) else None,  # max_tokens
    )


#: ``LLMRequest(...)`` without the frozen constructor's per-field cost (kong_plugins.frozen).
_build_llm_request = positional_builder(LLMRequest)


def policy_violation(doc: Any, mitigations: Mitigations) -> str | None:
    """The first enabled mitigation this request breaks, as a client-facing message, else None."""
    if not isinstance(doc, dict):
        return None
    if mitigations.max_instances is not None and instance_count(doc) > mitigations.max_instances:
        return f"at most {mitigations.max_instances} instances per request"
    bias = doc.get("logit_bias")
    n_bias = len(bias) if isinstance(bias, dict) else 0
    lp = doc.get("logprobs")
    top = doc.get("top_logprobs")
    wants_logprobs = (lp is True) or (isinstance(lp, int) and not isinstance(lp, bool) and lp > 0) or (
        isinstance(top, int) and not isinstance(top, bool) and top > 0)
    if mitigations.refuse_logit_bias_with_logprobs and n_bias and wants_logprobs:
        return "logit_bias cannot be combined with logprobs on this API"
    if mitigations.max_logit_bias_entries is not None and n_bias > mitigations.max_logit_bias_entries:
        return f"at most {mitigations.max_logit_bias_entries} logit_bias entries"
    if mitigations.max_top_logprobs is not None:
        top_n = max(top if isinstance(top, int) and not isinstance(top, bool) else 0,
                    lp if isinstance(lp, int) and not isinstance(lp, bool) else 0)
        if top_n > mitigations.max_top_logprobs:
            return f"top_logprobs is capped at {mitigations.max_top_logprobs}"
    return None


def response_margins(doc: Any, max_rows: int) -> list[float] | None:
    """Top-1 minus top-2 probability per row of a TF-Serving ``predictions`` answer.

    Rows that are not probability vectors (negative entries or not summing to ~1) are treated as
    logits and pass through a softmax first, so a model returning raw scores is profiled the same.
    """
    if not isinstance(doc, dict):
        return None
    preds = doc.get("predictions", doc.get("outputs"))
    if not isinstance(preds, list) or not preds:
        return None
    try:
        arr = np.asarray(preds[:max_rows], dtype=np.float64)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 2 or arr.shape[1] < 2 or not np.isfinite(arr).all():
        return None
    sums = arr.sum(axis=1)
    if (arr < 0).any() or (np.abs(sums - 1.0) > 1e-3).any():
        z = np.exp(arr - arr.max(axis=1, keepdims=True))
        arr = z / z.sum(axis=1, keepdims=True)
    top2 = np.sort(arr, axis=1)[:, -2:]
    return [float(v) for v in (top2[:, 1] - top2[:, 0])]


def response_output_tokens(doc: Any) -> int | None:
    if isinstance(doc, dict):
        usage = doc.get("usage")
        if isinstance(usage, dict):
            n = usage.get("completion_tokens", usage.get("output_tokens"))
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                return n
    return None


def response_summary(body: bytes | None, max_rows: int) -> dict[str, Any] | None:
    """What the response tap hands to the log phase: margins (``m``) and output tokens (``o``)."""
    doc = parse_json(body)
    if doc is None:
        return None
    summary: dict[str, Any] = {}
    margins = response_margins(doc, max_rows)
    if margins is not None:
        summary["m"] = margins
    tokens = response_output_tokens(doc)
    if tokens is not None:
        summary["o"] = tokens
    return summary or None
