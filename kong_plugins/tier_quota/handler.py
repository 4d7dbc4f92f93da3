"""The ``ai-tier-quota`` phase handlers: gather in as few PDK calls as possible, decide, act once.

PDK round trips (each one is a full RPC to Kong; HandleEvent itself is one). The request facts
(consumer, credential, route, service, client IP, start time) come from ONE
``kong.ctx.shared.get`` of the table the Lua companion ``ai-suite-context`` leaves there
(``kong_plugins.identity.gather_facts``); ``kong.log.serialize`` would be a Lua error -- Kong's
500 -- before the log phase (``kong/pdk/log.lua``, ``check_phase(PHASES_LOG)``):

=====================================  ===========================================================
access, allow path (default config)    HandleEvent + ``kong.ctx.shared.get`` + ``kong.response.set_headers``
  with decision_mark                   the same count: ``kong.ctx.shared.set`` (mark with the headers)
                                       replaces ``set_headers`` (``kong_plugins.marks``)
  + token limits, estimate_from=body   nothing more when the companion published the body (prompt
                                       and max_tokens; up to its ``request_body_max_bytes``), else
                                       + ``kong.request.get_raw_body``
  + upstream_headers                   + ``kong.service.request.set_headers``
  + identity.jwt.enabled               + ``kong.request.get_header`` (the facts carry no Authorization)
  + identity.mtls on a verified TLS    + ``kong.client.tls.get_full_client_certificate_chain``
  without the companion                the ``ctx.shared.get`` (nil) + one call per fact the config
                                       needs (6 to 10, ``FactsNeeded.fallback_calls``), warned once
access, deny path                      HandleEvent + ``ctx.shared.get`` (+ the above) + ``kong.response.exit``
log (only with token or concurrency    HandleEvent + ``kong.log.serialize`` (legal there: the saved
limits; otherwise it returns at once)  data), after the response: no latency
=====================================  ===========================================================

Redis round trips: exactly one in access (the limiter's script decides every rule); in the log
phase, for requests with token or concurrency limits, one more that settles the tokens and releases
the lease together, off the request path.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

from kong_plugins.errors import StorageError
from kong_plugins.identity import (
    FactsNeeded,
    Identity,
    IdentityResolver,
    RequestFacts,
    TlsPDK,
    gather_facts,
    parse_client_certificate,
    parse_facts,
)
from kong_plugins.marks import mark_key, mark_value
from kong_plugins.pdk import Kong
from kong_plugins.region import shared_health, shared_journal
from kong_plugins.storage import LimitDecision, Limiter, MemoryStorage, Storage
from kong_plugins.storage.config import build_storage

from . import decide
from .config import QuotaConfig, parse_config
from .pending import PendingEntry, PendingSettlements, fingerprint
from .tenancy import tenant_denial
from .tokens import TokenEstimate, estimate, usage_from_body, usage_from_log

log = logging.getLogger("kong_plugins.tier_quota")

NAME = "ai-tier-quota"

SHADOW_HEADER = "X-AI-Quota-Shadow"


def _new_lease() -> str:
    return uuid.uuid4().hex

DEGRADED_HEADER = "X-AI-Quota-Degraded"


class TierQuota:
    """``ai-tier-quota`` without a ``response`` phase: usage is settled in the log phase."""

    #: Whether Kong calls :meth:`response` (class-level: Kong learns the phases from the dump).
    RESPONSE_PHASE = False

    def __init__(
        self,
        config: dict[str, Any],
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.time,
        lease_ids: Callable[[], str] | None = None,
        lane_choice: Callable[[int], int] = random.randrange,
    ) -> None:
        self.config: QuotaConfig = parse_config(config, response_phase=self.RESPONSE_PHASE)
        self.failure_mode = self.config.failure_mode
        self._clock = clock
        self.storage = storage if storage is not None else build_storage(self.config.storage, "storage")
        self._lanes = lane_choice
        self._exchange = None
        journal_hook = None
        region = self.config.region
        if decide.has_global_limits(self.config) and storage is None:
            # Global limits: note changed counters for the region exchange (flushed off-path) and
            # watch the exchange's heartbeats (read in the background) for the stale fallback.
            settings = json.dumps(self.config.storage, sort_keys=True)
            journal_hook = shared_journal(settings, self.storage, region.journal_interval_s).note
            self._exchange = shared_health(settings, self.storage, region.peers, region.stale_after_s)
        self.limiter = Limiter(self.storage, lease_ids or _new_lease, on_global_usage=journal_hook)
        self.identity = IdentityResolver(self.config.identity, clock)
        cfg = self.config
        #: Facts fetched one by one when the companion is absent: the fingerprint needs the request
        #: line (settlement), tenancy redirects need the uri, token estimates the request size.
        self.facts_needed = FactsNeeded(request_line=cfg.needs_settlement or cfg.tenancy.enabled,
                                        size=cfg.has_token_limits, tls=cfg.identity.mtls, headers=False)
        #: What the response phase needs: the fingerprint only.
        self.fingerprint_needed = FactsNeeded(service=False, request_line=True, size=False, headers=False)
        self.pending = PendingSettlements(clock, max_age=float(self.config.lease_seconds))
        self._fallback = Limiter(MemoryStorage(clock=clock)) if self.config.fallback is not None else None
        #: Read by the runtime too: it marks ``failed_open`` when a handler raises in open mode.
        self.decision_mark_key = mark_key(NAME) if self.config.decision_mark else None
        self._mark_key = self.decision_mark_key

    # -- access ----------------------------------------------------------------------------------

    def access(self, kong: Kong) -> None:
        cfg = self.config
        facts = gather_facts(kong, self.facts_needed)
        token_header = None
        header_name = self.identity.needs_authorization_header
        if header_name is not None:
            token_header = kong.request.get_header(header_name)
        certificate = None
        if self.identity.needs_certificate(facts):
            tls = cast(TlsPDK, cast(Any, kong.client).tls)
            certificate = parse_client_certificate(tls.get_full_client_certificate_chain())
        identity = self.identity.resolve(facts, token_header, certificate)
        shadow_notes: list[str] = []

        def refuse(denial: decide.Denial) -> None:
            if cfg.shadow:
                shadow_notes.append(denial.rule_class)
                log.warning("shadow mode: would deny (%s) tenant=%s tier=%s", denial.rule_class,
                            json.dumps(identity.tenant), identity.tier)
                return
            kong.response.exit(denial.status, denial.body(), dict(denial.headers))

        if identity.jwt_error is not None and cfg.identity.jwt_reject_invalid:
            refuse(decide.INVALID_TOKEN)
        model = decide.model_of(facts, cfg.model_by)
        tenancy = tenant_denial(cfg.tenancy, cfg.region, identity.tenant, model, facts.uri)
        if tenancy is not None:
            refuse(decide.Denial(tenancy.status, tenancy.rule_class, tenancy.message, dict(tenancy.headers)))
        tier, tier_denial = decide.choose_tier(cfg, identity)
        if tier_denial is not None:
            refuse(tier_denial)
        denial = decide.access_denial(tier, model)
        if denial is not None:
            refuse(denial)

        tokens: TokenEstimate | None = None
        if decide.needs_tokens(cfg, tier, model):
            body = None
            if cfg.tokens.estimate_from == "body":
                body = facts.body  # read by the companion: no round trip
                if body is None or len(body) > cfg.tokens.max_body_bytes:
                    raw = kong.request.get_raw_body(cfg.tokens.max_body_bytes)
                    body = raw.encode() if isinstance(raw, str) else raw
            tokens = estimate(body, facts.size, cfg.tokens)
        plan = decide.build_plan(
            cfg, identity, tier, model, tokens,
            exchange_stale=self._exchange is not None and self._exchange.degraded,
            lane=self._lanes(cfg.region.lanes) if cfg.region.lanes > 1 else None,
        )

        headers: dict[str, str] = {}
        decision, info = self._decide(plan, identity, facts)
        if decision is None:
            if cfg.failure_mode == "closed":
                refuse(decide.STORAGE_DOWN)
            headers[DEGRADED_HEADER] = "storage-unavailable"
        else:
            rate = decide.rate_headers(decision, info) if not cfg.hide_client_headers else {}
            if not decision.allowed:
                refuse(decide.quota_denial(decision, info, cfg.error_message, rate))
            headers.update(rate)
            if decision.allowed and info is plan.info:
                self._remember(facts, plan, decision)
        if shadow_notes:
            headers[SHADOW_HEADER] = "would-deny; rule=" + ",".join(shadow_notes)
        if self._mark_key is not None:
            # The mark replaces set_headers (the fail-closed guard sets them): no extra round trip.
            verdict = "shadow" if shadow_notes else ("degraded" if decision is None else "allow")
            kong.ctx.shared.set(self._mark_key, mark_value(verdict, response_headers=headers))
        elif headers:
            kong.response.set_headers(headers)
        if cfg.upstream_headers:
            kong.service.request.set_headers(decide.upstream_headers(plan, identity))

    def _decide(
        self, plan: decide.Plan, identity: Identity, facts: RequestFacts
    ) -> tuple[LimitDecision | None, Mapping[str, decide.RuleInfo]]:
        """The shared limiter's verdict and its rule info; on StorageError the local fallback's
        (with its own rule info), or None when there is no fallback."""
        if not plan.rules:
            return LimitDecision(True, (), None, 0.0, None), plan.info
        try:
            return self.limiter.check_and_consume(plan.rules, now=facts.started_at or None), plan.info
        except StorageError as exc:
            log.error("storage unavailable (%s): %s", self.storage.kind, type(exc.__cause__ or exc).__name__)
        if self._fallback is None or self.config.fallback is None:
            return None, {}
        rules = decide.fallback_rules(self.config.fallback, identity)
        info = {rule.name: decide.RuleInfo("fallback", rule.name.split(":", 1)[1]) for rule in rules}
        return self._fallback.check_and_consume(rules, now=facts.started_at or None), info

    def _remember(self, facts: RequestFacts, plan: decide.Plan, decision: LimitDecision) -> None:
        if decision.reservation is None:
            return
        token_rules = plan.token_rule_names
        has_lease = any(plan.info[r.name].label == "Concurrent" for r in plan.rules)
        if not token_rules and not has_lease:
            return
        reserved = plan.tokens.reservation if plan.tokens is not None else 0
        self.pending.add(fingerprint(facts), PendingEntry(decision.reservation, token_rules, reserved,
                                                          self._clock()))

    # -- log -------------------------------------------------------------------------------------

    def log(self, kong: Kong) -> None:
        if not self.config.needs_settlement:
            return
        facts = parse_facts(kong.log.serialize())
        entry = self.pending.pop(fingerprint(facts))
        if entry is None:
            return
        now = facts.ended_at or None
        deltas: dict[str, int] = {}
        if entry.token_rules:
            usage = self._usage(facts, entry)
            if usage is not None and usage != entry.reserved_tokens:
                deltas = dict.fromkeys(entry.token_rules, usage - entry.reserved_tokens)
        try:
            # Refund or extra charge and the lease release in one Redis round trip.
            self.limiter.settle(entry.reservation, deltas, now=now)
        except StorageError as exc:
            # Leases expire on their own after concurrency_lease_seconds; a lost refund only
            # makes the quota stricter for a while.
            log.error("settling a request failed (%s): %s", self.storage.kind, type(exc.__cause__ or exc).__name__)

    def _usage(self, facts: RequestFacts, entry: PendingEntry) -> int | None:
        tokens = self.config.tokens
        if tokens.usage_source == "none":
            return None
        if tokens.usage_source == "response_body":
            return entry.usage if entry.usage_known else None
        header = facts.response_header(tokens.usage_header) if tokens.usage_header else None
        return usage_from_log(facts.ai, header, tokens)


class BufferingTierQuota(TierQuota):
    """Variant with Kong's ``response`` phase, reading ``usage`` from the response body.

    Kong buffers the whole upstream response of every route this plugin runs on as soon as the
    plugin server reports a ``response`` phase, so this variant is chosen per server
    (``AI_TIER_QUOTA_RESPONSE_PHASE=on``), not per route.
    """

    RESPONSE_PHASE = True

    def response(self, kong: Kong) -> None:
        if self.config.tokens.usage_source != "response_body" or not self.config.has_token_limits:
            return
        # serialize is log-only; the companion's facts match the log phase's serialize (fingerprint)
        facts = gather_facts(kong, self.fingerprint_needed)
        key = fingerprint(facts)
        body = kong.service.response.get_raw_body()
        raw = body.encode() if isinstance(body, str) else body
        self.pending.record_usage(key, usage_from_body(raw, self.config.tokens))
