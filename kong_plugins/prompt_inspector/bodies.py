"""Request bodies: bounded JSON parsing, format detection and text extraction by role.

Parsing is bounded before any recursion happens: :func:`json_depth` measures nesting with one
regex pass over the bytes (strings removed first, so brackets inside them do not count) and a loop
over the remaining brackets only, then ``json.loads`` runs on a document known to be shallow.
A 10,000-deep document is therefore rejected in linear time without touching Python's recursion
limit. The structural walk that counts keys, array lengths and string lengths is iterative.

Every violation is a :class:`PayloadError` carrying its HTTP status and a message that helps the
caller fix the request; none of them mentions prompt inspection.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FORMATS",
    "Extracted",
    "PayloadError",
    "PayloadLimits",
    "Segment",
    "TextPath",
    "detect_format",
    "extract",
    "json_depth",
    "parse_json",
]

FORMATS: tuple[str, ...] = (
    "openai_chat", "openai_completions", "openai_responses", "anthropic_messages", "generic",
    "tf_serving", "torchserve", "kserve_v2",
)


class PayloadError(Exception):
    """A request the gateway refuses before inspection: status, machine-readable type, message."""

    def __init__(self, status: int, error_type: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.field:
            err["field"] = self.field
        return {"error": err}


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    max_body_bytes: int = 1 << 20
    max_depth: int = 32
    max_keys: int = 10_000
    max_array_length: int = 100_000
    max_string_length: int = 1 << 20


@dataclass(frozen=True, slots=True)
class Segment:
    """One text to inspect, with the role it plays in the conversation and where it was found."""

    role: str  # system | user | assistant | tool | document
    text: str
    path: str


@dataclass(frozen=True, slots=True)
class TextPath:
    """A user-configured location of text in a custom format: dotted keys, ``[*]`` or ``[n]``."""

    path: str
    role: str
    steps: tuple[str | int | None, ...]  # None = every element

    @classmethod
    def parse(cls, path: str, role: str) -> TextPath:
        source = path[2:] if path.startswith("$.") else path.lstrip("$")
        steps: list[str | int | None] = []
        for token in _PATH_TOKEN_RE.finditer(source):
            key, index = token.group("key"), token.group("index")
            if key is not None:
                steps.append(key)
            elif index == "*":
                steps.append(None)
            else:
                steps.append(int(index))
        rebuilt = "".join(t.group(0) for t in _PATH_TOKEN_RE.finditer(source))
        if not steps or rebuilt.replace(".", "") != source.replace(".", ""):
            raise ValueError("expected a path like $.data.items[*].text")
        return cls(path=path, role=role, steps=tuple(steps))

    def find(self, body: Any) -> Iterator[tuple[str, str]]:
        frontier: list[tuple[Any, str]] = [(body, "$")]
        for step in self.steps:
            nxt: list[tuple[Any, str]] = []
            for node, where in frontier:
                if isinstance(step, str) and isinstance(node, dict) and step in node:
                    nxt.append((node[step], f"{where}.{step}"))
                elif step is None and isinstance(node, list):
                    nxt.extend((item, f"{where}[{i}]") for i, item in enumerate(node))
                elif isinstance(step, int) and isinstance(node, list) and -len(node) <= step < len(node):
                    nxt.append((node[step], f"{where}[{step}]"))
            frontier = nxt
        for node, where in frontier:
            if isinstance(node, str):
                yield where, node
            elif isinstance(node, list):
                for i, item in enumerate(node):
                    if isinstance(item, str):
                        yield f"{where}[{i}]", item


_PATH_TOKEN_RE = re.compile(r"(?P<key>[A-Za-z0-9_\-]+)|\[(?P<index>\*|-?\d+)\]")


@dataclass(slots=True)
class Extracted:
    """What a body says: its format, texts by role, and the fields payload checks need."""

    format: str
    segments: list[Segment] = field(default_factory=list)
    model: str | None = None
    max_tokens: int | float | None = None
    message_count: int = 0
    instances: list[Any] | None = None


# --------------------------------------------------------------------------------------------------
# Bounded JSON

# A JSON string with its escapes ("unrolled loop": linear, no nested alternation).
_JSON_STRING_RE = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes, limit: int) -> int:
    """Nesting depth of a JSON document, stopping as soon as it exceeds ``limit``."""
    brackets = _JSON_STRING_RE.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= 2 * limit:
        # Depth can never exceed half the bracket count when the document is balanced; an
        # unbalanced one is rejected by json.loads, whose recursion this bound keeps shallow.
        return min(len(brackets), limit)
    depth = peak = 0
    for b in brackets:
        if b in (0x5B, 0x7B):
            depth += 1
            if depth > peak:
                peak = depth
                if peak > limit:
                    return peak
        else:
            depth -= 1
    return peak


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes, limits: PayloadLimits) -> Any:
    """Decode ``raw`` as a JSON document within ``limits``; :class:`PayloadError` otherwise."""
    if len(raw) > limits.max_body_bytes:
        raise PayloadError(413, "payload_too_large", f"request body exceeds {limits.max_body_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(400, "invalid_encoding", f"request body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise PayloadError(400, "invalid_json", "request body is empty; a JSON object was expected")
    if json_depth(raw, limits.max_depth) > limits.max_depth:
        raise PayloadError(413, "payload_too_deep", f"JSON nesting exceeds {limits.max_depth} levels")
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise PayloadError(400, "invalid_json", f"request body is not valid JSON: {reason}{where}") from None
    _check_structure(body, limits)
    return body


_SCALARS = frozenset({int, float, bool, type(None)})


def _scalars_only(items: list[Any]) -> bool:
    """Whether a list holds only numbers, booleans and nulls (tensors): ``map(type)`` and ``set``
    run in C, so a 100,000-element vector is checked without a Python loop over it."""
    return set(map(type, items)) <= _SCALARS


def _check_structure(body: Any, limits: PayloadLimits) -> None:
    keys = 0
    stack: list[tuple[Any, str]] = [(body, "$")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            keys += len(node)
            if keys > limits.max_keys:
                raise PayloadError(413, "too_many_keys", f"JSON body has more than {limits.max_keys} object keys")
            for key, value in node.items():
                if len(key) > limits.max_string_length:
                    raise PayloadError(413, "string_too_long",
                                       f"an object key exceeds {limits.max_string_length} characters", where)
                if isinstance(value, dict | list):
                    stack.append((value, f"{where}.{key}"))
                elif isinstance(value, str) and len(value) > limits.max_string_length:
                    raise PayloadError(413, "string_too_long",
                                       f"string exceeds {limits.max_string_length} characters", f"{where}.{key}")
        elif isinstance(node, list):
            if len(node) > limits.max_array_length:
                raise PayloadError(413, "array_too_long",
                                   f"array exceeds {limits.max_array_length} elements", where)
            if _scalars_only(node):
                continue
            for i, value in enumerate(node):
                if isinstance(value, dict | list):
                    stack.append((value, f"{where}[{i}]"))
                elif isinstance(value, str) and len(value) > limits.max_string_length:
                    raise PayloadError(413, "string_too_long",
                                       f"string exceeds {limits.max_string_length} characters", f"{where}[{i}]")
        elif isinstance(node, str) and len(node) > limits.max_string_length:
            raise PayloadError(413, "string_too_long", f"string exceeds {limits.max_string_length} characters", where)


# --------------------------------------------------------------------------------------------------
# Formats

_ROLES = {
    "system": "system", "developer": "system", "user": "user", "human": "user", "assistant": "assistant",
    "model": "assistant", "ai": "assistant", "tool": "tool", "function": "tool", "ipython": "tool",
}
_ANTHROPIC_BLOCKS = frozenset({"tool_use", "tool_result", "document", "search_result", "thinking",
                               "redacted_thinking"})


def detect_format(body: Any, path_hint: str = "") -> str:
    """The body's API format, from its keys (and the request path when keys are ambiguous)."""
    if not isinstance(body, dict):
        return "generic"
    if isinstance(body.get("messages"), list):
        if "system" in body or path_hint.rstrip("/").endswith("/messages"):
            return "anthropic_messages"
        for message in body["messages"][:64]:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list) and any(
                isinstance(b, dict) and b.get("type") in _ANTHROPIC_BLOCKS for b in content[:64]
            ):
                return "anthropic_messages"
        return "openai_chat"
    if "instructions" in body or (
        isinstance(body.get("input"), list) and any(isinstance(i, dict) for i in body["input"][:64])
    ) or path_hint.rstrip("/").endswith("/responses"):
        return "openai_responses"
    if "prompt" in body:
        return "openai_completions"
    if "instances" in body:
        return "tf_serving"
    inputs = body.get("inputs")
    if isinstance(inputs, list) and inputs and all(isinstance(i, dict) and "data" in i for i in inputs[:64]):
        return "kserve_v2"
    if isinstance(inputs, dict) or (isinstance(inputs, list) and inputs and not isinstance(inputs[0], str)):
        return "tf_serving"
    if "data" in body and "input" not in body and "inputs" not in body:
        return "torchserve"
    return "generic"


def _content_texts(content: Any, where: str, role: str) -> Iterator[Segment]:
    """Texts of an OpenAI / Anthropic content value: a string or a list of typed blocks."""
    if isinstance(content, str):
        yield Segment(role, content, where)
        return
    if not isinstance(content, list):
        return
    for i, block in enumerate(content):
        here = f"{where}[{i}]"
        if isinstance(block, str):
            yield Segment(role, block, here)
        elif isinstance(block, dict):
            kind = block.get("type")
            if isinstance(block.get("text"), str):
                yield Segment(role, block["text"], f"{here}.text")
            if kind == "tool_result":
                yield from _content_texts(block.get("content"), f"{here}.content", "tool")
            elif kind == "document":
                source = block.get("source")
                if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
                    yield Segment("document", source["data"], f"{here}.source.data")
                elif isinstance(source, dict) and source.get("type") == "content":
                    yield from _content_texts(source.get("content"), f"{here}.source.content", "document")
            elif kind == "search_result":
                # Retrieved content the caller hands the model (RAG): a document, like document blocks.
                yield from _content_texts(block.get("content"), f"{here}.content", "document")
            elif kind == "tool_use" and isinstance(block.get("input"), dict):
                yield from _string_leaves(block["input"], f"{here}.input", "assistant", 256)
            elif isinstance(block.get("output"), str):
                yield Segment("tool", block["output"], f"{here}.output")


def _string_leaves(node: Any, where: str, role: str, limit: int) -> Iterator[Segment]:
    stack: list[tuple[Any, str]] = [(node, where)]
    count = 0
    while stack and count < limit:
        item, here = stack.pop()
        if isinstance(item, str):
            count += 1
            yield Segment(role, item, here)
        elif isinstance(item, dict):
            stack.extend((v, f"{here}.{k}") for k, v in reversed(list(item.items())))
        elif isinstance(item, list) and not _scalars_only(item):
            stack.extend((v, f"{here}[{i}]") for i, v in reversed(list(enumerate(item))))


def _messages(messages: list[Any], out: Extracted, default_role: str = "user") -> None:
    out.message_count += len(messages)
    for i, message in enumerate(messages):
        where = f"$.messages[{i}]"
        if not isinstance(message, dict):
            continue
        role = _ROLES.get(str(message.get("role", default_role)).lower(), "user")
        out.segments.extend(_content_texts(message.get("content"), f"{where}.content", role))
        for j, call in enumerate(message.get("tool_calls") or []):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                path = f"{where}.tool_calls[{j}].function.arguments"
                out.segments.append(Segment("assistant", fn["arguments"], path))


def _max_tokens(body: dict[str, Any], *names: str) -> int | float | None:
    for name in names:
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    return None


def extract(body: Any, fmt: str, custom_paths: Sequence[TextPath] = ()) -> Extracted:
    """Texts and payload facts of a parsed body in format ``fmt`` (see :data:`FORMATS`)."""
    out = Extracted(format=fmt)
    if isinstance(body, dict):
        model = body.get("model")
        out.model = model if isinstance(model, str) else None
        if fmt == "openai_chat":
            _messages(body.get("messages") or [], out)
            out.max_tokens = _max_tokens(body, "max_completion_tokens", "max_tokens")
        elif fmt == "anthropic_messages":
            out.segments.extend(_content_texts(body.get("system"), "$.system", "system"))
            _messages(body.get("messages") or [], out)
            out.max_tokens = _max_tokens(body, "max_tokens")
        elif fmt == "openai_responses":
            out.segments.extend(_content_texts(body.get("instructions"), "$.instructions", "system"))
            items = body.get("input")
            if isinstance(items, str):
                out.segments.append(Segment("user", items, "$.input"))
                out.message_count = 1
            elif isinstance(items, list):
                out.message_count = len(items)
                for i, item in enumerate(items):
                    where = f"$.input[{i}]"
                    if isinstance(item, str):
                        out.segments.append(Segment("user", item, where))
                    elif isinstance(item, dict):
                        if item.get("type") == "function_call_output" and isinstance(item.get("output"), str):
                            out.segments.append(Segment("tool", item["output"], f"{where}.output"))
                            continue
                        role = _ROLES.get(str(item.get("role", "user")).lower(), "user")
                        out.segments.extend(_content_texts(item.get("content"), f"{where}.content", role))
            out.max_tokens = _max_tokens(body, "max_output_tokens")
        elif fmt == "openai_completions":
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                out.segments.append(Segment("user", prompt, "$.prompt"))
            elif isinstance(prompt, list):
                out.segments.extend(Segment("user", p, f"$.prompt[{i}]") for i, p in enumerate(prompt)
                                    if isinstance(p, str))
            if isinstance(body.get("suffix"), str):
                out.segments.append(Segment("user", body["suffix"], "$.suffix"))
            out.message_count = 1
            out.max_tokens = _max_tokens(body, "max_tokens")
        elif fmt == "generic":
            for key in ("prompt", "input", "inputs", "text", "query", "question"):
                if key in body:
                    out.segments.extend(_string_leaves(body[key], f"$.{key}", "user", 1024))
            docs = body.get("documents")
            if docs is not None:
                out.segments.extend(_string_leaves(docs, "$.documents", "document", 1024))
            out.max_tokens = _max_tokens(body, "max_new_tokens", "max_tokens")
            params = body.get("parameters")
            if out.max_tokens is None and isinstance(params, dict):
                out.max_tokens = _max_tokens(params, "max_new_tokens", "max_tokens")
        elif fmt in ("tf_serving", "torchserve", "kserve_v2"):
            key = {"tf_serving": "instances", "torchserve": "data", "kserve_v2": "inputs"}[fmt]
            raw = body.get(key)
            if fmt == "tf_serving" and raw is None:
                raw = body.get("inputs")
            if fmt == "kserve_v2" and isinstance(raw, list):
                # KServe v2: each input tensor carries its own flat data list.
                instances: list[Any] = []
                for tensor in raw:
                    if isinstance(tensor, dict) and isinstance(tensor.get("data"), list):
                        instances.extend(tensor["data"])
                out.instances = instances
            elif isinstance(raw, list):
                out.instances = raw
            elif isinstance(raw, dict):
                # TF-Serving columnar form: {"inputs": {"name": [batch...]}}; the batch is the first column.
                first = next(iter(raw.values()), None)
                out.instances = first if isinstance(first, list) else [first]
            elif raw is not None:
                out.instances = [raw]
            if out.instances is not None:
                out.segments.extend(_string_leaves(out.instances, f"$.{key}", "user", 1024))
    elif isinstance(body, str):
        out.segments.append(Segment("user", body, "$"))
    elif isinstance(body, list):
        out.segments.extend(_string_leaves(body, "$", "user", 1024))
    for text_path in custom_paths:
        out.segments.extend(Segment(text_path.role, text, where) for where, text in text_path.find(body))
    return out


# --------------------------------------------------------------------------------------------------
# Predict-API checks


@dataclass(frozen=True, slots=True)
class PredictLimits:
    max_instances: int | None = None
    vector_dimension: int | None = None
    min_value: float | None = None
    max_value: float | None = None


def _numbers(node: Any) -> Iterator[float]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, int | float) and not isinstance(item, bool):
            yield item


def check_predict(instances: list[Any] | None, limits: PredictLimits) -> None:
    """Instance count, per-instance vector dimension and numeric range (all 422 when violated)."""
    if instances is None:
        return
    if limits.max_instances is not None and len(instances) > limits.max_instances:
        raise PayloadError(422, "too_many_instances",
                           f"at most {limits.max_instances} instances per request are accepted")
    if limits.vector_dimension is not None:
        for i, instance in enumerate(instances):
            vector = instance
            if isinstance(vector, dict):
                vector = next((v for v in vector.values() if isinstance(v, list)), None)
            if not isinstance(vector, list) or len(vector) != limits.vector_dimension:
                raise PayloadError(422, "invalid_dimension",
                                   f"each instance must be a vector of {limits.vector_dimension} numbers",
                                   f"instances[{i}]")
    if limits.min_value is not None or limits.max_value is not None:
        lo = -math.inf if limits.min_value is None else limits.min_value
        hi = math.inf if limits.max_value is None else limits.max_value
        for i, instance in enumerate(instances):
            for value in _numbers(instance):
                if not lo <= value <= hi:
                    raise PayloadError(422, "value_out_of_range",
                                       f"numeric inputs must lie within [{lo:g}, {hi:g}]", f"instances[{i}]")
