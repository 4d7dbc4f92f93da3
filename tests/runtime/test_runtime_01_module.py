"""Loading plugin modules and describing them to Kong (query_cmd)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kong_plugins.runtime.module import PluginLoadError, load_plugin_module

PLUGINS = Path(__file__).parent / "plugins"
HELLO = Path(__file__).parents[2] / "kong_plugins" / "demo" / "hello.py"


def test_dump_has_the_shape_kong_reads() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kong_plugins.runtime.cli", str(HELLO), "--dump"],
        capture_output=True, text=True, check=True,
    ).stdout
    dump = json.loads(out)
    assert isinstance(dump, list) and len(dump) == 1  # Kong 3.9 registers only the first entry
    info = dump[0]
    assert info["Name"] == "hello"
    assert info["Phases"] == ["access"]
    assert info["Priority"] == 0 and info["Version"] == "0.1.0"
    config = info["Schema"]["fields"][0]["config"]
    assert info["Schema"]["name"] == "hello"
    assert config["type"] == "record"
    assert [next(iter(f)) for f in config["fields"]] == ["message", "calls"]


def test_empty_inherited_phase_methods_are_not_registered() -> None:
    module = load_plugin_module(str(PLUGINS / "inherited_noop.py"))
    # An inherited no-op `response` would switch every route to buffered proxying in Kong.
    assert module.phases == ("access",)
    assert set(module.skipped_phases) == {"response", "log"}


def test_module_level_failure_mode_is_read() -> None:
    assert load_plugin_module(str(PLUGINS / "fail_closed.py")).failure_mode == "closed"
    assert load_plugin_module(str(PLUGINS / "misbehaving.py")).failure_mode == "open"


def test_name_override() -> None:
    assert load_plugin_module(str(HELLO), name="greeter").name == "greeter"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no/such/file.py", "plugin file not found"),
        ("not a module", "not a suite plugin"),
        ("json", "has no Plugin class"),
        ("kong_plugins_missing_module", "No module named"),
    ],
)
def test_unloadable_targets_give_clear_errors(target: str, message: str) -> None:
    with pytest.raises(PluginLoadError, match=message):
        load_plugin_module(target)


def test_cli_reports_load_errors_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('import-time failure')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kong_plugins.runtime.cli", str(bad), "--dump"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "import-time failure" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_refuses_missing_prefix(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kong_plugins.runtime.cli", str(HELLO), "-p", str(tmp_path / "nope")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


def test_kong_pdk_compat_flags_are_accepted(tmp_path: Path) -> None:
    for flags in (["--no-lua-style"], ["-g"], ["-m"], ["--listen-queue-size", "16"]):
        proc = subprocess.run(
            [sys.executable, "-m", "kong_plugins.runtime.cli", str(HELLO), "--dump", *flags],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
