"""docker/compose.yml: valid for docker-compose 1.29 on every profile, and wired the way the specs rely on.

``docker-compose config`` validates against the compose specification schema it ships and resolves
anchors, merges and variables; the structure checks then run on what it resolved. The file avoids
what 1.29 lacks (top-level ``name``, ``--wait`` semantics) so that docker compose v2 and 1.29 read
the same services.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from kong_plugins.storage.config import check_storage_config

from .helpers import COMPOSE_FILE, REPO, require_binary, require_kong_yml

PROFILES: list[list[str]] = [[], ["spec"], ["cluster"], ["spec", "cluster"], ["multiregion"]]
GATEWAY_IMAGE = "kong-ai-plugins/kong:dev"


def compose_config(profiles: list[str], *extra: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("docker-compose")
    argv = [binary, "-f", str(COMPOSE_FILE), *(a for p in profiles for a in ("--profile", p)), "config", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    done = compose_config(["spec", "cluster"])
    assert done.returncode == 0, done.stderr
    return dict(yaml.safe_load(done.stdout))


@pytest.mark.parametrize("profiles", PROFILES, ids=lambda p: "+".join(p) or "default")
def test_docker_compose_accepts_the_file(profiles: list[str]) -> None:
    done = compose_config(profiles, "-q")
    assert done.returncode == 0, done.stderr


def test_profiles_select_the_right_services(resolved: dict[str, Any]) -> None:
    by_profile: dict[str, set[str]] = {}
    for name, service in resolved["services"].items():
        for profile in service.get("profiles") or ["default"]:
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile == {
        "default": {"kong", "redis", "textgen-upstream", "image-upstream", "docqa-upstream", "classifier-upstream"},
        "spec": {"spec"},
        "cluster": {"redis-node-1", "redis-node-2", "redis-node-3", "redis-cluster-create", "kong-cluster"},
        # its own checks: test_docker_07_multiregion.py
        "multiregion": {"redis-us", "redis-apac", "redis-eu-1", "redis-eu-2", "redis-eu-3", "redis-eu-create",
                        "kong-us", "kong-eu", "kong-apac", "sync-us", "sync-eu", "sync-apac"},
    }


def volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Mounts in long form, whichever form docker-compose printed them in."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            v = {"source": source, "target": target, "read_only": mode == ["ro"]}
        out.append(v)
    return out


def test_every_long_running_service_has_a_health_check(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        one_shot = service.get("restart") == "no"
        if one_shot:
            assert service.get("profiles"), f"one-shot {name} must not start with the default stack"
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"


def test_depends_on_waits_for_health_or_completion(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            assert dep in services, (name, dep)
            if how["condition"] == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep}'s health, which it has not"
            else:
                assert how["condition"] == "service_completed_successfully", (name, dep, how)
                assert services[dep].get("restart") == "no", f"{name} waits for {dep} to complete; it is not one-shot"
            # a default-profile service must not wait for one that only starts with a profile
            if not service.get("profiles"):
                assert not services[dep].get("profiles"), (name, dep)


def _gateways(resolved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Gateways on the repository's kong.yml (the multiregion profile's load their regional decK files)."""
    return {n: s for n, s in resolved["services"].items()
            if s.get("image") == GATEWAY_IMAGE and "multiregion" not in (s.get("profiles") or [])}


def test_kong_is_db_less_on_the_repositorys_kong_yml_mounted_read_only(resolved: dict[str, Any]) -> None:
    kong_yml = require_kong_yml()
    gateways = _gateways(resolved)
    assert set(gateways) == {"kong", "kong-cluster"}
    for name, service in gateways.items():
        env = service["environment"]
        assert env["KONG_DATABASE"] == "off"
        mounts = [v for v in volumes(service) if v["source"] == str(kong_yml)]
        assert len(mounts) == 1 and mounts[0].get("read_only") is True, (name, service["volumes"])
        assert env["KONG_AI_DECLARATIVE_SOURCE"] == mounts[0]["target"]
        assert env["KONG_DECLARATIVE_CONFIG"] != mounts[0]["target"]  # the rendered copy is written elsewhere
        storage = json.loads(env["KONG_AI_STORAGE"])
        check_storage_config(storage)  # the block every suite plugin will get is valid as it is
        assert service["build"]["target"] == "gateway"


def _listens(service: dict[str, Any]) -> set[int]:
    command = service.get("command") or []
    ports = {int(command[i + 1]) for i, a in enumerate(command) if a == "--port"}
    return ports or {6379}


def test_storage_backends_point_at_services_of_the_stack(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    gateways = _gateways(resolved)
    single = json.loads(gateways["kong"]["environment"]["KONG_AI_STORAGE"])
    assert single["strategy"] == "redis" and single["host"] in services
    cluster = json.loads(gateways["kong-cluster"]["environment"]["KONG_AI_STORAGE"])
    assert cluster["strategy"] == "redis-cluster"
    nodes = {(n["host"], n["port"]) for n in cluster["cluster_nodes"]}
    masters = {(name, 7000) for name, s in services.items() if "--cluster-enabled" in (s.get("command") or [])
               and "multiregion" not in (s.get("profiles") or [])}
    assert nodes == masters and len(masters) == 3


def test_kong_yml_upstreams_are_demo_models_listening_on_those_ports(resolved: dict[str, Any]) -> None:
    deck = yaml.safe_load(require_kong_yml().read_text())
    services = resolved["services"]
    for svc in deck["services"]:
        url = urlparse(svc["url"]) if "url" in svc else None
        host = url.hostname if url else svc["host"]
        port = (url.port if url else svc.get("port")) or 80
        assert host in services, f"kong.yml service {svc['name']} calls {host}, not a compose service"
        assert port in _listens(services[host]), f"{host} does not listen on {port}"
        for gateway in _gateways(resolved).values():
            assert host in gateway["depends_on"], f"the gateway does not wait for {host}"


def _aliases(service: dict[str, Any], network: str) -> set[str]:
    return set(((service.get("networks") or {}).get(network) or {}).get("aliases") or [])


def test_the_spec_runner_reaches_kong_from_an_internal_and_an_external_network(resolved: dict[str, Any]) -> None:
    spec, kong = resolved["services"]["spec"], resolved["services"]["kong"]
    assert spec["profiles"] == ["spec"] and spec["build"]["target"] == "spec"
    env = spec["environment"]
    for var, network in (("KONG_PROXY_URL", "backend"), ("KONG_ADMIN_URL", "backend"),
                         ("KONG_PROXY_URL_EXTERNAL", "edge")):
        host = urlparse(env[var]).hostname
        assert host in _aliases(kong, network) and network in spec["networks"], (var, host, network)
    # edge: outside 10/8, 172.16/12 and 192.168/16, so ip-restriction sees the spec runner as external
    subnet = ipaddress.ip_network(resolved["networks"]["edge"]["ipam"]["config"][0]["subnet"])
    assert not subnet.is_private or not any(subnet.subnet_of(ipaddress.ip_network(n)) for n in
                                            ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
    assert urlparse(env["KONG_SPEC_REDIS_URL"]).hostname in resolved["services"]
    mounts = {v["target"]: v for v in volumes(spec)}
    assert mounts["/kong-ai/spec"]["source"] == str(REPO / "spec") and mounts["/kong-ai/spec"]["read_only"]


def test_admin_api_is_published_on_loopback_only(resolved: dict[str, Any]) -> None:
    for name, service in _gateways(resolved).items():
        for port in service.get("ports") or []:
            if not isinstance(port, str):
                port = f"{port.get('host_ip', '')}:{port.get('published')}:{port['target']}"
            text = str(port)
            if re.search(r":8001(/tcp)?$", text):
                assert text.startswith("127.0.0.1:"), (name, text)
