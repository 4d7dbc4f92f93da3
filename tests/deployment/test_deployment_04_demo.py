"""``kong-ai-demo --standin`` in-process: its summary matches kong.yml's reference numbers.

The expected figures are read from kong.yml, so the demo, the file and this test cannot drift apart.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kong_plugins.demo import cli
from kong_plugins.demo.reference import find_kong_yml
from kong_plugins.demo.scenarios import LatencyReport, ScenarioResult

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[dict[str, ScenarioResult], LatencyReport, str]]:
    out = io.StringIO()
    results, latency = cli.run_standin(find_kong_yml(), out)
    yield {r.key: r for r in results}, latency, out.getvalue()


def _quota() -> dict[str, Any]:
    doc = yaml.safe_load(find_kong_yml().read_text())
    config: dict[str, Any] = next(p for p in doc["plugins"] if p["name"] == "ai-tier-quota")["config"]
    return config


def _limit(tier: str, model: str) -> dict[str, Any]:
    tiers = {t["name"]: t for t in _quota()["tiers"]}
    found: dict[str, Any] = next(lim for lim in tiers[tier]["limits"] if model in lim["models"])
    return found


def tally(result: ScenarioResult) -> list[tuple[int, int, str | None, str]]:
    return [(count, o.status, o.decided_by, o.reason) for count, o in result.tally()]


def test_rate_quotas_refuse_exactly_past_the_reference_numbers(demo: Any) -> None:
    results, _, _ = demo
    free = _limit("free", "textgen")["per_minute"]
    assert tally(results["free-rate"]) == [(free, 200, None, "allowed"), (1, 429, "ai-tier-quota", "tier_rate")]
    per_second = _limit("premium", "textgen")["per_second"]
    assert tally(results["premium-second"]) == [(per_second, 200, None, "allowed"),
                                                (1, 429, "ai-tier-quota", "tier_rate")]
    per_minute = _limit("premium", "textgen")["per_minute"]
    # the second minute of sustained traffic at 5 requests/s: 300 requests
    minute = {row[1:]: row[0] for row in tally(results["premium-minute"])}
    assert minute == {(200, None, "allowed"): per_minute, (429, "ai-tier-quota", "tier_rate"): 300 - per_minute}
    # from a standing start too: the limit in the first minute, and in every rolling minute, no more
    assert results["premium-minute"].figures == {"first_minute": per_minute, "second_minute": per_minute,
                                                 "busiest_rolling_minute": per_minute}
    images = _limit("premium", "image-analysis")["per_minute"]
    assert tally(results["premium-image"]) == [(images, 200, None, "allowed"),
                                               (1, 429, "ai-tier-quota", "tier_rate")]
    internal = _limit("internal", "textgen")["per_minute"]
    assert tally(results["internal-minute"]) == [(internal, 200, None, "allowed"),
                                                 (1, 429, "ai-tier-quota", "tier_rate")]
    flood = _quota()["global_limits"][0]["per_second"]
    assert tally(results["classifier-flood"]) == [(flood, 200, None, "allowed"),
                                                  (1, 429, "ai-tier-quota", "global_flood")]
    assert all(o.retry_after for o in results["free-rate"].outcomes if o.status == 429)


def test_the_daily_token_budget_runs_out_where_the_reservations_say(demo: Any) -> None:
    results, _, _ = demo
    budget = _limit("free", "textgen")["tokens_per_day"]
    per_request = 1 + 4000  # "hi" is one prompt token, plus max_tokens
    fits = budget // per_request
    assert tally(results["free-tokens"]) == [(fits, 200, None, "allowed"), (1, 429, "ai-tier-quota", "tier_tokens")]
    assert results["free-tokens"].note.endswith(str(budget - (fits - 1) * per_request - per_request))


def test_access_network_inspection_and_auth_outcomes(demo: Any) -> None:
    results, _, _ = demo
    assert tally(results["no-key"]) == [(2, 401, "acl", "Unauthorized")]
    assert tally(results["free-image"]) == [(1, 403, "ai-tier-quota", "model_access")]
    assert tally(results["docqa"]) == [(1, 403, "ip-restriction", "Your IP address is not allowed"),
                                       (1, 200, None, "allowed"), (1, 403, "ai-tier-quota", "model_access")]
    assert tally(results["injection"]) == [(2, 400, "ai-prompt-inspector", "request_rejected")]
    assert tally(results["jwt"]) == [(1, 200, None, "allowed"), (1, 401, "acl", "Unauthorized")]
    assert tally(results["logit-extraction"])[0][1:3] == (400, "ai-extraction-guard")


def test_a_dead_plugin_server_fails_closed_only_where_required(demo: Any) -> None:
    results, _, _ = demo
    assert tally(results["fail-closed"]) == [(2, 503, "post-function", "Service temporarily unavailable"),
                                             (1, 200, None, "allowed")]
    assert "ai-prompt-inspector left no decision" in results["fail-closed"].note


def test_the_report_shows_outcomes_and_latency_per_plugin(demo: Any) -> None:
    _, latency, text = demo
    assert set(latency.per_plugin) == {"ai-tier-quota", "ai-prompt-inspector", "ai-extraction-guard"}
    assert all(0 < p50 <= p99 for _, p50, p99 in latency.per_plugin.values())
    assert "10 x 200 proxied to the model" in text
    assert "1 x 429 ai-tier-quota: tier_rate" in text
    assert "2 x 503 post-function: Service temporarily unavailable" in text
    assert "ai-tier-quota        p50" in text


def test_main_without_docker_runs_the_stand_in_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "docker_available", lambda: False)
    calls: list[Any] = []
    monkeypatch.setattr(cli, "run_standin", lambda deck, out: calls.append(deck))
    assert cli.main([], out=io.StringIO()) == 0
    assert calls == [find_kong_yml()]


def test_main_with_docker_brings_up_the_compose_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "docker_available", lambda: True)
    commands: list[list[str]] = []

    class Done:
        returncode = 0

    monkeypatch.setattr(cli.subprocess, "run", lambda command, **kw: commands.append(command) or Done())
    out = io.StringIO()
    assert cli.main([], out=out) == 0
    assert commands == [["docker", "compose", "-f", str(find_kong_yml().parent / "docker" / "compose.yml"),
                         "up", "-d", "--build"]]
    assert "KONG_PROXY_URL=http://localhost:8000" in out.getvalue()
    # --standin wins over Docker
    monkeypatch.setattr(cli, "run_standin", lambda deck, out: None)
    assert cli.main(["--standin"], out=io.StringIO()) == 0 and len(commands) == 1


def test_a_missing_deck_file_is_a_clear_error() -> None:
    out = io.StringIO()
    assert cli.main(["--standin", "--deck", "/nonexistent/kong.yml"], out=out) == 1
    assert "kong.yml not found" in out.getvalue()
