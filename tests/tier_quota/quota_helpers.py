"""A fake ``kong`` for handler unit tests, the three-model gateway config, and serialize() answers.

The fake records every PDK call (one entry = one round trip in real Kong) and raises on
``kong.response.exit`` as the runtime does, so handlers run their real code paths. It knows the
phase it serves: ``kong.log.serialize`` outside the log phase fails the test (in Kong it is a Lua
error and a 500); before the log phase the request facts come from the companion's table in
``kong.ctx.shared`` (``companion=True``, what ``ai-suite-context`` would publish) or from the
individual PDK calls of the fallback.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from kong_plugins.companion import FACTS_KEY
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
                 headers: dict[str, str] | None = None, companion: bool = True) -> None:
        self.serialized = serialized
        self.body = body
        self.request_headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.companion = companion
        self.phase = "access"
        self.calls: list[str] = []
        self.response_headers: dict[str, str] = {}
        self.upstream_headers: dict[str, str] = {}
        self.response_body: bytes | None = None
        self.shared: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        return _Node(self, f"kong.{name}")

    def call(self, method: str, args: tuple[Any, ...]) -> Any:
        self.calls.append(method)
        data = self.serialized
        request = data.get("request", {})
        if method == "kong.log.serialize":
            assert self.phase == "log", f"kong.log.serialize in {self.phase}: a Lua error and Kong's 500"
            return json.dumps(data)
        if method == "kong.ctx.shared.get":
            if args[0] == FACTS_KEY:
                return suite_facts(data) if self.companion else None
            return self.shared.get(args[0])
        if method == "kong.ctx.shared.set":
            self.shared[args[0]] = args[1]
            return None
        fallback: dict[str, Callable[[], Any]] = {
            "kong.client.get_consumer": lambda: data.get("consumer"),
            "kong.client.get_credential": lambda: (
                {"id": data["authenticated_entity"]["id"]} if "authenticated_entity" in data else None),
            "kong.router.get_route": lambda: data.get("route"),
            "kong.router.get_service": lambda: data.get("service"),
            "kong.client.get_forwarded_ip": lambda: data.get("client_ip"),
            "kong.request.get_start_time": lambda: data.get("started_at"),
            "kong.request.get_method": lambda: request.get("method"),
            "kong.request.get_path_with_query": lambda: request.get("uri"),
        }
        if method in fallback:
            return fallback[method]()
        if method == "kong.nginx.get_var":
            if args[0] == "request_length":
                return str(request.get("size", 0))
            if args[0] == "ssl_client_verify":
                return (request.get("tls") or {}).get("client_verify")
            return None
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


def suite_facts(serialized: dict[str, Any]) -> dict[str, Any]:
    """What ``ai-suite-context`` publishes for a request that serializes to ``serialized``."""
    request = serialized.get("request", {})
    facts: dict[str, Any] = {
        "request": {k: request[k] for k in ("method", "uri", "size", "tls") if k in request},
        "client_ip": serialized.get("client_ip"),
        "started_at": serialized.get("started_at"),
    }
    content_type = (request.get("headers") or {}).get("content-type")
    if content_type is not None:  # the one header it publishes
        facts["request"]["headers"] = {"content-type": content_type}
    for name in ("route", "service"):
        if serialized.get(name):
            facts[name] = {k: serialized[name][k] for k in ("id", "name") if k in serialized[name]}
    consumer = serialized.get("consumer")
    if consumer:
        facts["consumer"] = {k: consumer[k] for k in ("id", "username", "custom_id", "tags") if k in consumer}
    if serialized.get("authenticated_entity"):
        facts["authenticated_entity"] = {"id": serialized["authenticated_entity"]["id"]}
    return facts


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
    kong.phase = phase
    try:
        getattr(p, phase)(kong)
    except Exited as exited:
        return exited
    return None
