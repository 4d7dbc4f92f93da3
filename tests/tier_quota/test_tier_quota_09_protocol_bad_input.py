"""Bad input through the whole stack: our runtime serving ai-tier-quota, driven by the Kong stand-in.

A model that reports absurd ``usage``, a body that is not JSON, a config whose limits contradict
each other: each has a defined outcome, and the plugin server keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kong_plugins.standin import KongStandIn, PluginServerSpec, UpstreamRequest, UpstreamResponse

pytestmark = pytest.mark.timeout(120)

USAGE_HEADER = "x-llm-total-tokens"


def quota_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "default_tier": "free",
        "tiers": [{"name": "free", "models": ["*"], "limits": [{"tokens_per_minute": 1000}]}],
        "tokens": {"usage_header": USAGE_HEADER, "default_max_tokens": 100},
    }
    config.update(overrides)
    return config


def deck(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [{"name": "textgen", "url": "http://textgen.internal:8000",
                      "routes": [{"name": "textgen-route", "paths": ["/textgen"]}]}],
        "consumers": [{"username": "fiona", "tags": ["tier:free", "tenant:acme"],
                       "keyauth_credentials": [{"key": "free-key"}]}],
        "plugins": [{"name": "key-auth", "config": {"key_names": ["apikey"]}},
                    {"name": "ai-tier-quota", "config": config}],
    }


class Model:
    """The upstream LLM: answers with whatever usage header the test sets."""

    def __init__(self) -> None:
        self.usage: str | None = None

    def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        headers = {"content-type": "application/json"}
        if self.usage is not None:
            headers[USAGE_HEADER] = self.usage
        return UpstreamResponse(200, headers, json.dumps({"choices": []}).encode())


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Any]:
    opened: list[KongStandIn] = []

    def make(config: dict[str, Any], model: Model | None = None) -> KongStandIn:
        gw = KongStandIn.from_deck(deck(config), servers=[PluginServerSpec.suite("ai-tier-quota", prefix=tmp_path)],
                                   upstreams={"textgen": model or Model()})
        gw.start()
        opened.append(gw)
        return gw

    yield make
    for gw in opened:
        gw.close()


CHAT = json.dumps({"messages": [{"role": "user", "content": "p" * 400}], "max_tokens": 500}).encode()  # 600


def call(gw: KongStandIn, at: float, body: bytes = CHAT) -> Any:
    return gw.request("POST", "/textgen", headers={"apikey": "free-key"}, body=body, start_time=at)


@pytest.mark.parametrize(("reported", "settled"), [
    ("50", True),                       # believable: the unused 550 tokens come back
    ("99999999999999999999", False),    # absurd: more than max_plausible_tokens
    ("-5", False),
    ("lots", False),
    ("1e3", False),
    (None, False),                      # the model said nothing
])
def test_reported_usage_is_settled_only_when_believable(gateway: Any, reported: str | None, settled: bool) -> None:
    model = Model()
    gw = gateway(quota_config(), model)
    model.usage = reported
    first = call(gw, 1000.0)
    assert first.status == 200 and first.headers["X-RateLimit-Remaining-Tokens-Minute"] == "400"
    gw.wait_log_phase()
    second = call(gw, 1000.5)
    if settled:
        assert second.status == 200
        # 1000 - 50 used (the settlement replaced the first reservation) - 600 reserved now
        assert second.headers["X-RateLimit-Remaining-Tokens-Minute"] == "350"
    else:
        # The reservation stands: a misreporting model cannot lower anyone's bill.
        assert second.status == 429 and second.json()["denied_by"] == "tier_tokens"
    assert not [r for r in gw.logs if "Traceback" in r.message]


@pytest.mark.parametrize("body", [b"\xff\xfe\x00 definitely not json", b"[1, 2, 3]", b'{"max_tokens": "many"}', b""])
def test_bodies_that_are_not_chat_json_are_estimated_from_their_size(gateway: Any, body: bytes) -> None:
    gw = gateway(quota_config())
    r = call(gw, 1000.0, body)
    assert r.status == 200
    expected = 1000 - (-(-len(body) // 4) + 100)  # prompt bytes / 4, plus default_max_tokens
    assert r.headers["X-RateLimit-Remaining-Tokens-Minute"] == str(expected)


@pytest.mark.parametrize(("config", "field"), [
    (quota_config(tiers=[{"name": "free", "models": ["*"], "limits": [{"per_second": 10, "per_minute": 5}]}]),
     "tiers[0].limits[0].per_minute"),
    (quota_config(tiers=[{"name": "free", "models": ["*"],
                          "limits": [{"tokens_per_minute": 1000, "tokens_per_day": 10}]}]),
     "tiers[0].limits[0].tokens_per_day"),
    (quota_config(tiers=[{"name": "free", "models": ["textgen"], "limits": [{"models": ["imagegen"],
                                                                            "per_second": 1}]}]),
     "tiers[0].limits[0].models"),
    (quota_config(fallback={"enabled": True, "per_second": 10, "per_minute": 2}), "fallback.per_minute"),
])
def test_contradicting_limits_fail_at_instance_start_naming_the_field(
    gateway: Any, config: dict[str, Any], field: str
) -> None:
    gw = gateway(config)
    r = call(gw, 1000.0)
    # Kong turns a failed StartInstance into error(): a 500 for this request, the message logged.
    assert r.status == 500
    assert any(f"invalid config for plugin ai-tier-quota: config.{field}:" in rec.message for rec in gw.logs), \
        [rec.message for rec in gw.logs]
    # The server itself lives on: a good configuration on the same server works.
    assert gw.server("ai-tier-quota").pid is not None
