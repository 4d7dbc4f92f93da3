"""Access-phase facts: one ``kong.ctx.shared.get`` with the companion, individual calls without it.

Both paths must describe the request exactly as serialize does in the log phase, and the fallback
must only pay for the facts the config reads.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kong_plugins.companion import FACTS_KEY, NAME
from kong_plugins.identity import FactsNeeded, gather_facts, parse_facts, reset_companion_warning
from tests.tier_quota.quota_helpers import FakeKong, serialize, suite_facts


def gathered(data: dict[str, Any], needed: FactsNeeded, *, companion: bool) -> tuple[Any, list[str]]:
    kong = FakeKong(data, companion=companion)
    return gather_facts(kong, needed), kong.calls


def test_with_the_companion_one_call_whatever_the_config_needs() -> None:
    data = serialize(consumer={"id": "c1", "username": "u", "tags": ["tier:gold"]}, credential="cred-9")
    facts, calls = gathered(data, FactsNeeded(tls=True), companion=True)
    assert calls == ["kong.ctx.shared.get"]
    assert facts.consumer is not None and facts.consumer.tags == ("tier:gold",)
    assert facts.credential_id == "cred-9" and facts.route is not None and facts.route.name == "textgen-route"


def test_without_it_only_the_needed_facts_are_fetched_each_with_its_own_call() -> None:
    _, calls = gathered(serialize(), FactsNeeded(), companion=False)
    assert calls == ["kong.ctx.shared.get", "kong.client.get_consumer", "kong.client.get_credential",
                     "kong.router.get_route", "kong.router.get_service", "kong.client.get_forwarded_ip",
                     "kong.request.get_start_time", "kong.request.get_method", "kong.request.get_path_with_query",
                     "kong.nginx.get_var"]
    assert len(calls) == 1 + FactsNeeded().fallback_calls
    lean = FactsNeeded(service=False, request_line=False, size=False)
    _, calls = gathered(serialize(), lean, companion=False)
    assert len(calls) == 1 + lean.fallback_calls == 6
    _, calls = gathered(serialize(), FactsNeeded(tls=True), companion=False)
    assert calls[-2:] == ["kong.nginx.get_var", "kong.nginx.get_var"]


def test_the_missing_companion_is_named_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    reset_companion_warning()
    with caplog.at_level(logging.WARNING, logger="kong_plugins.identity"):
        for _ in range(3):
            gathered(serialize(), FactsNeeded(), companion=False)
        gathered(serialize(), FactsNeeded(), companion=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and NAME in warnings[0] and FACTS_KEY in warnings[0]
    assert "10 PDK round trips" in warnings[0]


ids = st.text(alphabet="abc123-", min_size=1, max_size=8)


@given(consumer=st.one_of(st.none(), st.fixed_dictionaries(
           {"id": ids}, optional={"username": ids, "custom_id": ids, "tags": st.lists(ids, max_size=3)})),
       credential=st.one_of(st.none(), ids),
       ip=st.sampled_from(["10.0.0.1", "2001:db8::1", "192.168.1.200"]),
       at=st.floats(min_value=1e9, max_value=2e9),
       uri=st.sampled_from(["/v1/chat", "/a?b=c&d", "/x%20y"]),
       tls=st.sampled_from([None, "SUCCESS", "NONE", "FAILED:unable to verify"]))
def test_companion_fallback_and_log_phase_serialize_describe_the_same_request(
        consumer: dict[str, Any] | None, credential: str | None, ip: str, at: float, uri: str,
        tls: str | None) -> None:
    data = serialize(consumer=consumer, credential=credential, client_ip=ip, at=at, uri=uri)
    if tls is not None:
        data["request"]["tls"] = {"version": "TLSv1.3", "client_verify": tls}
    everything = FactsNeeded(tls=True)
    via_companion, _ = gathered(data, everything, companion=True)
    via_calls, _ = gathered(data, everything, companion=False)
    logged = parse_facts(data)
    for facts in (via_companion, via_calls):
        for name in ("method", "uri", "size", "client_ip", "started_at", "consumer", "credential_id", "route",
                     "service", "tls_client_verify"):
            assert getattr(facts, name) == getattr(logged, name), name
    assert suite_facts(data).keys() <= {"request", "client_ip", "started_at", "route", "service", "consumer",
                                        "authenticated_entity"}


@given(needed=st.builds(FactsNeeded, consumer=st.booleans(), credential=st.booleans(), route=st.booleans(),
                        service=st.booleans(), client_ip=st.booleans(), started_at=st.booleans(),
                        request_line=st.booleans(), size=st.booleans(), tls=st.booleans(), headers=st.booleans()),
       tls=st.sampled_from([None, "SUCCESS"]))
def test_a_plugin_sees_the_same_facts_with_or_without_the_companion(needed: FactsNeeded, tls: str | None) -> None:
    # What a plugin does not declare it reads is left at its default on both paths: its code
    # cannot come to depend on a fact that only the companion's table carries.
    data = serialize(consumer={"id": "c1", "username": "u", "tags": ["tenant:acme"]}, credential="cred-9")
    data["request"]["headers"] = {"content-type": "application/json"}
    if tls is not None:
        data["request"]["tls"] = {"client_verify": tls}
    via_companion, _ = gathered(data, needed, companion=True)
    via_calls, _ = gathered(data, needed, companion=False)
    logged = parse_facts(data)
    for name in ("method", "uri", "size", "client_ip", "started_at", "consumer", "credential_id", "route",
                 "service", "tls_client_verify"):
        assert getattr(via_companion, name) == getattr(via_calls, name), name
    assert via_companion.consumer == (logged.consumer if needed.consumer else None)
    assert via_companion.service == (logged.service if needed.service else None)
    assert via_companion.uri == (logged.uri if needed.request_line else "")
    # headers: never fetched one by one; from the companion's table only when declared
    assert via_companion.header("content-type") == ("application/json" if needed.headers else None)
    assert via_calls.headers == {}
