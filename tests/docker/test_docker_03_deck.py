"""decK files: kong.yml, every decK file under docker/, and what docker/render_storage.py makes of kong.yml.

Debian's ``deck`` 1.4 validates offline (``deck validate -s``): structure, references and
duplicates, not plugin schemas -- the protocol tests and the Admin API specs cover those.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import COMPOSE_FILE, PYTHON, REPO, require_binary, require_kong_yml

RENDER = REPO / "docker" / "render_storage.py"


def deck_validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("deck"), "validate", "-s", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=path.parent)


def deck_files() -> list[Path]:
    found = [p for p in sorted((REPO / "docker").rglob("*.y*ml"))
             if p != COMPOSE_FILE and "_format_version" in p.read_text()]
    return [require_kong_yml(), *found]


def test_every_deck_file_validates() -> None:
    for path in deck_files():
        done = deck_validate(path)
        assert done.returncode == 0, f"{path}: {done.stdout}{done.stderr}"


def test_deck_refuses_a_broken_reference(tmp_path: Path) -> None:
    """The check has teeth: a plugin on a service that does not exist is refused."""
    deck = yaml.safe_load(require_kong_yml().read_text())
    deck.setdefault("plugins", []).append({"name": "acl", "service": "no-such-service", "config": {"allow": ["x"]}})
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(deck))
    assert deck_validate(broken).returncode != 0


def render(source: Path, target: Path, storage: dict[str, Any] | str) -> subprocess.CompletedProcess[str]:
    arg = storage if isinstance(storage, str) else json.dumps(storage)
    return subprocess.run([PYTHON, str(RENDER), str(source), str(target), "--storage", arg], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


def compose_storages() -> dict[str, dict[str, Any]]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return {name: json.loads(s["environment"]["KONG_AI_STORAGE"]) for name, s in services.items()
            if "KONG_AI_STORAGE" in (s.get("environment") or {})}


def _without_storage(deck: dict[str, Any]) -> dict[str, Any]:
    deck = copy.deepcopy(deck)
    for plugin in _all_plugins(deck):
        (plugin.get("config") or {}).pop("storage", None)
    return deck


def _all_plugins(deck: dict[str, Any]) -> list[dict[str, Any]]:
    plugins = list(deck.get("plugins") or [])
    for svc in deck.get("services") or []:
        plugins += svc.get("plugins") or []
        for route in svc.get("routes") or []:
            plugins += route.get("plugins") or []
    for consumer in deck.get("consumers") or []:
        plugins += consumer.get("plugins") or []
    return plugins


@pytest.mark.parametrize("gateway", sorted(compose_storages()))
def test_each_compose_gateway_loads_a_valid_render_of_kong_yml(gateway: str, tmp_path: Path) -> None:
    storage = compose_storages()[gateway]
    source = require_kong_yml()
    target = tmp_path / "kong.yml"
    done = render(source, target, storage)
    assert done.returncode == 0, done.stderr
    assert deck_validate(target).returncode == 0
    original, rendered = yaml.safe_load(source.read_text()), yaml.safe_load(target.read_text())
    # only storage blocks changed, and every suite plugin with a storage field now uses the stack's backend
    assert _without_storage(original) == _without_storage(rendered)
    with_storage = [p for p in _all_plugins(rendered) if p["name"] in ("ai-tier-quota", "ai-extraction-guard")]
    assert with_storage, "kong.yml runs no suite plugin that keeps state"
    for plugin in with_storage:
        assert {k: plugin["config"]["storage"].get(k) for k in storage} == storage, plugin["name"]
    for plugin in _all_plugins(rendered):
        if plugin["name"] == "ai-prompt-inspector":
            assert "storage" not in (plugin.get("config") or {})  # it has no storage field


def test_tuning_keys_survive_and_backend_keys_are_replaced(tmp_path: Path) -> None:
    source = tmp_path / "in.yml"
    source.write_text(yaml.safe_dump({"_format_version": "3.0", "plugins": [
        {"name": "ai-tier-quota", "config": {"storage": {"strategy": "redis-sentinel", "sentinel_master": "m",
                                                          "read_timeout": 250, "key_prefix": "tenant-a:"}}},
        {"name": "ai-extraction-guard"},
        {"name": "ai-prompt-inspector", "config": {"action": "block"}},
    ]}))
    target = tmp_path / "out.yml"
    assert render(source, target, {"strategy": "redis", "host": "redis", "port": 6379}).returncode == 0
    quota, guard, inspector = yaml.safe_load(target.read_text())["plugins"]
    assert quota["config"]["storage"] == {"read_timeout": 250, "key_prefix": "tenant-a:", "strategy": "redis",
                                          "host": "redis", "port": 6379}
    assert guard["config"]["storage"] == {"strategy": "redis", "host": "redis", "port": 6379}
    assert inspector["config"] == {"action": "block"}


@pytest.mark.parametrize(("storage", "message"), [
    ("{not json", "Expecting"),
    ('{"host": "redis"}', "strategy"),
    ('{"strategy": "redis", "read_timeout": 5}', "backend keys"),
])
def test_bad_storage_is_refused_with_the_reason(storage: str, message: str, tmp_path: Path) -> None:
    done = render(require_kong_yml(), tmp_path / "out.yml", storage)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "out.yml").exists()


def test_the_source_is_never_overwritten(tmp_path: Path) -> None:
    source = tmp_path / "kong.yml"
    source.write_text(require_kong_yml().read_text())
    done = render(source, source, {"strategy": "redis", "host": "redis"})
    assert done.returncode == 2 and "must differ" in done.stderr
    assert source.read_text() == require_kong_yml().read_text()
