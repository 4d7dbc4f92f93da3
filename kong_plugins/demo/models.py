"""Small stand-in models behind kong.yml's four services, for the no-Docker demo and the tests.

They answer like the real APIs they stand for, deterministically, so that a run's figures can be
checked against kong.yml's reference numbers:

- ``textgen`` -- OpenAI chat completions: a ``usage`` object and the ``X-Usage-Total-Tokens``
  header that ai-tier-quota settles from (kong.yml ``tokens.usage_header``). The completion uses
  exactly ``max_tokens`` (or 64), the prompt is counted as the quota estimates it (4 bytes a token),
  so the settled usage equals the reservation and token budgets run out at predictable requests.
- ``image-analysis`` -- labels for an image.
- ``docqa`` -- an answer citing the first document.
- ``classifier`` -- TF-Serving's REST predict API: two-class probabilities of a fixed logistic model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from kong_plugins.standin import UpstreamHandler, UpstreamRequest, UpstreamResponse

#: Completion tokens when a chat request does not say max_tokens.
DEFAULT_COMPLETION_TOKENS = 64
USAGE_HEADER = "X-Usage-Total-Tokens"


def _json(request: UpstreamRequest) -> Any:
    try:
        return json.loads(request.body or b"null")
    except ValueError:
        return None


def _error(status: int, message: str) -> UpstreamResponse:
    return UpstreamResponse(status, {"Content-Type": "application/json"}, {"error": {"message": message}})


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Tokens of the prompt as ai-tier-quota estimates them (UTF-8 bytes of the texts / 4)."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            total += len(content.encode("utf-8"))
    return math.ceil(total / 4)


def textgen(request: UpstreamRequest) -> UpstreamResponse:
    body = _json(request)
    if not isinstance(body, Mapping) or not isinstance(body.get("messages"), list):
        return _error(400, "messages is required")
    max_tokens = body.get("max_tokens")
    completion = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else DEFAULT_COMPLETION_TOKENS
    prompt = prompt_tokens(body)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    answer = {
        "id": "chatcmpl-demo",
        "object": "chat.completion",
        "model": body.get("model") or "demo-llm",
        "choices": [{"index": 0, "finish_reason": "length",
                     "message": {"role": "assistant", "content": "A demo answer."}}],
        "usage": usage,
    }
    return UpstreamResponse(200, {"Content-Type": "application/json", USAGE_HEADER: str(usage["total_tokens"])},
                            answer)


def image_analysis(request: UpstreamRequest) -> UpstreamResponse:
    body = _json(request)
    if not isinstance(body, Mapping) or not isinstance(body.get("image"), str):
        return _error(400, "image (base64) is required")
    return UpstreamResponse(200, {"Content-Type": "application/json"},
                            {"labels": [{"label": "cat", "score": 0.91}, {"label": "sofa", "score": 0.42}]})


def docqa(request: UpstreamRequest) -> UpstreamResponse:
    body = _json(request)
    if not isinstance(body, Mapping) or not isinstance(body.get("question"), str):
        return _error(400, "question is required")
    documents = body.get("documents") or []
    cited = documents[0].get("id", 0) if documents and isinstance(documents[0], Mapping) else None
    return UpstreamResponse(200, {"Content-Type": "application/json"},
                            {"answer": "According to the documents, yes.", "citations": [cited]})


def classifier(request: UpstreamRequest) -> UpstreamResponse:
    body = _json(request)
    instances = body.get("instances") if isinstance(body, Mapping) else None
    if not isinstance(instances, list):
        return _error(400, "instances is required")
    predictions = []
    for row in instances:
        values = [float(v) for v in row] if isinstance(row, list) else []
        score = sum(values) / (len(values) or 1)
        p = 1.0 / (1.0 + math.exp(-score))
        predictions.append([round(1.0 - p, 6), round(p, 6)])
    return UpstreamResponse(200, {"Content-Type": "application/json"}, {"predictions": predictions})


#: Upstream handlers by kong.yml service name.
MODELS: dict[str, UpstreamHandler] = {
    "textgen": textgen,
    "image-analysis": image_analysis,
    "docqa": docqa,
    "classifier": classifier,
}

__all__ = ["DEFAULT_COMPLETION_TOKENS", "MODELS", "USAGE_HEADER", "prompt_tokens"]
