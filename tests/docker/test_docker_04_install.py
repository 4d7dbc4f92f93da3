"""The Dockerfile's install steps, run on this machine's Python: the venv, the suite, the plugin servers.

The RUN marked ``# kong-ai: install`` is executed as written (``sh -c``) with its ARGs pointing into a
temporary directory, after the COPY lines into ``${KONG_AI_SRC}`` are replayed from the repository.
Then each wiring entry of the image is exercised with the venv's own console scripts: query_cmd
must print the plugin info Kong decodes (``kong/runloop/plugin_servers/process.lua``), start_cmd
must serve the configured socket. Build-time ARGs that only tune pip (no cache, no version check)
are not replayed, so pip's cache makes reruns faster. Building the image itself needs Docker.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kong_plugins import SUITE_PLUGINS

from .helpers import PYTHON, REPO, Dockerfile, serve_until_socket, stop, wiring

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

KONG_PREFIX = "/usr/local/kong"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Dockerfile, Path]]:
    dockerfile = Dockerfile.load()
    root = tmp_path_factory.mktemp("image")
    variables = {"KONG_AI_VENV": str(root / "venv"), "KONG_AI_SRC": str(root / "src")}
    for sources, dest in dockerfile.copies_into("KONG_AI_SRC"):
        target = Path(dest.replace("${KONG_AI_SRC}", variables["KONG_AI_SRC"]))
        for source in sources:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name)
    run = dockerfile.marked_run()
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", run.args], env={**os.environ, **variables}, capture_output=True, text=True,
                          timeout=840)
    print(f"install RUN took {time.monotonic() - started:.1f} s")  # shown with -s; never asserted
    assert done.returncode == 0, f"{run.args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    yield dockerfile, root / "venv"


def in_venv(argv: list[str], dockerfile: Dockerfile, venv: Path) -> list[str]:
    return [a.replace(dockerfile.args["KONG_AI_VENV"], str(venv)) for a in argv]


@pytest.mark.parametrize("plugin", sorted(SUITE_PLUGINS))
def test_query_cmd_prints_the_plugin_info_kong_decodes(installed: tuple[Dockerfile, Path], plugin: str) -> None:
    dockerfile, venv = installed
    server = wiring(dockerfile.env)[plugin.replace("-", "_")]
    # io.popen runs it through a shell, like this
    out = subprocess.run(shlex.join(in_venv(server.query_cmd, dockerfile, venv)), shell=True, capture_output=True,
                         check=True, timeout=120).stdout
    infos = json.loads(out)
    assert isinstance(infos, list) and len(infos) == 1
    info = infos[0]
    assert info["Name"] == plugin and isinstance(info["Priority"], int) and info["Version"]
    assert set(info["Phases"]) <= {"certificate", "rewrite", "access", "response", "preread", "log"}
    assert info["Schema"]["name"] == plugin
    assert info["Schema"]["fields"][0]["config"]["type"] == "record"


@pytest.mark.parametrize("plugin", sorted(SUITE_PLUGINS))
def test_start_cmd_serves_the_configured_socket(installed: tuple[Dockerfile, Path], plugin: str,
                                                tmp_path: Path) -> None:
    dockerfile, venv = installed
    server = wiring(dockerfile.env)[plugin.replace("-", "_")]
    argv = [a.replace(KONG_PREFIX, str(tmp_path)) for a in in_venv(server.start_cmd, dockerfile, venv)]
    # Kong spawns start_cmd from an nginx worker, whose environment nginx has emptied
    proc = serve_until_socket(argv, server.socket.replace(KONG_PREFIX, str(tmp_path)), env={})
    stop(proc)


def test_the_venv_holds_the_suite_not_the_repository(installed: tuple[Dockerfile, Path]) -> None:
    _, venv = installed
    code = "import kong_plugins, sys; print(kong_plugins.__file__)"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True,
                         cwd="/", timeout=60).stdout
    assert str(venv) in out and str(REPO) not in out


def test_the_wheel_ships_the_lua_companion(installed: tuple[Dockerfile, Path]) -> None:
    """Package data: a pip-installed suite carries ai-suite-context's handler.lua and schema.lua."""
    _, venv = installed
    code = ("from kong_plugins import companion; "
            "print(companion.LUA_DIR); print(companion.handler_source() == open(str(companion.LUA_DIR) + "
            "'/handler.lua').read())")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True,
                         cwd="/", timeout=60).stdout.split()
    assert out[0].startswith(str(venv)) and out[1] == "True"
    for name in ("handler.lua", "schema.lua"):
        shipped = Path(out[0]) / name
        assert shipped.read_text() == (REPO / "kong_plugins" / "lua" / "kong" / "plugins" / "ai-suite-context" /
                                       name).read_text()


#: The kong:3.9 image: Ubuntu 24.04, Python 3.12, glibc 2.39, amd64 and arm64 -- and no compiler.
IMAGE_PYTHON = "3.12"
IMAGE_GLIBC_MINOR = 39


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_dependency_has_a_wheel_for_the_images_python(arch: str, tmp_path: Path) -> None:
    """pip in the image must never need to compile: each runtime dependency resolves to wheels only."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(17, IMAGE_GLIBC_MINOR + 1)]
    argv = [PYTHON, "-m", "pip", "download", "-q", "--only-binary=:all:",
            "--python-version", IMAGE_PYTHON, "--implementation", "cp", "--abi", "cp312", "--abi", "abi3",
            "--abi", "none", "-d", str(tmp_path), "--platform", f"manylinux2014_{arch}", "--platform", "any"]
    for platform in platforms:
        argv += ["--platform", platform]
    done = subprocess.run([*argv, *deps], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_entrypoint_renders_kong_yml_with_the_venv_then_hands_over_to_kong(
        installed: tuple[Dockerfile, Path], tmp_path: Path) -> None:
    """docker/kong-ai-entrypoint.sh as the image runs it, Kong's own entrypoint replaced by echo."""
    from .helpers import require_kong_yml

    _, venv = installed
    (venv / "share").mkdir(exist_ok=True)
    shutil.copy2(REPO / "docker" / "render_storage.py", venv / "share" / "render_storage.py")
    script = tmp_path / "entrypoint.sh"
    script.write_text((REPO / "docker" / "kong-ai-entrypoint.sh").read_text().replace("/docker-entrypoint.sh", "echo"))
    target = tmp_path / "rendered" / "kong.yml"
    env = {"PATH": os.environ["PATH"], "KONG_AI_VENV": str(venv), "KONG_AI_DECLARATIVE_SOURCE": str(require_kong_yml()),
           "KONG_DECLARATIVE_CONFIG": str(target), "KONG_AI_STORAGE": '{"strategy": "redis", "host": "redis"}'}
    done = subprocess.run(["sh", str(script), "kong", "docker-start"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "kong docker-start"
    assert "strategy: redis" in target.read_text()
    # without KONG_AI_STORAGE nothing is rendered: Kong loads KONG_DECLARATIVE_CONFIG as given
    target.unlink()
    env.pop("KONG_AI_STORAGE")
    done = subprocess.run(["sh", str(script), "kong", "docker-start"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and not target.exists()
