"""docker/: the multiregion profile and its per-region decK files (README.md section "Multi-tenant, multi-region").

Three regions in one compose project: us (plain Redis), eu (a 3-master Cluster), apac (plain
Redis); per region a gateway loading ``docker/regions/<region>.yml`` and a ``kong-ai-region-sync``
worker reading ``docker/regions/regions.yml``. Checked here the way the gateways will read them:
``docker-compose config`` for the wiring, ``deck validate -s`` (test_docker_03 covers every decK
file under docker/) and the plugins' own config parsers for what Kong would hand them.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from kong_plugins.extraction_guard.config import GuardConfig
from kong_plugins.extraction_guard.schema import SCHEMA as GUARD_SCHEMA
from kong_plugins.region import parse_region_config, parse_regions_file
from kong_plugins.tier_quota.config import parse_config

from .helpers import COMPOSE_FILE, REPO, require_binary

REGIONS = ("us", "eu", "apac")
REGION_DIR = REPO / "docker" / "regions"


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    done = subprocess.run([require_binary("docker-compose"), "-f", str(COMPOSE_FILE), "--profile", "multiregion",
                           "config"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


def deck(region: str) -> dict[str, Any]:
    return dict(yaml.safe_load((REGION_DIR / f"{region}.yml").read_text()))


def plugin(d: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [p for p in d["plugins"] if p["name"] == name]
    return dict(found["config"])


def test_the_profile_has_a_redis_a_gateway_and_a_worker_per_region(resolved: dict[str, Any]) -> None:
    mine = {n for n, s in resolved["services"].items() if "multiregion" in (s.get("profiles") or [])}
    assert mine == {"redis-us", "redis-apac", "redis-eu-1", "redis-eu-2", "redis-eu-3", "redis-eu-create",
                    *(f"kong-{r}" for r in REGIONS), *(f"sync-{r}" for r in REGIONS)}


def test_each_gateway_loads_its_regions_deck_file_read_only(resolved: dict[str, Any]) -> None:
    for region in REGIONS:
        service = resolved["services"][f"kong-{region}"]
        [mount] = service["volumes"]
        source, target, mode = (mount.split(":") if isinstance(mount, str)
                                else (mount["source"], mount["target"], "ro" if mount.get("read_only") else "rw"))
        assert Path(source) == REGION_DIR / f"{region}.yml" and mode == "ro"
        assert service["environment"]["KONG_DECLARATIVE_CONFIG"] == target
        assert "KONG_AI_STORAGE" not in service["environment"]  # the file's own storage block, as written
        assert plugin(deck(region), "ai-tier-quota")["region"]["name"] == region


def test_storage_blocks_name_that_regions_redis(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for region in REGIONS:
        for name in ("ai-tier-quota", "ai-extraction-guard"):
            storage = plugin(deck(region), name)["storage"]
            if region == "eu":
                assert storage["strategy"] == "redis-cluster"
                assert {n["host"] for n in storage["cluster_nodes"]} == {"redis-eu-1", "redis-eu-2", "redis-eu-3"}
                assert all("--cluster-enabled" in services[n["host"]]["command"] for n in storage["cluster_nodes"])
            else:
                assert storage == {"strategy": "redis", "host": f"redis-{region}", "port": 6379}
            depends = services[f"kong-{region}"]["depends_on"]
            assert ("redis-eu-create" if region == "eu" else f"redis-{region}") in depends


def test_the_regional_files_differ_only_in_region_name_and_storage() -> None:
    def neutral(region: str) -> dict[str, Any]:
        d = copy.deepcopy(deck(region))
        for p in d["plugins"]:
            (p.get("config") or {}).pop("storage", None)
            ((p.get("config") or {}).get("region") or {}).pop("name", None)
        return d

    assert neutral("us") == neutral("eu") == neutral("apac")


def test_the_plugins_accept_every_regional_config() -> None:
    for region in REGIONS:
        d = deck(region)
        quota = parse_config(plugin(d, "ai-tier-quota"))
        assert quota.region.name == region and set(quota.region.regions) == set(REGIONS)
        assert any(limit.is_global for tier in quota.tiers.values() for limit in tier.limits)
        assert {t.name: t.regions for t in quota.tenancy.tenants.values()} == {"acme": ("eu",), "globex": ()}
        validated = GUARD_SCHEMA.validate(plugin(d, "ai-extraction-guard"))
        GuardConfig.from_validated(validated)
        assert parse_region_config(validated["region"]).name == region


def test_redirects_point_at_the_published_gateway_of_the_home_region(resolved: dict[str, Any]) -> None:
    for region in REGIONS:
        urls = plugin(deck(region), "ai-tier-quota")["region_urls"]
        for target, url in urls.items():
            ports = resolved["services"][f"kong-{target}"]["ports"]
            published = {int(p["published"]) if isinstance(p, dict) else int(str(p).split(":")[-2]) for p in ports}
            assert urlparse(url).port in published, (region, target, url)


def test_one_sync_worker_per_region_on_the_shared_regions_file(resolved: dict[str, Any]) -> None:
    regions = parse_regions_file(yaml.safe_load((REGION_DIR / "regions.yml").read_text()))
    assert set(regions.names) == set(REGIONS)
    for region in REGIONS:
        service = resolved["services"][f"sync-{region}"]
        assert service["entrypoint"] == ["/opt/kong-ai/bin/kong-ai-region-sync"]
        command = service["command"]
        assert command[command.index("--region") + 1] == region
        mounted = {Path(v.split(":")[0] if isinstance(v, str) else v["source"]) for v in service["volumes"]}
        assert mounted == {REGION_DIR / "regions.yml"}
        assert "--expect" in service["healthcheck"]["test"] and region in service["healthcheck"]["test"]
        # the worker reaches the region's Redis exactly as the region's gateways do
        gateway_storage = plugin(deck(region), "ai-tier-quota")["storage"]
        assert {k: regions.storages[region].get(k) for k in gateway_storage} == gateway_storage
        assert plugin(deck(region), "ai-tier-quota")["region"]["lanes"] == regions.lanes
