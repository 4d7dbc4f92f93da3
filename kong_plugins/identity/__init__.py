"""Who is calling -- shared by the suite's plugins; never from anything the client can set.

Inputs are Kong's own request facts (consumer, credential, route, service, client IP, start
time), plus the bearer token header only when JWT verification is configured, plus the verified
client certificate only when mTLS identity is configured. Where the facts come from depends on
the phase (``kong.log.serialize()`` is a log-phase function, ``kong/pdk/log.lua``):

- access / response: :func:`gather_facts` -- ONE ``kong.ctx.shared.get`` of the table the Lua
  companion ``ai-suite-context`` leaves there (:mod:`kong_plugins.companion`), or, without it,
  the individual PDK calls the config needs (:class:`FactsNeeded`);
- log: ``parse_facts(kong.log.serialize())`` -- the data Kong saved for the log timer.

::

    facts = gather_facts(kong, needed)                 # access
    facts = parse_facts(kong.log.serialize())          # log
    identity = resolver.resolve(facts, token_header=..., certificate=...)
    identity.tier, identity.tenant, identity.subject_for("consumer")

Errors: :class:`MalformedFacts` when the facts are not the documented (serialize-shaped) object;
:class:`JwtError` (``reason`` only, never the token) inside the resolver, reported as
``Identity.jwt_error``; :class:`kong_plugins.errors.ConfigError` from :func:`parse_identity_config`.
"""

from ._facts import (
    EVERY_FACT,
    Consumer,
    Entity,
    FactsNeeded,
    MalformedFacts,
    RequestFacts,
    load_serialized,
    parse_facts,
)
from ._gather import FactsPDK, gather_facts, reset_companion_warning
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
    "EVERY_FACT",
    "IDENTITY_RECORD",
    "TENANT_SOURCES",
    "TIER_SOURCES",
    "ClientCertificate",
    "Consumer",
    "Entity",
    "FactsNeeded",
    "FactsPDK",
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
    "gather_facts",
    "load_serialized",
    "parse_client_certificate",
    "parse_facts",
    "parse_identity_config",
    "reset_companion_warning",
]
