"""End-to-end specs against a running Kong with the suite (docker/compose.yml, or any deployment).

Not part of the default test run (``testpaths = ["tests"]``): run ``python -m pytest spec/`` with
``KONG_PROXY_URL`` and ``KONG_ADMIN_URL`` set, or ``docker compose -f docker/compose.yml --profile
spec run --rm spec``. When Kong is not reachable, one skipped spec says why and the others are deselected.

Optional environment:

- ``KONG_PROXY_URL_EXTERNAL``: the proxy reached from an address outside the private ranges, for
  the network specs (the compose spec service has it through its edge network);
- ``KONG_SPEC_REDIS_URL``: the gateway's Redis (comma-separated URLs for a cluster's masters); the
  specs that assert exact quota counts flush it first. Without it they flush through the docker
  CLI, and skip when neither is available. It is destructive: point it at a demo stack only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .compose_control import Compose
from .gateway import HTTP_TIMEOUT, PREMIUM, TEXTGEN, Endpoints, Gateway, chat_body

_ENDPOINTS = Endpoints.from_env()
SPEC_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "docker: acts on the compose stack through the docker CLI")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a reachable Kong: one skipped spec carrying the reason, the others deselected.

    One message instead of one skip per spec: the reason is the same for all of them.
    """
    specs = [item for item in items if SPEC_DIR in item.path.resolve().parents]
    if not specs:
        return
    reason = _ENDPOINTS.unreachable_reason()
    if reason is None:
        return
    first, rest = specs[0], specs[1:]
    first.add_marker(pytest.mark.skip(reason=f"{reason} ({len(specs)} specs not run)"))
    if rest:
        config.hook.pytest_deselected(items=rest)
        dropped = set(map(id, rest))
        items[:] = [item for item in items if id(item) not in dropped]


@pytest.fixture(scope="session")
def endpoints() -> Endpoints:
    return _ENDPOINTS


@pytest.fixture(scope="session")
def admin(endpoints: Endpoints) -> Iterator[httpx.Client]:
    assert endpoints.admin_url
    with httpx.Client(base_url=endpoints.admin_url, timeout=HTTP_TIMEOUT) as client:
        yield client


@pytest.fixture(scope="session")
def proxy(endpoints: Endpoints) -> Iterator[httpx.Client]:
    assert endpoints.proxy_url
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with httpx.Client(base_url=endpoints.proxy_url, timeout=HTTP_TIMEOUT, limits=limits) as client:
        yield client


@pytest.fixture(scope="session")
def external_proxy(endpoints: Endpoints) -> Iterator[httpx.Client]:
    if not endpoints.external_proxy_url:
        pytest.skip("needs KONG_PROXY_URL_EXTERNAL: the proxy reached from a non-private address "
                    "(the compose spec service sets it)")
    with httpx.Client(base_url=endpoints.external_proxy_url, timeout=HTTP_TIMEOUT) as client:
        yield client


@pytest.fixture(scope="session")
def gateway(admin: httpx.Client) -> Gateway:
    return Gateway.load(admin)


@pytest.fixture(scope="session")
def seen_address(proxy: httpx.Client, gateway: Gateway) -> str:
    """The client address Kong sees for KONG_PROXY_URL: the demo model echoes Kong's X-Real-IP."""
    r = proxy.post(TEXTGEN, json=chat_body(), headers={"apikey": gateway.key_of(PREMIUM)})
    assert r.status_code == 200, r.text
    address = (r.json().get("gateway") or {}).get("x_real_ip")
    assert address, f"the textgen upstream did not echo X-Real-IP: {r.text}"
    return str(address)


@pytest.fixture(scope="session")
def compose() -> Compose:
    found, why = Compose.detect()
    if found is None:
        pytest.skip(why)
    return found


@pytest.fixture
def fresh_counters(endpoints: Endpoints, gateway: Gateway) -> Callable[[], None]:
    """Resets the gateway's quota and guard state, so that counts start from zero; skips when it cannot."""
    strategies = gateway.storage_strategies()
    if strategies - {"redis", "redis-cluster"}:
        pytest.skip(f"exact counts need the suite's state in Redis; this gateway uses {sorted(strategies)}")
    if endpoints.redis_urls:
        import redis

        def flush() -> None:
            for url in endpoints.redis_urls:
                client = redis.Redis.from_url(url, socket_timeout=5)
                try:
                    client.flushall()
                finally:
                    client.close()
    else:
        compose, why = Compose.detect()
        if compose is None:
            pytest.skip(f"exact counts need a fresh counter state: set KONG_SPEC_REDIS_URL, or {why}")

        def flush() -> None:
            compose.flush_redis()
    flush()
    return flush
