"""The Kong phases of ai-extraction-guard: a cheap access check, learning in the log phase.

PDK calls per request (each one RPC round trip to Kong):

- access: ``kong.ctx.shared.get`` of the request facts the Lua companion ``ai-suite-context``
  publishes (identity, route, Kong's start time and the body -- one call instead of nine;
  ``kong_plugins.identity.gather_facts``, which falls back to those calls without the
  companion; ``kong.log.serialize`` is log-only, a Lua error and Kong's 500 in access),
  ``kong.request.get_raw_body`` only for a POST/PUT/PATCH body the companion left out (chunked,
  or above its ``request_body_max_bytes``), ``kong.ctx.shared.set`` (hands the body,
  the client, its tenant, route, start time and size to the log phase), then at most one of
  ``kong.response.exit`` / ``kong.service.request.set_headers``; with ``decision_mark`` the hand-off
  is the decision mark (``kong_plugins.marks``) carrying the same -- the same call, plus one on
  requests without an analysable body;
- log: one ``kong.ctx.shared.get`` (the hand-off, which the companion's log phase completed with
  the response's size and the response tap's summary -- ``kong.ctx.shared`` is read by reference
  in the log timer, after Kong's whole log phase), one log line per decision. Without the
  companion's log phase (an older companion, or none): also ``kong.ctx.shared.get`` of the tap's
  summary and, for an LLM request whose output no tap counted, ``kong.log.serialize`` (the data
  Kong saved for the log timer) for its response size.

Why the body travels through ``kong.ctx.shared``: the log phase runs in a timer after the
response; ``kong/runloop/plugin_servers/plugin.lua`` saves the serialize data, request/response
headers, status and ``kong.ctx.shared`` for it -- but no request or response body. What the
access phase puts in ``kong.ctx.shared`` is what the log phase can read. The tenant travels with
the body for the same reason: a client certificate cannot be read in the timer, and a JWT would
cost a round trip to verify again.

Response-derived signals (top-1/top-2 margins, real output-token counts) need the response body,
which only a ``response`` handler sees -- and declaring one makes Kong buffer *every* response of
the route, which breaks LLM streaming. So this plugin has no response phase: the companion plugin
``ai-extraction-guard-tap`` (``kong_plugins.extraction_guard.tap``, its own plugin server) is
attached only to the routes where buffering is acceptable (non-streaming predict APIs) and leaves a
small summary in ``kong.ctx.shared``. Without it, LLM output volume is estimated from the response
size Kong logs.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any, cast

from kong_plugins.errors import StorageError
from kong_plugins.frozen import positional_builder
from kong_plugins.identity import (
    FactsNeeded,
    IdentityResolver,
    RequestFacts,
    TlsPDK,
    gather_facts,
    load_serialized,
    parse_client_certificate,
    parse_facts,
    parse_identity_config,
)
from kong_plugins.marks import mark_key, mark_value
from kong_plugins.pdk import Kong
from kong_plugins.region import Denylist, parse_region_config
from kong_plugins.runtime import PDKError
from kong_plugins.storage.config import build_storage

from .alerts import WebhookSink, shared_sink
from .config import LEVELS, GuardConfig
from .detector import Detector
from .guard import Decision, ExtractionGuard, Identity, build_observation
from .schema import SCHEMA

#: kong.ctx.shared keys: the request body stashed by access, the response summary left by the tap.
BODY_KEY = "ai_extraction_guard.body"
TAP_KEY = "ai_extraction_guard.tap"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def identify(facts: RequestFacts, cfg: GuardConfig, tenant: str = "default") -> Identity:
    """The scored client, its group and its credential, from Kong's own data only.

    ``tenant`` is the one :class:`~kong_plugins.identity.IdentityResolver` resolved from verified
    sources (consumer tag, credential, verified JWT claim or mTLS subject); every key of the
    client and of its group lives in that tenant's namespace.
    """
    ip = facts.client_ip or "unknown"
    consumer = facts.consumer
    client_by = cfg.client_by
    client: str
    # Which branch named the client (its prefix), kept rather than read back with startswith.
    client_kind = ""
    if client_by == "credential" and facts.credential_id:
        client = f"credential:{facts.credential_id}"
    elif (client_by == "consumer" or client_by == "credential") and consumer:
        client = f"consumer:{consumer.id}"
    elif client_by == "tenant" and tenant:
        client, client_kind = f"tenant:{tenant}", "tenant"
    else:
        client, client_kind = f"ip:{ip}", "ip"
    group_by = cfg.group_by
    group: str | None = None
    if group_by == "ip":
        if client_kind != "ip":
            group = f"ip:{ip}"
    elif group_by == "ip_prefix":
        group = f"net:{_prefix(ip)}"
    elif group_by == "tenant" and tenant and client_kind != "tenant":
        group = f"tenant:{tenant}"
    # client, group, credential, tenant, ip
    return _build_identity(client, group, facts.credential_id, tenant, facts.client_ip or None)


#: ``Identity(...)`` without the frozen constructor's per-field cost (kong_plugins.frozen): twice a request.
_build_identity = positional_builder(Identity)


def _handed_request(handed: dict[str, Any]) -> tuple[Identity, float, str, int] | None:
    """Who sent the request, when, on which route and its size, as access handed them over."""
    # Exact types: the hand-off comes back from Kong through msgpack (plain str, int, float).
    get = handed.get
    client, tenant, route, started_at, size = get("client"), get("tenant"), get("route"), get("t"), get("size")
    if not (type(client) is str and type(tenant) is str and type(route) is str
            and (type(started_at) is float or type(started_at) is int) and type(size) is int):
        return None
    group, credential, ip = get("group"), get("credential"), get("ip")
    ident = _build_identity(client, group if type(group) is str else None,
                            credential if type(credential) is str else None, tenant,
                            ip if type(ip) is str else None)
    return ident, float(started_at), route, size


class _Serialized:
    """``kong.log.serialize()``'s data for a log phase that needs it: one round trip at most."""

    __slots__ = ("_data", "_kong", "_read")

    def __init__(self, kong: Kong) -> None:
        self._kong = kong
        self._data: Any = None
        self._read = False

    def data(self) -> Any:
        if not self._read:
            raw = self._kong.log.serialize()
            self._data = load_serialized(raw) if isinstance(raw, str | bytes) else raw
            self._read = True
        return self._data

    def response_size(self) -> int:
        return _response_size(self.data())


def _response_size(data: Any) -> int:
    """The response's size as Kong logs it in serialize's data (``var.bytes_sent``): read only
    when needed (output tokens of an LLM request without a response tap)."""
    response = data.get("response") if isinstance(data, dict) else None
    size = response.get("size", 0) if isinstance(response, dict) else 0
    return size if type(size) is int else 0


def _completed_response_size(handed: dict[str, Any]) -> int | None:
    """The response size ai-suite-context's log phase added to the hand-off (``var.bytes_sent``,
    serialize's ``response.size``), None when it did not (an older companion, or none)."""
    size = handed.get("response_size")
    if type(size) is int:  # msgpack's integers (not bool)
        return size if size >= 0 else None
    if type(size) is float and 0.0 <= size < 2.0**63:  # a Lua number may arrive as a double
        return int(size)
    return None


def _prefix(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    bits = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def route_of(facts: RequestFacts) -> str:
    if facts.route is not None:
        return facts.route.id or facts.route.name or "-"
    return facts.uri.split("?", 1)[0] or "-"


class Plugin:
    """One instance per plugin configuration (Kong's StartInstance)."""

    def __init__(self, config: dict[str, Any]) -> None:
        validated = SCHEMA.validate(config)
        self.cfg = GuardConfig.from_validated(validated)
        self.failure_mode = self.cfg.failure_mode
        self.storage = build_storage(validated["storage"], path="storage")
        self.sink: WebhookSink | None = shared_sink(self.cfg.webhook) if self.cfg.webhook else None
        identity_config = parse_identity_config(validated["identity"])
        self.identity = IdentityResolver(identity_config, time.time)
        #: Whether the tenant may need the token header or the client certificate (a PDK call).
        self._tenant_reads_kong = self.identity.needs_authorization_header is not None or identity_config.mtls
        #: What access reads (fetched one by one only without the companion): the client (consumer,
        #: credential, IP), the route, Kong's start time, the method and size deciding whether to
        #: read the body -- no service, no headers.
        self.facts_needed = FactsNeeded(service=False, tls=identity_config.mtls, headers=False)
        region = parse_region_config(validated["region"], "region")
        self.guard = ExtractionGuard(self.cfg, self.storage, Detector(self.cfg),
                                     denylist=Denylist(self.storage, region=region.name))
        #: Read by the runtime too: it marks ``failed_open`` when a handler raises in open mode.
        self.decision_mark_key = mark_key("ai-extraction-guard") if self.cfg.decision_mark else None

    def _tenant(self, kong: Kong, facts: RequestFacts) -> str:
        """The caller's tenant; costs a PDK call only with JWT or mTLS identity configured."""
        if not self._tenant_reads_kong:
            return self.identity.resolve_tenant(facts)
        token = None
        header = self.identity.needs_authorization_header
        if header is not None:
            token = kong.request.get_header(header)
        certificate = None
        if self.identity.needs_certificate(facts):
            tls = cast(TlsPDK, cast(Any, kong.client).tls)
            certificate = parse_client_certificate(tls.get_full_client_certificate_chain())
        return self.identity.resolve_tenant(facts, token, certificate)

    def access(self, kong: Kong) -> None:
        facts = gather_facts(kong, self.facts_needed)
        tenant = self._tenant(kong, facts)
        ident = identify(facts, self.cfg, tenant)
        body = self._body(kong, facts)
        try:
            outcome = self.guard.check_access(ident, facts.started_at, body)
        except StorageError as exc:
            kong.log.err(f"ai-extraction-guard: storage failed ({type(exc).__name__}); failure_mode="
                         f"{self.failure_mode}")
            if self.failure_mode == "closed":
                kong.response.exit(503, {"message": "service temporarily unavailable"})
            self._hand_off(kong, "degraded", None, ident, facts)
            return
        if outcome.status is not None:
            if outcome.action == "throttle":
                # A throttled client's queries are still evidence of what it is doing: the log phase
                # learns them (unanswered), so throttling an extraction does not stall its score
                # (a finite-difference chain with refused links would look broken otherwise).
                self._hand_off(kong, "throttle", body, ident, facts)
            kong.response.exit(outcome.status, {"message": outcome.message}, outcome.headers or None)
        if outcome.shadow_action is not None:
            kong.log.notice(json.dumps({"event": "ai-extraction-guard.shadow", "client": ident.client,
                                        "would": outcome.shadow_action, "level": outcome.level}))
        elif outcome.upstream_headers:
            kong.service.request.set_headers(outcome.upstream_headers)
        verdict = "shadow" if outcome.shadow_action is not None else (
            "flag" if outcome.upstream_headers else "allow")
        self._hand_off(kong, verdict, body, ident, facts)

    def _hand_off(self, kong: Kong, verdict: str, body: bytes | None, ident: Identity,
                  facts: RequestFacts) -> None:
        """Leave the body and who sent it for the log phase and, with decision_mark, the mark --
        in one call.

        The log phase needs the client, its group, credential and tenant, the route, Kong's start
        time and the request's size: access has them all, so they travel with the body
        (:func:`_handed_request`) and the log phase does not ask Kong for ``kong.log.serialize()``
        -- a round trip, and ~2 KB of JSON (route, service, headers) to build in Kong and parse
        here, the largest single cost of the log phase in the plugin server. The tenant must travel
        anyway: it cannot always be worked out again in Kong's log timer
        (``kong/runloop/plugin_servers/plugin.lua`` saves serialize data, headers and
        ``kong.ctx.shared`` for it), where ``kong.client.tls.get_full_client_certificate_chain``
        fails -- lua-kong-nginx-module's ``resty.kong.tls`` refuses any nginx phase but rewrite,
        access, balancer, content and log, and a timer's is "timer" -- and re-verifying a JWT
        there would cost another round trip. The values are the ones serialize would report
        (the companion publishes ``request_length`` as the size, the start time, the client IP
        Kong resolved), so learning is the same either way.
        """
        if body is None:
            if self.decision_mark_key is not None:
                kong.ctx.shared.set(self.decision_mark_key, mark_value(verdict))
            return
        # A Lua table cannot hold nil: absent values are left out (mark_value drops them too).
        handed: dict[str, Any] = {"body": body.decode("utf-8", "replace"), "tenant": ident.tenant,
                                  "client": ident.client, "route": route_of(facts), "t": facts.started_at,
                                  "size": facts.size}
        if ident.group is not None:
            handed["group"] = ident.group
        if ident.credential is not None:
            handed["credential"] = ident.credential
        if ident.ip is not None:
            handed["ip"] = ident.ip
        if self.decision_mark_key is not None:
            kong.ctx.shared.set(self.decision_mark_key, mark_value(verdict, **handed))
        else:
            kong.ctx.shared.set(BODY_KEY, handed)

    def _body(self, kong: Kong, facts: RequestFacts) -> bytes | None:
        method = facts.method  # upper-cased only when not already (Kong's is)
        if ((method not in _BODY_METHODS and method.upper() not in _BODY_METHODS)
                or facts.size > self.cfg.max_body_bytes + 8192):
            return None
        body = facts.body  # read by the companion, no round trip (up to its request_body_max_bytes)
        if body is None:
            try:
                body = kong.request.get_raw_body(self.cfg.max_body_bytes)
            except PDKError:
                # Larger than max_body_bytes (or on disk beyond it): counted, not analysed.
                return None
            if isinstance(body, str):
                body = body.encode("utf-8", "replace")
        if not body or len(body) > self.cfg.max_body_bytes:
            return None
        return body

    def log(self, kong: Kong) -> None:
        handed = kong.ctx.shared.get(self.decision_mark_key or BODY_KEY)
        if isinstance(handed, dict):
            stashed = handed.get("body")
        else:  # a plain string: the hand-off of a release before the tenant travelled with it
            stashed, handed = handed, {}
        if stashed is None:
            # Refused by this plugin (or no analysable body): nothing the model should learn from.
            return
        body = stashed.encode() if isinstance(stashed, str) else bytes(stashed)
        # ai-suite-context's log phase completes the hand-off with the response's size and the
        # response tap's summary (see its handler.lua): without it, both are asked of Kong.
        serialized: _Serialized | None = None
        completed = _completed_response_size(handed)
        response_size: int | Callable[[], int]
        if completed is not None:
            tap, response_size = handed.get("tap"), completed
        else:
            tap = kong.ctx.shared.get(TAP_KEY)
            serialized = _Serialized(kong)
            response_size = serialized.response_size  # read only if the observation needs it
        request = _handed_request(handed)
        if request is None:
            # A hand-off without the request (an earlier release's access phase): from serialize.
            serialized = serialized or _Serialized(kong)
            request = self._serialized_request(kong, serialized.data(), handed.get("tenant"))
        ident, started_at, route, request_size = request
        obs = build_observation(self.cfg, started_at, route, body, request_size=request_size,
                                response_size=response_size, tap=tap if isinstance(tap, dict) else None)
        try:
            decisions = self.guard.learn(ident, obs)
        except StorageError as exc:
            kong.log.err(f"ai-extraction-guard: storage failed in log phase ({type(exc).__name__})")
            return
        for decision in decisions:
            self._report(kong, decision)

    def _serialized_request(self, kong: Kong, data: Any, tenant: Any) -> tuple[Identity, float, str, int]:
        facts = parse_facts(data)
        if not isinstance(tenant, str):
            tenant = self._tenant(kong, facts)
        return identify(facts, self.cfg, tenant), facts.started_at, route_of(facts), facts.size

    def _report(self, kong: Kong, decision: Decision) -> None:
        record = decision.record()
        record["shadow"] = self.cfg.shadow
        kong.log.warn(json.dumps(record, separators=(",", ":")))
        hook = self.cfg.webhook
        if self.sink is not None and hook is not None and (
                decision.assessment.level >= LEVELS.index(hook.min_level)):
            self.sink.submit(record)
