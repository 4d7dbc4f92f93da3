"""kong-ai-ops, the SOAR callback and kong-ai-region-sync against three real regions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kong_plugins.extraction_guard.alerts import sign
from kong_plugins.extraction_guard.config import GuardConfig
from kong_plugins.extraction_guard.detector import Observation
from kong_plugins.extraction_guard.guard import ExtractionGuard, Identity
from kong_plugins.region import Denylist
from kong_plugins.region.callback import CallbackError, SoarCallback, make_server
from kong_plugins.region.config import parse_regions_file
from kong_plugins.region.denylist import revoked_key, verdict_key
from kong_plugins.region.ops import run
from kong_plugins.region.sync import SyncWorker
from kong_plugins.storage import MemoryStorage
from kong_plugins.tier_quota import TierQuota
from tests.tier_quota.quota_helpers import FakeKong, consumer, serialize

from .conftest import Regions

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]
SECRET = "s3cret-s3cret-s3cret"


def regions_file(regions: Regions, tmp_path: Path, **exchange: Any) -> str:
    path = tmp_path / "regions.yml"
    path.write_text(yaml.safe_dump(regions.regions_file(**exchange)))
    return str(path)


def ops(path: str, *argv: str) -> tuple[int, list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []
    status = run(["--regions", path, *argv], emit=lines.append)
    return status, lines


def test_an_operator_block_is_listed_replicated_and_audited_everywhere(three_regions: Regions,
                                                                        tmp_path: Path) -> None:
    path = regions_file(three_regions, tmp_path)
    status, [event] = ops(path, "--region", "eu", "block", "consumer:c-7", "--tenant", "acme", "--ttl", "600",
                          "--who", "alice", "--why", "INC-42 scraping")
    assert status == 0 and event["origin"] == "eu" and event["who"] == "alice"
    _, listed = ops(path, "list")
    assert [(e["region"], e["subject"]) for e in listed] == [("eu", "consumer:c-7")]  # not replicated yet
    SyncWorker(parse_regions_file(yaml.safe_load(Path(path).read_text())), "eu").denylist_round()
    _, listed = ops(path, "list", "--tenant", "acme")
    assert sorted(e["region"] for e in listed) == ["apac", "eu", "us"]
    _, audit = ops(path, "--region", "apac", "audit")
    assert [(a["action"], a["who"], a["why"], a["origin"]) for a in audit] == [
        ("block", "alice", "INC-42 scraping", "eu")]
    ops(path, "--region", "us", "unblock", "consumer:c-7", "--tenant", "acme", "--who", "bob", "--why", "resolved")
    SyncWorker(parse_regions_file(yaml.safe_load(Path(path).read_text())), "us").denylist_round()
    for name in ("us", "eu", "apac"):
        assert three_regions.storage(name).get(verdict_key("acme", "consumer:c-7")) is None
    _, listed = ops(path, "list")
    assert listed == []


def test_usage_errors_exit_2_and_name_the_problem(three_regions: Regions, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = regions_file(three_regions, tmp_path)
    assert ops(path, "block", "consumer:c", "--tenant", "a", "--ttl", "5", "--who", "x", "--why", "y")[0] == 2
    assert "give --region" in capsys.readouterr().err
    assert ops(path, "--region", "mars", "list")[0] == 2
    assert ops(path, "--region", "eu", "revoke", "cred", "--ttl", "5", "--who", "x", "--why", "y")[0] == 2
    assert ops(path, "--region", "eu", "block", "consumer:c", "--ttl", "5", "--who", "x", "--why", "y")[0] == 2
    assert "--tenant" in capsys.readouterr().err
    bad = tmp_path / "bad.yml"
    bad.write_text("regions: {eu: {storage: {strategy: memory}}}\n")
    assert ops(str(bad), "list")[0] == 2
    assert "needs Redis" in capsys.readouterr().err


def test_a_region_down_is_reported_and_the_others_still_answer(three_regions: Regions, tmp_path: Path) -> None:
    path = regions_file(three_regions, tmp_path)
    three_regions.servers["us"].stop()
    try:
        status, lines = ops(path, "health")
    finally:
        three_regions.servers["us"].start()
    assert status == 1
    assert {line["region"] for line in lines} == {"us", "eu", "apac"}
    assert "error" in next(line for line in lines if line["region"] == "us")


def test_inspect_shows_a_clients_quota_counters_and_risk_state(three_regions: Regions, tmp_path: Path) -> None:
    path = regions_file(three_regions, tmp_path)
    storage = three_regions.storage("eu")
    quota = TierQuota({"default_tier": "std", "storage": three_regions.configs["eu"],
                       "region": {"name": "eu", "regions": ["us", "eu", "apac"]},
                       "tiers": [{"name": "std", "models": ["*"], "limits": [
                           {"per_minute": 30, "per_day": 1000},
                           {"per_minute": 100, "limit_by": "tenant", "scope": "global-approximate"}]}]},
                      storage=storage)
    for _ in range(3):
        quota.access(FakeKong(serialize(consumer=consumer("c-1", tenant="acme"), service="chat")))
    quota.access(FakeKong(serialize(consumer=consumer("c-2", tenant="acme:x"), service="chat")))  # look-alike
    Denylist(storage, region="eu").block("consumer:c-1", tenant="acme", ttl=60, who="alice", why="probe")
    status, [report] = ops(path, "--region", "eu", "inspect", "--tenant", "acme", "--consumer", "c-1")
    assert status == 0
    by_window = {(q["kind"], q["window"]): q["state"] for q in report["quota"]}
    assert set(by_window) == {("consumer", "per_minute"), ("consumer", "per_day"), ("tenant", "per_minute")}
    assert by_window[("consumer", "per_day")]["used"] == 3
    assert by_window[("consumer", "per_minute")]["window_used"] == 3
    assert by_window[("tenant", "per_minute")]["global_local_used"] == 3  # acme:x is another tenant
    assert report["risk"]["verdict"]["level"] == 3
    # an IP behind which one client called is a record naming it (its own state holds the evidence)
    guard = ExtractionGuard(GuardConfig(), storage)
    guard.learn(Identity(client="consumer:c-1", group="ip:10.1.1.1", tenant="acme"),
                Observation(1_700_000_000.0, "chat", 100))
    status, [report] = ops(path, "--region", "eu", "inspect", "--tenant", "acme", "--ip", "10.1.1.1")
    assert status == 0 and report["risk"]["state"] == {"one_client_group_of": "consumer:c-1"}


def test_health_shows_when_each_region_last_heard_from_the_others(three_regions: Regions, tmp_path: Path) -> None:
    path = regions_file(three_regions, tmp_path)
    regions = parse_regions_file(yaml.safe_load(Path(path).read_text()))
    SyncWorker(regions, "us").usage_round()
    _, lines = ops(path, "--region", "apac", "health")
    assert set(lines[0]["heard_from"]) == {"us"} and lines[0]["heard_from"]["us"] < 5
    # the sync worker's container health check: has this region's worker reached every region?
    assert ops(path, "health", "--expect", "us")[0] == 0
    status, lines = ops(path, "health", "--expect", "eu")
    assert status == 1 and all(line["stale"] == ["eu"] for line in lines)


# -- SOAR callback ------------------------------------------------------------------------------


def signed(doc: dict[str, Any], *, secret: str = SECRET, at: float | None = None,
           event_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(doc).encode()
    ts = str(int(time.time() if at is None else at))
    return body, {"x-timestamp": ts, "x-signature-256": sign(secret, ts, body),
                  "x-event-id": event_id or uuid.uuid4().hex}


def test_the_callback_applies_signed_decisions_and_refuses_forged_or_replayed_ones() -> None:
    store = MemoryStorage()
    callback = SoarCallback(Denylist(store, region="eu"), SECRET, name="xsoar", max_ttl=3600)
    body, headers = signed({"action": "revoke", "tenant": "acme", "credential": "cred-1", "ttl": 600,
                            "why": "leaked key"})
    event = callback.handle(body, headers)
    assert (event.action, event.who, event.why) == ("revoke", "soar:xsoar", "leaked key")
    assert store.get(revoked_key("acme", "cred-1")) is not None
    with pytest.raises(CallbackError) as replay:
        callback.handle(body, headers)
    assert replay.value.status == 409
    forged_body, forged = signed({"action": "block", "subject": "ip:1.2.3.4", "ttl": 60, "why": "x"},
                                 secret="not-the-secret-at-all")
    old_body, old = signed({"action": "block", "subject": "ip:1.2.3.4", "ttl": 60, "why": "x"},
                           at=time.time() - 3600)
    too_long_body, too_long = signed({"action": "block", "subject": "ip:1.2.3.4", "ttl": 7200, "why": "x"})
    for bad_body, bad_headers, status in ((forged_body, forged, 401), (old_body, old, 401),
                                          (too_long_body, too_long, 400), (b"[]", signed({})[1], 401)):
        with pytest.raises(CallbackError) as err:
            callback.handle(bad_body, bad_headers)
        assert err.value.status == status
    assert [e.action for e in Denylist(store, region="eu").audit()] == ["revoke"]


def test_the_callback_server_answers_over_http(three_regions: Regions) -> None:
    storage = three_regions.storage("us")
    server = make_server(SoarCallback(Denylist(storage, region="us"), SECRET), ("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1/denylist"
        body, headers = signed({"action": "block", "tenant": "acme", "subject": "consumer:c-9", "ttl": 120,
                                "why": "playbook 7"})
        ok = httpx.post(url, content=body, headers=headers, timeout=5)
        assert ok.status_code == 200 and ok.json()["who"] == "soar:soar"
        assert storage.get(verdict_key("acme", "consumer:c-9")) is not None
        assert httpx.post(url, content=body, headers={**headers, "x-signature-256": "sha256=00"},
                          timeout=5).status_code == 401
    finally:
        server.shutdown()
        server.server_close()


# -- the worker as a process ------------------------------------------------------------------


def test_the_sync_worker_process_replicates_within_moments_and_stops_on_sigterm(three_regions: Regions,
                                                                                 tmp_path: Path) -> None:
    path = regions_file(three_regions, tmp_path, sync_interval_ms=100, denylist_wait_ms=50)
    worker = subprocess.Popen([sys.executable, "-m", "kong_plugins.region.sync", "--regions", path,
                               "--region", "us"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        time.sleep(1.0)  # the worker connects and takes its first heartbeat round
        started = time.monotonic()
        Denylist(three_regions.storage("us"), region="us").block("ip:192.0.2.1", tenant=None, ttl=60, who="soc",
                                                                 why="test")
        from kong_plugins.region.denylist import global_verdict_key

        apac = three_regions.storage("apac")
        while apac.get(global_verdict_key("ip:192.0.2.1")) is None:
            assert time.monotonic() - started < 10, "not replicated within 10 s"
            time.sleep(0.005)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    assert worker.returncode == 0, err.decode()
    events = [json.loads(line) for line in out.decode().splitlines()]
    # once into each other region -- in one round, or over two when a region answered late under load
    applied: dict[str, int] = {}
    for e in events:
        if e["event"] == "denylist":
            for region, count in e["applied"].items():
                applied[region] = applied.get(region, 0) + count
    assert applied == {"eu": 1, "apac": 1}, events
