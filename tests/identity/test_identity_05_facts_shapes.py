"""parse_facts on every shape: plain dicts (JSON, the companion's table) and any other mapping read
the same, and values of the wrong type become the documented defaults."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins.identity import Consumer, Entity, RequestFacts, parse_facts


class ReadOnly(Mapping[str, Any]):
    """A mapping that is not a dict (the way a PDK bridge could hand a table over)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def wrapped(value: Any) -> Any:
    """``value`` with every dict inside it (and itself) replaced by a non-dict mapping."""
    if isinstance(value, dict):
        return ReadOnly({k: wrapped(v) for k, v in value.items()})
    if isinstance(value, list):
        return [wrapped(v) for v in value]
    return value


# JSON values as serialize's text could hold them: what orjson reads (64-bit integers, finite floats)
# and what only the standard parser does (load_serialized falls back to it): integers of any size,
# Infinity and NaN.
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.integers(),
                    st.integers(min_value=10**300) | st.integers(max_value=-(10**300)),
                    st.floats(), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
# The fields parse_facts reads, each either a plausible value or any JSON value.
entity = st.fixed_dictionaries({}, optional={"id": json_values | st.text(max_size=6),
                                             "name": json_values | st.text(max_size=6)})
consumer = st.fixed_dictionaries({}, optional={
    "id": json_values | st.text(min_size=1, max_size=6), "username": json_values,
    "custom_id": json_values, "tags": json_values | st.lists(json_values | st.text(max_size=6), max_size=3)})
request = st.fixed_dictionaries({}, optional={
    "method": json_values | st.sampled_from(["GET", "POST"]), "uri": json_values, "size": json_values,
    "headers": json_values | st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    "tls": json_values | st.fixed_dictionaries({}, optional={"client_verify": json_values})})
response = st.fixed_dictionaries({}, optional={
    "status": json_values, "headers": json_values | st.dictionaries(st.text(max_size=6), json_values, max_size=3)})
serialized = st.fixed_dictionaries({}, optional={
    "request": json_values | request, "response": json_values | response, "route": json_values | entity,
    "service": json_values | entity, "consumer": json_values | consumer,
    "authenticated_entity": json_values | entity, "client_ip": json_values, "started_at": json_values,
    "ai": json_values, "latencies": json_values | st.fixed_dictionaries({}, optional={"request": json_values})})


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(serialized)
def test_any_mapping_reads_like_a_dict(data: dict[str, Any]) -> None:
    assert parse_facts(wrapped(data)) == parse_facts(data)  # equal: no NaN kept (NaN != NaN)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(serialized)
def test_every_field_has_its_documented_type(data: dict[str, Any]) -> None:
    facts = parse_facts(data)
    assert isinstance(facts.method, str) and isinstance(facts.uri, str) and isinstance(facts.client_ip, str)
    assert isinstance(facts.size, int) and facts.size >= 0
    assert isinstance(facts.started_at, float) and isinstance(facts.latency_ms, float)
    assert math.isfinite(facts.started_at) and math.isfinite(facts.latency_ms)
    assert facts.consumer is None or (isinstance(facts.consumer.id, str) and facts.consumer.id)
    assert facts.credential_id is None or isinstance(facts.credential_id, str)
    for found in (facts.route, facts.service):
        assert found is None or isinstance(found, Entity)
    assert facts.response_status is None or type(facts.response_status) is int
    assert isinstance(facts.headers, dict) and isinstance(facts.response_headers, dict)
    assert isinstance(facts.ai, Mapping)


def test_values_of_the_wrong_type_become_defaults() -> None:
    facts = parse_facts({
        "request": {"method": 7, "uri": ["/x"], "size": True, "headers": "host: x", "tls": "SUCCESS"},
        "response": {"status": True, "headers": []},
        "route": "r-1", "service": {"id": 3, "name": ""}, "client_ip": None, "started_at": "1700000000000",
        "consumer": {"id": "", "username": "alice"}, "authenticated_entity": ["cred-1"], "ai": [1],
        "latencies": {"request": -5},
    })
    assert facts == RequestFacts(service=Entity(id=None, name=None))
    tagged = parse_facts({"consumer": {"id": "c-1", "username": 5, "tags": ["tier:gold", 3, None]},
                          "request": {"size": 10.7}, "started_at": True})
    assert tagged.consumer == Consumer(id="c-1", username=None, custom_id=None, tags=("tier:gold",))
    assert tagged.size == 10
    assert tagged.started_at == 0.001  # a boolean is an int to Python: kept as the parser always read it


def test_numbers_only_the_standard_parser_reads_are_read_as_absent_not_raised() -> None:
    # Kong's cjson writes what orjson refuses; load_serialized reads it with the standard parser
    text = ('{"started_at": %s, "request": {"size": %s}, "latencies": {"request": %s}}')
    for started, size, latency in (("1" + "0" * 400, "1e999", "NaN"), ("Infinity", "-Infinity", "1" + "0" * 30),
                                   ("NaN", "NaN", "Infinity"), ("-1" + "0" * 40, "1" + "0" * 25, "1e999")):
        facts = parse_facts(text % (started, size, latency))
        assert (facts.started_at, facts.size, facts.latency_ms) == (0.0, 0, 0.0)
    assert parse_facts(text % ("1700000000000", "1" + "0" * 18, "12.5")) == RequestFacts(
        started_at=1700000000.0, size=10**18, latency_ms=12.5)


def test_the_companions_body_is_the_bytes_that_were_sent() -> None:
    # a Lua string reaches the plugin server as msgpack str, decoded with surrogateescape
    sent = b'{"prompt": "caf\xc3\xa9"}\xff\xfe'
    facts = parse_facts({"request": {"method": "POST", "body": sent.decode("utf-8", "surrogateescape")}})
    assert facts.body == sent
    assert parse_facts({"request": {"body": b"raw"}}).body == b"raw"
    assert parse_facts({"request": {"body": ""}}).body == b""  # a request without a body
    # not published (chunked, too large, serialize's data) or not a string: the plugin asks Kong
    assert parse_facts({"request": {"method": "POST"}}).body is None
    assert parse_facts({"request": {"body": 12}}).body is None


def test_a_consumer_read_again_carries_its_current_fields() -> None:
    # Consumers recur on every request and are built once per distinct set of fields: a consumer
    # whose tags or names an admin changed is read with the new ones on its next request.
    def consumer(**fields: Any) -> Consumer | None:
        return parse_facts({"consumer": {"id": "c-1", **fields}}).consumer

    assert consumer(tags=["tenant:acme"]) == Consumer("c-1", tags=("tenant:acme",))
    assert consumer(tags=["tenant:acme"]) is consumer(tags=["tenant:acme"])
    assert consumer(tags=["tenant:globex"]) == Consumer("c-1", tags=("tenant:globex",))
    assert consumer(tags=["tenant:acme", "tier:gold"]) == Consumer("c-1", tags=("tenant:acme", "tier:gold"))
    assert consumer(tags=[]) == consumer() == Consumer("c-1")
    assert consumer(username="alice", custom_id="acme:7") == Consumer("c-1", "alice", "acme:7")
    assert consumer(username="bob", custom_id="acme:7") == Consumer("c-1", "bob", "acme:7")
    # values no cache key can hold are read as before: unhashable tags, a table for the tags
    assert consumer(tags=[{"name": "x"}, "tenant:acme"]) == Consumer("c-1", tags=("tenant:acme",))
    assert consumer(tags={"0": "tenant:acme"}) == Consumer("c-1")
    assert consumer(tags="tenant:acme") == Consumer("c-1")
    assert consumer(username="") == Consumer("c-1")  # empty names read as absent, cached or not
