"""Headers a client sends can never change who it is, its tier or its tenant."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kong_plugins.identity import parse_facts
from tests.identity.identity_helpers import resolver, serialized

FORGEABLE = ["x-consumer-id", "x-consumer-username", "x-consumer-custom-id", "x-credential-identifier",
             "x-anonymous-consumer", "x-tier", "x-ai-tier", "x-ai-tenant", "x-tenant", "x-forwarded-for",
             "x-real-ip", "x-consumer-groups"]
values = st.one_of(st.text(max_size=20), st.lists(st.text(max_size=10), max_size=3))
headers = st.dictionaries(st.sampled_from(FORGEABLE) | st.text(min_size=1, max_size=12), values, max_size=6)
consumers = st.none() | st.builds(
    lambda cid, tags: {"id": cid, "username": "u", "tags": tags},
    st.sampled_from(["c-1", "c-2"]),
    st.lists(st.sampled_from(["tier:free", "tier:gold", "tenant:a", "tenant:b", "other"]), max_size=3),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(consumers, headers)
def test_forged_headers_change_nothing(consumer: dict[str, object] | None, forged: dict[str, object]) -> None:
    res = resolver(tier_sources=["consumer_tag", "custom_id", "credential"], tenant_sources=["consumer_tag"])
    honest = res.resolve(parse_facts(serialized(consumer=consumer)))
    lying = res.resolve(parse_facts(serialized(consumer=consumer, headers=forged)))
    assert lying == honest
