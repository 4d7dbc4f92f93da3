"""Who is calling: tier, tenant and the subject a limit counts against, from Kong's own data.

Sources, in the order the config lists them (first match wins):

==============  ======================================================================================
consumer_tag    the Kong consumer's tags ``tier:<name>`` / ``tenant:<id>`` (set by an admin, not the client)
custom_id       the consumer's ``custom_id``: the text before the first ``:`` (``gold:acme-42`` -> gold)
credential      a config map from credential id (key-auth key, JWT credential...) to a tier or tenant
jwt_claim       a claim of a JWT this module verified itself (see ``_jwt.py``)
mtls_subject    a config map from the verified client certificate's subject or SAN to a tier/tenant
==============  ======================================================================================

Never a source: request headers. ``X-Consumer-ID``, ``X-Consumer-Username``, ``X-Credential-*``
or a tier header are client-settable (only Kong's auth plugins *add* them upstream), so nothing
here reads them; the only header read is the one carrying the bearer token, and only when JWT
verification is configured (``kong.log.serialize`` redacts ``authorization``, so it costs one more
PDK call, ``kong.request.get_header``).

mTLS: Kong 3.9 OSS has no mtls-auth plugin. What it exposes is ``request.tls.client_verify`` in
``kong.log.serialize()`` (nginx's ``$ssl_client_verify``) and the PEM chain through
``kong.client.tls.get_full_client_certificate_chain()`` (``kong/pdk/client/tls.lua``), which
returns the presented certificate *whether or not nginx verified it*. So a subject is only used
when ``client_verify`` is ``SUCCESS`` (nginx checked the chain against ``ssl_client_certificate``,
which the deployment must configure, e.g. ``KONG_NGINX_PROXY_SSL_CLIENT_CERTIFICATE`` and
``KONG_NGINX_PROXY_SSL_VERIFY_CLIENT=optional``), and costs one more PDK call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError

from ._facts import RequestFacts
from ._jwt import ALL_ALGORITHMS, JwtError, JwtSettings, JwtVerifier, bearer_token, claim, parse_keys

TIER_SOURCES = ("consumer_tag", "custom_id", "credential", "jwt_claim", "mtls_subject")
TENANT_SOURCES = ("consumer_tag", "credential", "jwt_claim", "mtls_subject")
LimitBy = Literal["consumer", "credential", "tenant", "ip"]

_NAME = "^[%w][%w_.:@-]*$"

JWT_RECORD = s.Record([
    s.Field("enabled", s.Boolean(
        default=False,
        description="Verify a bearer JWT and use its claims for identity, tier and tenant. Costs one PDK "
                    "call per request.",
    ), required=True),
    s.Field("header", s.String(default="authorization", description="Request header carrying "
                               "'Bearer <token>'."), required=True),
    s.Field("algorithms", s.Set(s.String(one_of=ALL_ALGORITHMS), default=["RS256", "ES256"],
                                description="Accepted signing algorithms; 'none' can never be accepted.",
                                len_min=1), required=True),
    s.Field("keys", s.Array(s.Record([
        s.Field("kid", s.String(description="Key id the token header must name to use this key.")),
        s.Field("key", s.String(description="PEM public key or certificate, or an HMAC secret of at least "
                                "the hash size; never logged."), required=True),
    ]), default=[], description="Verification keys: PEM public keys, certificates or HMAC secrets.")),
    s.Field("jwks", s.String(description="A JWKS document (JSON) with the issuer's public keys.")),
    s.Field("issuer", s.String(description="Required value of the 'iss' claim; unset accepts any issuer.")),
    s.Field("audience", s.Set(s.String(), default=[], description="Accepted 'aud' values; empty accepts "
                              "any audience."), required=True),
    s.Field("leeway", s.Integer(default=30, between=(0, 600), description="Seconds of clock skew "
                                "tolerated on exp, nbf and iat."), required=True),
    s.Field("require_exp", s.Boolean(default=True, description="Refuse tokens without an 'exp' claim."),
            required=True),
    s.Field("subject_claim", s.String(default="sub", description="Claim naming the caller when no Kong "
                                      "consumer is authenticated."), required=True),
    s.Field("tier_claim", s.String(default="tier", description="Claim holding the tier (dotted path)."),
            required=True),
    s.Field("tenant_claim", s.String(default="tenant", description="Claim holding the tenant (dotted "
                                     "path)."), required=True),
    s.Field("reject_invalid", s.Boolean(default=True, description="Answer 401 to a request presenting an "
                                        "invalid token instead of treating it as anonymous."), required=True),
], description="Verification of bearer JWTs by the plugin itself (no Kong consumer needed).")

MTLS_RECORD = s.Record([
    s.Field("enabled", s.Boolean(
        default=False,
        description="Use the client certificate nginx verified (client_verify SUCCESS). Costs one PDK "
                    "call on TLS requests.",
    ), required=True),
    s.Field("tiers", s.Map(keys=s.String(), values=s.String(match=_NAME), default={},
                           description="Certificate subject (RFC 4514) or SAN value to tier name."),
            required=True),
    s.Field("tenants", s.Map(keys=s.String(), values=s.String(), default={},
                             description="Certificate subject (RFC 4514) or SAN value to tenant id."),
            required=True),
], description="Identity of internal services from verified mTLS client certificates.")

#: The identity block plugins embed: ``s.Field("identity", IDENTITY_RECORD, required=True)``.
IDENTITY_RECORD = s.Record([
    s.Field("tier_sources", s.Array(
        s.String(one_of=TIER_SOURCES), default=["consumer_tag", "credential"],
        description="Where the tier comes from, first match wins.",
    ), required=True),
    s.Field("tenant_sources", s.Array(s.String(one_of=TENANT_SOURCES),
                                      default=["consumer_tag", "credential"],
                                      description="Where the tenant comes from, first match wins."),
            required=True),
    s.Field("default_tenant", s.String(default="default", description="Tenant of callers no source "
                                       "names (anonymous callers included)."), required=True),
    s.Field("credential_tiers", s.Map(keys=s.String(), values=s.String(match=_NAME), default={},
                                      description="Kong credential id to tier name."), required=True),
    s.Field("credential_tenants", s.Map(keys=s.String(), values=s.String(), default={},
                                        description="Kong credential id to tenant id."), required=True),
    s.Field("jwt", JWT_RECORD, required=True),
    s.Field("mtls", MTLS_RECORD, required=True),
], description="How the caller, its tier and its tenant are resolved; never from client headers.")


class TlsPDK(Protocol):
    def get_full_client_certificate_chain(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Identity:
    """The resolved caller. ``tier`` is None when no source named one (the plugin applies its
    default); ``subject`` names the caller for per-caller limits (see :meth:`subject_for`)."""

    tier: str | None
    tier_source: str | None
    tenant: str
    consumer_id: str | None
    credential_id: str | None
    client_ip: str
    jwt_subject: str | None = None
    cert_subject: str | None = None
    jwt_error: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.consumer_id is None and self.jwt_subject is None and self.cert_subject is None

    def subject_for(self, limit_by: LimitBy) -> tuple[str, str]:
        """(kind, value) a per-caller counter is keyed by. Falls back like Kong's rate-limiting:
        credential -> consumer -> verified JWT subject -> certificate -> client IP."""
        if limit_by == "tenant":
            return "tenant", self.tenant
        if limit_by == "ip":
            return "ip", self.client_ip
        if limit_by == "credential" and self.credential_id:
            return "credential", self.credential_id
        if self.consumer_id:
            return "consumer", self.consumer_id
        if self.jwt_subject:
            return "jwt", self.jwt_subject
        if self.cert_subject:
            return "cert", self.cert_subject
        return "ip", self.client_ip


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    tier_sources: tuple[str, ...]
    tenant_sources: tuple[str, ...]
    default_tenant: str
    credential_tiers: Mapping[str, str]
    credential_tenants: Mapping[str, str]
    jwt: JwtSettings | None
    jwt_header: str
    jwt_subject_claim: str
    jwt_tier_claim: str
    jwt_tenant_claim: str
    jwt_reject_invalid: bool
    mtls: bool
    mtls_tiers: Mapping[str, str]
    mtls_tenants: Mapping[str, str]


def parse_identity_config(raw: Mapping[str, Any], path: str = "identity") -> IdentityConfig:
    """Typed identity config from the validated ``identity`` record; cross-field rules here."""
    jwt_raw = raw["jwt"]
    settings: JwtSettings | None = None
    if jwt_raw["enabled"]:
        algorithms = tuple(jwt_raw["algorithms"])
        keys = parse_keys(jwt_raw["keys"], jwt_raw.get("jwks"), algorithms, f"{path}.jwt")
        if not keys:
            raise ConfigError(f"{path}.jwt.keys", "JWT verification needs keys or a jwks document")
        settings = JwtSettings(
            algorithms=algorithms, keys=keys, issuer=jwt_raw.get("issuer"),
            audience=tuple(jwt_raw["audience"]), leeway=float(jwt_raw["leeway"]),
            require_exp=bool(jwt_raw["require_exp"]),
        )
    for field_name in ("tier_sources", "tenant_sources"):
        sources = raw[field_name]
        if len(set(sources)) != len(sources):
            raise ConfigError(f"{path}.{field_name}", "a source is listed twice")
        if "jwt_claim" in sources and settings is None:
            raise ConfigError(f"{path}.{field_name}", "jwt_claim needs identity.jwt.enabled")
        if "mtls_subject" in sources and not raw["mtls"]["enabled"]:
            raise ConfigError(f"{path}.{field_name}", "mtls_subject needs identity.mtls.enabled")
    return IdentityConfig(
        tier_sources=tuple(raw["tier_sources"]),
        tenant_sources=tuple(raw["tenant_sources"]),
        default_tenant=raw["default_tenant"],
        credential_tiers=dict(raw["credential_tiers"]),
        credential_tenants=dict(raw["credential_tenants"]),
        jwt=settings,
        jwt_header=jwt_raw["header"].lower(),
        jwt_subject_claim=jwt_raw["subject_claim"],
        jwt_tier_claim=jwt_raw["tier_claim"],
        jwt_tenant_claim=jwt_raw["tenant_claim"],
        jwt_reject_invalid=bool(jwt_raw["reject_invalid"]),
        mtls=bool(raw["mtls"]["enabled"]),
        mtls_tiers=dict(raw["mtls"]["tiers"]),
        mtls_tenants=dict(raw["mtls"]["tenants"]),
    )


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    subject: str
    sans: tuple[str, ...]


_CERT_CACHE: dict[str, ClientCertificate | None] = {}
_CERT_LOCK = threading.Lock()


def parse_client_certificate(pem_chain: str | None) -> ClientCertificate | None:
    """Subject (RFC 4514) and DNS/URI/email SANs of the first certificate of a PEM chain."""
    if not pem_chain:
        return None
    with _CERT_LOCK:
        if pem_chain in _CERT_CACHE:
            return _CERT_CACHE[pem_chain]
    try:
        cert = x509.load_pem_x509_certificate(pem_chain.encode())
        sans: list[str] = []
        try:
            ext = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            assert isinstance(ext, x509.SubjectAlternativeName)
            for kind in (x509.DNSName, x509.UniformResourceIdentifier, x509.RFC822Name):
                sans.extend(str(v) for v in ext.get_values_for_type(kind))
        except x509.ExtensionNotFound:
            pass
        parsed: ClientCertificate | None = ClientCertificate(cert.subject.rfc4514_string(), tuple(sans))
    except ValueError:
        parsed = None
    with _CERT_LOCK:
        if len(_CERT_CACHE) > 1024:
            _CERT_CACHE.clear()
        _CERT_CACHE[pem_chain] = parsed
    return parsed


#: The claims of a request without a (valid) token: read only, shared.
_NO_CLAIMS: Mapping[str, Any] = {}


class IdentityResolver:
    """Resolves :class:`Identity` from :class:`RequestFacts` (+ token, + certificate) in pure code.

    The PDK calls stay with the caller: :attr:`needs_authorization_header` says whether to fetch
    the token header, :meth:`needs_certificate` whether to fetch the certificate chain.
    """

    def __init__(self, config: IdentityConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._verifier = JwtVerifier(config.jwt, clock) if config.jwt is not None else None
        # Each configured source as a lookup built once for this config (like the verifier): a
        # request no longer compares source names, rebuilds the tag prefix or picks the table, and
        # a source that can never answer (a credential map left empty, the default) is not called.
        self._tier_lookups = tuple((source, lookup) for source in config.tier_sources
                                   if (lookup := _source_lookup(source, "tier", config)) is not None)
        self._tenant_lookups = tuple(lookup for source in config.tenant_sources
                                     if (lookup := _source_lookup(source, "tenant", config)) is not None)

    @property
    def needs_authorization_header(self) -> str | None:
        """Name of the header to fetch with ``kong.request.get_header``, or None."""
        return self.config.jwt_header if self._verifier is not None else None

    def needs_certificate(self, facts: RequestFacts) -> bool:
        return self.config.mtls and facts.tls_client_verify == "SUCCESS"

    def resolve(
        self,
        facts: RequestFacts,
        token_header: str | None = None,
        certificate: ClientCertificate | None = None,
    ) -> Identity:
        cfg = self.config
        claims: Mapping[str, Any] = _NO_CLAIMS
        jwt_error: str | None = None
        jwt_subject: str | None = None
        if self._verifier is not None:
            claims, jwt_error = self._claims(facts, token_header)
            sub = claim(claims, cfg.jwt_subject_claim) if claims else None
            if sub is not None:
                iss = claims.get("iss")
                # Length-prefixed: iss "a|b" + sub "c" and iss "a" + sub "b|c" stay apart
                # (two trusted issuers could otherwise mint one another's subjects).
                jwt_subject = f"{len(iss)}:{iss}|{sub}" if isinstance(iss, str) else f"-|{sub}"
        if certificate is not None and facts.tls_client_verify != "SUCCESS":
            certificate = None
        consumer = facts.consumer
        tier, tier_source = None, None
        for source, lookup in self._tier_lookups:
            tier = lookup(facts, claims, certificate)
            if tier is not None:
                tier_source = source
                break
        return Identity(
            tier=tier,
            tier_source=tier_source,
            tenant=self._tenant(facts, claims, certificate),
            consumer_id=consumer.id if consumer else None,
            credential_id=facts.credential_id,
            client_ip=facts.client_ip,
            jwt_subject=jwt_subject,
            cert_subject=certificate.subject if certificate else None,
            jwt_error=jwt_error,
        )

    def resolve_tenant(
        self,
        facts: RequestFacts,
        token_header: str | None = None,
        certificate: ClientCertificate | None = None,
    ) -> str:
        """``resolve(facts, token_header, certificate).tenant``, without what only the rest of the
        identity needs (the tier lookup, the JWT subject, the ``Identity`` object): ~1.5 us less
        for a caller that only partitions by tenant, as ai-extraction-guard does (in access; its
        log phase gets the tenant with the hand-off)."""
        claims = self._claims(facts, token_header)[0] if self._verifier is not None else _NO_CLAIMS
        if certificate is not None and facts.tls_client_verify != "SUCCESS":
            certificate = None
        return self._tenant(facts, claims, certificate)

    def _claims(self, facts: RequestFacts, token_header: str | None) -> tuple[Mapping[str, Any], str | None]:
        """The verified claims of the bearer token (none without one) and the reason it was refused."""
        assert self._verifier is not None
        token = bearer_token(token_header)
        if token is None:
            return _NO_CLAIMS, None
        try:
            return self._verifier.verify(token, now=facts.started_at or None), None
        except JwtError as exc:
            return _NO_CLAIMS, exc.reason

    def _tenant(self, facts: RequestFacts, claims: Mapping[str, Any],
                certificate: ClientCertificate | None) -> str:
        """The first tenant a source names (an empty one reads as none: the default tenant)."""
        for lookup in self._tenant_lookups:
            tenant = lookup(facts, claims, certificate)
            if tenant is not None:
                return tenant or self.config.default_tenant
        return self.config.default_tenant


#: A source's answer for one request: (facts, verified claims, verified certificate) -> name or None.
_Lookup = Callable[[RequestFacts, Mapping[str, Any], ClientCertificate | None], str | None]


def _source_lookup(source: str, what: Literal["tier", "tenant"], cfg: IdentityConfig) -> _Lookup | None:
    """The lookup of ``source`` for ``what`` under ``cfg``; None for a source that never answers
    (an empty map, or a name no source has)."""
    if source == "consumer_tag":
        prefix = what + ":"
        start = len(prefix)

        def from_consumer_tag(facts: RequestFacts, claims: Mapping[str, Any],
                              certificate: ClientCertificate | None) -> str | None:
            consumer = facts.consumer
            if consumer is None:
                return None
            for tag in consumer.tags:
                if tag.startswith(prefix) and len(tag) > start:
                    return tag[start:]
            return None
        return from_consumer_tag
    if source == "custom_id":
        def from_custom_id(facts: RequestFacts, claims: Mapping[str, Any],
                           certificate: ClientCertificate | None) -> str | None:
            consumer = facts.consumer
            if consumer is None or not consumer.custom_id:
                return None
            return consumer.custom_id.split(":", 1)[0] or None
        return from_custom_id
    if source == "credential":
        credentials = cfg.credential_tiers if what == "tier" else cfg.credential_tenants
        if not credentials:
            return None

        def from_credential(facts: RequestFacts, claims: Mapping[str, Any],
                            certificate: ClientCertificate | None) -> str | None:
            credential = facts.credential_id
            return credentials.get(credential) if credential else None
        return from_credential
    if source == "jwt_claim":
        claim_path = cfg.jwt_tier_claim if what == "tier" else cfg.jwt_tenant_claim

        def from_jwt_claim(facts: RequestFacts, claims: Mapping[str, Any],
                           certificate: ClientCertificate | None) -> str | None:
            return claim(claims, claim_path)
        return from_jwt_claim
    if source == "mtls_subject":
        subjects = cfg.mtls_tiers if what == "tier" else cfg.mtls_tenants
        if not subjects:
            return None

        def from_mtls_subject(facts: RequestFacts, claims: Mapping[str, Any],
                              certificate: ClientCertificate | None) -> str | None:
            if certificate is None:
                return None
            for name in (certificate.subject, *certificate.sans):
                if name in subjects:
                    return subjects[name]
            return None
        return from_mtls_subject
    return None
