"""kong.yml itself: decK accepts it, Kong would load it, every suite plugin config starts an instance.

StartInstance is the moment Kong hands a plugin its config (filled from the plugin's dumped schema,
with the scope keys of ``kong/runloop/plugins_iterator.lua``); a config our plugins refuse there
makes Kong answer 500 on every request of the route -- so each one is started here, in-process,
exactly as the plugin server would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kong_plugins import SUITE_PLUGINS, companion
from kong_plugins.demo.reference import find_kong_yml
from kong_plugins.marks import guard_lua
from kong_plugins.runtime.module import load_plugin_module
from kong_plugins.runtime.server import PluginServer, RPCError
from kong_plugins.standin._defaults import fill_plugin_config
from kong_plugins.standin._entities import PluginEntity, parse_deck

KONG_YML = find_kong_yml()


def _doc() -> dict[str, Any]:
    loaded = yaml.safe_load(KONG_YML.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_deck_validates_the_file_offline() -> None:
    deck = shutil.which("deck")
    if deck is None:
        if os.environ.get("CI"):
            pytest.fail("deck is not installed (CI installs Debian's deck package: apt-get install -y deck)")
        pytest.skip("deck not installed here (apt-get install -y deck); CI runs this check")
    done = subprocess.run([deck, "validate", "-s", str(KONG_YML)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_deck_rejects_a_broken_copy(tmp_path: Path) -> None:
    """The check above can fail: a second post-function on one service is a duplicate decK refuses."""
    deck = shutil.which("deck")
    if deck is None:
        pytest.skip("deck not installed here")
    doc = _doc()
    doc["services"][0]["plugins"].append({"name": "post-function", "config": {"access": ["return"]}})
    broken = tmp_path / "kong.yml"
    broken.write_text(yaml.safe_dump(doc))
    done = subprocess.run([deck, "validate", "-s", str(broken)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0


def _suite_entities() -> list[PluginEntity]:
    return [p for p in parse_deck(KONG_YML).plugins if p.name in SUITE_PLUGINS]


def _kong_config(entity: PluginEntity, schema: dict[str, Any]) -> dict[str, Any]:
    """The config Kong sends with StartInstance (plugins_iterator.lua adds the scope keys)."""
    conf = fill_plugin_config(schema, entity.config)
    for key, value in (("route_id", entity.route_id), ("service_id", entity.service_id),
                       ("consumer_id", entity.consumer_id)):
        if value is not None:
            conf[key] = value
    conf.update({"__plugin_id": entity.id, "__seq__": 1, "__key__": f"plugins:{entity.name}"})
    return conf


def test_the_lua_companion_is_enabled_globally_without_config() -> None:
    [entity] = [p for p in parse_deck(KONG_YML).plugins if p.name == companion.NAME]
    assert (entity.route_id, entity.service_id, entity.consumer_id) == (None, None, None)
    assert entity.enabled and not entity.config


@pytest.mark.parametrize("entity", _suite_entities(), ids=lambda e: f"{e.name}@{e.service_id or 'global'}")
def test_every_suite_plugin_config_starts_an_instance(entity: PluginEntity) -> None:
    module = load_plugin_module(entity.name)
    server = PluginServer(module)
    config = _kong_config(entity, module.info()["Schema"])
    status = server.start_instance({"Name": entity.name, "Config": json.dumps(config)})
    instance = server.instances[status["Id"]]
    # the reference deployment fails closed: every suite plugin marks its decisions
    assert instance.decision_mark_key == f"ai_suite.decided.{entity.name}"
    server.close_instance(status["Id"])


def test_a_config_our_schema_refuses_fails_start_instance_naming_the_field() -> None:
    entity = next(e for e in _suite_entities() if e.name == "ai-tier-quota")
    module = load_plugin_module(entity.name)
    config = _kong_config(entity, module.info()["Schema"])
    config["tiers"][0]["limits"][0]["per_minute"] = 0
    with pytest.raises(RPCError, match=r"tiers\[0\]\.limits\[0\]\.per_minute"):
        PluginServer(module).start_instance({"Name": entity.name, "Config": json.dumps(config)})


def test_each_guard_requires_exactly_the_marking_plugins_of_its_service() -> None:
    """The Lua of every post-function is the guard for the suite plugins that reach its service."""
    config = parse_deck(KONG_YML)
    order = {name: i for i, name in enumerate(["ai-extraction-guard", "ai-tier-quota", "ai-prompt-inspector"])}
    for service in config.services:
        guards = [p for p in config.plugins if p.name == "post-function" and p.service_id == service.id]
        assert len(guards) == 1, f"service {service.name} has no fail-closed guard"
        reaching = sorted({p.name for p in config.plugins if p.name in SUITE_PLUGINS
                           and p.service_id in (None, service.id) and p.route_id is None
                           and p.config.get("decision_mark")}, key=order.__getitem__)
        assert guards[0].config["access"] == [guard_lua(reaching)], service.name


def test_reference_numbers_are_the_ones_documented() -> None:
    """The figures the README and the demo quote, read from the file (not typed twice)."""
    quota = next(p for p in _doc()["plugins"] if p["name"] == "ai-tier-quota")["config"]
    tiers = {t["name"]: t for t in quota["tiers"]}
    assert tiers["free"]["limits"] == [{"models": ["textgen"], "per_minute": 10, "tokens_per_day": 20000}]
    assert tiers["premium"]["limits"][0] == {"models": ["textgen"], "per_second": 10, "per_minute": 100,
                                             "tokens_per_day": 1000000}
    assert tiers["premium"]["limits"][1] == {"models": ["image-analysis"], "per_minute": 30}
    assert tiers["internal"]["limits"] == [{"models": ["textgen"], "per_minute": 1000}]
    assert quota["global_limits"] == [{"model": "classifier", "per_second": 50}]
