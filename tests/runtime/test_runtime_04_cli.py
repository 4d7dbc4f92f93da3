"""The console scripts Kong's ``pluginserver_<name>_start_cmd`` / ``_query_cmd`` call, flag by flag.

Each suite plugin has a console script named exactly after it; ``kong-plugins-serve`` serves a
suite plugin by name, an importable module or a ``.py`` file. The tests run the installed scripts
(``pip install -e .`` puts them on PATH), because those are what a kong.conf names.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kong_plugins import SUITE_PLUGINS
from tests.runtime.raw_client import RawKong

HELLO = Path(__file__).parents[2] / "kong_plugins" / "demo" / "hello.py"
PLUGINS = Path(__file__).parent / "plugins"

pytestmark = pytest.mark.timeout(120)


def script(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"console script {name} is not installed: run `pip install -e .`"
    return path


def dump(*argv: str) -> list[dict[str, object]]:
    proc = subprocess.run([*argv, "--dump"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    parsed = json.loads(proc.stdout)
    assert isinstance(parsed, list)
    return parsed


@pytest.mark.parametrize("plugin", sorted(SUITE_PLUGINS))
def test_each_suite_plugin_has_a_console_script_that_dumps_one_plugin(plugin: str) -> None:
    info = dump(script(plugin))
    # Kong 3.9 registers only the first entry of a query_cmd's answer (process.lua).
    assert len(info) == 1
    assert info[0]["Name"] == plugin
    assert "access" in info[0]["Phases"]  # type: ignore[operator]
    assert info[0]["Schema"]["name"] == plugin  # type: ignore[index]
    # The generic script serving the plugin by name dumps the same thing.
    assert dump(script("kong-plugins-serve"), plugin) == info


def test_kong_plugins_serve_loads_an_importable_module_and_a_file() -> None:
    by_module = dump(script("kong-plugins-serve"), "kong_plugins.demo.hello")
    by_file = dump(script("kong-plugins-serve"), str(HELLO))
    assert by_module[0]["Name"] == by_file[0]["Name"] == "hello"
    assert by_module[0]["Phases"] == by_file[0]["Phases"] == ["access"]


def serve(argv: list[str], socket_path: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stderr=err, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not socket_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"server did not start: {log.read_text(errors='replace')}")
        time.sleep(0.02)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("plugin", sorted(SUITE_PLUGINS))
def test_each_console_script_serves_on_its_default_socket(plugin: str, tmp_path: Path) -> None:
    sock = tmp_path / f"{plugin}.sock"
    proc = serve([script(plugin), "-p", str(tmp_path)], sock, tmp_path / "stderr")
    try:
        err, status = RawKong(str(sock)).call("plugin.GetStatus")
        assert err is None and list(status["Plugins"]) == [plugin]
    finally:
        stop(proc)
    assert proc.returncode == 0 or proc.returncode == -15
    assert not sock.exists()  # removed on SIGTERM


def test_socket_name_and_verbose_flags(tmp_path: Path) -> None:
    sock = tmp_path / "custom.socket"
    log = tmp_path / "stderr"
    proc = serve([script("kong-plugins-serve"), str(HELLO), "--kong-prefix", str(tmp_path),
                  "--socket-name", "custom.socket", "-v"], sock, log)
    try:
        assert not (tmp_path / "hello.sock").exists()
        kong = RawKong(str(sock))
        iid = kong.start_instance("hello", {"message": "hi", "calls": 2})
        assert kong.run_event(iid, "access", {"kong.request.get_header": "gw"})[-1] == {
            "Method": "kong.response.set_header", "Args": ["X-Hello", "hi gw"]}
    finally:
        stop(proc)
    text = log.read_text(errors="replace")
    assert f"serving on {sock}" in text  # -v: info lines
    assert "instance #" in text


def test_without_verbose_a_quiet_start(tmp_path: Path) -> None:
    sock = tmp_path / "hello.sock"
    log = tmp_path / "stderr"
    proc = serve([script("kong-plugins-serve"), str(HELLO), "-p", str(tmp_path)], sock, log)
    try:
        RawKong(str(sock)).start_instance("hello", {})
    finally:
        stop(proc)
    assert "serving on" not in log.read_text(errors="replace")


@pytest.mark.parametrize("flags", [["-g"], ["-m"], ["--no-lua-style", "-g", "--listen-queue-size", "16"], []])
def test_kong_pdk_flags_still_serve_concurrently_with_python_style_errors(flags: list[str], tmp_path: Path) -> None:
    """Configurations written for kong-pdk keep working, and a StepError is a Python exception
    whatever the flags say (kong-pdk's default would hand the handler a Lua-style ``(None, err)``)."""
    plugin = tmp_path / "catches.py"
    plugin.write_text(
        "from kong_pdk.exception import PDKException\n"
        "Schema = ()\nversion = '1'\npriority = 1\n"
        "class Plugin:\n"
        "    def __init__(self, config): pass\n"
        "    def access(self, kong):\n"
        "        try:\n"
        "            got = kong.request.get_raw_body()\n"
        "        except PDKException as e:\n"
        "            got = 'raised: ' + str(e)\n"
        "        kong.response.set_header('X-Got', repr(got))\n"
    )
    sock = tmp_path / "catches.sock"
    proc = serve([sys.executable, "-m", "kong_plugins.runtime.cli", str(plugin), "-p", str(tmp_path), *flags],
                 sock, tmp_path / "stderr")
    try:
        kong = RawKong(str(sock))
        iid = kong.start_instance("catches")
        # Two events in flight at once, finished in reverse order: they do not serialise.
        firsts = [kong.call("plugin.HandleEvent", {"InstanceId": iid, "EventName": "access"})[1] for _ in range(2)]
        err, second = kong.call("plugin.StepError", {"EventId": firsts[1]["EventId"], "Data": "body too big"})
        assert err is None and second["Data"]["Args"] == [
            "X-Got", repr("raised: kong.request.get_raw_body: body too big")]
        err, first = kong.call("plugin.Step", {"EventId": firsts[0]["EventId"], "Data": "payload"})
        assert err is None and first["Data"]["Args"] == ["X-Got", "'payload'"]
    finally:
        stop(proc)


def test_the_startup_heap_is_frozen_so_full_collections_do_not_rescan_it(tmp_path: Path) -> None:
    """A full cyclic collection stalls every event in flight on the process; the plugin module and
    its libraries (numpy, compiled patterns) are loaded once and never garbage, so the server
    freezes them before serving and a collection scans only what events created."""
    plugin = tmp_path / "heap.py"
    plugin.write_text(
        "import gc\n"
        "import numpy\n"
        "Schema = ()\nversion = '1'\npriority = 1\n"
        "class Plugin:\n"
        "    def __init__(self, config): pass\n"
        "    def access(self, kong):\n"
        "        kong.response.set_header('X-Frozen', str(gc.get_freeze_count()))\n"
    )
    sock = tmp_path / "heap.sock"
    proc = serve([script("kong-plugins-serve"), str(plugin), "-p", str(tmp_path)], sock, tmp_path / "stderr")
    try:
        kong = RawKong(str(sock))
        iid = kong.start_instance("heap")
        header = kong.run_event(iid, "access", {})[-1]
        assert header["Method"] == "kong.response.set_header" and header["Args"][0] == "X-Frozen"
        assert int(header["Args"][1]) > 10_000  # the runtime, gevent, msgpack and numpy at least
    finally:
        stop(proc)


def test_a_plugin_that_cannot_load_exits_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([script("kong-plugins-serve"), "no_such_module_anywhere", "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "No module named" in proc.stderr and "Traceback" not in proc.stderr
