"""Requests of kong.yml's scenarios, shared by the deployment tests."""

from __future__ import annotations

import itertools
import json
from typing import Any

from kong_plugins.demo.reference import CHAT, CLASSIFIER, DOCQA, IMAGES, INTERNAL_IP
from kong_plugins.standin import KongStandIn, StandInResponse

#: A fixed day (2024-03-04 00:00:00 UTC); each test works on its own day so counters never meet.
DAY0 = 1_709_510_400.0
DAY = 86_400.0
_days = itertools.count(1)


def next_day() -> float:
    """Midnight of a day no test used yet, later than every day handed out before."""
    return DAY0 + next(_days) * DAY
JSON = {"Content-Type": "application/json"}


def at_time(gw: KongStandIn, at: float) -> float:
    """Kong's clock (JWT expiry) and the request's start time are both ``at``: no sleeping."""
    gw.clock = lambda: at
    return at


def chat_body(text: str = "Summarise the plot of Hamlet in two sentences.", max_tokens: int = 100,
              **extra: Any) -> bytes:
    return json.dumps({"model": "demo-llm", "messages": [{"role": "user", "content": text}],
                       "max_tokens": max_tokens, **extra}).encode()


def chat(gw: KongStandIn, at: float, key: str | None = None, *, bearer: str | None = None,
         ip: str = "198.51.100.20", **body: Any) -> StandInResponse:
    headers = dict(JSON)
    if key is not None:
        headers["apikey"] = key
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    return gw.request("POST", CHAT, headers=headers, body=chat_body(**body), client_ip=ip, start_time=at_time(gw, at))


def image(gw: KongStandIn, at: float, key: str, ip: str = "198.51.100.20") -> StandInResponse:
    return gw.request("POST", IMAGES, headers={**JSON, "apikey": key},
                      body=json.dumps({"image": "aGVsbG8="}).encode(), client_ip=ip, start_time=at_time(gw, at))


def ask(gw: KongStandIn, at: float, key: str, ip: str = INTERNAL_IP, *, question: str = "What is our leave policy?",
        document: str = "Employees get 25 days of paid leave.") -> StandInResponse:
    body = {"question": question, "documents": [{"id": 1, "text": document}]}
    return gw.request("POST", DOCQA, headers={**JSON, "apikey": key}, body=json.dumps(body).encode(),
                      client_ip=ip, start_time=at_time(gw, at))


def predict(gw: KongStandIn, at: float, *, key: str | None = None, bearer: str | None = None,
            ip: str = INTERNAL_IP, row: tuple[float, ...] = (0.2, 0.4, 0.1)) -> StandInResponse:
    headers = dict(JSON)
    if key is not None:
        headers["apikey"] = key
    if bearer is not None:
        headers["Authorization"] = f"Bearer {bearer}"
    return gw.request("POST", CLASSIFIER, headers=headers, body=json.dumps({"instances": [list(row)]}).encode(),
                      client_ip=ip, start_time=at_time(gw, at))
