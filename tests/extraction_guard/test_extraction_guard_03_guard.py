"""The guard over real storage: denylist order, throttle, TTLs in request time, round trips, failures."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import jwt
import numpy as np
import pytest

from kong_plugins.companion import FACTS_KEY
from kong_plugins.errors import StorageError
from kong_plugins.extraction_guard import Plugin
from kong_plugins.extraction_guard.config import FeatureStats, GuardConfig, Mitigations
from kong_plugins.extraction_guard.detector import BLOCK, REVOKE, Assessment, Observation
from kong_plugins.extraction_guard.guard import (
    ExtractionGuard,
    Identity,
    SoloGroup,
    StateCache,
    Verdict,
    _decode_state,
    _encode_state,
    _solo_record,
    build_observation,
)
from kong_plugins.extraction_guard.handler import BODY_KEY, identify
from kong_plugins.extraction_guard.payloads import llm_request, parse_json
from kong_plugins.extraction_guard.state import ClientState
from kong_plugins.identity import parse_facts
from kong_plugins.storage import MemoryStorage, Script, ScriptArg
from kong_plugins.storage.config import build_storage, reset_shared_memory_storages
from kong_plugins.storage.memory import StoredObject

from .guard_helpers import FEATURE_STATS, TRAIN, predict_body

T0 = 1_700_000_000.0


class CountingStorage(MemoryStorage):
    """Memory storage that counts round trips (every public call is one on Redis)."""

    def __init__(self) -> None:
        super().__init__(clock=lambda: T0)
        self.calls: list[str] = []
        self.fail = False

    def _count(self, name: str) -> None:
        if self.fail:
            raise StorageError("down")
        self.calls.append(name)

    def run(self, script: Script, keys: Sequence[str], args: Sequence[ScriptArg], now: float | None = None) -> Any:
        self._count("run")
        return super().run(script, keys, args, now)

    def mget(self, keys: Sequence[str], now: float | None = None) -> list[str | None]:
        self._count("mget")
        return super().mget(keys, now)

    def set(self, key: str, value: str, ttl: float | None = None, now: float | None = None) -> None:
        self._count("set")
        super().set(key, value, ttl, now)

    # The guard keeps its states as objects on this backend: the same reads and writes, counted
    # as the round trips they are on Redis.
    def get_objects(self, keys: Sequence[str], now: float | None = None, renew_ttl: float | None = None) -> list[Any]:
        self._count("mget")
        return super().get_objects(keys, now, renew_ttl)

    def set_object(self, key: str, value: StoredObject, ttl: float, now: float | None = None) -> None:
        self._count("set")
        super().set_object(key, value, ttl, now)

    def get(self, key: str, now: float | None = None) -> str | None:
        self._count("get")
        return super().get(key, now)


ALICE = Identity(client="consumer:alice", group="ip:10.0.0.1", credential="cred-alice")
BOB = Identity(client="consumer:bob", group="ip:10.0.0.2", credential="cred-bob")


def _publish(guard: ExtractionGuard, ident: Identity, level: int, now: float, ttl: float = 600) -> None:
    a = Assessment(level=level, previous_level=0, extraction=9.0, abuse=0.0, evidence=(), totals={},
                   publish=True, until=now + ttl)
    guard._publish(ident.client, ident, a, now)


def test_access_takes_one_round_trip_and_a_throttled_client_two() -> None:
    store = CountingStorage()
    guard = ExtractionGuard(GuardConfig(throttle_limit=2), store)
    assert guard.check_access(ALICE, T0, predict_body(TRAIN[0])).action == "allow"
    assert store.calls == ["mget"]
    store.calls.clear()
    guard.storage.set(guard.verdict_key(ALICE.client), Verdict(2, T0 + 900, 6.0).encode(), ttl=900, now=T0)
    store.calls.clear()
    outcomes = [guard.check_access(ALICE, T0 + i, None) for i in range(3)]
    assert [o.action for o in outcomes] == ["flag", "flag", "throttle"]
    assert outcomes[0].upstream_headers == {"X-Extraction-Risk": "throttle; score=6.00; tenant=default"}
    assert outcomes[2].status == 429 and int(outcomes[2].headers["Retry-After"]) >= 1
    assert store.calls == ["mget", "run"] * 3


def test_revocation_is_checked_before_anything_and_outlives_the_block() -> None:
    guard = ExtractionGuard(GuardConfig(), MemoryStorage(clock=lambda: T0))
    _publish(guard, ALICE, REVOKE, T0, ttl=3600)
    r = guard.check_access(ALICE, T0 + 10, None)
    assert (r.action, r.status) == ("revoke", 401)
    # the same credential from another IP, as another client key: still revoked
    other = Identity(client="ip:192.0.2.9", group=None, credential="cred-alice")
    assert guard.check_access(other, T0 + 20, None).status == 401
    assert guard.check_access(BOB, T0 + 20, None).status is None


def test_a_group_block_covers_every_key_of_the_group_until_its_ttl_in_request_time() -> None:
    guard = ExtractionGuard(GuardConfig(), MemoryStorage(clock=lambda: T0))
    group_only = Identity(client="ip:10.0.0.1", group=None)
    guard.storage.set(guard.verdict_key("ip:10.0.0.1"), Verdict(BLOCK, T0 + 100, 12.0).encode(), ttl=1000,
                      now=T0)
    assert guard.check_access(ALICE, T0 + 50, None).status == 403
    assert guard.check_access(group_only, T0 + 50, None).status == 403
    # replaying later traffic: the verdict's own expiry (request time) decides, not the wall clock
    assert guard.check_access(ALICE, T0 + 101, None).status is None


def test_shadow_mode_reports_what_it_would_do_and_lets_the_request_through() -> None:
    guard = ExtractionGuard(GuardConfig(shadow=True), MemoryStorage(clock=lambda: T0))
    _publish(guard, ALICE, BLOCK, T0)
    r = guard.check_access(ALICE, T0 + 1, None)
    assert r.status is None and r.shadow_action == "block"


def test_mitigations_apply_without_storage_beyond_the_denylist_read() -> None:
    store = CountingStorage()
    guard = ExtractionGuard(GuardConfig(mitigations=Mitigations(max_logit_bias_entries=2, max_instances=4)), store)
    body = b'{"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 1, "2": 1, "3": 1}}'
    r = guard.check_access(ALICE, T0, body)
    assert (r.action, r.status, r.message) == ("refuse", 400, "at most 2 logit_bias entries")
    r = guard.check_access(ALICE, T0, b'{"instances": [[1], [2], [3], [4], [5]]}')
    assert (r.status, r.message) == (400, "at most 4 instances per request")
    assert store.calls == ["mget", "mget"]


_CHAT = '"messages": [{"role": "user", "content": "x"}]'


@pytest.mark.parametrize(("mitigations", "body", "message"), [
    (Mitigations(refuse_logit_bias_with_logprobs=True), '{"logit_bias": {"1": 1}, "logprobs": true, ' + _CHAT + '}',
     "logit_bias cannot be combined with logprobs on this API"),
    (Mitigations(max_top_logprobs=5), '{"top_logprobs": 6, ' + _CHAT + '}', "top_logprobs is capped at 5"),
    (Mitigations(max_top_logprobs=5), '{"logprobs": 6}', "top_logprobs is capped at 5"),
    (Mitigations(max_logit_bias_entries=1), '{"logit_bias": {"1": 1, "2": 1}}', "at most 1 logit_bias entries"),
    (Mitigations(max_instances=1), '{"instances": [[1], [2]]}', "at most 1 instances per request"),
    # keys written with JSON escapes: the same keys to the model's parser, neither name in the bytes
    (Mitigations(max_top_logprobs=5), '{"top_\\u006cogprobs": 6, ' + _CHAT + '}', "top_logprobs is capped at 5"),
    (Mitigations(refuse_logit_bias_with_logprobs=True),
     '{"\\u006cogit_bias": {"1": 1}, "\\u006c\\u006fgprobs": true, ' + _CHAT + '}',
     "logit_bias cannot be combined with logprobs on this API"),
    (Mitigations(max_logit_bias_entries=1), '{"logit\\u005fbias": {"1": 1, "2": 1}}', "at most 1 logit_bias entries"),
])
def test_each_mitigation_alone_refuses_a_body_breaking_it(mitigations: Mitigations, body: str, message: str) -> None:
    # Each switch on its own (access decides once whether any is on) and bodies holding only one of
    # the LLM keys (the pre-filter looks for a byte both keys share before searching for either).
    guard = ExtractionGuard(GuardConfig(mitigations=mitigations), MemoryStorage(clock=lambda: T0))
    r = guard.check_access(ALICE, T0, body.encode())
    assert (r.action, r.status, r.message) == ("refuse", 400, message)
    assert guard.check_access(ALICE, T0, predict_body(TRAIN[0])).status is None


_KNOWN = {"consumer": {"id": "c-1"}, "authenticated_entity": {"id": "cred-1"}, "client_ip": "10.0.0.7"}
_ANONYMOUS = {"client_ip": "10.0.0.7"}


@pytest.mark.parametrize(("facts", "client_by", "group_by", "client", "group"), [
    (_KNOWN, "consumer", "ip", "consumer:c-1", "ip:10.0.0.7"),
    (_KNOWN, "credential", "ip", "credential:cred-1", "ip:10.0.0.7"),
    (_KNOWN, "ip", "ip", "ip:10.0.0.7", None),  # an IP client is its own IP group
    (_ANONYMOUS, "consumer", "ip", "ip:10.0.0.7", None),
    (_ANONYMOUS, "credential", "tenant", "ip:10.0.0.7", "tenant:acme"),
    (_KNOWN, "tenant", "tenant", "tenant:acme", None),  # a tenant client is its own tenant group
    (_KNOWN, "tenant", "ip", "tenant:acme", "ip:10.0.0.7"),
    (_KNOWN, "consumer", "tenant", "consumer:c-1", "tenant:acme"),
    (_KNOWN, "consumer", "ip_prefix", "consumer:c-1", "net:10.0.0.0/24"),
    (_ANONYMOUS, "ip", "ip_prefix", "ip:10.0.0.7", "net:10.0.0.0/24"),
    (_KNOWN, "consumer", "none", "consumer:c-1", None),
])
def test_the_client_and_its_group_follow_client_by_and_group_by(
        facts: dict[str, Any], client_by: str, group_by: str, client: str, group: str | None) -> None:
    ident = identify(parse_facts(facts), GuardConfig(client_by=client_by, group_by=group_by), "acme")
    assert (ident.client, ident.group, ident.tenant, ident.ip) == (client, group, "acme", "10.0.0.7")


def test_storage_failure_surfaces_as_storage_error_for_the_failure_mode_to_decide() -> None:
    store = CountingStorage()
    store.fail = True
    guard = ExtractionGuard(GuardConfig(), store)
    with pytest.raises(StorageError):
        guard.check_access(ALICE, T0, None)


def test_learning_blocks_an_attacker_and_every_node_sees_it_through_the_shared_store() -> None:
    store = MemoryStorage(clock=lambda: T0)
    cfg = GuardConfig()
    node_a, node_b = ExtractionGuard(cfg, store), ExtractionGuard(cfg, store)  # two gateway nodes
    rng = np.random.default_rng(0)
    t = T0
    for i in range(300):  # benign traffic of 20 clients warms both nodes' baselines
        t += 1
        benign = Identity(client=f"consumer:b{i % 20}", group="ip:10.0.0.2", credential=f"cred-b{i % 20}")
        for node in (node_a, node_b):
            body = predict_body(TRAIN[rng.integers(len(TRAIN))])
            node.learn(benign, build_observation(cfg, t, "predict", body))
    decisions = []
    for _ in range(3):
        t += 1
        body = predict_body(rng.uniform(TRAIN.min(axis=0), TRAIN.max(axis=0)))
        assert node_a.check_access(ALICE, t, body).status is None
        decisions += node_a.learn(ALICE, build_observation(cfg, t, "predict", body))
    assert node_b.check_access(ALICE, t + 1, None).status == 403
    assert node_b.check_access(BOB, t + 1, None).status is None
    levels = [(d.subject, d.assessment.level_name) for d in decisions]
    assert ("client", "block") in levels
    record = decisions[-1].record()
    assert record["event"] == "ai-extraction-guard.decision" and "off_grid" in record["totals"]
    # the analyst's context: the client's ratios and sketches, never its inputs
    assert record["profile"]["requests"] >= 3 and record["profile"]["off_model_ratio"] > 0
    assert "instances" not in json.dumps(record)


def test_learning_round_trips_per_request() -> None:
    store = CountingStorage()
    guard = ExtractionGuard(GuardConfig(), store)
    guard.learn(ALICE, Observation(T0, "predict", 100, rows=TRAIN[:1]))
    # one read of client+group state, one write each; verdicts only when a level is reached
    assert store.calls == ["mget", "set", "set"]
    # Seen before, on the memory backend: the read returns the state object itself and renews its
    # TTL -- nothing to write back (the group's record is fresh).
    store.calls.clear()
    ttl = GuardConfig().state_ttl_s
    guard.learn(ALICE, Observation(T0 + 60, "predict", 100, rows=TRAIN[1:2]))
    assert store.calls == ["mget"]
    state = _decode_state(store.get(ExtractionGuard.state_key(ALICE.client), now=T0 + ttl + 30))
    assert state is not None and state.n == 2  # alive past the first write's TTL: renewed by the read


class _LogPDK:
    """The PDK calls of the log phase, answered in process: serialize's JSON text and the body
    the access phase stashed in ``kong.ctx.shared``."""

    def __init__(self, serialized: str, body: bytes, tenant: str | None = None) -> None:
        self.lines: list[str] = []
        shared: dict[str, Any] = {BODY_KEY: body.decode()}
        if tenant is not None:
            shared[BODY_KEY] = {"body": body.decode(), "tenant": tenant}
        self.log = SimpleNamespace(serialize=lambda: serialized, warn=self.lines.append,
                                   err=self.lines.append, notice=self.lines.append)
        self.ctx = SimpleNamespace(shared=SimpleNamespace(get=shared.get))
        self.request = SimpleNamespace(get_header=lambda name: None)
        self.client = SimpleNamespace(tls=SimpleNamespace(get_full_client_certificate_chain=self._no_tls))

    @staticmethod
    def _no_tls() -> str:
        # what Kong's log timer answers: lua-kong-nginx-module's get_full_client_certificate_chain
        # allows rewrite/access/balancer/content/log, and ngx.get_phase() in a timer is "timer"
        raise RuntimeError("API disabled in the current context")


@pytest.mark.parametrize("latency", [12.5, float("nan")], ids=["plain", "nan"])
def test_the_log_phase_learns_from_serialize_text_even_with_values_strict_json_parsers_refuse(
        latency: float) -> None:
    plugin = Plugin({"storage": {"strategy": "memory"}})
    body = predict_body(TRAIN[0])
    serialized = json.dumps({  # json.dumps writes NaN as Kong's cjson does: a bare NaN token
        "request": {"method": "POST", "uri": "/v1/models/m:predict", "size": len(body)},
        "response": {"status": 200, "size": 300}, "route": {"id": "r1"}, "client_ip": "10.0.0.1",
        "consumer": {"id": f"c-{latency}"}, "started_at": T0 * 1000, "latencies": {"request": latency}})
    for _ in range(2):
        plugin.log(_LogPDK(serialized, body))  # type: ignore[arg-type]
    raw = plugin.storage.get(ExtractionGuard.state_key(f"consumer:c-{latency}"), now=T0)
    state = ClientState.from_bytes(raw.encode("latin-1")) if raw else None
    assert state is not None and state.n == 2


def test_the_decoded_state_cache_stays_within_its_memory_budget_counting_each_ring_at_capacity() -> None:
    # A client's first input allocates the whole ring (16 x 64 float32 = 4 KB) while its stored
    # text is ~0.5 KB: a budget counted in text alone held four times its size.
    cache = StateCache(max_bytes=64 * 1024)
    for i in range(100):
        st = ClientState.new(T0)
        st.push_row(np.full(64, float(i), dtype=np.float32), 16)
        cache.put(f"client-{i}", _encode_state(st), st)
    assert 0 < len(cache) <= 64 * 1024 // (16 * 64 * 4)
    assert cache.bytes_held <= 64 * 1024


def test_the_log_phase_learns_under_the_tenant_access_resolved_even_from_a_client_certificate() -> None:
    """mTLS tenants: the certificate is readable in access, not in Kong's log timer. The access
    phase hands the tenant over with the body, so learning lands in the tenant's state -- not in
    an error, and not in the default tenant's."""
    plugin = Plugin({"storage": {"strategy": "memory"}, "identity": {
        "tenant_sources": ["mtls_subject"],
        "mtls": {"enabled": True, "tenants": {"CN=acme-batch": "acme"}}}})
    body = predict_body(TRAIN[0])
    serialized = json.dumps({
        "request": {"method": "POST", "uri": "/v1/models/m:predict", "size": len(body),
                    "tls": {"version": "TLSv1.3", "client_verify": "SUCCESS"}},
        "response": {"status": 200, "size": 300}, "route": {"id": "r1"}, "client_ip": "10.0.0.1",
        "consumer": {"id": "c-mtls"}, "started_at": T0 * 1000})
    pdk = _LogPDK(serialized, body, tenant="acme")
    plugin.log(pdk)  # type: ignore[arg-type]
    raw = plugin.storage.get(ExtractionGuard.state_key("consumer:c-mtls", "acme"), now=T0)
    assert raw and ClientState.from_bytes(raw.encode("latin-1")).n == 1
    assert plugin.storage.get(ExtractionGuard.state_key("consumer:c-mtls"), now=T0) is None
    # without the tenant in the hand-off the log phase would have to read the certificate: it fails
    with pytest.raises(RuntimeError, match="API disabled"):
        plugin.log(_LogPDK(serialized, body))  # type: ignore[arg-type]


class _PhasesPDK:
    """Access then log, answered in process: the companion's facts in ``kong.ctx.shared``, the body,
    and serialize's JSON text -- counting the serialize calls."""

    def __init__(self, facts: dict[str, Any], body: bytes) -> None:
        self.serialize_calls = 0
        self.shared: dict[str, Any] = {FACTS_KEY: facts}
        self.lines: list[str] = []

        def serialize() -> str:
            self.serialize_calls += 1
            return json.dumps(facts)

        self.log = SimpleNamespace(serialize=serialize, warn=self.lines.append, err=self.lines.append,
                                   notice=self.lines.append)
        self.ctx = SimpleNamespace(shared=SimpleNamespace(get=self.shared.get, set=self.shared.__setitem__))
        self.request = SimpleNamespace(get_raw_body=lambda limit: body, get_header=lambda name: None)
        self.service = SimpleNamespace(request=SimpleNamespace(set_headers=lambda headers: None))


@pytest.mark.parametrize("kind", ["predict", "chat"])
def test_the_log_phase_learns_the_same_from_the_access_hand_off_as_from_serialize(kind: str) -> None:
    # Access hands the request's facts to the log phase with the body, so the log phase asks Kong
    # for serialize only when it needs the response's size (an LLM request without a tap). What it
    # learns must be what it learned from serialize: compare the stored states byte for byte.
    body = predict_body(TRAIN[0]) if kind == "predict" else json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}).encode()
    facts = {"request": {"method": "POST", "uri": "/v1/x", "size": len(body) + 150},
             "response": {"status": 200, "size": 3000}, "route": {"id": "r1"}, "client_ip": "10.0.0.1",
             "consumer": {"id": "c1"}, "authenticated_entity": {"id": "cred-1"}, "started_at": T0 * 1000}
    reset_shared_memory_storages()  # a store per process and size: two sizes, two stores
    handed = Plugin({"storage": {"strategy": "memory", "memory_max_keys": 1001}})
    legacy = Plugin({"storage": {"strategy": "memory", "memory_max_keys": 1002}})
    for i in range(3):
        facts["started_at"] = (T0 + i) * 1000
        pdk = _PhasesPDK(facts, body)
        handed.access(pdk)  # type: ignore[arg-type]
        handed.log(pdk)  # type: ignore[arg-type]
        assert pdk.serialize_calls == (1 if kind == "chat" else 0)
        legacy.log(_LogPDK(json.dumps(facts), body))  # type: ignore[arg-type]  # body-only hand-off
    for key in (ExtractionGuard.state_key("ip:10.0.0.1"), ExtractionGuard.state_key("consumer:c1")):
        ours, theirs = handed.storage.get(key, now=T0), legacy.storage.get(key, now=T0)
        assert ours is not None and ours == theirs
    state = ClientState.from_bytes(ours.encode("latin-1"))
    assert state.n == 3 and (state.out_tokens > 0) == (kind == "chat")


@pytest.mark.parametrize(("route", "method", "handed_route"), [
    ({"id": "r1", "name": "predict"}, "POST", "r1"),
    ({"name": "predict"}, "post", "predict"),  # a method in any case reads the body
    ({}, "Put", "-"),
    (None, "PATCH", "/v1/x"),  # not routed: the path without its query
])
def test_access_hands_the_route_and_the_body_of_any_body_method_to_the_log_phase(
        route: dict[str, str] | None, method: str, handed_route: str) -> None:
    reset_shared_memory_storages()
    plugin = Plugin({"storage": {"strategy": "memory"}})
    body = predict_body(TRAIN[0])
    facts = {"request": {"method": method, "uri": "/v1/x?version=2", "size": len(body) + 150, "body": body.decode()},
             "route": route, "client_ip": "10.0.0.1", "consumer": {"id": "c1"}, "started_at": T0 * 1000}
    pdk = _PhasesPDK(facts, b"")
    plugin.access(pdk)  # type: ignore[arg-type]
    handed = pdk.shared[BODY_KEY]
    assert (handed["route"], handed["body"], handed["client"]) == (handed_route, body.decode(), "consumer:c1")
    get = _PhasesPDK({**facts, "request": {**facts["request"], "method": "GET"}}, b"")
    plugin.access(get)  # type: ignore[arg-type]
    assert BODY_KEY not in get.shared


def test_access_takes_the_tenant_from_a_verified_jwt_when_identity_verifies_one() -> None:
    # The one configuration where access asks Kong for more than the facts to name the tenant.
    secret = "a-test-secret-of-32-bytes-or-more!!"
    plugin = Plugin({"storage": {"strategy": "memory"}, "identity": {
        "tenant_sources": ["jwt_claim"], "jwt": {"enabled": True, "algorithms": ["HS256"], "keys": [{"key": secret}],
                                                 "require_exp": False}}})
    body = predict_body(TRAIN[0])
    facts = {"request": {"method": "POST", "uri": "/v1/x", "size": len(body) + 150, "body": body.decode()},
             "route": {"id": "r1"}, "client_ip": "10.0.0.1", "consumer": {"id": "c1"}, "started_at": T0 * 1000}
    for token, tenant in ((jwt.encode({"sub": "u1", "tenant": "acme"}, secret, algorithm="HS256"), "acme"),
                          (None, "default")):
        pdk = _PhasesPDK(facts, b"")
        pdk.request = SimpleNamespace(get_raw_body=lambda limit: b"", get_header=lambda name, token=token: (
            f"Bearer {token}" if token and name == "authorization" else None))
        plugin.access(pdk)  # type: ignore[arg-type]
        assert pdk.shared[BODY_KEY]["tenant"] == tenant


@pytest.mark.parametrize("kind", ["predict", "chat"])
def test_a_hand_off_with_wrong_types_falls_back_to_serialize_read_once(kind: str) -> None:
    reset_shared_memory_storages()
    plugin = Plugin({"storage": {"strategy": "memory"}})
    body = predict_body(TRAIN[0]) if kind == "predict" else json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}).encode()
    facts = {"request": {"method": "POST", "uri": "/v1/x", "size": 10}, "route": {"id": "r1"},
             "response": {"status": 200, "size": 3000},
             "client_ip": "10.0.0.1", "consumer": {"id": "c9"}, "started_at": T0 * 1000}
    pdk = _PhasesPDK(facts, body)
    pdk.shared[BODY_KEY] = {"body": body.decode(), "tenant": "default", "client": "consumer:c9",
                            "route": "r1", "t": "yesterday", "size": 10}
    plugin.log(pdk)  # type: ignore[arg-type]
    # the request's facts and, for chat, the response's size: from one serialize call
    assert pdk.serialize_calls == 1
    raw = plugin.storage.get(ExtractionGuard.state_key("consumer:c9"), now=T0)
    assert raw is not None and (ClientState.from_bytes(raw.encode("latin-1")).out_tokens > 0) == (kind == "chat")


def _axis_steps(n: int) -> list[np.ndarray]:
    x0 = TRAIN[0]
    return [x0] + [x0 + np.eye(len(x0))[i] * 0.3 for i in range(n)]


def _group_state(store: MemoryStorage, group: str) -> ClientState | None:
    raw = store.get(ExtractionGuard.state_key(group), now=T0)
    return ClientState.from_bytes(raw.encode("latin-1")) if raw and raw[0] == "\x03" else None


def test_a_one_client_group_is_a_record_and_costs_no_write_after_its_first_request() -> None:
    store = CountingStorage()
    guard = ExtractionGuard(GuardConfig(), store)
    for i, row in enumerate(TRAIN[:4]):  # one client behind its own IP
        store.calls.clear()
        decisions = guard.learn(ALICE, Observation(T0 + i, "predict", 100, rows=row[None, :]))
        # the client's state and, the first time only, the group's record naming its one client;
        # afterwards the read alone (the memory backend renews the state object it returns)
        assert store.calls == (["mget", "set", "set"] if i == 0 else ["mget"]), (i, store.calls)
        assert all(d.subject == "client" for d in decisions)
    assert _group_state(store, ALICE.group or "") is None
    assert guard.check_access(ALICE, T0 + 5, None).action == "allow"  # and a record is no verdict
    # the record is refreshed every half state TTL, so an active group's record does not expire
    store.calls.clear()
    later = T0 + GuardConfig().state_ttl_s / 2 + 10
    guard.learn(ALICE, Observation(later, "predict", 100, rows=TRAIN[5][None, :]))
    assert store.calls == ["mget", "set"]


def test_a_one_client_groups_record_is_parsed_once_not_on_every_request_of_its_client() -> None:
    store = MemoryStorage(clock=lambda: T0)
    guard = ExtractionGuard(GuardConfig(), store)
    guard.learn(ALICE, Observation(T0, "predict", 100, rows=TRAIN[0][None, :]))  # writes the record
    before = _solo_record.cache_info()
    for i, row in enumerate(TRAIN[1:4], start=1):
        assert guard.learn(ALICE, Observation(T0 + i, "predict", 100, rows=row[None, :])) == []
    after = _solo_record.cache_info()
    # the record read on each request: parsed at most once, found again afterwards
    assert after.misses - before.misses <= 1 and after.hits - before.hits >= 2
    assert _group_state(store, ALICE.group or "") is None  # (still a record, not a state)


def test_a_group_scores_an_attack_split_across_clients_including_what_the_first_one_sent_alone() -> None:
    store = CountingStorage()
    guard = ExtractionGuard(GuardConfig(feature_stats=FeatureStats(*(
        tuple(FEATURE_STATS[k]) for k in ("mean", "std", "min", "max")))), store)
    keys = [Identity(client=f"consumer:k{i}", group="ip:10.9.9.9", credential=f"cred-k{i}") for i in range(3)]
    steps = _axis_steps(6)
    # the first key sends the anchor and the first two steps alone: the group is still its record
    for i, row in enumerate(steps[:3]):
        guard.learn(keys[0], Observation(T0 + i, "predict", 100, rows=row[None, :]))
    assert _group_state(store, "ip:10.9.9.9") is None
    # the second key shows up: the group starts from the first key's state (one more read, once)
    store.calls.clear()
    guard.learn(keys[1], Observation(T0 + 3, "predict", 100, rows=steps[3][None, :]))
    assert store.calls == ["mget", "set", "get", "set"], store.calls
    for i, row in enumerate(steps[4:], start=4):
        guard.learn(keys[i % 3], Observation(T0 + i, "predict", 100, rows=row[None, :]))
    group = _group_state(store, "ip:10.9.9.9")
    # the steps of keys 1 and 2 are measured from the anchor key 0 sent before the group existed
    assert group is not None and len(group.members) == 3 and group.n == 7
    assert group.contrib.get("axis_probe", 0) >= 9, group.contrib
    # while no other key's own state saw enough of the probe to call it one
    for ident in keys[1:]:
        raw = store.get(ExtractionGuard.state_key(ident.client), now=T0)
        assert raw is not None and ClientState.from_bytes(raw.encode("latin-1")).contrib.get("axis_probe", 0) < 9


def test_a_one_client_group_state_of_an_earlier_release_becomes_a_record() -> None:
    store = CountingStorage()
    guard = ExtractionGuard(GuardConfig(), store)
    old = ClientState.new(T0)
    old.members = (zlib.crc32(ALICE.client.encode()),)
    old.push_row(TRAIN[0].astype(np.float32), 16)
    store.set(ExtractionGuard.state_key(ALICE.group or ""), _encode_state(old), now=T0)
    guard.learn(ALICE, Observation(T0 + 1, "predict", 100, rows=TRAIN[1][None, :]))
    raw = store.get(ExtractionGuard.state_key(ALICE.group or ""), now=T0)
    assert raw is not None and raw.startswith("\x04") and raw.endswith(ALICE.client)


@pytest.mark.redis
def test_memory_keeps_the_state_objects_and_redis_their_text_and_both_learn_the_same(redis_server: Any) -> None:
    """On the memory backend the guard keeps each client's state object (no codec per request);
    on Redis its text. The same traffic leaves the same states and decisions on both, and the
    memory backend's readers of text (operators' inspect, an upgrade to Redis) read that text."""
    redis_server.flush()
    memory = MemoryStorage(clock=lambda: T0)
    redis = build_storage({"strategy": "redis", "host": redis_server.host, "port": redis_server.port})
    cfg = GuardConfig(feature_stats=FeatureStats(*(tuple(FEATURE_STATS[k]) for k in ("mean", "std", "min", "max"))))
    guards = ExtractionGuard(cfg, memory), ExtractionGuard(cfg, redis)
    rng = np.random.default_rng(3)
    carol = Identity(client="consumer:carol", group="ip:10.0.0.1", credential="cred-carol")  # ALICE's group
    decided: tuple[list[str], list[str]] = ([], [])
    t = T0
    for i in range(60):
        t += 0.5
        who, row = (ALICE, TRAIN[rng.integers(len(TRAIN))]) if i % 3 else (carol, rng.uniform(-6, 6, TRAIN.shape[1]))
        who = BOB if i % 10 == 1 else who  # alone behind his IP: his group is a one-client record
        body = predict_body(row)
        for guard, seen in zip(guards, decided, strict=True):
            decisions = guard.learn(who, build_observation(cfg, t, "m", body))
            seen += [f"{d.subject}:{d.assessment.level_name}" for d in decisions]
    assert decided[0] == decided[1] and any(level.endswith(":block") for level in decided[0])
    keys = [ExtractionGuard.state_key(s) for s in ("consumer:alice", "consumer:carol", "ip:10.0.0.1", "consumer:bob")]
    kept = memory.get_objects(keys, now=t)
    assert all(type(state) is ClientState for state in kept)
    assert [state.to_text() for state in kept] == memory.mget(keys, now=t) == redis.mget(keys, now=t)
    solo = ExtractionGuard.state_key("ip:10.0.0.2")
    record = SoloGroup.from_text(memory.get_objects([solo], now=t)[0])
    assert record is not None and record.member == "consumer:bob"
    assert memory.mget([solo], now=t) == redis.mget([solo], now=t) == [record.to_text()]
    assert guards[0].states.bytes_held == 0 < guards[1].states.bytes_held  # the decoded cache serves Redis only


@pytest.mark.parametrize(("value", "size"), [(1234, 1234), (1234.0, 1234), (0, 0), (True, None), (-5, None),
                                             ("1234", None), (float("nan"), None), (1e300, None), (None, None)])
def test_only_a_response_size_number_from_the_companion_is_taken_else_kong_is_asked(value: Any,
                                                                                  size: int | None) -> None:
    from kong_plugins.extraction_guard.handler import _completed_response_size

    assert _completed_response_size({"body": "{}", "response_size": value}) == size


def test_a_clients_ring_of_recent_inputs_grows_with_its_inputs_and_keeps_their_order() -> None:
    # A one-request client keeps one row, not the 16-row ring (4 KB of a 64-feature model); the
    # ring doubles as inputs arrive, then wraps at recent_inputs as it always did.
    store = MemoryStorage(clock=lambda: T0)
    cfg = GuardConfig()
    guard = ExtractionGuard(cfg, store)
    key = ExtractionGuard.state_key(ALICE.client)
    capacities = []
    for i in range(20):
        guard.learn(ALICE, Observation(T0 + i, "predict", 100, rows=TRAIN[i][None, :]))
        state = store.get_objects([key])[0]
        capacities.append(state.rows.shape[0])
    assert capacities[:9] == [1, 2, 4, 4, 8, 8, 8, 8, 16] and set(capacities[9:]) == {cfg.recent_inputs}
    # the last 16 inputs, each in the slot a full-size ring would have given it
    expected = np.zeros((cfg.recent_inputs, TRAIN.shape[1]), dtype=np.float32)
    for i in range(20):
        expected[i % cfg.recent_inputs] = TRAIN[i]
    assert np.array_equal(state.rows, expected) and state.rows_n == 20


def test_the_states_the_memory_backend_keeps_cost_a_full_garbage_collection_one_object_each() -> None:
    # A full collection scans every object the collector tracks: with every client's state kept
    # as an object, each list or tracked record of it was ~0.5 us of pause per client (220 ms at
    # 50,000 clients). Kept: the state itself and its entry; its integer tuples, its signal dict
    # and the text entries (one-client group records, verdicts) are not tracked.
    import gc

    store = MemoryStorage(clock=lambda: T0)
    guard = ExtractionGuard(GuardConfig(), store)
    chat = llm_request(parse_json(json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi there"}],
                                              "logit_bias": {"5": 1}, "logprobs": True}).encode()))
    for i in range(40):
        who = Identity(client=f"consumer:c{i}", group=f"ip:10.0.0.{i}", credential=f"cred-{i}")
        guard.learn(who, Observation(T0 + i, "predict", 100, rows=TRAIN[i][None, :]))
        guard.learn(who, Observation(T0 + i + 0.5, "chat", 100, llm=chat))
    gc.collect()
    data = store._state.data
    states = [entry[0] for entry in data.values() if type(entry[0]) is ClientState]
    assert len(states) == 40 and all(type(entry[0]) in (ClientState, str) for entry in data.values())
    assert not any(gc.is_tracked(entry) for entry in data.values() if type(entry[0]) is str)
    for state in states:
        assert gc.is_tracked(state)
        assert not any(gc.is_tracked(part) for part in (state.prompts, state.simhashes, state.biased_ids,
                                                         state.members, state.contrib))
