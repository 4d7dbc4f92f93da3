"""The Kong wiring of docker/Dockerfile: exactly the suite's plugins, one server each, sockets that match.

Kong 3.9 reads ``pluginserver_names`` and, per name, ``pluginserver_<name>_{socket,start_cmd,query_cmd}``
(with ``-`` in the name turned into ``_``; any ``pluginserver_*`` key is accepted from kong.conf or as
``KONG_PLUGINSERVER_*`` through conf_loader's dynamic ``pluginserver_`` namespace), registers only the
first plugin each query_cmd dumps (``(dump.Plugins or dump)[1]``,
``kong/runloop/plugin_servers/process.lua``) and connects to the configured socket, which the server
must create itself (Kong/kong#9733: a mismatch leaves Kong retrying at 100% CPU).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from kong_plugins import SUITE_PLUGINS, companion

from .helpers import COMPOSE_FILE, PYTHON, REPO, Dockerfile, serve_until_socket, stop, wiring

KONG_PREFIX = "/usr/local/kong"


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile.load()


def dump(plugin: str) -> list[dict[str, Any]]:
    out = subprocess.run([PYTHON, "-m", "kong_plugins.runtime.cli", plugin, "--dump"], capture_output=True,
                         check=True, timeout=60).stdout
    return list(json.loads(out))


def test_kong_loads_bundled_plus_exactly_the_suite(dockerfile: Dockerfile) -> None:
    plugins = dockerfile.env["KONG_PLUGINS"].split(",")
    assert plugins[0] == "bundled"
    assert sorted(plugins[1:]) == sorted([*SUITE_PLUGINS, companion.NAME])


#: Where the kong:3.9 image keeps Kong's own Lua modules (kong/plugins/key-auth/handler.lua...): on
#: Kong's Lua path, so kong.plugins.<name>.handler resolves there for a plugin copied in.
KONG_LUA_TREE = "/usr/local/share/lua/5.1"


def test_the_lua_companion_is_copied_into_kongs_lua_path(dockerfile: Dockerfile) -> None:
    copies = [i.args.split() for i in dockerfile.instructions if i.keyword == "COPY" and i.stage == "gateway"]
    target = f"{KONG_LUA_TREE}/kong/plugins/{companion.NAME}"
    [(source, _)] = [(src, dest) for *srcs, dest in copies for src in srcs if dest == target]
    assert (REPO / source).resolve() == Path(str(companion.LUA_DIR)).resolve()
    assert {p.name for p in (REPO / source).iterdir()} == {"handler.lua", "schema.lua"}


def test_one_plugin_server_per_suite_plugin_and_nothing_else(dockerfile: Dockerfile) -> None:
    servers = wiring(dockerfile.env)
    assert sorted(servers) == sorted(p.replace("-", "_") for p in SUITE_PLUGINS)
    expected = {"KONG_PLUGINSERVER_NAMES"} | {f"KONG_PLUGINSERVER_{s.upper()}_{k}" for s in servers
                                              for k in ("SOCKET", "START_CMD", "QUERY_CMD")}
    assert {k for k in dockerfile.env if k.startswith("KONG_PLUGINSERVER_")} == expected


@pytest.mark.parametrize("plugin", sorted(SUITE_PLUGINS))
def test_start_and_query_commands_call_the_plugins_console_script(dockerfile: Dockerfile, plugin: str) -> None:
    server = wiring(dockerfile.env)[plugin.replace("-", "_")]
    venv = dockerfile.args["KONG_AI_VENV"]
    script = f"{venv}/bin/{plugin}"
    assert server.start_cmd[0] == script and server.query_cmd == [script, "--dump"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert plugin in scripts, f"pyproject.toml declares no console script {plugin}"
    # the socket Kong connects to is the one the start command makes the server create
    args = server.start_cmd[1:]
    prefix = args[args.index("--kong-prefix") + 1]
    name = args[args.index("--socket-name") + 1]
    assert os.path.join(prefix, name) == server.socket
    assert prefix == KONG_PREFIX and len(server.socket.encode()) < 108


@pytest.mark.parametrize("plugin", sorted(SUITE_PLUGINS))
def test_the_start_command_serves_the_configured_socket(dockerfile: Dockerfile, plugin: str, tmp_path: Path) -> None:
    """Run the start_cmd as Kong would (our module instead of the image's script, a temp prefix)."""
    server = wiring(dockerfile.env)[plugin.replace("-", "_")]
    argv = [PYTHON, "-m", "kong_plugins.runtime.cli", plugin,
            *(a.replace(KONG_PREFIX, str(tmp_path)) for a in server.start_cmd[1:])]
    proc = serve_until_socket(argv, server.socket.replace(KONG_PREFIX, str(tmp_path)))
    try:
        assert os.listdir(tmp_path) == [os.path.basename(server.socket)]
    finally:
        stop(proc)


@pytest.mark.parametrize("plugin", sorted(SUITE_PLUGINS))
def test_the_query_command_dumps_one_plugin_named_like_kong_expects(plugin: str) -> None:
    info = dump(plugin)
    assert len(info) == 1  # Kong 3.9 would register only the first one anyway
    assert info[0]["Name"] == plugin and info[0]["Schema"]["name"] == plugin
    assert info[0]["Schema"]["fields"][0]["config"]["type"] == "record"


def _size(value: str) -> int:
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert m, value
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def _defaults_named(fields: list[dict[str, Any]], name: str) -> list[int]:
    found = []
    for entry in fields:
        for key, spec in entry.items():
            if key == name and isinstance(spec.get("default"), int):
                found.append(spec["default"])
            if spec.get("type") == "record":
                found += _defaults_named(spec["fields"], name)
    return found


def test_the_body_buffer_holds_the_largest_body_a_plugin_reads_by_default(dockerfile: Dockerfile) -> None:
    """Bodies above client_body_buffer_size go to disk and get_raw_body then needs a size argument."""
    buffer = _size(dockerfile.env["KONG_NGINX_HTTP_CLIENT_BODY_BUFFER_SIZE"])
    largest = max(d for p in SUITE_PLUGINS
                  for d in _defaults_named(dump(p)[0]["Schema"]["fields"], "max_body_bytes"))
    assert buffer >= largest > 8192


def _socket_tests(command: str) -> set[str]:
    return set(re.findall(r"test -S (\S+)", command))


def test_health_checks_wait_for_every_configured_socket(dockerfile: Dockerfile) -> None:
    sockets = {s.socket for s in wiring(dockerfile.env).values()}
    health = next(i for i in dockerfile.instructions if i.keyword == "HEALTHCHECK" and i.stage == "gateway")
    assert _socket_tests(health.args) == sockets
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in compose["services"].items():
        # services of the image that run Kong (the multiregion sync workers run kong-ai-region-sync)
        if service.get("image") == "kong-ai-plugins/kong:dev" and "entrypoint" not in service:
            assert _socket_tests(" ".join(service["healthcheck"]["test"])) == sockets, name


def test_compose_does_not_override_the_wiring() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        overridden = [k for k in env if k.startswith(("KONG_PLUGINSERVER_", "KONG_PLUGINS"))]
        assert not overridden, f"{name} overrides the image's wiring: {overridden}"


def test_the_documented_kong_conf_is_the_images_wiring(dockerfile: Dockerfile) -> None:
    doc = (REPO / "README.md").read_text()
    conf_block = re.search(r"```ini\n(.*?)```", doc, re.S)
    env_block = re.search(r"```sh\n# KONG_\* form\n(.*?)```", doc, re.S)
    assert conf_block and env_block, "the README's Docker section must show the wiring in kong.conf and KONG_* form"
    conf = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in conf_block.group(1).splitlines()
                                                   if line.strip() and not line.startswith("#"))}
    wanted = {k[len("KONG_"):].lower(): v for k, v in dockerfile.env.items()
              if k.startswith(("KONG_PLUGINS", "KONG_PLUGINSERVER_", "KONG_NGINX_HTTP_CLIENT_BODY"))}
    assert conf == wanted
    env = dict(tok.partition("=")[::2] for line in env_block.group(1).splitlines() if line.strip()
               for tok in shlex.split(line.removeprefix("export ")))
    assert env == {k: v for k, v in dockerfile.env.items() if k.lower()[len("KONG_"):] in wanted}
