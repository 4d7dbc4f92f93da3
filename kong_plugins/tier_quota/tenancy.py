"""Tenants: which models each may call, where its traffic may be served, and how limits span regions.

Pure code and config, no PDK. The tenant is the one :mod:`kong_plugins.identity` resolved from
verified sources only (consumer tag, credential, verified JWT claim, verified mTLS subject); a
header, a path or a consumer name can never choose it.

**Model access** -- with ``tenants`` configured, a tenant may call only the models (services or
routes, per ``model_by``) listed as its own or granted to it; a tenant not listed gets
``unknown_tenant`` (deny by default). Denials are 403 ``{"denied_by": "tenant_access"}``.

**Data residency** -- a tenant pinned to ``regions`` is served only by gateways of those regions
(``region.name``). Elsewhere the request is refused before any counter is touched, with

- ``residency_action: refuse`` (default): **403** ``{"denied_by": "data_residency"}`` naming the
  regions that serve the tenant. 403 and not 421 Misdirected Request: 421 tells a client that the
  *connection* reached the wrong server, and HTTP clients (browsers, HTTP/2 stacks that coalesce
  connections) retry it automatically on a new connection -- to the same regional endpoint, where
  it fails again. Residency is a policy decision that no retry changes, which is what 403 says.
- ``residency_action: redirect``: **307** with ``Location`` = the home region's base URL
  (``region_urls``) + the request URI. 307 rather than 301/302 because it keeps the method and
  the body (a POST stays a POST), and is not cached as permanent.

**Scope of a limit** -- ``strict-regional`` (default): exact within the region, regions do not
share (globally up to regions x limit). ``global-approximate``: the limit is global; each region
decides alone in its one round trip, adding the other regions' usage as last exchanged (the bound
is in :mod:`kong_plugins.region.exchange`). Concurrency is always regional: requests in flight
change too fast to be exchanged usefully.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError
from kong_plugins.region.config import REGION_PATTERN, REGION_RECORD, RegionConfig, parse_region_config

SCOPES = ("strict-regional", "global-approximate")

SCOPE_FIELD = s.Field("scope", s.String(
    default="strict-regional", one_of=SCOPES,
    description="strict-regional: exact per region, regions do not share. global-approximate: one limit "
                "for all regions, each deciding locally with the others' usage as last exchanged.",
), required=True)

TENANT_RECORD = s.Record([
    s.Field("name", s.String(len_max=256, description="Tenant id, as identity resolves it (consumer tag "
                             "'tenant:<id>', credential map, verified JWT claim, mTLS map)."), required=True),
    s.Field("models", s.Set(s.String(), len_min=1, description=(
        "Models (service or route names, see model_by) the tenant owns or is granted; '*' allows all."
    )), required=True),
    s.Field("regions", s.Set(s.String(match=REGION_PATTERN, len_max=32), default=[], description=(
        "Regions allowed to serve this tenant (data residency); empty serves it everywhere."
    )), required=True),
])

TENANCY_FIELDS: tuple[s.Field, ...] = (
    s.Field("tenants", s.Array(TENANT_RECORD, default=[], description=(
        "Tenants, the models each may call and the regions that may serve it; empty disables tenant "
        "access and residency checks."
    )), required=True),
    s.Field("unknown_tenant", s.String(default="deny", one_of=("deny", "allow"), description=(
        "With tenants configured, what a tenant not listed gets: deny (403) or allow (tier rules only)."
    )), required=True),
    s.Field("residency_action", s.String(default="refuse", one_of=("refuse", "redirect"), description=(
        "A pinned tenant's request in another region: refuse (403 data_residency) or redirect (307 to its "
        "home region's URL from region_urls)."
    )), required=True),
    s.Field("region_urls", s.Map(keys=s.String(match=REGION_PATTERN, len_max=32), values=s.String(match="^https?://"),
                                 default={}, description="Base URL of each region's gateway, for redirects."),
            required=True),
    s.Field("region", REGION_RECORD, required=True),
)


@dataclass(frozen=True, slots=True)
class TenantConfig:
    name: str
    models: frozenset[str]
    regions: tuple[str, ...]

    def may_call(self, model: str) -> bool:
        return "*" in self.models or model in self.models


@dataclass(frozen=True, slots=True)
class TenancyConfig:
    tenants: Mapping[str, TenantConfig] = field(default_factory=dict)
    unknown_tenant: Literal["deny", "allow"] = "deny"
    residency_action: Literal["refuse", "redirect"] = "refuse"
    region_urls: Mapping[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.tenants)


NO_TENANCY = TenancyConfig()


@dataclass(frozen=True, slots=True)
class TenantDenial:
    """Why a tenant's request stops here: status, rule class, message, headers (Location)."""

    status: int
    rule_class: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


def parse_tenancy(raw: Mapping[str, Any]) -> tuple[TenancyConfig, RegionConfig]:
    """The tenancy and region parts of a validated ai-tier-quota config; ConfigError names the field."""
    region = parse_region_config(raw.get("region"), "region")
    tenants: dict[str, TenantConfig] = {}
    for i, t in enumerate(raw.get("tenants") or ()):
        path = f"tenants[{i}]"
        if t["name"] in tenants:
            raise ConfigError(f"{path}.name", f"tenant '{t['name']}' is listed twice")
        regions = tuple(t["regions"])
        if regions and region.name is None:
            raise ConfigError(f"{path}.regions", "residency needs region.name (the region this gateway serves)")
        unknown = [r for r in regions if r not in region.regions]
        if regions and unknown:
            raise ConfigError(f"{path}.regions", f"not in region.regions: {', '.join(unknown)}")
        tenants[t["name"]] = TenantConfig(t["name"], frozenset(t["models"]), regions)
    urls = dict(raw.get("region_urls") or {})
    for name, url in urls.items():
        parts = urlsplit(url)
        if not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(f"region_urls[{name}]", "must be a base URL like https://eu.api.example.com")
    action: Literal["refuse", "redirect"] = "redirect" if raw.get("residency_action") == "redirect" else "refuse"
    if action == "redirect":
        for i, t in enumerate(tenants.values()):
            missing = [r for r in t.regions if r not in urls]
            if missing:
                raise ConfigError(f"tenants[{i}].regions", f"residency_action redirect needs region_urls for "
                                  f"{', '.join(missing)}")
    unknown_tenant: Literal["deny", "allow"] = "allow" if raw.get("unknown_tenant") == "allow" else "deny"
    return TenancyConfig(tenants, unknown_tenant, action, urls), region


def check_scope(scope: str, path: str, *, region: RegionConfig, concurrency: int | None, strategy: str) -> None:
    """Cross-field rules of a limit's ``scope``."""
    if scope != "global-approximate":
        return
    if region.name is None:
        raise ConfigError(f"{path}.scope", "global-approximate needs region.name (and a sync worker per region)")
    if concurrency is not None:
        raise ConfigError(f"{path}.concurrency", "requests in flight are always counted per region: move "
                          "concurrency to a strict-regional limit")
    if strategy == "memory":
        raise ConfigError(f"{path}.scope", "global-approximate needs a Redis storage strategy (memory is per "
                          "process and cannot be exchanged)")


def tenant_denial(tenancy: TenancyConfig, region: RegionConfig, tenant: str, model: str,
                  request_uri: str) -> TenantDenial | None:
    """Residency first (where), then model access (what); None when the tenant may go on."""
    if not tenancy.enabled:
        return None
    config = tenancy.tenants.get(tenant)
    if config is None:
        if tenancy.unknown_tenant == "allow":
            return None
        return TenantDenial(403, "unknown_tenant", "The caller's tenant is not served by this gateway")
    if config.regions and region.name not in config.regions:
        home = config.regions[0]
        if tenancy.residency_action == "redirect":
            location = tenancy.region_urls[home].rstrip("/") + (request_uri if request_uri.startswith("/") else "/")
            return TenantDenial(307, "data_residency", f"This tenant is served in region {home}",
                                {"Location": location})
        return TenantDenial(403, "data_residency",
                            "This tenant's requests are served only in region(s): " + ", ".join(config.regions))
    if not config.may_call(model):
        return TenantDenial(403, "tenant_access", "This tenant may not call this model")
    return None


__all__ = [
    "NO_TENANCY",
    "SCOPES",
    "SCOPE_FIELD",
    "TENANCY_FIELDS",
    "TENANT_RECORD",
    "TenancyConfig",
    "TenantConfig",
    "TenantDenial",
    "check_scope",
    "parse_tenancy",
    "tenant_denial",
]
