"""Where quota decides: pure functions from (config, identity, model, token estimate) to rules,
and from the limiter's verdict to what the client sees. No PDK, no I/O.

Keys (``make_key``, escaped and injective): tier counters are namespaced by tenant, then tier,
limit, window, model and the subject the limit counts (``consumer`` / ``credential`` / ``tenant`` /
``ip``), so crafted names cannot collide across tenants or consumers. Global flood counters are
keyed by model only -- they protect a model's capacity and are shared by every tenant allowed to
call it, so they are *consumed* by all but never *shown*: no RateLimit header exposes them (their
remaining count would tell one tenant how much another uses a shared model).

Scope: a ``global-approximate`` limit becomes a :class:`~kong_plugins.storage.GlobalRule` (local
usage + the other regions' usage, same one script); while the exchange is stale its limit is the
region's share (``region.exchange_fallback``). With ``region.lanes`` > 1, a decision made of global
rules only is moved to one lane (a hash-tag variant, so another Cluster slot) picked per request.

Cluster slots: every key of one decision carries the same hash tag, because the limiter decides
all of them in ONE script. The tag is the model when a global limit covers it (the flood counter
is a single key, so everything deciding with it must live in its slot), else tenant + model
(spreads tenants over the cluster).

Response headers follow Kong's rate-limiting (``kong/plugins/rate-limiting/handler.lua``, 3.x):
``X-RateLimit-Limit-<Window>`` / ``X-RateLimit-Remaining-<Window>`` per window, and
``RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` for the most restrictive request window (lowest
remaining, ties to the longer window); ``Retry-After`` on 429.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from kong_plugins.identity import Identity, RequestFacts
from kong_plugins.storage import (
    CalendarRule,
    ConcurrencyRule,
    GlobalRule,
    LimitDecision,
    RateRule,
    Rule,
    RuleState,
    make_key,
)
from kong_plugins.storage.keys import lane_key

from .config import FallbackConfig, QuotaConfig, TierConfig
from .tokens import TokenEstimate

#: quota field -> (rule class named in denials, header window label, seconds or calendar unit)
WINDOWS: Mapping[str, tuple[str, str, float | str]] = {
    "per_second": ("tier_rate", "Second", 1.0),
    "per_minute": ("tier_rate", "Minute", 60.0),
    "per_hour": ("tier_rate", "Hour", 3600.0),
    "per_day": ("tier_rate", "Day", "day"),
    "tokens_per_minute": ("tier_tokens", "Tokens-Minute", 60.0),
    "tokens_per_day": ("tier_tokens", "Tokens-Day", "day"),
}
_REQUEST_LABELS = ("Second", "Minute", "Hour", "Day")
_LABEL_LENGTH = {"Second": 1, "Minute": 60, "Hour": 3600, "Day": 86400, "Tokens-Minute": 60, "Tokens-Day": 86400}


@dataclass(frozen=True, slots=True)
class Denial:
    """A client-facing refusal: status, body naming the rule class, headers. Never internals."""

    status: int
    rule_class: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, str]:
        return {"message": self.message, "denied_by": self.rule_class}


@dataclass(frozen=True, slots=True)
class RuleInfo:
    rule_class: str
    label: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules one request is decided against, with what the headers need to know of them."""

    tier: str
    model: str
    rules: tuple[Rule, ...]
    info: Mapping[str, RuleInfo]
    tokens: TokenEstimate | None

    @property
    def token_rule_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules if self.info[r.name].rule_class == "tier_tokens")


def model_of(facts: RequestFacts, model_by: str) -> str:
    """The model a request targets: the service (or route) name, else its id, else ``-``."""
    first, second = (facts.service, facts.route) if model_by == "service" else (facts.route, facts.service)
    for entity in (first, second):
        if entity is not None and (entity.name or entity.id):
            return entity.name or entity.id or "-"
    return "-"


def choose_tier(config: QuotaConfig, identity: Identity) -> tuple[TierConfig, Denial | None]:
    """The caller's tier; an unknown tier falls back to the default or is denied, per config."""
    default = config.tiers[config.default_tier]
    if identity.tier is None:
        return default, None
    tier = config.tiers.get(identity.tier)
    if tier is not None:
        return tier, None
    if config.unknown_tier == "deny":
        return default, Denial(403, "unknown_tier", "The caller's tier is not configured on this gateway")
    return default, None


def access_denial(tier: TierConfig, model: str) -> Denial | None:
    if tier.may_call(model):
        return None
    return Denial(403, "model_access", "This tier may not call this model")


def needs_tokens(config: QuotaConfig, tier: TierConfig, model: str) -> bool:
    return any(limit.has_tokens and limit.applies_to(model) for limit in tier.limits)


def build_plan(
    config: QuotaConfig,
    identity: Identity,
    tier: TierConfig,
    model: str,
    tokens: TokenEstimate | None,
    *,
    exchange_stale: bool = False,
    lane: int | None = None,
) -> Plan:
    """The rules of one request. ``exchange_stale``: global limits get the region's fallback share;
    ``lane``: the lane a decision of global rules only goes to (``region.lanes`` > 1)."""
    tenant = identity.tenant
    share = config.region.share if exchange_stale else 1.0
    globals_ = [g for g in config.global_limits if g.model == model]
    hash_tag = f"m|{model}" if globals_ else f"t|{tenant}|{model}"
    rules: list[Rule] = []
    info: dict[str, RuleInfo] = {}
    lease = float(config.lease_seconds)

    def add(rule: Rule, rule_class: str, label: str) -> None:
        rules.append(rule)
        info[rule.name] = RuleInfo(rule_class, label)

    for limit in tier.limits:
        if not limit.applies_to(model):
            continue
        kind, subject = identity.subject_for(limit.limit_by)
        for window, value in limit.quotas.items():
            rule_class, label, length = WINDOWS[window]
            cost = 1
            if rule_class == "tier_tokens":
                cost = tokens.reservation if tokens is not None else 0
            name = f"{rule_class}:{label}:{limit.index}"
            key = make_key("tq", tenant, tier.name, f"l{limit.index}", window, model, kind, subject,
                           hash_tag=hash_tag)
            if limit.is_global:
                add(GlobalRule(name, key, max(1, math.floor(value * share)), "day" if isinstance(length, str)
                               else length, cost), rule_class, label)
            elif isinstance(length, str):
                add(CalendarRule(name, key, value, "day", cost), rule_class, label)
            else:
                add(RateRule(name, key, value, length, cost), rule_class, label)
        if limit.concurrency is not None:
            name = f"tier_concurrency:Concurrent:{limit.index}"
            key = make_key("tq", tenant, tier.name, f"l{limit.index}", "concurrency", model, kind, subject,
                           hash_tag=hash_tag)
            add(ConcurrencyRule(name, key, limit.concurrency, lease), "tier_concurrency", "Concurrent")
    for g in globals_:
        for window, value in g.quotas.items():
            _, label, length = WINDOWS[window]
            assert isinstance(length, float)
            name = f"global_flood:{label}:{g.index}"
            key = make_key("tqg", model, f"g{g.index}", window, hash_tag=hash_tag)
            add(RateRule(name, key, value, length), "global_flood", label)
        if g.concurrency is not None:
            name = f"global_flood:Concurrent:{g.index}"
            key = make_key("tqg", model, f"g{g.index}", "concurrency", hash_tag=hash_tag)
            add(ConcurrencyRule(name, key, g.concurrency, lease), "global_flood", "Concurrent")
    if lane is not None and config.region.lanes > 1 and rules and all(isinstance(r, GlobalRule) for r in rules):
        rules = [GlobalRule(r.name, lane_key(r.key, lane), r.limit, r.window, r.cost, group=r.key)
                 for r in rules if isinstance(r, GlobalRule)]
    return Plan(tier.name, model, tuple(rules), info, tokens)


def has_global_limits(config: QuotaConfig) -> bool:
    return any(limit.is_global for tier in config.tiers.values() for limit in tier.limits)


def fallback_rules(fallback: FallbackConfig, identity: Identity) -> tuple[Rule, ...]:
    """Local per-caller limits used while the shared storage is down."""
    kind, subject = identity.subject_for("consumer")
    tag = f"f|{identity.tenant}|{kind}|{subject}"
    rules: list[Rule] = []
    if fallback.per_second is not None:
        rules.append(RateRule("fallback:Second", make_key("tqf", identity.tenant, kind, subject, "s",
                                                          hash_tag=tag), fallback.per_second, 1.0))
    if fallback.per_minute is not None:
        rules.append(RateRule("fallback:Minute", make_key("tqf", identity.tenant, kind, subject, "m",
                                                          hash_tag=tag), fallback.per_minute, 60.0))
    return tuple(rules)


def _seconds(value: float) -> str:
    return str(max(1, math.ceil(value - 1e-9)))


def rate_headers(decision: LimitDecision, info: Mapping[str, RuleInfo]) -> dict[str, str]:
    """Kong-style rate-limit headers for a decision (empty when no window applies)."""
    per_label: dict[str, RuleState] = {}
    for state in decision.states:
        rule_info = info.get(state.rule.name)
        if rule_info is None or rule_info.rule_class == "global_flood":
            continue
        label = rule_info.label
        current = per_label.get(label)
        if current is None or state.remaining < current.remaining:
            per_label[label] = state
    headers: dict[str, str] = {}
    for label, state in per_label.items():
        headers[f"X-RateLimit-Limit-{label}"] = str(state.limit)
        headers[f"X-RateLimit-Remaining-{label}"] = str(max(0, state.remaining))
    candidates = [(lbl, st) for lbl, st in per_label.items() if lbl in _REQUEST_LABELS]
    if not candidates:
        candidates = [(lbl, st) for lbl, st in per_label.items() if lbl in _LABEL_LENGTH]
    if candidates:
        label, state = min(candidates, key=lambda c: (max(0, c[1].remaining), -_LABEL_LENGTH[c[0]]))
        headers["RateLimit-Limit"] = str(state.limit)
        headers["RateLimit-Remaining"] = str(max(0, state.remaining))
        headers["RateLimit-Reset"] = _seconds(state.reset_after)
    return headers


def quota_denial(
    decision: LimitDecision, info: Mapping[str, RuleInfo], message: str, headers: Mapping[str, str]
) -> Denial:
    """The 429 for a denied decision: the first denying rule's class, Retry-After from the limiter."""
    assert decision.denied_by is not None
    rule_info = info.get(decision.denied_by.name)
    rule_class = rule_info.rule_class if rule_info is not None else "fallback"
    out = dict(headers)
    out["Retry-After"] = _seconds(decision.retry_after)
    return Denial(429, rule_class, message, out)


STORAGE_DOWN = Denial(503, "storage_unavailable", "The quota service is unavailable, retry later")
INVALID_TOKEN = Denial(401, "invalid_token", "Invalid or expired credentials")


def upstream_headers(plan: Plan, identity: Identity) -> dict[str, str]:
    # Percent-encoded: a verified JWT claim may still carry CR/LF or other bytes no header may hold.
    headers = {"X-AI-Tier": plan.tier, "X-AI-Tenant": quote(identity.tenant, safe=""), "X-AI-Model": plan.model}
    headers["X-AI-Token-Reservation"] = str(plan.tokens.reservation) if plan.tokens is not None else "0"
    return headers
