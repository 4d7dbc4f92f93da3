"""spec/ on a machine without Kong: one skipped spec with a clear reason, nothing failing, not in the default run."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib

import pytest

from .helpers import PYTHON, REPO, free_port

pytestmark = pytest.mark.timeout(300)


def run_specs(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KONG_PROXY_URL", "KONG_ADMIN_URL", "KONG_SPEC"))}
    return subprocess.run([PYTHON, "-m", "pytest", "spec", "-q", "-rs", "-p", "no:cacheprovider"],
                          env={**clean, **env}, cwd=REPO, capture_output=True, text=True, timeout=240)


def summary(done: subprocess.CompletedProcess[str]) -> tuple[int, int, list[str]]:
    skipped = re.findall(r"^SKIPPED \[(\d+)\] (.*)$", done.stdout, re.M)
    counts = re.search(r"(\d+) skipped, (\d+) deselected", done.stdout)
    assert counts, done.stdout[-2000:] + done.stderr[-2000:]
    return int(counts.group(1)), int(counts.group(2)), [line for _, line in skipped]


def test_without_urls_one_spec_says_what_to_set_and_none_fail() -> None:
    done = run_specs({})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    skipped, deselected, lines = summary(done)
    assert skipped == 1 and deselected > 10 and len(lines) == 1
    assert "KONG_PROXY_URL and KONG_ADMIN_URL are not set" in lines[0]
    assert "README.md section 'The Docker path'" in lines[0]
    assert "failed" not in done.stdout and "error" not in done.stdout.lower()


def test_with_urls_nobody_answers_the_reason_names_the_url() -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}"
    done = run_specs({"KONG_PROXY_URL": url, "KONG_ADMIN_URL": url})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    skipped, deselected, lines = summary(done)
    assert skipped == 1 and deselected > 10 and len(lines) == 1
    assert f"KONG_ADMIN_URL={url} is not reachable" in lines[0]


def test_the_default_run_does_not_collect_spec() -> None:
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests"]  # `pytest` alone collects tests/ only; spec/ is asked for by name
