"""Small demo model servers for the reference stack: stdlib only, deterministic, one per container.

    python demo_models.py chat       --port 8000   # OpenAI-style POST /v1/chat/completions
    python demo_models.py image      --port 8000   # POST /v1/images/analyze
    python demo_models.py docqa      --port 8000   # POST /v1/docqa/ask
    python demo_models.py classifier --port 8501   # TF-Serving POST /v1/models/classifier:predict
    python demo_models.py check http://127.0.0.1:8000/health   # health check: exit 0 when it answers

They stand in for real models behind Kong so that the suite's outcomes can be checked end to end:
answers are computed from the request (never random), chat and docqa report OpenAI-style
``usage`` in the body and the total in the ``X-Usage-Total-Tokens`` response header (what
ai-tier-quota's ``tokens.usage_header`` reads in the log phase), and every JSON answer carries a
``gateway`` object echoing the ``X-Real-IP`` / ``X-Forwarded-For`` headers Kong set -- the address
Kong saw, which the network specs need to know which side of ip-restriction they are on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import sys
import urllib.request
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE_HEADER = "X-Usage-Total-Tokens"
REPLY = ("This is a demo completion from the reference stack, computed from your prompt so that the same "
         "request always gets the same answer.")
CLASSIFIER_LABELS = ("negative", "neutral", "positive")
MAX_BODY = 16 * 1024 * 1024

Json = dict[str, Any]


class BadRequest(Exception):
    """A request the demo model cannot answer; becomes a 400 with an OpenAI-style error body."""


def count_tokens(text: str) -> int:
    """Rough token count (about four characters per token), enough for usage figures."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _digest(value: Any) -> bytes:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).digest()


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def chat_completion(body: Json) -> tuple[Json, int]:
    """An OpenAI chat completion: a reply of at most ``max_tokens`` words, with ``usage``."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    prompt = "\n".join(_message_text(m.get("content")) for m in messages if isinstance(m, dict))
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 16
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("max_tokens must be a positive integer")
    words = REPLY.split(" ")
    reply = " ".join(words[: min(max_tokens, len(words))])
    completion_tokens = min(max_tokens, len(words))
    prompt_tokens = count_tokens(prompt)
    answer: Json = {
        "id": "chatcmpl-demo-" + _digest(body).hex()[:12],
        "object": "chat.completion",
        "model": str(body.get("model") or "demo-textgen"),
        "choices": [{"index": 0, "finish_reason": "stop" if completion_tokens < max_tokens else "length",
                     "message": {"role": "assistant", "content": reply}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    if body.get("logprobs"):
        top = int(body.get("top_logprobs") or 0)
        answer["choices"][0]["logprobs"] = {"content": [
            {"token": w, "logprob": -0.1 * (i + 1),
             "top_logprobs": [{"token": f"alt{j}", "logprob": -1.0 - j} for j in range(top)]}
            for i, w in enumerate(reply.split())]}
    return answer, prompt_tokens + completion_tokens


def docqa_answer(body: Json) -> tuple[Json, int]:
    """Document QA: picks the sentence of the documents sharing most words with the question."""
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadRequest("question must be a non-empty string")
    documents = body.get("documents") or []
    if not isinstance(documents, list):
        raise BadRequest("documents must be a list of strings")
    asked = set(question.lower().split())
    best, best_overlap = "I found no answer in the documents.", 0
    for doc in documents:
        for sentence in str(doc).split("."):
            overlap = len(asked & set(sentence.lower().split()))
            if overlap > best_overlap:
                best, best_overlap = sentence.strip() + ".", overlap
    prompt_tokens = count_tokens(question + " ".join(str(d) for d in documents))
    completion_tokens = count_tokens(best)
    return {"answer": best, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                      "total_tokens": prompt_tokens + completion_tokens}}, \
        prompt_tokens + completion_tokens


def image_analysis(body: Json) -> Json:
    """Image analysis: labels and a size estimate derived from the image payload's bytes."""
    image = body.get("image") or body.get("image_url")
    if not isinstance(image, str) or not image:
        raise BadRequest("image (base64) or image_url is required")
    d = _digest(image)
    labels = ("cat", "dog", "car", "tree", "person", "building")
    scores = sorted(((labels[i % len(labels)], round(d[i] / 255, 3)) for i in range(3)), key=lambda x: -x[1])
    return {"labels": [{"label": label, "score": score} for label, score in scores],
            "bytes": len(image), "model": "demo-image-analysis"}


def classifier_predict(body: Json) -> Json:
    """TF-Serving predict (row format ``instances`` or columnar ``inputs``): softmax per instance."""
    rows = body.get("instances", body.get("inputs"))
    if not isinstance(rows, list) or not rows:
        raise BadRequest("instances (or inputs) must be a non-empty list")
    predictions = []
    for row in rows:
        d = _digest(row)
        logits = [d[i] / 64 for i in range(len(CLASSIFIER_LABELS))]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        total = sum(exps)
        predictions.append([round(v / total, 6) for v in exps])
    return {"predictions": predictions}


class DemoModel:
    """One demo model: which POST paths it answers and its health/status document."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.routes: dict[str, Callable[[Json], tuple[Json, int | None]]] = {}
        if kind == "chat":
            self.routes["/v1/chat/completions"] = chat_completion
        elif kind == "docqa":
            self.routes["/v1/docqa/ask"] = docqa_answer
        elif kind == "image":
            self.routes["/v1/images/analyze"] = lambda b: (image_analysis(b), None)
        elif kind == "classifier":
            self.routes["/v1/models/classifier:predict"] = lambda b: (classifier_predict(b), None)
        else:
            raise ValueError(f"unknown demo model kind {kind!r}")

    def status(self, path: str) -> Json | None:
        if path == "/health":
            return {"status": "ok", "model": self.kind}
        if self.kind == "classifier" and path == "/v1/models/classifier":  # TF-Serving model status
            return {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                              "status": {"error_code": "OK", "error_message": ""}}]}
        return None


def make_handler(model: DemoModel) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "kong-ai-demo-model/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            # the stdlib's access line (method, path, status) only: bodies, and so prompts, are never logged
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

        def _send(self, status: int, doc: Json, headers: dict[str, str] | None = None) -> None:
            doc = {**doc, "gateway": {"x_real_ip": self.headers.get("X-Real-IP"),
                                      "x_forwarded_for": self.headers.get("X-Forwarded-For")}}
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            doc = model.status(self.path.split("?", 1)[0])
            if doc is None:
                self._send(404, {"error": {"message": f"no such path {self.path}"}})
            else:
                self._send(200, doc)

        def do_POST(self) -> None:
            route = model.routes.get(self.path.split("?", 1)[0])
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, {"error": {"message": "request body too large"}})
                self.close_connection = True
                return
            raw = self.rfile.read(length)
            if route is None:
                self._send(404, {"error": {"message": f"no such path {self.path}"}})
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("the request body must be a JSON object")
                answer, total_tokens = route(body)
            except (ValueError, BadRequest) as exc:
                self._send(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
                return
            headers = {USAGE_HEADER: str(total_tokens)} if total_tokens is not None else {}
            self._send(200, answer, headers)

    return Handler


def make_server(kind: str, host: str = "0.0.0.0", port: int = 8000) -> ThreadingHTTPServer:
    """A ready-to-serve demo model (``port=0`` picks a free port: ``server.server_address``)."""
    server = ThreadingHTTPServer((host, port), make_handler(DemoModel(kind)))
    server.daemon_threads = True
    return server


def check(url: str, timeout: float = 2.0) -> int:
    """Health check for compose: 0 when ``url`` answers 200, else 1 with the reason on stderr."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 0 if response.status == HTTPStatus.OK else 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("kind", choices=("chat", "image", "docqa", "classifier", "check"))
    parser.add_argument("url", nargs="?", help="for check: the URL that must answer 200")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    if args.kind == "check":
        if not args.url:
            parser.error("check needs a URL")
        return check(args.url)
    server = make_server(args.kind, args.host, args.port)
    print(f"demo model {args.kind} listening on {args.host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
