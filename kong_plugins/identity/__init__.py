"""Who is calling -- shared by the suite's plugins; never from anything the client can set.

Inputs are Kong's own: the ONE ``kong.log.serialize()`` answer (consumer, credential, route,
service, client IP, start time), plus the bearer token header only when JWT verification is
configured, plus the verified client certificate only when mTLS identity is configured.

::

    facts = parse_facts(kong.log.serialize())
    identity = resolver.resolve(facts, token_header=..., certificate=...)
    identity.tier, identity.tenant, identity.subject_for("consumer")

Errors: :class:`MalformedFacts` when serialize's answer is not the documented object;
:class:`JwtError` (``reason`` only, never the token) inside the resolver, reported as
``Identity.jwt_error``; :class:`kong_plugins.errors.ConfigError` from :func:`parse_identity_config`.
"""

from ._facts import Consumer, Entity, MalformedFacts, RequestFacts, parse_facts
from ._jwt import ALL_ALGORITHMS, JwtError, JwtSettings, JwtVerifier, VerificationKey, bearer_token, claim
from ._resolve import (
    IDENTITY_RECORD,
    TENANT_SOURCES,
    TIER_SOURCES,
    ClientCertificate,
    Identity,
    IdentityConfig,
    IdentityResolver,
    LimitBy,
    TlsPDK,
    parse_client_certificate,
    parse_identity_config,
)

__all__ = [
    "ALL_ALGORITHMS",
    "IDENTITY_RECORD",
    "TENANT_SOURCES",
    "TIER_SOURCES",
    "ClientCertificate",
    "Consumer",
    "Entity",
    "Identity",
    "IdentityConfig",
    "IdentityResolver",
    "JwtError",
    "JwtSettings",
    "JwtVerifier",
    "LimitBy",
    "MalformedFacts",
    "RequestFacts",
    "TlsPDK",
    "VerificationKey",
    "bearer_token",
    "claim",
    "parse_client_certificate",
    "parse_facts",
    "parse_identity_config",
]
