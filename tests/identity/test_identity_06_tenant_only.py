"""``resolve_tenant``: the tenant alone (what ai-extraction-guard asks twice a request) is always
the tenant of the whole ``resolve``, whatever source answers or fails."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import jwt
import pytest

from kong_plugins.identity import IdentityResolver, parse_client_certificate, parse_facts, parse_identity_config
from tests.identity.identity_helpers import (
    HMAC_SECRET,
    NOW,
    client_certificate,
    identity_config,
    public_pem,
    resolver,
    rsa_key,
    serialized,
)

TAGGED = {"id": "c-1", "tags": ["tier:gold", "tenant:acme"]}
UNTAGGED = {"id": "c-2", "tags": ["team:x"]}
CLAIMS = {"sub": "u-7", "iss": "https://idp", "aud": "gateway", "tenant": "globex", "exp": NOW + 300}


def _jwt_resolver(**overrides: Any) -> IdentityResolver:
    settings = {"enabled": True, "keys": [{"kid": "k1", "key": public_pem(rsa_key())}],
                "issuer": "https://idp", "audience": ["gateway"]}
    return resolver(tenant_sources=["jwt_claim", "consumer_tag"], jwt=settings, **overrides)


def _bearer(claims: dict[str, Any]) -> str:
    return "Bearer " + jwt.encode(claims, rsa_key(), algorithm="RS256", headers={"kid": "k1"})


RESOLVERS = {
    "defaults": resolver(),
    "credential first": resolver(tenant_sources=["credential", "consumer_tag"],
                                 credential_tenants={"cred-1": "initech"}, default_tenant="public"),
    "jwt": _jwt_resolver(),
    "mtls": resolver(tenant_sources=["mtls_subject"],
                     mtls={"enabled": True, "tenants": {"billing.internal": "umbrella"}}),
}
TOKENS = {
    "no token": None,
    "valid": _bearer(CLAIMS),
    "expired": _bearer({**CLAIMS, "exp": NOW - 3600}),
    "no tenant claim": _bearer({k: v for k, v in CLAIMS.items() if k != "tenant"}),
    "wrong key": "Bearer " + jwt.encode(CLAIMS, HMAC_SECRET, algorithm="HS256"),
    "garbage": "Bearer not.a.token",
}
CERTIFICATE = parse_client_certificate(client_certificate("billing-svc", "billing.internal"))


@pytest.mark.parametrize("name", list(RESOLVERS))
@pytest.mark.parametrize("token", list(TOKENS))
@pytest.mark.parametrize("consumer", [None, TAGGED, UNTAGGED])
@pytest.mark.parametrize("credential", [None, "cred-1", "cred-9"])
@pytest.mark.parametrize("tls", [None, "SUCCESS", "FAILED:self signed certificate"])
def test_the_tenant_alone_is_the_tenant_of_the_whole_identity(
        name: str, token: str, consumer: dict[str, Any] | None, credential: str | None, tls: str | None) -> None:
    res = RESOLVERS[name]
    facts = parse_facts(serialized(consumer=consumer, credential=credential, tls_verify=tls))
    for certificate in (None, CERTIFICATE):
        whole = res.resolve(facts, TOKENS[token], certificate)
        assert res.resolve_tenant(facts, TOKENS[token], certificate) == whole.tenant


def test_each_source_answers_the_tenant_alone() -> None:
    # Not only equal to resolve: each case reaches the source it is about.
    assert RESOLVERS["defaults"].resolve_tenant(parse_facts(serialized(consumer=TAGGED))) == "acme"
    by_credential = RESOLVERS["credential first"]
    assert by_credential.resolve_tenant(parse_facts(serialized(consumer=TAGGED, credential="cred-1"))) == "initech"
    assert by_credential.resolve_tenant(parse_facts(serialized(credential="cred-9"))) == "public"
    by_jwt = RESOLVERS["jwt"]
    assert by_jwt.resolve_tenant(parse_facts(serialized(consumer=TAGGED)), TOKENS["valid"]) == "globex"
    assert by_jwt.resolve_tenant(parse_facts(serialized(consumer=TAGGED)), TOKENS["expired"]) == "acme"
    verified = parse_facts(serialized(tls_verify="SUCCESS"))
    unverified = parse_facts(serialized(tls_verify="FAILED:self signed certificate"))
    assert RESOLVERS["mtls"].resolve_tenant(verified, None, CERTIFICATE) == "umbrella"
    assert RESOLVERS["mtls"].resolve_tenant(unverified, None, CERTIFICATE) == "default"


def test_a_bare_prefix_tag_names_nothing_and_an_empty_answer_ends_the_search() -> None:
    # What each source's lookup (built once per config) keeps answering: "tenant:" alone is no tenant,
    # and a source answering "" (a map built in code: the schema refuses empty values) stops at the
    # default tenant rather than asking the next source.
    facts = parse_facts(serialized(consumer={"id": "c-3", "tags": ["tier:", "tenant:", "tier:gold", "tenant:acme"]},
                                   credential="cred-1"))
    for res in (resolver(), resolver(tier_sources=["consumer_tag"], credential_tenants={"cred-9": "x"})):
        assert res.resolve_tenant(facts) == res.resolve(facts).tenant == "acme"
        assert (res.resolve(facts).tier, res.resolve(facts).tier_source) == ("gold", "consumer_tag")
    config = parse_identity_config(identity_config(tenant_sources=["credential", "consumer_tag"],
                                                   default_tenant="public"))
    blank = IdentityResolver(replace(config, credential_tenants={"cred-1": ""}), clock=lambda: NOW)
    assert blank.resolve_tenant(facts) == blank.resolve(facts).tenant == "public"
    assert IdentityResolver(config, clock=lambda: NOW).resolve_tenant(facts) == "acme"
