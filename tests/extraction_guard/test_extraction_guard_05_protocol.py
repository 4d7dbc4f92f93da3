"""Protocol level: the real plugin server (our runtime) driven by the Kong stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kong_plugins.standin import KongStandIn, PluginServerSpec

from .guard_helpers import DIM, FEATURE_STATS, TRAIN, guard_deck, llm_upstream, predict_body, predict_upstream

pytestmark = pytest.mark.timeout(120)
T0 = 1_700_000_000.0


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Any]:
    opened: list[KongStandIn] = []

    def start(config: dict[str, Any], tap: bool = False, with_companion: bool = True) -> KongStandIn:
        servers = [PluginServerSpec.suite("ai-extraction-guard", prefix=tmp_path)]
        if tap:
            servers.append(PluginServerSpec.module("kong_plugins.extraction_guard.tap", prefix=tmp_path,
                                                   name="ai-extraction-guard-tap"))
        gw = KongStandIn.from_deck(guard_deck(config, tap=tap, with_companion=with_companion), servers=servers,
                                   upstreams={"classifier": predict_upstream, "llm": llm_upstream})
        gw.start()
        opened.append(gw)
        return gw

    yield start
    for gw in opened:
        gw.close()


def _send(gw: KongStandIn, key: str, body: bytes, t: float, path: str = "/v1/models/classifier:predict",
          ip: str = "10.0.0.5") -> Any:
    r = gw.request("POST", path, headers={"apikey": key, "Content-Type": "application/json"}, body=body,
                   client_ip=ip, start_time=t)
    gw.wait_log_phase()
    return r


def test_axis_probing_is_blocked_before_d_plus_1_queries_and_benign_clients_pass(gateway: Any) -> None:
    gw = gateway({"feature_stats": FEATURE_STATS})
    rng = np.random.default_rng(5)
    t = T0
    for i in range(30):  # a benign client sending real rows
        t += 1.0
        r = _send(gw, "key1", predict_body(TRAIN[rng.integers(len(TRAIN))]), t, ip="10.0.0.9")
        assert r.status == 200, (i, r.status, r.body)
    x0 = TRAIN[0].copy()
    statuses = []
    for i in range(-1, DIM):  # finite differences: x0 then one step along each axis
        x = x0.copy()
        if i >= 0:
            x[i] += 0.3
        t += 1.0
        statuses.append(_send(gw, "key2", predict_body(x), t).status)
    first_block = statuses.index(403) + 1
    assert first_block <= DIM + 1, statuses
    assert all(s == 200 for s in statuses[: first_block - 1])
    blocked = _send(gw, "key2", predict_body(TRAIN[3]), t + 1)
    assert blocked.status == 403 and blocked.json() == {"message": "access suspended"}
    assert int(blocked.headers["retry-after"]) > 0
    # the benign client is unaffected, the block is tied to the attacker's consumer and IP
    assert _send(gw, "key1", predict_body(TRAIN[5]), t + 2, ip="10.0.0.9").status == 200
    # and the block ends with its TTL, measured in request time
    assert _send(gw, "key2", predict_body(TRAIN[3]), t + 3601, ip="10.0.0.77").status == 200


def test_without_the_companion_the_request_path_pays_a_call_per_fact(gateway: Any) -> None:
    gw = gateway({"feature_stats": FEATURE_STATS}, with_companion=False)
    r = _send(gw, "key1", predict_body(TRAIN[1]), T0)
    assert r.status == 200 and not r.errors
    # the nil ctx.shared.get; consumer, credential, route, client IP, start time, method, uri, size;
    # then get_raw_body + ctx.shared.set
    assert r.pdk_calls["ai-extraction-guard"]["access"] == 1 + 8 + 2


def test_access_phase_pdk_calls_and_decision_log_line(gateway: Any) -> None:
    gw = gateway({"feature_stats": FEATURE_STATS})
    r = _send(gw, "key1", predict_body(TRAIN[1]), T0)
    assert r.status == 200
    calls = r.pdk_calls["ai-extraction-guard"]
    # ctx.shared.get (the companion's facts, the body with them) + ctx.shared.set on the request path
    assert calls["access"] == 2, calls
    # the hand-off alone: the request's facts came with the body, and the companion's log phase
    # added the response's size and the (absent) tap summary to it
    assert calls["log"] == 1, calls
    assert not r.errors
    # a body the companion did not read (chunked: its length unknown until read) is asked of Kong
    chunked = gw.request("POST", "/v1/models/classifier:predict", body=predict_body(TRAIN[2]),
                         headers={"apikey": "key1", "Content-Type": "application/json",
                                  "Transfer-Encoding": "chunked"}, client_ip="10.0.0.5", start_time=T0 + 0.5)
    gw.wait_log_phase()
    assert chunked.status == 200 and chunked.pdk_calls["ai-extraction-guard"] == {"access": 3, "log": 1}
    x0 = TRAIN[0].copy()
    t = T0
    for i in range(-1, DIM):
        x = x0.copy()
        if i >= 0:
            x[i] += 0.3
        t += 1
        _send(gw, "key3", predict_body(x), t)
    lines = [json.loads(rec.message[rec.message.index("{"):]) for rec in gw.logs
             if "ai-extraction-guard.decision" in rec.message]
    blocks = [ln for ln in lines if ln["level"] in ("block", "revoke") and ln["subject"] == "client"]
    assert blocks, lines
    assert blocks[0]["totals"]["axis_probe"] >= 8
    assert blocks[0]["client"].startswith("consumer:")
    assert "instances" not in json.dumps(lines)  # inputs never reach the log


def test_logit_bias_sweep_is_blocked_within_50_requests_and_harness_is_not(gateway: Any) -> None:
    gw = gateway({})
    t = T0
    for i in range(60):  # an evaluation harness: logprobs with a small, fixed logit_bias
        t += 0.5
        body = {"model": "m", "max_tokens": 1, "logprobs": True, "top_logprobs": 5,
                "logit_bias": {"32": 5, "33": 5, "34": 5, "35": 5},
                "messages": [{"role": "user", "content": f"Question {i}: which option is right? A B C D"}]}
        assert _send(gw, "key1", json.dumps(body).encode(), t, "/v1/chat/completions", "10.0.1.1").status == 200
    statuses = []
    for i in range(60):
        t += 0.5
        body = {"model": "m", "max_tokens": 1, "logprobs": True, "top_logprobs": 5,
                "logit_bias": {str(1000 + i): 100}, "messages": [{"role": "user", "content": "Say hello"}]}
        statuses.append(_send(gw, "key2", json.dumps(body).encode(), t, "/v1/chat/completions").status)
        if statuses[-1] != 200:
            break
    assert statuses[-1] == 403 and len(statuses) <= 50, statuses


def test_policy_mitigations_refuse_before_the_upstream(gateway: Any) -> None:
    gw = gateway({"mitigations": {"refuse_logit_bias_with_logprobs": True, "max_top_logprobs": 5}})
    both = {"model": "m", "logprobs": True, "logit_bias": {"1": 3}, "messages": [{"role": "user", "content": "x"}]}
    r = _send(gw, "key1", json.dumps(both).encode(), T0, "/v1/chat/completions")
    assert r.status == 400 and "logit_bias" in r.json()["message"] and r.upstream_request is None
    many = {"model": "m", "logprobs": True, "top_logprobs": 20, "messages": [{"role": "user", "content": "x"}]}
    r = _send(gw, "key1", json.dumps(many).encode(), T0 + 1, "/v1/chat/completions")
    assert r.status == 400 and "top_logprobs" in r.json()["message"]
    ok = {"model": "m", "logprobs": True, "top_logprobs": 3, "messages": [{"role": "user", "content": "x"}]}
    assert _send(gw, "key1", json.dumps(ok).encode(), T0 + 2, "/v1/chat/completions").status == 200


def test_shadow_mode_never_refuses_but_logs_what_it_would_do(gateway: Any) -> None:
    gw = gateway({"feature_stats": FEATURE_STATS, "shadow": True})
    x0 = TRAIN[0].copy()
    t = T0
    statuses = []
    for i in range(-1, DIM):
        x = x0.copy()
        if i >= 0:
            x[i] += 0.3
        t += 1
        statuses.append(_send(gw, "key2", predict_body(x), t).status)
    statuses.append(_send(gw, "key2", predict_body(x0), t + 1).status)
    assert set(statuses) == {200}
    assert any('"would"' in rec.message for rec in gw.logs), [rec.message for rec in gw.logs][-5:]


def test_invalid_config_is_rejected_at_instance_start_naming_the_field(gateway: Any) -> None:
    gw = gateway({"thresholds": {"flag": 3, "throttle": 5, "block": 4}})
    r = _send(gw, "key1", predict_body(TRAIN[0]), T0)
    # StartInstance failed: Kong logs the error (and, in OSS 3.9, proxies the request anyway)
    assert any("config.thresholds.block: must be greater than thresholds.throttle" in e for e in r.errors), r.errors


def test_a_throttled_client_keeps_being_scored_on_the_queries_it_is_refused(gateway: Any) -> None:
    """Throttling slows an extraction down; it must not hide the rest of it from the detector."""
    gw = gateway({"feature_stats": FEATURE_STATS, "throttle_limit": 1, "throttle_window_s": 3600,
                  "thresholds": {"flag": 2, "throttle": 3, "block": 12, "revoke": 40}})
    x0 = TRAIN[0].copy()
    t = T0
    statuses = []
    for i in range(-1, DIM):  # finite differences: each step is axis-probe evidence
        x = x0.copy()
        if i >= 0:
            x[i] += 0.3
        t += 1
        statuses.append(_send(gw, "key2", predict_body(x), t).status)
    assert 429 in statuses and 403 in statuses, statuses
    first_throttle, first_block = statuses.index(429), statuses.index(403)
    # blocked after throttled requests only: the refused steps were what reached the block score
    assert first_throttle < first_block and set(statuses[first_throttle:first_block]) == {429}, statuses


@pytest.mark.parametrize("with_companion", [True, False], ids=["companion", "no-companion"])
def test_an_llm_request_without_a_tap_counts_output_from_the_response_size(gateway: Any,
                                                                            with_companion: bool) -> None:
    gw = gateway({"output_tokens_per_hour": 100}, with_companion=with_companion)
    body = {"model": "m", "max_tokens": 400, "messages": [{"role": "user", "content": "Write a long story"}]}
    statuses = []
    for i in range(12):
        r = _send(gw, "key1", json.dumps(body).encode(), T0 + i, "/v1/chat/completions")
        statuses.append(r.status)
        if r.status != 200:
            break
        if i == 0:
            # with the companion the hand-off carries the response's size (its log phase added
            # var.bytes_sent); without it: the hand-off, the (absent) tap summary, and serialize
            assert r.pdk_calls["ai-extraction-guard"]["log"] == (1 if with_companion else 3), r.pdk_calls
    # output volume estimated from the logged response sizes: the client ends up throttled or flagged
    lines = [json.loads(rec.message[rec.message.index("{"):]) for rec in gw.logs
             if "ai-extraction-guard.decision" in rec.message]
    assert any("output_volume" in ln["totals"] for ln in lines), (statuses, lines)
