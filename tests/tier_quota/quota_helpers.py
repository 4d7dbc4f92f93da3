"""A fake ``kong`` for handler unit tests, the three-model gateway config, and serialize() answers.

The fake records every PDK call (one entry = one round trip in real Kong) and raises on
``kong.response.exit`` as the runtime does, so handlers run their real code paths.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from kong_plugins.storage import MemoryStorage
from kong_plugins.tier_quota import TierQuota

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a calendar-day edge


class Exited(BaseException):
    def __init__(self, status: int, body: Any, headers: dict[str, Any] | None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class _Node:
    def __init__(self, kong: FakeKong, path: str) -> None:
        self._kong, self._path = kong, path

    def __getattr__(self, name: str) -> Any:
        return _Node(self._kong, f"{self._path}.{name}")

    def __call__(self, *args: Any) -> Any:
        return self._kong.call(self._path, args)


class FakeKong:
    def __init__(self, serialized: dict[str, Any], *, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.serialized = serialized
        self.body = body
        self.request_headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.calls: list[str] = []
        self.response_headers: dict[str, str] = {}
        self.upstream_headers: dict[str, str] = {}
        self.response_body: bytes | None = None

    def __getattr__(self, name: str) -> Any:
        return _Node(self, f"kong.{name}")

    def call(self, method: str, args: tuple[Any, ...]) -> Any:
        self.calls.append(method)
        if method == "kong.log.serialize":
            return json.dumps(self.serialized)
        if method == "kong.request.get_header":
            return self.request_headers.get(args[0].lower())
        if method == "kong.request.get_raw_body":
            return self.body
        if method == "kong.response.set_headers":
            self.response_headers.update(args[0])
            return None
        if method == "kong.service.request.set_headers":
            self.upstream_headers.update(args[0])
            return None
        if method == "kong.service.response.get_raw_body":
            return self.response_body
        if method == "kong.response.exit":
            raise Exited(args[0], args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None)
        if method.startswith("kong.log."):
            return None
        raise AssertionError(f"unexpected PDK call {method}")


def serialize(
    *,
    service: str = "textgen",
    consumer: dict[str, Any] | None = None,
    credential: str | None = None,
    client_ip: str = "10.0.0.5",
    at: float = T0,
    uri: str = "/v1/chat/completions",
    headers: dict[str, Any] | None = None,
    ai: dict[str, Any] | None = None,
    latency_ms: int = 20,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request": {"method": "POST", "uri": uri, "url": f"http://gw:8000{uri}", "size": 400,
                    "headers": {"host": "gw", **(headers or {})}, "querystring": {}},
        "route": {"id": f"route-{service}", "name": f"{service}-route"},
        "service": {"id": f"svc-{service}", "name": service},
        "client_ip": client_ip,
        "started_at": round(at * 1000),
        "latencies": {"request": latency_ms, "kong": 1, "proxy": latency_ms - 1},
    }
    if consumer is not None:
        data["consumer"] = consumer
    if credential is not None:
        data["authenticated_entity"] = {"id": credential, "consumer_id": (consumer or {}).get("id")}
    if ai is not None:
        data["ai"] = ai
    return data


def consumer(cid: str, tier: str | None = None, tenant: str | None = None) -> dict[str, Any]:
    tags = [t for t in (f"tier:{tier}" if tier else None, f"tenant:{tenant}" if tenant else None) if t]
    return {"id": cid, "username": cid, "tags": tags}


THREE_MODEL_GATEWAY: dict[str, Any] = {
    "default_tier": "free",
    "tiers": [
        {"name": "free", "models": ["textgen"],
         "limits": [{"per_second": 2, "per_minute": 5, "per_day": 100, "tokens_per_minute": 2000}]},
        {"name": "premium", "models": ["textgen", "imagegen"],
         "limits": [{"per_minute": 60, "concurrency": 2},
                    {"models": ["imagegen"], "per_minute": 3}]},
        {"name": "internal", "models": ["*"], "limits": [{"per_second": 50, "limit_by": "tenant"}]},
    ],
    "global_limits": [{"model": "imagegen", "per_second": 5}],
}


def gateway_config(**overrides: Any) -> dict[str, Any]:
    config = copy.deepcopy(THREE_MODEL_GATEWAY)
    config.update(copy.deepcopy(overrides))
    return config


def plugin(config: dict[str, Any] | None = None, *, clock: Callable[[], float] | None = None,
           storage: Any = None, cls: type[TierQuota] = TierQuota) -> TierQuota:
    now = clock or (lambda: T0)
    return cls(config or gateway_config(), storage=storage if storage is not None else MemoryStorage(clock=now),
               clock=now)


def run(p: TierQuota, kong: FakeKong, phase: str = "access") -> Exited | None:
    try:
        getattr(p, phase)(kong)
    except Exited as exited:
        return exited
    return None
