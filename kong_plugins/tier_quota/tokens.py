"""LLM token accounting: an estimate before the call, the real usage after it.

Before: the reservation is ``prompt estimate + max_tokens`` -- what the call can cost at most if
the estimate holds -- so over-admission is bounded by what is in flight. After: the model's
``usage`` replaces the reservation (``Limiter.adjust``), refunding or charging the difference.

Where usage comes from (``tokens.usage_source``), a deliberate trade-off:

- ``log`` (default): the log phase, which runs after the response without delaying it and keeps
  streaming intact. External plugins cannot see the body there (Kong saves only headers, status
  and ``kong.log.serialize()``, ``kong/runloop/plugin_servers/plugin.lua``), so usage is read from
  the ``ai`` statistics Kong's ai-proxy plugins put in serialize (``ai.<plugin>.usage``, with
  ``logging.log_statistics``) or from a response header the model server sets.
- ``response_body``: the ``response`` phase reads the JSON body's ``usage``. Kong then buffers
  every response of the route (no streaming, more memory), so it is a server-wide opt-in.
- ``none``: the reservation stands; safe, pessimistic.

Absurd or missing usage (negative, not a number, above ``max_plausible_tokens``) keeps the
reservation: the client cannot lower its bill by making the model misreport.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import TokenConfig

_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    prompt: int
    max_tokens: int

    @property
    def reservation(self) -> int:
        return self.prompt + self.max_tokens


def _texts(value: Any) -> Iterable[str]:
    """Prompt text of OpenAI-style chat/completions bodies, without reading anything else."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, Mapping):
        for key in ("content", "text", "input_text"):
            if key in value:
                yield from _texts(value[key])


def _prompt_bytes(body: Mapping[str, Any]) -> int | None:
    found = False
    total = 0
    for key in ("messages", "prompt", "input", "system"):
        if key in body:
            for text in _texts(body[key]):
                found = True
                total += len(text.encode("utf-8", "replace"))
    return total if found else None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 1 else None


def estimate(body: bytes | None, request_size: int, config: TokenConfig) -> TokenEstimate:
    """The reservation for one request. ``body`` None means "not read" (estimate from size)."""
    per_token = config.bytes_per_token
    if body is None:
        return TokenEstimate(math.ceil(request_size / per_token), config.default_max_tokens)
    parsed: Any = None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if not isinstance(parsed, Mapping):
        return TokenEstimate(math.ceil(len(body) / per_token), config.default_max_tokens)
    prompt_bytes = _prompt_bytes(parsed)
    if prompt_bytes is None:
        prompt_bytes = len(body)
    max_tokens = config.default_max_tokens
    for field in _MAX_TOKEN_FIELDS:
        requested = _positive_int(parsed.get(field))
        if requested is not None:
            max_tokens = requested
            break
    return TokenEstimate(math.ceil(prompt_bytes / per_token), max_tokens)


def _plausible(value: Any, config: TokenConfig) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        return None
    number = int(value)
    return number if number <= config.max_plausible_tokens else None


def usage_from_object(usage: Any, config: TokenConfig) -> int | None:
    """Total tokens of a ``usage`` object (OpenAI, Anthropic and Kong ai-proxy spellings)."""
    if not isinstance(usage, Mapping):
        return None
    if "total_tokens" in usage:
        return _plausible(usage["total_tokens"], config)
    for first, second in (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens")):
        if first in usage or second in usage:
            a = _plausible(usage.get(first, 0), config)
            b = _plausible(usage.get(second, 0), config)
            if a is None or b is None:
                return None
            return _plausible(a + b, config)
    return None


def usage_from_body(body: bytes | None, config: TokenConfig) -> int | None:
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return usage_from_object(parsed.get("usage"), config) if isinstance(parsed, Mapping) else None


def usage_from_log(ai: Mapping[str, Any], header_value: str | None, config: TokenConfig) -> int | None:
    """Usage in the log phase: ai-proxy statistics first, then the configured response header."""
    for stats in ai.values():
        if isinstance(stats, Mapping):
            found = usage_from_object(stats.get("usage"), config)
            if found is not None:
                return found
    if header_value is not None:
        try:
            return _plausible(int(header_value.strip()), config)
        except ValueError:
            return None
    return None
