"""Who gets in where: authentication (401), tiers and networks (403), forged headers changing nothing."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from .gateway import CLASSIFIER, DOCQA, FREE, IMAGE, INTERNAL, PREMIUM, ROUTES, TEXTGEN, Gateway, chat_body, is_internal

BODIES: dict[str, dict[str, Any]] = {
    TEXTGEN: chat_body(),
    IMAGE: {"image": "aGVsbG8gd29ybGQ="},
    DOCQA: {"question": "Where is the sea?", "documents": ["The sea is west of the town. The hills are east."]},
    CLASSIFIER: {"instances": [[1.0, 2.0, 3.0, 4.0]]},
}


def call(client: httpx.Client, path: str, key: str | None = None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["apikey"] = key
    return client.post(path, json=BODIES[path], headers=headers)


@pytest.mark.parametrize("path", ROUTES)
def test_no_key_is_401_on_every_route(proxy: httpx.Client, path: str) -> None:
    r = call(proxy, path)
    assert r.status_code == 401, r.text


@pytest.mark.parametrize("path", ROUTES)
def test_unknown_key_is_401_on_every_route(proxy: httpx.Client, path: str) -> None:
    assert call(proxy, path, "not-a-demo-key").status_code == 401


def test_forged_consumer_and_tier_headers_without_a_key_are_still_401(proxy: httpx.Client) -> None:
    forged = {"X-Consumer-Username": PREMIUM, "X-Consumer-Custom-Id": PREMIUM, "X-AI-Tier": "internal",
              "X-Consumer-Groups": "internal"}
    assert call(proxy, TEXTGEN, **forged).status_code == 401


def test_each_tier_reaches_textgen(proxy: httpx.Client, gateway: Gateway) -> None:
    for who in (FREE, PREMIUM, INTERNAL):
        r = call(proxy, TEXTGEN, gateway.key_of(who))
        assert r.status_code == 200, (who, r.status_code, r.text)
        assert r.json()["usage"]["total_tokens"] > 0


def test_image_analysis_is_premium_and_internal_only(proxy: httpx.Client, gateway: Gateway) -> None:
    assert call(proxy, IMAGE, gateway.key_of(FREE)).status_code == 403
    assert call(proxy, IMAGE, gateway.key_of(PREMIUM)).status_code == 200


def test_a_forged_tier_header_does_not_upgrade_free(proxy: httpx.Client, gateway: Gateway) -> None:
    r = call(proxy, IMAGE, gateway.key_of(FREE), **{"X-AI-Tier": "premium", "X-Consumer-Username": PREMIUM})
    assert r.status_code == 403


@pytest.mark.parametrize("path", [DOCQA, CLASSIFIER])
def test_docqa_and_classifier_refuse_other_tiers(proxy: httpx.Client, gateway: Gateway, path: str) -> None:
    for who in (FREE, PREMIUM):
        assert call(proxy, path, gateway.key_of(who)).status_code == 403, who


@pytest.mark.parametrize("path", [DOCQA, CLASSIFIER])
def test_internal_tier_from_this_address_follows_the_network_rule(
        proxy: httpx.Client, gateway: Gateway, seen_address: str, path: str) -> None:
    r = call(proxy, path, gateway.key_of(INTERNAL))
    expected = 200 if is_internal(seen_address) else 403
    assert r.status_code == expected, (seen_address, r.status_code, r.text)


@pytest.mark.parametrize("path", [DOCQA, CLASSIFIER])
def test_internal_tier_from_outside_the_private_networks_is_403(external_proxy: httpx.Client, gateway: Gateway,
                                                                path: str) -> None:
    r = call(external_proxy, path, gateway.key_of(INTERNAL))
    assert r.status_code == 403, r.text
    # the address Kong sees cannot be talked into being internal
    assert call(external_proxy, path, gateway.key_of(INTERNAL), **{"X-Forwarded-For": "10.0.0.5",
                                                                    "X-Real-IP": "10.0.0.5"}).status_code == 403


def test_the_jwt_consumer_gets_in_and_a_tampered_token_does_not(proxy: httpx.Client, gateway: Gateway) -> None:
    hs = [c for c in gateway.jwts if str(c.get("algorithm") or "HS256").startswith("HS") and c.get("secret")]
    if not hs:
        pytest.skip("the gateway's JWT consumer does not use an HS* secret the spec can sign with")
    cred = hs[0]
    claims = {"iss": cred["key"], "exp": int(time.time()) + 300, "sub": "spec"}
    token = jwt.encode(claims, cred["secret"], algorithm=cred.get("algorithm") or "HS256")
    ok = proxy.post(TEXTGEN, json=BODIES[TEXTGEN], headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200, ok.text
    forged = jwt.encode(claims, "not-the-secret", algorithm=cred.get("algorithm") or "HS256")
    bad = proxy.post(TEXTGEN, json=BODIES[TEXTGEN], headers={"Authorization": f"Bearer {forged}"})
    assert bad.status_code == 401
