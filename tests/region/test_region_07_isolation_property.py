"""Tenant isolation, property-based, through the Kong stand-in and real plugin-server processes.

Random sequences of callers (consumers of tenants with look-alike names, JWT identities with
crafted claims), models, client addresses, forged headers and path variants go through Kong's
phases: key-auth, ai-extraction-guard (state in real Redis) and ai-tier-quota. An independent
reference model says what every response must be if tenants are isolated -- which models a tenant
may call, which counters a request consumes, which blocks apply -- and every status and every
``RateLimit-Remaining`` the client reads must match it. A request that consumed, read or reset
another tenant's counters, or was blocked by another tenant's block, would make them differ.

Example counts stay modest (each example is a few dozen real RPC round trips).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins.region import Denylist
from kong_plugins.standin import KongStandIn, PluginServerSpec
from kong_plugins.storage import build_storage
from kong_plugins.testing.redis_servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(300)]

# Per-consumer budget per minute, per-tenant budget per hour: two windows, two headers to check.
# Tenant names that collide under naive key building ("a:b" joined, braces as hash tags, escapes).
TENANTS = ["acme", "acme:x", "acme%3Ax", "{acme}", "x|acme", "globex"]
MODELS = ["acme-chat", "globex-chat", "shared-embed", "m:1"]
OWNED = {
    "acme": {"acme-chat", "shared-embed"},
    "acme:x": {"acme-chat"},
    "acme%3Ax": {"m:1"},
    "{acme}": {"acme-chat", "m:1"},
    "x|acme": {"shared-embed"},
    "globex": {"globex-chat", "shared-embed"},
}
PER_CONSUMER, PER_TENANT = 3, 5
NATS = ["10.0.0.1", "10.0.0.2"]


@dataclass(frozen=True)
class Caller:
    key: str
    consumer_id: str
    tenant: str


# Two consumers per tenant; usernames and custom ids imitate other tenants and separators.
CALLERS = [Caller(f"key-{t}-{n}", "", t) for t in TENANTS for n in range(2)]
CONSUMER_NAMES = {c.key: (f"{TENANTS[(i + 1) % len(TENANTS)]}", f"{c.tenant}:{i}") for i, c in enumerate(CALLERS)}


def deck(guard_redis: dict[str, Any]) -> dict[str, Any]:
    services = [{"name": m, "url": f"http://{i}.models.internal", "routes": [
        {"name": f"r{i}", "paths": [f"/m/{i}"]}]} for i, m in enumerate(MODELS)]
    consumers = []
    for c in CALLERS:
        username, custom_id = CONSUMER_NAMES[c.key]
        consumers.append({"username": f"{username}#{c.key}", "custom_id": custom_id,
                          "tags": ["tier:std", f"tenant:{c.tenant}"], "keyauth_credentials": [{"key": c.key}]})
    quota = {
        "default_tier": "std",
        "tiers": [{"name": "std", "models": ["*"], "limits": [
            {"per_minute": PER_CONSUMER, "limit_by": "consumer"},
            {"per_hour": PER_TENANT, "limit_by": "tenant"}]}],
        "tenants": [{"name": t, "models": sorted(models)} for t, models in OWNED.items()],
    }
    return {
        "_format_version": "3.0", "services": services, "consumers": consumers,
        "plugins": [{"name": "key-auth", "config": {"key_names": ["apikey"]}},
                    {"name": "ai-extraction-guard", "config": {"storage": guard_redis}},
                    {"name": "ai-tier-quota", "config": quota}],
    }


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[KongStandIn, dict[str, Any]]]:
    prefix = tmp_path_factory.mktemp("iso")
    guard_redis = {"strategy": "redis", "host": redis_server.host, "port": redis_server.port}
    gw = KongStandIn.from_deck(deck(guard_redis), servers=[
        PluginServerSpec.suite("ai-tier-quota", prefix), PluginServerSpec.suite("ai-extraction-guard", prefix)])
    gw.start()
    try:
        yield gw, guard_redis
    finally:
        gw.close()


FORGED = [{}, {"X-Consumer-ID": "someone-else"}, {"X-AI-Tenant": "globex"}, {"X-Tenant": "acme"},
          {"X-Consumer-Custom-ID": "globex:0", "X-Credential-Identifier": "key-globex-0"}]
SUFFIXES = ["", "/", "/v1/chat", "?tenant=globex", "/%7Bacme%7D", "/..%2Fm%2F0"]

request_st = st.tuples(st.sampled_from(CALLERS), st.sampled_from(range(len(MODELS))), st.sampled_from(NATS),
                       st.sampled_from(FORGED), st.sampled_from(SUFFIXES))
block_st = st.lists(st.tuples(st.sampled_from(TENANTS), st.sampled_from(["consumer", "ip"]),
                              st.sampled_from(range(2)), st.sampled_from(NATS)), max_size=2)
_EXAMPLE = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(request_st, min_size=1, max_size=30), blocks=block_st)
def test_tenants_never_consume_read_or_block_each_other(
        gateway: tuple[KongStandIn, dict[str, Any]], redis_server: RedisServer,
        requests: list[Any], blocks: list[Any]) -> None:
    gw, guard_redis = gateway
    redis_server.flush()
    # Each example on its own stretch of Kong's clock: earlier examples' counters have drained.
    base = 1_767_225_600.0 + 100_000 * next(_EXAMPLE)
    consumer_ids = {c.key: gw.config.consumers[i].id for i, c in enumerate(CALLERS)}
    denylist = Denylist(build_storage(guard_redis), region=None)
    blocked: set[tuple[str, str]] = set()
    for tenant, kind, n, ip in blocks:
        subject = f"consumer:{consumer_ids[f'key-{tenant}-{n}']}" if kind == "consumer" else f"ip:{ip}"
        denylist.block(subject, tenant=tenant, ttl=600, who="property", why="isolation", now=base)
        blocked.add((tenant, subject))

    used: Counter[tuple[str, ...]] = Counter()
    for i, (caller, model_index, ip, forged, suffix) in enumerate(requests):
        model = MODELS[model_index]
        consumer = f"consumer:{consumer_ids[caller.key]}"
        r = gw.request("GET", f"/m/{model_index}{suffix}", headers={"apikey": caller.key, **forged}, client_ip=ip,
                       start_time=base + i * 0.001)
        where = f"request {i}: {caller.tenant!r} -> {model!r} from {ip}"
        if (caller.tenant, consumer) in blocked or (caller.tenant, f"ip:{ip}") in blocked:
            assert r.status == 403 and r.json()["message"] == "access suspended", where
            continue
        if model not in OWNED[caller.tenant]:
            assert r.status == 403 and r.json()["denied_by"] == "tenant_access", where
            continue
        mine, ours = (caller.tenant, model, consumer), (caller.tenant, model)
        if used[mine] < PER_CONSUMER and used[ours] < PER_TENANT:
            used[mine] += 1
            used[ours] += 1
            assert r.status == 200, where
            # what the caller reads: its own consumer budget and its own tenant's, nothing else
            assert r.headers["X-RateLimit-Remaining-Minute"] == str(PER_CONSUMER - used[mine]), where
            assert r.headers["X-RateLimit-Remaining-Hour"] == str(PER_TENANT - used[ours]), where
        else:
            assert r.status == 429 and r.json()["denied_by"] == "tier_rate", where


# -- crafted JWT claims ------------------------------------------------------------------------

SECRET = "k" * 32
ISSUERS = ["https://idp", "https://idp|x", "https://idp|"]
SUBJECTS = ["1", "x|1", "|x|1", "alice"]
claim_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def jwt_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KongStandIn]:
    prefix = tmp_path_factory.mktemp("isojwt")
    quota = {
        "default_tier": "std",
        "tiers": [{"name": "std", "models": ["*"], "limits": [
            {"per_minute": PER_CONSUMER, "limit_by": "consumer"},
            {"per_hour": PER_TENANT, "limit_by": "tenant"}]}],
        "identity": {"tenant_sources": ["jwt_claim"], "tier_sources": ["jwt_claim"],
                     "jwt": {"enabled": True, "algorithms": ["HS256"], "keys": [{"key": SECRET}]}},
    }
    gw = KongStandIn.from_deck({"_format_version": "3.0",
                                "services": [{"name": "chat", "url": "http://chat.internal",
                                              "routes": [{"name": "r", "paths": ["/chat"]}]}],
                                "plugins": [{"name": "ai-tier-quota", "config": quota}]},
                               servers=[PluginServerSpec.suite("ai-tier-quota", prefix)])
    gw.start()
    try:
        yield gw
    finally:
        gw.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.one_of(st.sampled_from(TENANTS), claim_text), st.sampled_from(ISSUERS),
                          st.sampled_from(SUBJECTS)), min_size=1, max_size=20))
def test_crafted_jwt_claims_never_share_counters_across_tenants_or_subjects(
        jwt_gateway: KongStandIn, calls: list[tuple[str, str, str]]) -> None:
    base = 1_767_225_600.0 + 100_000 * next(_EXAMPLE)
    now = int(time.time())
    used: Counter[tuple[str, ...]] = Counter()
    for i, (tenant, iss, sub) in enumerate(calls):
        token = jwt.encode({"tenant": tenant, "tier": "std", "iss": iss, "sub": sub, "exp": now + 3600},
                           SECRET, algorithm="HS256")
        r = jwt_gateway.request("POST", "/chat", headers={"Authorization": f"Bearer {token}"}, body=b"{}",
                                start_time=base + i * 0.001)
        mine, ours = (tenant, iss, sub), (tenant,)
        where = f"call {i}: tenant={tenant!r} iss={iss!r} sub={sub!r}"
        if used[mine] < PER_CONSUMER and used[ours] < PER_TENANT:
            used[mine] += 1
            used[ours] += 1
            assert r.status == 200, where
            assert r.headers["X-RateLimit-Remaining-Minute"] == str(PER_CONSUMER - used[mine]), where
            assert r.headers["X-RateLimit-Remaining-Hour"] == str(PER_TENANT - used[ours]), where
        else:
            assert r.status == 429, where

