"""Body parsing is bounded and every supported format yields its texts under the right role."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kong_plugins.prompt_inspector.bodies import (
    PayloadError,
    PayloadLimits,
    PredictLimits,
    TextPath,
    check_predict,
    detect_format,
    extract,
    json_depth,
    parse_json,
)

LIMITS = PayloadLimits()


def _roles(body: dict[str, Any], path: str = "") -> tuple[str, list[tuple[str, str]]]:
    fmt = detect_format(body, path)
    return fmt, [(s.role, s.text) for s in extract(body, fmt).segments]


def test_openai_chat_texts_by_role_including_parts_and_tool_calls() -> None:
    body = {
        "model": "gpt-4o", "max_completion_tokens": 50,
        "messages": [
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}]},
            {"role": "assistant", "content": None,
             "tool_calls": [{"function": {"name": "f", "arguments": "{\"q\": 1}"}}]},
            {"role": "tool", "content": "tool says"},
        ],
    }
    fmt, texts = _roles(body)
    assert fmt == "openai_chat"
    assert texts == [("system", "be brief"), ("user", "hi"), ("assistant", "{\"q\": 1}"), ("tool", "tool says")]
    assert extract(body, fmt).max_tokens == 50


def test_anthropic_messages_system_tool_results_and_documents() -> None:
    body = {
        "model": "claude", "max_tokens": 100, "system": [{"type": "text", "text": "sys"}],
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "result"}]},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc body"}},
            {"type": "text", "text": "question"},
        ]}],
    }
    fmt, texts = _roles(body)
    assert fmt == "anthropic_messages"
    assert texts == [("system", "sys"), ("tool", "result"), ("document", "doc body"), ("user", "question")]


def test_anthropic_search_results_are_documents() -> None:
    body = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "search_result", "source": "https://kb.example/1", "title": "KB",
         "content": [{"type": "text", "text": "retrieved passage"}]},
        {"type": "text", "text": "what does the KB say?"},
    ]}]}
    fmt, texts = _roles(body)
    assert fmt == "anthropic_messages"
    assert texts == [("document", "retrieved passage"), ("user", "what does the KB say?")]


def test_openai_responses_and_completions() -> None:
    fmt, texts = _roles({"model": "m", "instructions": "sys", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {"type": "function_call_output", "call_id": "c", "output": "out"},
    ]})
    assert fmt == "openai_responses"
    assert texts == [("system", "sys"), ("user", "q"), ("tool", "out")]
    assert _roles({"model": "m", "prompt": ["a", "b"]}) == ("openai_completions", [("user", "a"), ("user", "b")])


def test_generic_and_predict_formats() -> None:
    assert _roles({"inputs": "hello", "parameters": {"max_new_tokens": 5}}) == ("generic", [("user", "hello")])
    assert _roles({"input": "x", "documents": ["d1"]}) == ("generic", [("user", "x"), ("document", "d1")])
    tf = {"signature_name": "serving_default", "instances": [[1.0, 2.0], [3.0, 4.0]]}
    assert detect_format(tf) == "tf_serving"
    assert extract(tf, "tf_serving").instances == [[1.0, 2.0], [3.0, 4.0]]
    kserve = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [0.5, 0.7]}]}
    assert detect_format(kserve) == "kserve_v2"
    assert extract(kserve, "kserve_v2").instances == [0.5, 0.7]
    assert detect_format({"data": [[1, 2]]}) == "torchserve"
    assert _roles({"instances": ["review: great film"]})[1] == [("user", "review: great film")]


def test_custom_text_paths() -> None:
    body = {"job": {"items": [{"text": "a"}, {"text": "b"}], "note": ["n1", "n2"]}}
    paths = (TextPath.parse("$.job.items[*].text", "document"), TextPath.parse("$.job.note", "user"))
    texts = [(s.role, s.text) for s in extract(body, "generic", paths).segments]
    assert texts == [("document", "a"), ("document", "b"), ("user", "n1"), ("user", "n2")]
    with pytest.raises(ValueError):
        TextPath.parse("$..bad!!", "user")


@pytest.mark.parametrize(
    ("raw", "status", "kind"),
    [
        (b"\xff\xfe{}", 400, "invalid_encoding"),
        (b"{\"a\": ", 400, "invalid_json"),
        (b"{\"a\": NaN}", 400, "invalid_json"),
        (b"   ", 400, "invalid_json"),
        (b"[" * 40 + b"]" * 40, 413, "payload_too_deep"),
        (json.dumps({"k": "x" * 2000}).encode(), 413, "string_too_long"),
        (json.dumps(list(range(200))).encode(), 413, "array_too_long"),
        (json.dumps({str(i): i for i in range(200)}).encode(), 413, "too_many_keys"),
        (b" " * 5000, 413, "payload_too_large"),
    ],
)
def test_payload_errors_have_their_own_status(raw: bytes, status: int, kind: str) -> None:
    limits = PayloadLimits(max_body_bytes=4096, max_depth=32, max_keys=100, max_array_length=100,
                           max_string_length=1000)
    with pytest.raises(PayloadError) as info:
        parse_json(raw, limits)
    assert (info.value.status, info.value.error_type) == (status, kind)
    assert "inspect" not in info.value.message


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    raw = json.dumps({"text": "[[[[[[[[[[{{{{{{{{{{" * 10}).encode()
    assert json_depth(raw, 1) <= 1
    assert parse_json(raw, PayloadLimits(max_depth=1))["text"].startswith("[[[")


@pytest.mark.timeout(60)
def test_ten_thousand_deep_json_is_rejected_quickly_and_linearly() -> None:
    def cost(n: int) -> float:
        raw = b"[" * n + b"]" * n
        start = time.perf_counter()
        with pytest.raises(PayloadError):
            parse_json(raw, LIMITS)
        return time.perf_counter() - start

    small, large = cost(10_000), cost(200_000)
    assert large < 60 * max(small, 1e-3)


def test_predict_checks() -> None:
    check_predict([[0.1, 0.2]], PredictLimits(max_instances=1, vector_dimension=2, min_value=0, max_value=1))
    cases = [
        ([[0.1, 0.2]] * 3, PredictLimits(max_instances=2), "too_many_instances"),
        ([[0.1, 0.2, 0.3]], PredictLimits(vector_dimension=2), "invalid_dimension"),
        ([[0.1, 7.0]], PredictLimits(min_value=0, max_value=1), "value_out_of_range"),
        ([{"x": [0.1, -3]}], PredictLimits(min_value=0), "value_out_of_range"),
    ]
    for instances, limits, kind in cases:
        with pytest.raises(PayloadError) as info:
            check_predict(instances, limits)
        assert (info.value.status, info.value.error_type) == (422, kind)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parser_never_raises_anything_but_payload_error(raw: bytes) -> None:
    try:
        parse_json(raw, LIMITS)
    except PayloadError as exc:
        assert exc.status in (400, 413)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_extraction_never_raises_and_is_bounded(body: Any) -> None:
    raw = json.dumps(body).encode()
    parsed = parse_json(raw, LIMITS)
    for fmt in ("openai_chat", "anthropic_messages", "openai_responses", "openai_completions", "generic",
                "tf_serving", "torchserve", "kserve_v2", detect_format(parsed)):
        found = extract(parsed, fmt)
        assert sum(len(s.text) for s in found.segments) <= 4 * len(raw) + 1024
