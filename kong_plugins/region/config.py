"""Where a gateway is, which regions exist, and how their Redis servers are reached.

Two configurations, one vocabulary:

- :data:`REGION_RECORD` -- the ``region`` block plugins embed (ai-tier-quota, ai-extraction-guard):
  the region this gateway serves, the regions of the deployment, lanes and the exchange fallback.
  Parsed once into :class:`RegionConfig`.
- the **regions file** (YAML or JSON) read by the sync worker (``kong-ai-region-sync``) and the
  operator tool (``kong-ai-ops``): each region's storage block (the same fields as a plugin's
  ``storage``) and the exchange's timing. Parsed into :class:`RegionsFile`::

      regions:
        us:   {storage: {strategy: redis, host: redis-us, port: 6379}}
        eu:   {storage: {strategy: redis-cluster, cluster_nodes: [{host: redis-eu-1, port: 7000}]}}
        apac: {storage: {strategy: redis, host: redis-apac, port: 6379}}
      exchange: {sync_interval_ms: 250, lanes: 1}

Errors: :class:`kong_plugins.errors.ConfigError` naming the field (``regions.eu.storage.host``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError
from kong_plugins.storage import Storage
from kong_plugins.storage.config import STORAGE_RECORD, build_storage, check_storage_config

#: Region names: short, lower-case, safe in keys, stream fields and source ids.
REGION_PATTERN = "^[a-z][a-z0-9-]*$"

REGION_RECORD = s.Record([
    s.Field("name", s.String(
        match=REGION_PATTERN, len_max=32,
        description="Region this gateway serves (e.g. eu). Unset: a single-region deployment; global "
                    "limits, residency and denylist replication need it.",
    )),
    s.Field("regions", s.Set(s.String(match=REGION_PATTERN, len_max=32), default=[], description=(
        "Every region of the deployment, this one included: the peers the exchange must hear from "
        "and the number of shares of the exchange fallback."
    )), required=True),
    s.Field("lanes", s.Integer(default=1, between=(1, 64), description=(
        "Split each hot global-approximate key over this many Redis Cluster slots (lanes), summed by "
        "the exchange; 1 keeps one key. Must equal the exchange's lanes."
    )), required=True),
    s.Field("journal_interval_ms", s.Integer(default=200, between=(10, 60000), description=(
        "How often this plugin server tells the exchange which global counters changed (one "
        "background write per interval, never on the request path)."
    )), required=True),
    s.Field("stale_after_ms", s.Integer(default=5000, between=(100, 3_600_000), description=(
        "A peer region not heard from for this long makes global-approximate limits use the "
        "exchange_fallback."
    )), required=True),
    s.Field("exchange_fallback", s.String(default="share", one_of=("share", "full"), description=(
        "While the exchange is stale: share gives this region limit / regions (the global bound "
        "holds), full gives it the whole limit (availability first, up to regions x limit)."
    )), required=True),
], description="Multi-region deployment: this gateway's region and how global state is exchanged.")


@dataclass(frozen=True, slots=True)
class RegionConfig:
    """The parsed ``region`` block. ``name`` None means single-region."""

    name: str | None
    regions: tuple[str, ...]
    lanes: int
    journal_interval_s: float
    stale_after_s: float
    exchange_fallback: Literal["share", "full"]

    @property
    def peers(self) -> tuple[str, ...]:
        return tuple(r for r in self.regions if r != self.name)

    @property
    def share(self) -> float:
        """This region's share of a global limit while the exchange is stale."""
        return 1.0 / max(1, len(self.regions)) if self.exchange_fallback == "share" else 1.0


SINGLE_REGION = RegionConfig(None, (), 1, 0.2, 5.0, "share")


def parse_region_config(raw: Mapping[str, Any] | None, path: str = "region") -> RegionConfig:
    """Typed region config from a validated ``region`` record; cross-field rules here."""
    if raw is None:
        raw = REGION_RECORD.coerce({}, path)
    name = raw.get("name")
    regions = tuple(raw.get("regions") or ())
    if name is None and regions:
        raise ConfigError(f"{path}.name", "regions are listed but this gateway's region is not named")
    if name is not None and regions and name not in regions:
        raise ConfigError(f"{path}.regions", f"does not list this gateway's region '{name}'")
    if name is not None and not regions:
        regions = (name,)
    return RegionConfig(
        name=name,
        regions=regions,
        lanes=int(raw["lanes"]),
        journal_interval_s=int(raw["journal_interval_ms"]) / 1000,
        stale_after_s=int(raw["stale_after_ms"]) / 1000,
        exchange_fallback=raw["exchange_fallback"],
    )


# -- the regions file --------------------------------------------------------------------------

EXCHANGE_RECORD = s.Record([
    s.Field("sync_interval_ms", s.Integer(default=250, between=(10, 600_000), description=(
        "How often the sync worker ships changed usage to the other regions.")), required=True),
    s.Field("lanes", s.Integer(default=1, between=(1, 64), description=(
        "Lanes of global keys; must equal the plugins' region.lanes.")), required=True),
    s.Field("denylist_wait_ms", s.Integer(default=100, between=(1, 10_000), description=(
        "Longest wait for a new denylist event before the replicator looks again (it wakes up at "
        "once on an event when the storage is Redis).")), required=True),
    s.Field("batch", s.Integer(default=500, between=(1, 100_000), description=(
        "Most denylist events or usage groups handled per destination and round.")), required=True),
], default={}, description="Timing of the exchange between regions.")

_REGION_ENTRY = s.Record([
    s.Field("storage", STORAGE_RECORD, required=True),
], description="One region: how its Redis is reached.")

REGIONS_FILE_RECORD = s.Record([
    s.Field("regions", s.Map(keys=s.String(match=REGION_PATTERN, len_max=32), values=_REGION_ENTRY, len_min=1,
                             description="Every region of the deployment by name."), required=True),
    s.Field("exchange", EXCHANGE_RECORD, required=True),
])


@dataclass(frozen=True, slots=True)
class RegionsFile:
    """Every region's storage settings and the exchange timing (sync worker, operator tool)."""

    storages: Mapping[str, Mapping[str, Any]]
    sync_interval_s: float
    lanes: int
    denylist_wait_s: float
    batch: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.storages)

    def storage(self, region: str) -> Storage:
        """A storage for ``region`` (Redis clients are shared per settings and connect lazily)."""
        if region not in self.storages:
            raise ConfigError("regions", f"no region named '{region}' (known: {', '.join(self.names)})")
        return build_storage(self.storages[region], f"regions.{region}.storage")


def parse_regions_file(raw: Mapping[str, Any]) -> RegionsFile:
    data = REGIONS_FILE_RECORD.validate(raw)
    storages: dict[str, Mapping[str, Any]] = {}
    for name, entry in data["regions"].items():
        check_storage_config(entry["storage"], f"regions.{name}.storage")
        if entry["storage"]["strategy"] == "memory":
            raise ConfigError(f"regions.{name}.storage.strategy",
                              "a region shared by processes needs Redis (memory is per process)")
        storages[name] = entry["storage"]
    exchange = data["exchange"]
    return RegionsFile(
        storages=storages,
        sync_interval_s=int(exchange["sync_interval_ms"]) / 1000,
        lanes=int(exchange["lanes"]),
        denylist_wait_s=int(exchange["denylist_wait_ms"]) / 1000,
        batch=int(exchange["batch"]),
    )


def load_regions_file(path: str | os.PathLike[str]) -> RegionsFile:
    """Read and parse a regions file (YAML, or JSON which is YAML too)."""
    try:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError("", f"cannot read the regions file {os.fspath(path)!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("", f"the regions file {os.fspath(path)!r} is not valid YAML") from exc
    if not isinstance(raw, Mapping):
        raise ConfigError("", "the regions file must hold a mapping with 'regions'")
    return parse_regions_file(json.loads(json.dumps(raw)))


__all__ = [
    "EXCHANGE_RECORD",
    "REGIONS_FILE_RECORD",
    "REGION_PATTERN",
    "REGION_RECORD",
    "SINGLE_REGION",
    "RegionConfig",
    "RegionsFile",
    "load_regions_file",
    "parse_region_config",
    "parse_regions_file",
]
