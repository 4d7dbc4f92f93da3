"""Config parsed once at StartInstance into frozen, typed objects; cross-field rules live here."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kong_plugins.errors import ConfigError
from kong_plugins.identity import IdentityConfig, LimitBy, parse_identity_config
from kong_plugins.region.config import SINGLE_REGION, RegionConfig
from kong_plugins.storage.config import check_storage_config

from .schema import REQUEST_WINDOWS, SCHEMA, TOKEN_WINDOWS
from .tenancy import NO_TENANCY, TenancyConfig, check_scope, parse_tenancy

#: Windows in increasing length, for the "a shorter window may not allow more" rule.
_ORDERED = (REQUEST_WINDOWS, TOKEN_WINDOWS)


@dataclass(frozen=True, slots=True)
class LimitConfig:
    index: int
    models: frozenset[str]
    limit_by: LimitBy
    quotas: Mapping[str, int]
    concurrency: int | None
    scope: str = "strict-regional"

    @property
    def is_global(self) -> bool:
        return self.scope == "global-approximate"

    def applies_to(self, model: str) -> bool:
        return "*" in self.models or model in self.models

    @property
    def has_tokens(self) -> bool:
        return any(w in self.quotas for w in TOKEN_WINDOWS)


@dataclass(frozen=True, slots=True)
class TierConfig:
    name: str
    models: frozenset[str]
    limits: tuple[LimitConfig, ...]

    def may_call(self, model: str) -> bool:
        return "*" in self.models or model in self.models


@dataclass(frozen=True, slots=True)
class GlobalLimitConfig:
    index: int
    model: str
    quotas: Mapping[str, int]
    concurrency: int | None


@dataclass(frozen=True, slots=True)
class TokenConfig:
    estimate_from: Literal["body", "request_size"]
    bytes_per_token: float
    default_max_tokens: int
    max_body_bytes: int
    usage_source: Literal["log", "response_body", "none"]
    usage_header: str | None
    max_plausible_tokens: int


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    per_second: int | None
    per_minute: int | None


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    default_tier: str
    unknown_tier: Literal["default_tier", "deny"]
    model_by: Literal["service", "route"]
    tiers: Mapping[str, TierConfig]
    global_limits: tuple[GlobalLimitConfig, ...]
    identity: IdentityConfig
    tokens: TokenConfig
    storage: Mapping[str, Any]
    failure_mode: Literal["open", "closed"]
    fallback: FallbackConfig | None
    shadow: bool
    hide_client_headers: bool
    upstream_headers: bool
    lease_seconds: int
    error_message: str
    tenancy: TenancyConfig = NO_TENANCY
    region: RegionConfig = SINGLE_REGION
    decision_mark: bool = False

    @property
    def has_token_limits(self) -> bool:
        return any(limit.has_tokens for tier in self.tiers.values() for limit in tier.limits)

    @property
    def needs_settlement(self) -> bool:
        """Whether the log phase has anything to do (tokens to settle or leases to release)."""
        return self.has_token_limits or any(
            limit.concurrency for tier in self.tiers.values() for limit in tier.limits
        ) or any(g.concurrency for g in self.global_limits)


def _check_windows(quotas: Mapping[str, int], path: str) -> None:
    for windows in _ORDERED:
        present = [(w, quotas[w]) for w in windows if w in quotas]
        for (short, short_value), (long, long_value) in itertools.pairwise(present):
            if long_value < short_value:
                raise ConfigError(
                    f"{path}.{long}",
                    f"is lower than {short} ({long_value} < {short_value}): {short} could never be reached",
                )


def _quotas(raw: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, int]:
    return {name: int(raw[name]) for name in names if raw.get(name) is not None}


def parse_config(raw_config: Mapping[str, Any], *, response_phase: bool = False) -> QuotaConfig:
    """Validate Kong's config and build the typed config; ConfigError names the first bad field.

    ``response_phase`` says whether this server variant registers Kong's ``response`` phase
    (needed by ``tokens.usage_source = response_body``).
    """
    raw = SCHEMA.validate(raw_config)
    tenancy, region = parse_tenancy(raw)
    strategy = str(raw["storage"].get("strategy") or "memory")
    tiers: dict[str, TierConfig] = {}
    for t, tier_raw in enumerate(raw["tiers"]):
        path = f"tiers[{t}]"
        name = tier_raw["name"]
        if name in tiers:
            raise ConfigError(f"{path}.name", f"tier '{name}' is defined twice")
        tier_models = frozenset(tier_raw["models"])
        limits = []
        for i, limit_raw in enumerate(tier_raw["limits"]):
            lpath = f"{path}.limits[{i}]"
            quotas = _quotas(limit_raw, REQUEST_WINDOWS + TOKEN_WINDOWS)
            concurrency = limit_raw.get("concurrency")
            if not quotas and concurrency is None:
                raise ConfigError(lpath, "sets no quota: give at least one of per_second .. tokens_per_day "
                                  "or concurrency")
            _check_windows(quotas, lpath)
            models = frozenset(limit_raw["models"])
            if "*" not in tier_models and "*" not in models:
                unreachable = sorted(models - tier_models)
                if unreachable:
                    raise ConfigError(f"{lpath}.models", f"the tier may not call {', '.join(unreachable)}: "
                                      "this limit could never apply")
            check_scope(limit_raw["scope"], lpath, region=region, concurrency=concurrency, strategy=strategy)
            limits.append(LimitConfig(i, models, limit_raw["limit_by"], quotas, concurrency, limit_raw["scope"]))
        tiers[name] = TierConfig(name, tier_models, tuple(limits))
    if raw["default_tier"] not in tiers:
        raise ConfigError("default_tier", f"no tier named '{raw['default_tier']}' in tiers")

    globals_: list[GlobalLimitConfig] = []
    seen_models: set[str] = set()
    for g, global_raw in enumerate(raw["global_limits"]):
        gpath = f"global_limits[{g}]"
        if global_raw["model"] in seen_models:
            raise ConfigError(f"{gpath}.model", "this model already has a global limit")
        seen_models.add(global_raw["model"])
        quotas = _quotas(global_raw, ("per_second", "per_minute"))
        if not quotas and global_raw.get("concurrency") is None:
            raise ConfigError(gpath, "sets no limit: give per_second, per_minute or concurrency")
        _check_windows(quotas, gpath)
        globals_.append(GlobalLimitConfig(g, global_raw["model"], quotas, global_raw.get("concurrency")))

    tokens_raw = raw["tokens"]
    tokens = TokenConfig(
        estimate_from=tokens_raw["estimate_from"],
        bytes_per_token=float(tokens_raw["bytes_per_token"]),
        default_max_tokens=int(tokens_raw["default_max_tokens"]),
        max_body_bytes=int(tokens_raw["max_body_bytes"]),
        usage_source=tokens_raw["usage_source"],
        usage_header=(tokens_raw.get("usage_header") or "").lower() or None,
        max_plausible_tokens=int(tokens_raw["max_plausible_tokens"]),
    )
    if tokens.usage_source == "response_body" and not response_phase:
        raise ConfigError(
            "tokens.usage_source",
            "response_body needs the plugin server started with AI_TIER_QUOTA_RESPONSE_PHASE=on, which "
            "makes Kong buffer every response of the plugin's routes; use 'log' to keep streaming",
        )
    if tokens.usage_header is not None and tokens.usage_source != "log":
        raise ConfigError("tokens.usage_header", "only read when usage_source is 'log'")

    fallback_raw = raw["fallback"]
    fallback: FallbackConfig | None = None
    if fallback_raw["enabled"]:
        if fallback_raw.get("per_second") is None and fallback_raw.get("per_minute") is None:
            raise ConfigError("fallback", "enabled without per_second or per_minute")
        _check_windows(_quotas(fallback_raw, ("per_second", "per_minute")), "fallback")
        fallback = FallbackConfig(fallback_raw.get("per_second"), fallback_raw.get("per_minute"))
    elif fallback_raw.get("per_second") is not None or fallback_raw.get("per_minute") is not None:
        raise ConfigError("fallback.enabled", "fallback limits are set but not enabled")

    check_storage_config(raw["storage"], "storage")
    return QuotaConfig(
        default_tier=raw["default_tier"],
        unknown_tier=raw["unknown_tier"],
        model_by=raw["model_by"],
        tiers=tiers,
        global_limits=tuple(globals_),
        identity=parse_identity_config(raw["identity"]),
        tokens=tokens,
        storage=raw["storage"],
        failure_mode=raw["failure_mode"],
        fallback=fallback,
        shadow=bool(raw["shadow"]),
        hide_client_headers=bool(raw["hide_client_headers"]),
        upstream_headers=bool(raw["upstream_headers"]),
        lease_seconds=int(raw["concurrency_lease_seconds"]),
        error_message=raw["error_message"],
        tenancy=tenancy,
        region=region,
        decision_mark=bool(raw["decision_mark"]),
    )
