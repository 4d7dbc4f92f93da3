"""Kong's Admin API accepts the suite's plugin schemas and validates configs with them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from kong_plugins import companion
from kong_plugins.runtime.module import load_plugin_module

from .gateway import SUITE_PLUGINS, Gateway

#: One value per plugin that its schema must refuse, and the config field Kong must name.
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "ai-tier-quota": ({"failure_mode": "sideways"}, "failure_mode"),
    "ai-prompt-inspector": ({"block_status": 418}, "block_status"),
    "ai-extraction-guard": ({"failure_mode": "maybe"}, "failure_mode"),
}


def _config_fields(schema: dict[str, Any]) -> list[str]:
    for field in schema["fields"]:
        if "config" in field:
            return [next(iter(f)) for f in field["config"]["fields"]]
    raise AssertionError(f"no config record in {schema}")


def test_kong_loaded_every_suite_plugin(admin: httpx.Client) -> None:
    enabled = admin.get("/plugins/enabled").json()["enabled_plugins"]
    assert set(SUITE_PLUGINS) <= set(enabled), enabled
    # the Lua companion the image copies into Kong's Lua path (kong.plugins.ai-suite-context)
    assert companion.NAME in enabled, enabled


def test_the_lua_companion_runs_globally_with_its_shipped_schema(admin: httpx.Client, gateway: Gateway) -> None:
    """Kong accepted schema.lua (MetaSchema) and the reference config enables it once, globally;
    its one setting is validated by Kong (between 0 and 64 MiB), naming the field."""
    r = admin.get(f"/schemas/plugins/{companion.NAME}")
    assert r.status_code == 200, r.text
    assert _config_fields(r.json()) == ["request_body_max_bytes"]
    bad = admin.post("/schemas/plugins/validate",
                     json={"name": companion.NAME, "config": {"request_body_max_bytes": -1}})
    assert bad.status_code == 400, bad.text
    assert "request_body_max_bytes" in (bad.json().get("fields") or {}).get("config", {}), bad.text
    [running] = [p for p in gateway.plugins if p["name"] == companion.NAME]
    assert running["enabled"] and not (running.get("route") or running.get("service") or running.get("consumer"))


@pytest.mark.parametrize("name", SUITE_PLUGINS)
def test_the_admin_api_serves_the_schema_our_server_dumps(admin: httpx.Client, name: str) -> None:
    r = admin.get(f"/schemas/plugins/{name}")
    assert r.status_code == 200, r.text
    dumped = load_plugin_module(name).info()["Schema"]
    assert _config_fields(r.json()) == _config_fields(dumped)


@pytest.mark.parametrize("name", SUITE_PLUGINS)
def test_the_running_config_validates_and_a_bad_value_is_refused_by_field(
        admin: httpx.Client, gateway: Gateway, name: str) -> None:
    running = next((p for p in gateway.plugins if p["name"] == name), None)
    assert running is not None, f"the reference gateway runs {name} somewhere"
    config = {k: v for k, v in running["config"].items() if v is not None}
    ok = admin.post("/schemas/plugins/validate", json={"name": name, "config": config})
    assert ok.status_code == 200, ok.text
    bad_values, field = INVALID[name]
    bad = admin.post("/schemas/plugins/validate", json={"name": name, "config": {**config, **bad_values}})
    assert bad.status_code == 400, bad.text
    assert field in (bad.json().get("fields") or {}).get("config", {}), bad.text
