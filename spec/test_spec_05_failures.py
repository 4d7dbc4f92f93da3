"""Failures: a killed plugin server (Kong restarts it; the fail-closed guard refuses meanwhile) and Redis down.

These act on the compose stack through the docker CLI and skip with the reason where it is missing
(the ``spec`` compose service has none: run them from the host, see README.md section "The Docker path").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from .compose_control import REDIS_SERVICE, Compose
from .gateway import PREMIUM, TEXTGEN, Gateway, chat_body, poll
from .test_spec_03_inspection import INJECTION, inspector_block_status

pytestmark = pytest.mark.docker

OUTAGE_SECONDS = 4.0
GUARD_STATUS = 503


def guarded_plugins(gateway: Gateway, path: str) -> set[str]:
    """Suite plugins whose absence the route's post-function guard refuses (decision_mark on)."""
    if gateway.plugin_on(path, "post-function") is None:
        return set()
    return {p["name"] for p in gateway.plugins_on(path)
            if (p.get("config") or {}).get("decision_mark") is True}


def test_a_killed_inspector_server_fails_closed_and_kong_restarts_it(
        proxy: httpx.Client, gateway: Gateway, compose: Compose, fresh_counters: Callable[[], None]) -> None:
    assert "ai-prompt-inspector" in guarded_plugins(gateway, TEXTGEN), \
        "the reference gateway guards textgen's inspector with the fail-closed post-function"
    key = gateway.key_of(PREMIUM)
    blocked = inspector_block_status(gateway)
    before = set(compose.plugin_server_pids("ai-prompt-inspector"))
    assert before, "no ai-prompt-inspector server process in the Kong container"

    killer = compose.kill_plugin_server_popen("ai-prompt-inspector", OUTAGE_SECONDS)
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + OUTAGE_SECONDS + 30
        while killer.poll() is None and time.monotonic() < deadline:
            statuses.append(proxy.post(TEXTGEN, json=chat_body(INJECTION), headers={"apikey": key}).status_code)
            time.sleep(0.2)
    finally:
        out, err = killer.communicate(timeout=60)
    assert killer.returncode == 0, err
    killed = set(json.loads(out))
    assert before <= killed, (before, killed)
    # while the server was down, the injection was refused by the guard, never proxied
    assert GUARD_STATUS in statuses, statuses
    assert set(statuses) <= {GUARD_STATUS, blocked, 429}, statuses

    # Kong respawns the server (at most once a second): the inspector decides again
    def inspector_back() -> bool:
        r = proxy.post(TEXTGEN, json=chat_body(INJECTION), headers={"apikey": key})
        return r.status_code == blocked

    assert poll(inspector_back, timeout=30, interval=0.5), "Kong did not restart the inspector's server"
    after = set(compose.plugin_server_pids("ai-prompt-inspector"))
    assert after and not after & killed, (after, killed)
    assert proxy.post(TEXTGEN, json=chat_body(), headers={"apikey": key}).status_code == 200


def test_redis_down_follows_each_plugins_failure_mode_and_recovers(
        proxy: httpx.Client, gateway: Gateway, compose: Compose, fresh_counters: Callable[[], None]) -> None:
    if gateway.storage_strategies() != {"redis"}:
        pytest.skip(f"needs the single-Redis gateway; this one uses {sorted(gateway.storage_strategies())}")
    modes = {name: (gateway.plugin_on(TEXTGEN, name) or {}).get("config", {}).get("failure_mode")
             for name in ("ai-tier-quota", "ai-extraction-guard")}
    expect_closed = "closed" in modes.values()
    key = gateway.key_of(PREMIUM)
    compose.stop(REDIS_SERVICE)
    try:
        started = time.monotonic()
        r = proxy.post(TEXTGEN, json=chat_body(), headers={"apikey": key})
        elapsed = time.monotonic() - started
        if expect_closed:
            assert r.status_code == 503, (modes, r.status_code, r.text)
        else:
            assert r.status_code == 200, (modes, r.status_code, r.text)
            assert r.headers.get("X-AI-Quota-Degraded") == "storage-unavailable" or modes["ai-tier-quota"] is None
        # bounded: Redis timeouts are milliseconds, not the client's patience (a hang guard, generous)
        assert elapsed < 10, elapsed
    finally:
        compose.start(REDIS_SERVICE)

    def back_to_normal() -> bool:
        r = proxy.post(TEXTGEN, json=chat_body(), headers={"apikey": key})
        return r.status_code == 200 and "X-AI-Quota-Degraded" not in r.headers

    assert poll(back_to_normal, timeout=60, interval=1.0), "the gateway did not recover after Redis came back"
