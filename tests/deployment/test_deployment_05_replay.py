"""``kong-ai-replay`` on a generated file-log: decisions on the logged timestamps, malformed lines reported.

The log lines are what Kong's file-log would have written for traffic through a gateway *without*
the suite (kong.yml minus the suite plugins and their guards): ``kong.log.serialize()`` objects
produced by the stand-in, one JSON object per line.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kong_plugins import SUITE_PLUGINS
from kong_plugins.demo import replay as replay_cli
from kong_plugins.demo.models import MODELS
from kong_plugins.demo.reference import CHAT, FREE_KEY, PREMIUM_KEY, find_kong_yml, jwt_token
from kong_plugins.standin import KongStandIn

from .deployment_helpers import DAY0, chat_body

pytestmark = pytest.mark.timeout(240)


def unprotected_deck() -> dict[str, Any]:
    doc = yaml.safe_load(find_kong_yml().read_text())
    stripped = copy.deepcopy(doc)
    stripped["plugins"] = [p for p in stripped["plugins"] if p["name"] not in SUITE_PLUGINS]
    for service in stripped["services"]:
        service["plugins"] = [p for p in service.get("plugins", [])
                              if p["name"] not in SUITE_PLUGINS and p["name"] != "post-function"]
    assert isinstance(stripped, dict)
    return stripped


def log_traffic(path: Path) -> None:
    """Traffic a gateway without the suite let through, logged as file-log lines (plus junk)."""
    lines: list[str] = []
    with KongStandIn.from_deck(unprotected_deck(), upstreams=MODELS) as gw:
        def send(at: float, headers: dict[str, str], body: bytes) -> None:
            gw.clock = lambda: at
            r = gw.request("POST", CHAT, headers={"Content-Type": "application/json", **headers}, body=body,
                           client_ip="198.51.100.7", start_time=at)
            lines.append(replay_cli.write_log_line(gw.log_entry(r)))

        for i in range(15):  # free-app: 15 requests within one second
            send(DAY0 + i * 0.05, {"apikey": FREE_KEY}, chat_body())
        for i in range(12):  # free-app the next day: 12 requests, 10 s apart
            send(DAY0 + 86_400 + i * 10, {"apikey": FREE_KEY}, chat_body())
        send(DAY0 + 2 * 86_400, {"apikey": PREMIUM_KEY}, chat_body())
        at = DAY0 + 2 * 86_400 + 1
        send(at, {"Authorization": f"Bearer {jwt_token(at)}"}, chat_body())
    lines.insert(3, "this is not json\n")
    lines.insert(7, "[1, 2, 3]\n")
    lines.insert(9, json.dumps({"request": {"method": "GET"}, "started_at": 1}) + "\n")
    lines.insert(11, json.dumps({"request": {"method": "GET", "uri": "/x"}, "started_at": "yesterday"}) + "\n")
    path.write_text("".join(lines))


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str]:
    log = tmp_path_factory.mktemp("logs") / "file-log.json"
    log_traffic(log)
    out = io.StringIO()
    status = replay_cli.main([str(log)], out=out)
    return status, out.getvalue()


def test_the_burst_is_refused_past_the_quota_on_the_logged_time(replayed: tuple[int, str]) -> None:
    status, text = replayed
    assert status == 0
    rows = [line for line in text.splitlines() if line.lstrip()[:1].isdigit() and "POST /v1/chat" in line]
    burst = rows[:15]
    assert sum("200 proxied" in r for r in burst) == 10
    assert sum("429 ai-tier-quota: tier_rate" in r and "<- changed" in r for r in burst) == 5
    assert all("2024-03-04T00:00:0" in r for r in burst)  # the logged started_at, not the replay's clock


def test_spread_out_traffic_stays_allowed_because_the_logged_gaps_count(replayed: tuple[int, str]) -> None:
    _, text = replayed
    rows = [line for line in text.splitlines() if "2024-03-05T" in line]
    # 12 requests 10 s apart: GCRA gives one back every 6 s, so all pass on the logged timeline
    # (replayed on the replay's own clock they would be a burst, and two would be refused)
    assert len(rows) == 12 and all("200 proxied" in r for r in rows)


def test_consumers_authenticate_again_from_the_deck_file(replayed: tuple[int, str]) -> None:
    _, text = replayed
    day3 = [line for line in text.splitlines() if "2024-03-06T" in line]
    assert len(day3) == 2
    assert "premium-app" in day3[0] and "200 proxied" in day3[0]
    assert "analytics-service" in day3[1] and "200 proxied" in day3[1]


def test_malformed_lines_are_reported_and_the_rest_processed(replayed: tuple[int, str]) -> None:
    _, text = replayed
    assert "     4  error: not JSON" in text
    assert "     8  error: a JSON list, not a serialize() object" in text
    assert "    10  error: request.uri missing or not a path" in text
    assert "    12  error: started_at missing or not a positive number of milliseconds" in text
    assert "33 lines: 29 replayed, 4 malformed" in text
    assert "Different from the logged status: 5 (200 -> 429: 5)" in text
    assert "Refused, by consumer: free-app 5" in text


def test_summary_only_and_a_missing_file(tmp_path: Path) -> None:
    out = io.StringIO()
    assert replay_cli.main([str(tmp_path / "missing.json")], out=out) == 1
    assert "missing.json" in out.getvalue()
    log = tmp_path / "one.json"
    log.write_text("{}\n")
    out = io.StringIO()
    assert replay_cli.main([str(log), "--summary"], out=out) == 0
    assert "1 lines: 0 replayed, 1 malformed" in out.getvalue() and "error:" not in out.getvalue()
