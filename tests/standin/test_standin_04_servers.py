"""The same kong-pdk plugin module on the stock kong-pdk 0.36 server and on our runtime.

Both are real processes started from their query/start commands. The first tests show the two
behave alike where they should; the last ones reproduce the stock server's failure modes
(KONG_RUNTIME.md, "Stock kong-pdk 0.36 server: reproduced failure modes" 1-3) and show that our
runtime does not have them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kong_plugins.standin import KongStandIn, PluginServerSpec, StandInResponse

pytestmark = pytest.mark.timeout(120)

PROBE = str(Path(__file__).with_name("standin_probe_plugin.py"))
NAME = "standin_probe_plugin"
KINDS = ["stock", "ours"]
SLEEP = 2.0


def probe_route(path: str, **config: Any) -> dict[str, Any]:
    return {"name": path.strip("/"), "paths": [path], "plugins": [{"name": NAME, "config": config}]}


def make_deck(record_dir: Path) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [{"name": "textgen", "url": "http://textgen.internal:8000/v1", "routes": [
            probe_route("/observe", tag="observe", record_dir=str(record_dir)),
            probe_route("/exit", mode="exit"),
            probe_route("/error", mode="error"),
            probe_route("/raise", mode="raise_first"),
            probe_route("/raise-late", mode="raise_after_call"),
            probe_route("/sleep", mode="sleep_first", sleep=SLEEP),
            probe_route("/exit-then-call", mode="exit_then_call"),
            probe_route("/unknown", mode="unknown_method"),
            probe_route("/big", mode="big_body"),
            probe_route("/serialize-in-access", mode="serialize_in_access"),
        ]}],
        "consumers": [{"username": "alice", "keyauth_credentials": [{"key": "alice-key"}]}, {"username": "anon"}],
        "plugins": [{"name": "key-auth", "config": {"anonymous": "anon"}}],
    }


def spec_for(kind: str, prefix: Path) -> PluginServerSpec:
    if kind == "stock":
        return PluginServerSpec.stock_kong_pdk(PROBE, prefix)
    return PluginServerSpec.module(PROBE, prefix)


def start(kind: str, tmp: Path, rpc_timeout: float = 10.0) -> KongStandIn:
    (tmp / "records").mkdir(exist_ok=True)
    gw = KongStandIn.from_deck(make_deck(tmp / "records"), servers=[spec_for(kind, tmp)], rpc_timeout=rpc_timeout)
    gw.start()
    return gw


@pytest.fixture(scope="module", params=KINDS)
def shared_gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KongStandIn]:
    gw = start(request.param, tmp_path_factory.mktemp(f"ks-{request.param}"))
    yield gw
    gw.close()


@pytest.fixture
def fresh_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., KongStandIn]]:
    opened: list[KongStandIn] = []

    def make(kind: str, rpc_timeout: float = 10.0) -> KongStandIn:
        gw = start(kind, tmp_path_factory.mktemp(f"ks-{kind}"), rpc_timeout)
        opened.append(gw)
        return gw

    yield make
    for gw in opened:
        gw.close()


def seen(r: StandInResponse) -> dict[str, Any]:
    assert r.upstream_request is not None, r.errors
    return dict(json.loads(r.upstream_request.headers["x-probe-seen"]))


# -- parity: what a plugin sees, on either server ------------------------------------------------------------

def test_plugin_sees_kongs_multimaps_body_consumer_and_filled_config(shared_gw: KongStandIn) -> None:
    r = shared_gw.request("POST", "/observe/x?flag&n=1", headers={"apikey": "alice-key", "X-One": "1"},
                          body=b"\x00\x01 binary body", client_ip="10.0.0.5", start_time=1_700_000_000.5)
    assert r.status == 200
    s = seen(r)
    assert s["headers"]["x-one"] == ["1"] and s["query"] == {"flag": [], "n": ["1"]}
    assert (s["body_type"], s["body_len"]) == ("bytes", 14)
    assert s["consumer"]["username"] == "alice" and s["route"] == "observe" and s["ip"] == "10.0.0.5"
    assert s["start_time"] == 1_700_000_000_500
    config = s["config"]
    assert (config["mode"], config["sleep"], config["tag"]) == ("observe", 0, "observe")
    assert config["__plugin_id"] and "__seq__" in config and "__key__" in config
    assert s["path"] == "/observe/x?flag&n=1"
    assert r.headers["x-probe"] == "seen"  # set in access, kept on the proxied response
    assert r.headers["x-probe-upstream"] == f"200 {len(r.body)}"  # response phase saw the buffered body
    assert r.pdk_calls[NAME]["access"] >= 10 and r.pdk_calls[NAME]["response"] == 3


def test_exit_and_error_reach_the_client(shared_gw: KongStandIn) -> None:
    r = shared_gw.request("GET", "/exit")
    assert (r.status, r.json(), r.headers["x-probe"]) == (403, {"message": "blocked by probe"}, "exit")
    assert r.headers["x-probe-before-exit"] == "1" and r.upstream_request is None
    e = shared_gw.request("GET", "/error")
    assert (e.status, e.json()) == (429, {"message": "Too many requests"})


def test_unknown_pdk_method_is_null_to_the_plugin(shared_gw: KongStandIn) -> None:
    r = shared_gw.request("GET", "/unknown")
    assert r.upstream_request is not None and r.upstream_request.headers["x-probe-unknown"] == "null"
    assert any("could not find pdk method: kong.request.does_not_exist" in e for e in r.errors)


def test_bodies_above_the_buffer_need_max_allowed_file_size(shared_gw: KongStandIn) -> None:
    small = seen(shared_gw.request("POST", "/big", body=b"a" * 8192))
    assert (small["plain"], small["sized"]) == (8192, 8192)
    big = seen(shared_gw.request("POST", "/big", body=b"a" * 20000))
    assert (big["plain"], big["sized"], big["type"]) == (None, 20000, "bytes")


def test_a_log_phase_function_in_access_is_kongs_500_on_either_server(shared_gw: KongStandIn) -> None:
    """kong.log.serialize in access: prepare_serialize's check_phase(PHASES_LOG) raises inside the
    bridge loop; no Step goes back, the handler unwinds and Kong answers its 500."""
    r = shared_gw.request("POST", "/serialize-in-access", headers={"apikey": "alice-key"}, body=b"{}")
    assert (r.status, r.json()) == (500, {"message": "An unexpected error occurred"})
    assert r.upstream_request is None and r.decided_by == NAME
    assert any("function cannot be called in access phase (only in: log)" in e for e in r.errors)
    # the same server keeps serving (the abandoned event waits for a Step that never comes)
    assert shared_gw.request("GET", "/observe", headers={"apikey": "alice-key"}).status == 200
    shared_gw.wait_log_phase()


def test_log_phase_runs_after_the_response_with_saved_data(shared_gw: KongStandIn) -> None:
    records_dir = Path(next(p.config["record_dir"] for p in shared_gw.config.plugins if p.config.get("tag")))
    before = set(records_dir.iterdir())
    r = shared_gw.request("GET", "/observe", headers={"apikey": "alice-key", "Authorization": "Bearer t0k3n"},
                          start_time=1_700_000_100.0)
    shared_gw.wait_log_phase()
    (record_file,) = set(records_dir.iterdir()) - before
    record = json.loads(record_file.read_text())
    assert record["status"] == r.status == 200
    assert record["shared"]["tag"] == "observe"  # kong.ctx.shared written in access
    assert record["consumer_header"] == "alice" and record["response_header"] == "seen"
    assert record["start"] == 1_700_000_100.0
    data = record["serialize"]
    assert data["response"]["status"] == 200 and data["request"]["headers"]["authorization"] == "REDACTED"
    assert data["upstream_uri"] == "/v1" and data["consumer"]["username"] == "alice"
    assert r.pdk_calls[NAME]["log"] == 6


def test_concurrent_clients(shared_gw: KongStandIn) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(10):
            r = shared_gw.request("GET", "/observe", headers={"apikey": "alice-key"})
            with lock:
                results.append(r.status if r.headers.get("x-probe") == "seen" else -1)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * 80
    shared_gw.wait_log_phase()


@pytest.mark.parametrize("kind", KINDS)
def test_a_dead_server_is_restarted_and_instances_recreated(kind: str, fresh_gw: Any) -> None:
    gw = fresh_gw(kind)
    assert gw.request("GET", "/exit").status == 403
    server = gw.server(NAME)
    first_pid = server.pid
    server.kill_current()
    deadline = time.monotonic() + 20
    recovered: StandInResponse | None = None
    while time.monotonic() < deadline:
        r = gw.request("GET", "/exit")
        if r.status == 403:
            recovered = r
            break
        # while the server is down Kong logs the failure and proxies the request
        assert r.status == 200 and r.errors
        time.sleep(0.05)
    assert recovered is not None, "server not back"
    assert server.pid is not None and server.pid != first_pid and len(server.pids) == 2
    assert gw.external_plugin(NAME).start_instance_calls == 2


# -- failure modes of the stock server (KONG_RUNTIME.md 1-3), absent from ours -------------------------------

def test_mode1_exception_before_first_pdk_call_hangs_the_stock_server(fresh_gw: Any) -> None:
    gw = fresh_gw("stock", rpc_timeout=1.0)
    r = gw.request("GET", "/raise")
    assert r.status == 200 and any("no data" in e for e in r.errors)  # timed out, Kong proxies
    after = gw.request("GET", "/exit")
    # every later event of the server hangs too: the exit never comes, the request is proxied
    assert after.status == 200 and "x-probe" not in after.headers
    assert any("no data" in e for e in after.errors)


def test_mode1_ours_fails_open_and_keeps_serving(fresh_gw: Any) -> None:
    gw = fresh_gw("ours", rpc_timeout=5.0)
    r = gw.request("GET", "/raise")
    assert r.status == 200 and r.upstream_request is not None and r.errors == []
    assert gw.request("GET", "/exit").status == 403
    late = gw.request("GET", "/raise-late")
    assert late.status == 200 and gw.request("GET", "/exit").status == 403


def _fast_request_seconds(gw: KongStandIn) -> float:
    """Start an event that sleeps SLEEP s before its first PDK call, then time a fast event."""
    slow = threading.Thread(target=gw.request, args=("GET", "/sleep"))
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert gw.request("GET", "/exit").status == 403
    elapsed = time.monotonic() - started
    slow.join(30)
    return elapsed


def test_mode2_events_are_serialised_until_the_first_pdk_call_on_stock(fresh_gw: Any) -> None:
    # the fast event waits for the slow one's first PDK call (compared with the injected sleep)
    assert _fast_request_seconds(fresh_gw("stock")) > SLEEP / 2


def test_mode2_ours_runs_events_concurrently(fresh_gw: Any) -> None:
    assert _fast_request_seconds(fresh_gw("ours")) < SLEEP / 2


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.parametrize("kind", KINDS)
def test_mode3_pdk_calls_after_exit(kind: str, fresh_gw: Any) -> None:
    gw = fresh_gw(kind)
    pid = gw.server(NAME).pid
    assert pid is not None
    gw.request("GET", "/exit")
    baseline = _threads(pid)
    for _ in range(10):
        r = gw.request("GET", "/exit-then-call")
        assert (r.status, r.body) == (451, b"gone")
    time.sleep(0.2)
    grown = _threads(pid) - baseline
    if kind == "stock":
        assert grown >= 10  # one blocked handler thread per request, never released
    else:
        assert grown <= 1
    assert gw.request("GET", "/exit").status == 403
