"""The demo model servers of the compose stack answer as the specs and kong.yml expect.

Run in-process on free loopback ports: the chat model reports OpenAI ``usage`` and the
``X-Usage-Total-Tokens`` header kong.yml's ai-tier-quota settles with, every answer echoes the
client address Kong set (X-Real-IP), TF-Serving predict and status paths work, bad input is a 400.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from .helpers import REPO, require_kong_yml

spec = importlib.util.spec_from_file_location("demo_models", REPO / "docker" / "demo_models.py")
assert spec is not None and spec.loader is not None
demo: ModuleType = importlib.util.module_from_spec(spec)
sys.modules["demo_models"] = demo
spec.loader.exec_module(demo)


@pytest.fixture
def serve() -> Iterator[Callable[[str], httpx.Client]]:
    servers: list[Any] = []
    clients: list[httpx.Client] = []

    def start(kind: str) -> httpx.Client:
        server = demo.make_server(kind, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        client = httpx.Client(base_url=f"http://127.0.0.1:{server.server_address[1]}", timeout=10)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.shutdown()
        server.server_close()


def test_chat_reports_usage_in_the_body_and_the_header_kong_yml_reads(serve: Callable[[str], httpx.Client]) -> None:
    chat = serve("chat")
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "Hello there, model"}]}
    r = chat.post("/v1/chat/completions", json=body, headers={"X-Real-IP": "10.1.2.3", "X-Forwarded-For": "10.1.2.3"})
    assert r.status_code == 200
    doc = r.json()
    usage = doc["usage"]
    assert usage["completion_tokens"] == 5 == len(doc["choices"][0]["message"]["content"].split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + 5 and usage["prompt_tokens"] > 0
    deck = yaml.safe_load(require_kong_yml().read_text())
    headers = {p["config"]["tokens"]["usage_header"] for p in deck.get("plugins", [])
               if p["name"] == "ai-tier-quota" and (p.get("config") or {}).get("tokens", {}).get("usage_header")}
    assert headers, "kong.yml's ai-tier-quota reads no usage header"
    for header in headers:
        assert int(r.headers[header]) == usage["total_tokens"]
    assert doc["gateway"] == {"x_real_ip": "10.1.2.3", "x_forwarded_for": "10.1.2.3"}
    # deterministic: the same request, the same answer
    assert chat.post("/v1/chat/completions", json=body).json()["choices"] == doc["choices"]


def test_chat_logprobs_follow_top_logprobs(serve: Callable[[str], httpx.Client]) -> None:
    body = {"max_tokens": 3, "logprobs": True, "top_logprobs": 2, "messages": [{"role": "user", "content": "x"}]}
    content = serve("chat").post("/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 3 and all(len(c["top_logprobs"]) == 2 for c in content)


def test_tf_serving_predict_and_model_status(serve: Callable[[str], httpx.Client]) -> None:
    classifier = serve("classifier")
    r = classifier.post("/v1/models/classifier:predict", json={"instances": [[1.0, 2.0], [3.0, 4.0]]})
    assert r.status_code == 200
    predictions = r.json()["predictions"]
    assert len(predictions) == 2 and all(abs(sum(p) - 1) < 1e-5 for p in predictions)
    assert predictions[0] != predictions[1]
    status = classifier.get("/v1/models/classifier").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"


def test_image_analysis_and_docqa(serve: Callable[[str], httpx.Client]) -> None:
    labels = serve("image").post("/v1/images/analyze", json={"image": "aGVsbG8="}).json()["labels"]
    assert len(labels) == 3 and labels == sorted(labels, key=lambda x: -x["score"])
    r = serve("docqa").post("/v1/docqa/ask", json={"question": "Where is the sea?",
                                                  "documents": ["The hills are east. The sea is west of town."]})
    assert r.json()["answer"] == "The sea is west of town." and int(r.headers["X-Usage-Total-Tokens"]) > 0


@pytest.mark.parametrize(("kind", "path", "body"), [
    ("chat", "/v1/chat/completions", {"messages": []}),
    ("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
    ("classifier", "/v1/models/classifier:predict", {"rows": [1]}),
    ("docqa", "/v1/docqa/ask", {"question": ""}),
    ("image", "/v1/images/analyze", {}),
])
def test_bad_requests_are_400_with_a_reason(serve: Callable[[str], httpx.Client], kind: str, path: str,
                                            body: dict[str, Any]) -> None:
    r = serve(kind).post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_unknown_paths_are_404_and_the_health_check_tells_up_from_down(serve: Callable[[str], httpx.Client]) -> None:
    chat = serve("chat")
    assert chat.post("/v1/images/analyze", json={}).status_code == 404
    assert demo.check(str(chat.base_url).rstrip("/") + "/health") == 0
    assert demo.check("http://127.0.0.1:9/health", timeout=1) == 1
