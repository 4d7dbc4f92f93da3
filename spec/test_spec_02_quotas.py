"""Quotas with the reference numbers: 429 with Retry-After, per-second bursts, tokens, the flood limit."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from .gateway import (
    CLASSIFIER,
    CLASSIFIER_FLOOD_PER_SECOND,
    FREE,
    FREE_PER_MINUTE,
    FREE_TOKENS_PER_DAY,
    IMAGE,
    IMAGE_PREMIUM_PER_MINUTE,
    INTERNAL,
    PREMIUM,
    PREMIUM_PER_SECOND,
    TEXTGEN,
    Gateway,
    chat_body,
    is_internal,
    poll,
    send_all,
)


def assert_429(r: httpx.Response) -> None:
    assert r.status_code == 429, (r.status_code, r.text)
    retry_after = r.headers.get("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, dict(r.headers)


def test_free_gets_its_10_requests_a_minute_then_429_with_retry_after(
        proxy: httpx.Client, gateway: Gateway, fresh_counters: Callable[[], None]) -> None:
    key = gateway.key_of(FREE)
    statuses = [proxy.post(TEXTGEN, json=chat_body(), headers={"apikey": key}).status_code
                for _ in range(FREE_PER_MINUTE)]
    assert statuses == [200] * FREE_PER_MINUTE
    over = proxy.post(TEXTGEN, json=chat_body(), headers={"apikey": key})
    assert_429(over)
    # quotas are per consumer: premium is unaffected by free's exhaustion
    assert proxy.post(TEXTGEN, json=chat_body(), headers={"apikey": gateway.key_of(PREMIUM)}).status_code == 200


def test_premium_burst_is_capped_at_10_per_second(proxy: httpx.Client, gateway: Gateway,
                                                  fresh_counters: Callable[[], None]) -> None:
    key = gateway.key_of(PREMIUM)
    burst = 3 * PREMIUM_PER_SECOND
    started = time.monotonic()
    responses = send_all(proxy, [{"method": "POST", "url": TEXTGEN, "json": chat_body(), "headers": {"apikey": key}}
                                 for _ in range(burst)], workers=burst)
    elapsed = time.monotonic() - started
    allowed = sum(r.status_code == 200 for r in responses)
    refused = [r for r in responses if r.status_code == 429 and r.json().get("denied_by") == "tier_rate"]
    assert refused, [(r.status_code, r.text[:80]) for r in responses]
    assert_429(refused[0])
    # GCRA: a burst of 10, then one more every 100 ms of the burst's duration
    assert allowed <= PREMIUM_PER_SECOND + int(elapsed * PREMIUM_PER_SECOND) + 1, (allowed, elapsed)


def test_image_analysis_premium_quota_is_30_a_minute(proxy: httpx.Client, gateway: Gateway,
                                                     fresh_counters: Callable[[], None]) -> None:
    key = gateway.key_of(PREMIUM)
    statuses = []
    for _ in range(IMAGE_PREMIUM_PER_MINUTE + 1):
        statuses.append(proxy.post(IMAGE, json={"image": "aGVsbG8="}, headers={"apikey": key}).status_code)
        time.sleep(1 / PREMIUM_PER_SECOND)  # stay under any per-second limit: only the minute quota counts
    assert statuses[:IMAGE_PREMIUM_PER_MINUTE] == [200] * IMAGE_PREMIUM_PER_MINUTE, statuses
    assert statuses[-1] == 429


def test_a_request_that_could_exceed_the_daily_token_quota_is_refused_before_the_model(
        proxy: httpx.Client, gateway: Gateway, fresh_counters: Callable[[], None]) -> None:
    # The reservation is prompt + max_tokens: asking for more than free's daily budget can never fit.
    body = chat_body(max_tokens=FREE_TOKENS_PER_DAY + 1_000)
    r = proxy.post(TEXTGEN, json=body, headers={"apikey": gateway.key_of(FREE)})
    assert_429(r)
    assert r.json().get("denied_by") == "tier_tokens", r.text
    # the refused reservation was not charged: a small request of free still fits
    assert proxy.post(TEXTGEN, json=chat_body(), headers={"apikey": gateway.key_of(FREE)}).status_code == 200


def test_tokens_are_reserved_before_the_call_and_settled_with_the_models_usage(
        proxy: httpx.Client, gateway: Gateway, fresh_counters: Callable[[], None]) -> None:
    key = gateway.key_of(FREE)
    big = 8_000
    first = proxy.post(TEXTGEN, json=chat_body(max_tokens=big), headers={"apikey": key})
    assert first.status_code == 200, first.text
    assert int(first.headers["X-RateLimit-Limit-Tokens-Day"]) == FREE_TOKENS_PER_DAY
    assert int(first.headers["X-RateLimit-Remaining-Tokens-Day"]) <= FREE_TOKENS_PER_DAY - big
    used = first.json()["usage"]["total_tokens"]
    assert used < big and int(first.headers["X-Usage-Total-Tokens"]) == used

    def settled() -> int | None:
        # the log phase replaces the reservation by the usage the model reported, after the response
        r = proxy.post(TEXTGEN, json=chat_body(max_tokens=1), headers={"apikey": key})
        assert r.status_code == 200, r.text
        remaining = int(r.headers["X-RateLimit-Remaining-Tokens-Day"])
        return remaining if remaining > FREE_TOKENS_PER_DAY - big else None

    remaining = poll(settled, timeout=6, interval=1.0)  # at most 7 of free's 10 requests a minute
    assert remaining is not None, "the reservation was never settled with the model's usage"
    assert remaining >= FREE_TOKENS_PER_DAY - used - 200  # a few small requests' tokens on top


def test_concurrent_reservations_cannot_overspend_the_daily_tokens(
        proxy: httpx.Client, gateway: Gateway, fresh_counters: Callable[[], None]) -> None:
    key = gateway.key_of(FREE)
    each = 8_000  # under the inspector's max_tokens cap; three at once exceed 20,000
    responses = send_all(proxy, [{"method": "POST", "url": TEXTGEN, "json": chat_body(max_tokens=each),
                                  "headers": {"apikey": key}} for _ in range(6)], workers=6)
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    refused = [r for r in responses if r.status_code == 429]
    assert refused and all(r.json().get("denied_by") == "tier_tokens" for r in refused), statuses
    assert statuses.count(200) <= FREE_TOKENS_PER_DAY // each + 3, statuses  # + the ones settled meanwhile


def test_classifier_flood_limit_holds_whoever_calls(proxy: httpx.Client, gateway: Gateway, seen_address: str,
                                                    fresh_counters: Callable[[], None]) -> None:
    if not is_internal(seen_address):
        pytest.skip(f"the classifier serves internal networks only and Kong sees this client as {seen_address}")
    key = gateway.key_of(INTERNAL)
    burst = 2 * CLASSIFIER_FLOOD_PER_SECOND
    started = time.monotonic()
    responses = send_all(proxy, [{"method": "POST", "url": CLASSIFIER, "json": {"instances": [[float(i), 1.0]]},
                                  "headers": {"apikey": key}} for i in range(burst)], workers=burst)
    elapsed = time.monotonic() - started
    allowed = sum(r.status_code == 200 for r in responses)
    limited = [r for r in responses if r.status_code == 429 and r.json().get("denied_by") == "global_flood"]
    assert limited, [(r.status_code, r.text[:80]) for r in responses]
    assert_429(limited[0])
    assert allowed <= CLASSIFIER_FLOOD_PER_SECOND + int(elapsed * CLASSIFIER_FLOOD_PER_SECOND) + 1, (allowed, elapsed)
