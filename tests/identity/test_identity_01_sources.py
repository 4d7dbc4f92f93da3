"""Tier, tenant and subject from Kong's own data: consumer tags, custom_id, credential, mTLS."""

from __future__ import annotations

import pytest

from kong_plugins.errors import ConfigError
from kong_plugins.identity import MalformedFacts, parse_client_certificate, parse_facts, parse_identity_config
from tests.identity.identity_helpers import client_certificate, identity_config, resolver, serialized

GOLD = {"id": "c-1", "username": "alice", "custom_id": "premium:acme-1", "tags": ["team:x", "tier:gold",
                                                                                  "tenant:acme"]}


def test_facts_carry_what_kong_resolved() -> None:
    facts = parse_facts(serialized(consumer=GOLD, credential="cred-1"))
    assert facts.consumer is not None and facts.consumer.tags == ("team:x", "tier:gold", "tenant:acme")
    assert facts.credential_id == "cred-1"
    assert facts.client_ip == "10.0.0.5"
    assert facts.started_at == 1_750_000_000.0
    assert facts.service is not None and facts.service.name == "textgen"


@pytest.mark.parametrize("answer", ["not json", "[1, 2]", b"\xff"])
def test_a_broken_serialize_answer_is_a_clear_error(answer: str | bytes) -> None:
    with pytest.raises(MalformedFacts):
        parse_facts(answer)


def test_consumer_tags_give_tier_and_tenant() -> None:
    identity = resolver().resolve(parse_facts(serialized(consumer=GOLD)))
    assert (identity.tier, identity.tier_source, identity.tenant) == ("gold", "consumer_tag", "acme")
    assert identity.subject_for("consumer") == ("consumer", "c-1")
    assert identity.subject_for("tenant") == ("tenant", "acme")


def test_sources_are_tried_in_the_configured_order() -> None:
    facts = parse_facts(serialized(consumer=GOLD, credential="cred-1"))
    by_credential = resolver(tier_sources=["credential", "consumer_tag"], credential_tiers={"cred-1": "silver"})
    assert by_credential.resolve(facts).tier == "silver"
    by_custom_id = resolver(tier_sources=["custom_id"])
    assert by_custom_id.resolve(facts).tier == "premium"


def test_anonymous_callers_get_no_tier_the_default_tenant_and_are_counted_by_ip() -> None:
    identity = resolver(default_tenant="public").resolve(parse_facts(serialized()))
    assert identity.anonymous
    assert identity.tier is None
    assert identity.tenant == "public"
    assert identity.subject_for("consumer") == ("ip", "10.0.0.5")
    assert identity.subject_for("credential") == ("ip", "10.0.0.5")


def test_limit_by_credential_falls_back_to_the_consumer() -> None:
    identity = resolver().resolve(parse_facts(serialized(consumer=GOLD)))
    assert identity.subject_for("credential") == ("consumer", "c-1")


def test_mtls_subject_is_used_only_when_nginx_verified_the_certificate() -> None:
    pem = client_certificate("billing-svc", "billing.internal")
    cert = parse_client_certificate(pem)
    assert cert is not None and cert.subject == "CN=billing-svc" and cert.sans == ("billing.internal",)
    mtls = resolver(tier_sources=["mtls_subject"], mtls={"enabled": True, "tiers": {"billing.internal": "internal"}})
    verified = parse_facts(serialized(tls_verify="SUCCESS"))
    assert mtls.needs_certificate(verified)
    assert mtls.resolve(verified, certificate=cert).tier == "internal"
    unverified = parse_facts(serialized(tls_verify="FAILED:self signed certificate"))
    assert not mtls.needs_certificate(unverified)
    identity = mtls.resolve(unverified, certificate=cert)
    assert identity.tier is None and identity.cert_subject is None


def test_garbage_certificate_is_ignored() -> None:
    assert parse_client_certificate("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") is None


@pytest.mark.parametrize(("overrides", "field"), [
    ({"tier_sources": ["jwt_claim"]}, "identity.tier_sources"),
    ({"tenant_sources": ["mtls_subject"]}, "identity.tenant_sources"),
    ({"tier_sources": ["consumer_tag", "consumer_tag"]}, "identity.tier_sources"),
    ({"jwt": {"enabled": True}}, "identity.jwt.keys"),
])
def test_invalid_combinations_are_rejected_naming_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_identity_config(identity_config(**overrides))
    assert info.value.field == field
