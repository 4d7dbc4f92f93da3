"""Shared helpers of the ai-extraction-guard tests: a tiny numeric model upstream, an LLM stub, decks."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kong_plugins.standin import UpstreamRequest, UpstreamResponse

DIM = 8
_RNG = np.random.default_rng(1234)
WEIGHTS = _RNG.standard_normal((DIM, 3))
#: "Training data" of the numeric victim: 0.1-grid values around 5 (like iris measurements).
TRAIN = np.round(5.0 + _RNG.standard_normal((400, DIM)), 1)
FEATURE_STATS = {
    "mean": [float(v) for v in TRAIN.mean(axis=0)], "std": [float(v) for v in TRAIN.std(axis=0)],
    "min": [float(v) for v in TRAIN.min(axis=0)], "max": [float(v) for v in TRAIN.max(axis=0)],
}


def predict_upstream(request: UpstreamRequest) -> UpstreamResponse:
    rows = np.asarray(request.json()["instances"], dtype=float)
    z = (rows - 5.0) @ WEIGHTS
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return UpstreamResponse(200, {"Content-Type": "application/json"},
                            {"predictions": [[round(float(v), 6) for v in r] for r in p]})


def llm_upstream(request: UpstreamRequest) -> UpstreamResponse:
    body = request.json()
    n = int(body.get("max_tokens") or 16)
    return UpstreamResponse(200, {"Content-Type": "application/json"}, {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * n}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": n}})


def predict_body(row: Any) -> bytes:
    return json.dumps({"instances": [[float(v) for v in np.atleast_1d(row)]]}).encode()


def guard_deck(guard_config: dict[str, Any], *, tap: bool = False, keys: int = 6,
               with_companion: bool = True) -> dict[str, Any]:
    """The two-model gateway; the suite's Lua companion publishes the request facts unless told not to."""
    plugins: list[dict[str, Any]] = [{"name": "key-auth"}, {"name": "ai-extraction-guard", "config": guard_config}]
    if with_companion:
        plugins.insert(1, {"name": "ai-suite-context"})
    if tap:
        plugins.append({"name": "ai-extraction-guard-tap", "config": {}})
    return {
        "_format_version": "3.0",
        "services": [
            {"name": "classifier", "url": "http://classifier.internal:8501", "routes": [
                {"name": "predict", "paths": ["/v1/models/classifier:predict"], "strip_path": False}]},
            {"name": "llm", "url": "http://llm.internal:8000", "routes": [
                {"name": "chat", "paths": ["/v1/chat/completions"], "strip_path": False}]},
        ],
        "consumers": [{"username": f"user{i}", "keyauth_credentials": [{"key": f"key{i}"}]}
                      for i in range(keys)],
        "plugins": plugins,
    }
