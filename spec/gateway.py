"""What the specs know about a running gateway: where it is, and what its Admin API says it runs.

Everything that is a *choice* of the deployment (demo keys, the JWT secret, the inspector's block
status, failure modes, which routes carry the fail-closed guard) is read from Kong's Admin API, so
the specs check the gateway that is running rather than a copy of kong.yml. The *reference
numbers* of the deployment (issue 6: tiers, quotas, networks) are constants here: they are the
contract the gateway must honour, and a kong.yml that drifts from them fails the specs.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

# --- the reference deployment (issue 6) -----------------------------------------------------------
TEXTGEN = "/v1/chat/completions"
IMAGE = "/v1/images/analyze"
DOCQA = "/v1/docqa/ask"
CLASSIFIER = "/v1/models/classifier:predict"
ROUTES = (TEXTGEN, IMAGE, DOCQA, CLASSIFIER)

FREE, PREMIUM, INTERNAL = "free-app", "premium-app", "docqa-service"
FREE_PER_MINUTE = 10
FREE_TOKENS_PER_DAY = 20_000
PREMIUM_PER_SECOND = 10
PREMIUM_PER_MINUTE = 100
PREMIUM_TOKENS_PER_DAY = 1_000_000
IMAGE_PREMIUM_PER_MINUTE = 30
CLASSIFIER_FLOOD_PER_SECOND = 50

SUITE_PLUGINS = ("ai-tier-quota", "ai-prompt-inspector", "ai-extraction-guard")
INTERNAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))

#: Bounded waits: generous hang guards, never performance assertions.
HTTP_TIMEOUT = 15.0


def chat_body(text: str = "Write one sentence about the sea.", max_tokens: int = 8, **extra: Any) -> dict[str, Any]:
    return {"model": "demo-textgen", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}], **extra}


def is_internal(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split(",")[0].strip())
    except ValueError:
        return False
    return any(ip in net for net in INTERNAL_NETWORKS)


@dataclass(frozen=True)
class Endpoints:
    """Where Kong is, from the environment (see README.md section 'The Docker path')."""

    proxy_url: str | None
    admin_url: str | None
    external_proxy_url: str | None
    redis_urls: tuple[str, ...]

    @classmethod
    def from_env(cls) -> Endpoints:
        redis = os.environ.get("KONG_SPEC_REDIS_URL", "")
        return cls(
            proxy_url=os.environ.get("KONG_PROXY_URL") or None,
            admin_url=os.environ.get("KONG_ADMIN_URL") or None,
            external_proxy_url=os.environ.get("KONG_PROXY_URL_EXTERNAL") or None,
            redis_urls=tuple(u.strip() for u in redis.split(",") if u.strip()),
        )

    def unreachable_reason(self) -> str | None:
        """Why the specs cannot run against this gateway, or None when both APIs answer."""
        how = ("start the stack (docker compose -f docker/compose.yml up -d --build --wait) and set "
               "KONG_PROXY_URL / KONG_ADMIN_URL, or run the spec service (README.md section 'The Docker path')")
        if not self.proxy_url or not self.admin_url:
            return f"Kong end-to-end specs skipped: KONG_PROXY_URL and KONG_ADMIN_URL are not set; {how}"
        for what, url, path in (("KONG_ADMIN_URL", self.admin_url, "/status"), ("KONG_PROXY_URL", self.proxy_url, "/")):
            try:
                httpx.get(url.rstrip("/") + path, timeout=3.0)
            except httpx.HTTPError as exc:
                return f"Kong end-to-end specs skipped: {what}={url} is not reachable ({type(exc).__name__}); {how}"
        return None


@dataclass
class Gateway:
    """A snapshot of the running gateway's entities, from its Admin API."""

    admin: httpx.Client
    consumers: dict[str, dict[str, Any]] = field(default_factory=dict)  # username -> consumer
    key_auths: list[dict[str, Any]] = field(default_factory=list)
    jwts: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    plugins: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, admin: httpx.Client) -> Gateway:
        gw = cls(admin)
        gw.consumers = {c["username"]: c for c in gw._all("/consumers") if c.get("username")}
        gw.key_auths = gw._all("/key-auths")
        gw.jwts = gw._all("/jwts")
        gw.routes = gw._all("/routes")
        gw.plugins = gw._all("/plugins")
        return gw

    def _all(self, path: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        url: str | None = path
        while url:
            r = self.admin.get(url, params={"size": 1000} if url == path else None)
            r.raise_for_status()
            doc = r.json()
            out.extend(doc.get("data") or [])
            url = doc.get("next")
        return out

    def key_of(self, username: str) -> str:
        consumer = self.consumers.get(username)
        assert consumer is not None, f"the reference consumer {username!r} is missing from the gateway"
        keys = [k["key"] for k in self.key_auths if (k.get("consumer") or {}).get("id") == consumer["id"]]
        assert keys, f"consumer {username!r} has no key-auth credential"
        return str(keys[0])

    def route_of(self, path: str) -> dict[str, Any]:
        for route in self.routes:
            if path in (route.get("paths") or []):
                return route
        raise AssertionError(f"no route serves {path} (routes: {[r.get('paths') for r in self.routes]})")

    def plugins_on(self, path: str) -> list[dict[str, Any]]:
        """Enabled plugins that apply to a route (route, its service, or global; not consumer-scoped)."""
        route = self.route_of(path)
        service_id = (route.get("service") or {}).get("id")
        found = []
        for p in self.plugins:
            if not p.get("enabled", True) or p.get("consumer"):
                continue
            rid, sid = (p.get("route") or {}).get("id"), (p.get("service") or {}).get("id")
            if rid == route["id"] or (rid is None and sid == service_id) or (rid is None and sid is None):
                found.append(p)
        return found

    def plugin_on(self, path: str, name: str) -> dict[str, Any] | None:
        """The most specific instance of a plugin on a route (route beats service beats global)."""
        candidates = [p for p in self.plugins_on(path) if p["name"] == name]
        candidates.sort(key=lambda p: (p.get("route") is None, p.get("service") is None))
        return candidates[0] if candidates else None

    def storage_strategies(self) -> set[str]:
        return {str(((p.get("config") or {}).get("storage") or {}).get("strategy") or "memory")
                for p in self.plugins if p["name"] in SUITE_PLUGINS and "storage" in (p.get("config") or {})}


def send_all(client: httpx.Client, requests: Iterable[Mapping[str, Any]], workers: int) -> list[httpx.Response]:
    """Send requests concurrently (a burst), each a dict of httpx.Client.request keyword arguments."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda kw: client.request(**kw), list(requests)))


def poll(check: Any, timeout: float, interval: float = 0.25) -> Any:
    """Call ``check`` until it returns a truthy value or ``timeout`` seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    value = check()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = check()
    return value
