"""Typed, frozen configuration of ai-extraction-guard, parsed once at instance start.

``GuardConfig.from_validated`` takes the dict produced by ``SCHEMA.validate`` (defaults filled)
and applies the cross-field rules Kong's schema cannot express (threshold ordering, a webhook
secret whenever a webhook URL is set, ...). Every violation raises ``ConfigError`` naming the field.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kong_plugins.errors import ConfigError

CLIENT_BY = ("consumer", "credential", "tenant", "ip")
GROUP_BY = ("none", "ip", "ip_prefix", "tenant")
LEVELS = ("allow", "flag", "throttle", "block", "revoke")


@dataclass(frozen=True)
class Thresholds:
    """CUSUM score thresholds; extraction evidence can reach every level, volume evidence only throttle."""

    flag: float = 3.0
    throttle: float = 5.0
    block: float = 8.0
    revoke: float = 24.0
    abuse_flag: float = 4.0
    abuse_throttle: float = 8.0


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature statistics an operator knows from training data (optional; else learned)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]


@dataclass(frozen=True)
class Mitigations:
    refuse_logit_bias_with_logprobs: bool = False
    max_top_logprobs: int | None = None
    max_logit_bias_entries: int | None = None
    max_instances: int | None = None


@dataclass(frozen=True)
class Webhook:
    url: str
    secret: str = field(repr=False)
    timeout_s: float = 2.0
    max_retries: int = 5
    queue_size: int = 1000
    min_level: str = "block"


@dataclass(frozen=True)
class GuardConfig:
    client_by: str = "consumer"
    group_by: str = "ip"
    shadow: bool = False
    thresholds: Thresholds = Thresholds()
    score_half_life_s: float = 86400.0
    block_ttl_s: float = 3600.0
    throttle_ttl_s: float = 900.0
    flag_ttl_s: float = 900.0
    throttle_limit: int = 10
    throttle_window_s: float = 60.0
    revoke_enabled: bool = True
    revoke_ttl_s: float = 30 * 86400.0
    flag_header: str = "X-Extraction-Risk"
    burst_min_requests: float = 50.0
    burst_factor: float = 4.0
    payload_z: float = 4.0
    baseline_min_samples: int = 200
    feature_stats: FeatureStats | None = None
    max_rows_per_request: int = 8
    recent_inputs: int = 16
    near_duplicate_distance: float = 0.02
    low_margin: float = 0.1
    allowed_biased_tokens: int = 16
    template_hamming: int = 16
    output_tokens_per_hour: float = 100_000.0
    max_body_bytes: int = 65536
    state_ttl_s: float = 7 * 86400.0
    mitigations: Mitigations = Mitigations()
    webhook: Webhook | None = None
    failure_mode: str = "open"
    decision_mark: bool = False

    @classmethod
    def from_validated(cls, conf: Mapping[str, Any]) -> GuardConfig:
        """Build from the schema-validated dict; cross-field rules raise ``ConfigError``."""
        def get(name: str, default: Any) -> Any:
            value = conf.get(name)
            return default if value is None else value

        t_raw = get("thresholds", {})
        thresholds = Thresholds(**{k: float(v) for k, v in t_raw.items() if v is not None})
        order = [("flag", thresholds.flag), ("throttle", thresholds.throttle),
                 ("block", thresholds.block), ("revoke", thresholds.revoke)]
        for (lo_name, lo), (hi_name, hi) in itertools.pairwise(order):
            if not lo < hi:
                raise ConfigError(f"thresholds.{hi_name}",
                                  f"must be greater than thresholds.{lo_name} ({lo})")
        if not thresholds.abuse_flag < thresholds.abuse_throttle:
            raise ConfigError("thresholds.abuse_throttle", "must be greater than thresholds.abuse_flag")

        client_by = get("client_by", "consumer")
        if client_by not in CLIENT_BY:
            raise ConfigError("client_by", f"must be one of {', '.join(CLIENT_BY)}")
        group_by = get("group_by", "ip")
        if group_by not in GROUP_BY:
            raise ConfigError("group_by", f"must be one of {', '.join(GROUP_BY)}")

        m_raw = get("mitigations", {})
        mitigations = Mitigations(
            refuse_logit_bias_with_logprobs=bool(m_raw.get("refuse_logit_bias_with_logprobs") or False),
            max_top_logprobs=m_raw.get("max_top_logprobs"),
            max_logit_bias_entries=m_raw.get("max_logit_bias_entries"),
            max_instances=m_raw.get("max_instances"),
        )

        webhook = None
        w_raw = conf.get("webhook") or {}
        if w_raw.get("url"):
            url = str(w_raw["url"])
            if not url.startswith(("http://", "https://")):
                raise ConfigError("webhook.url", "must be an http:// or https:// URL")
            secret = w_raw.get("secret")
            if not secret or len(str(secret)) < 16:
                raise ConfigError("webhook.secret", "required (at least 16 characters) when webhook.url is set")
            min_level = w_raw.get("min_level") or "block"
            if min_level not in LEVELS[1:]:
                raise ConfigError("webhook.min_level", f"must be one of {', '.join(LEVELS[1:])}")
            webhook = Webhook(
                url=url, secret=str(secret),
                timeout_s=float(w_raw.get("timeout_s") or 2.0),
                max_retries=int(5 if w_raw.get("max_retries") is None else w_raw["max_retries"]),
                queue_size=int(w_raw.get("queue_size") or 1000),
                min_level=str(min_level),
            )
        elif w_raw.get("secret"):
            raise ConfigError("webhook.url", "a webhook secret is set but no url")

        stats = _parse_feature_stats(conf.get("feature_stats"))

        cfg = cls(
            client_by=client_by,
            group_by=group_by,
            shadow=bool(get("shadow", False)),
            thresholds=thresholds,
            score_half_life_s=float(get("score_half_life_s", 86400.0)),
            block_ttl_s=float(get("block_ttl_s", 3600.0)),
            throttle_ttl_s=float(get("throttle_ttl_s", 900.0)),
            flag_ttl_s=float(get("flag_ttl_s", 900.0)),
            throttle_limit=int(get("throttle_limit", 10)),
            throttle_window_s=float(get("throttle_window_s", 60.0)),
            revoke_enabled=bool(get("revoke_enabled", True)),
            revoke_ttl_s=float(get("revoke_ttl_s", 30 * 86400.0)),
            flag_header=str(get("flag_header", "X-Extraction-Risk")),
            burst_min_requests=float(get("burst_min_requests", 50.0)),
            burst_factor=float(get("burst_factor", 4.0)),
            payload_z=float(get("payload_z", 4.0)),
            baseline_min_samples=int(get("baseline_min_samples", 200)),
            feature_stats=stats,
            max_rows_per_request=int(get("max_rows_per_request", 8)),
            recent_inputs=int(get("recent_inputs", 16)),
            near_duplicate_distance=float(get("near_duplicate_distance", 0.02)),
            low_margin=float(get("low_margin", 0.1)),
            allowed_biased_tokens=int(get("allowed_biased_tokens", 16)),
            template_hamming=int(get("template_hamming", 16)),
            output_tokens_per_hour=float(get("output_tokens_per_hour", 100_000.0)),
            max_body_bytes=int(get("max_body_bytes", 65536)),
            state_ttl_s=float(get("state_ttl_s", 7 * 86400.0)),
            mitigations=mitigations,
            webhook=webhook,
            failure_mode=str(get("failure_mode", "open")),
            decision_mark=bool(get("decision_mark", False)),
        )
        if cfg.failure_mode not in ("open", "closed"):
            raise ConfigError("failure_mode", "must be open or closed")
        if cfg.block_ttl_s <= 0:
            raise ConfigError("block_ttl_s", "must be positive")
        return cfg


def _parse_feature_stats(raw: Any) -> FeatureStats | None:
    if not raw:
        return None
    columns: dict[str, Sequence[float]] = {}
    for name in ("mean", "std", "min", "max"):
        values = raw.get(name)
        if not values:
            raise ConfigError(f"feature_stats.{name}", "required when feature_stats is set")
        columns[name] = [float(v) for v in values]
    d = len(columns["mean"])
    for name, values in columns.items():
        if len(values) != d:
            raise ConfigError(f"feature_stats.{name}", f"has {len(values)} entries, feature_stats.mean has {d}")
    if any(s <= 0 for s in columns["std"]):
        raise ConfigError("feature_stats.std", "every entry must be positive")
    if any(lo > hi for lo, hi in zip(columns["min"], columns["max"], strict=True)):
        raise ConfigError("feature_stats.min", "every entry must be <= the matching feature_stats.max")
    return FeatureStats(mean=tuple(columns["mean"]), std=tuple(columns["std"]),
                        minimum=tuple(columns["min"]), maximum=tuple(columns["max"]))
