"""The stand-in speaks Kong 3.9's plugin-server protocol exactly (mp_rpc.lua, plugin.lua).

A scripted fake server (a thread serving the unix socket, like an externally managed plugin
server) records every message the stand-in sends, so these tests pin the wire behaviour: typed
Steps, multimap and raw-body quirks, exit without a Step, notifications, instance management.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from kong_plugins.errors import ConfigError
from kong_plugins.standin import KongStandIn, PluginServerSpec

pytestmark = pytest.mark.timeout(60)

Call = tuple[str, list[Any]]


class FakePluginServer:
    """Answers like a plugin server; each event makes the scripted PDK calls, then returns.

    ``script`` is one list of calls for every event, or a list per phase (``{"log": [...]}``).
    """

    def __init__(self, path: str, script: list[Call] | dict[str, list[Call]], *,
                 notify_pid: Callable[[], int] | None = None) -> None:
        self.path = path
        self.script = script
        self.notify_pid = notify_pid
        self.received: list[tuple[int, str, Any]] = []
        self.start_error: str | None = None
        self.fail_next_events_with: list[str] = []
        self.wrong_msgid = False
        self._events: dict[int, list[Call]] = {}
        self._next_event = 0
        self._next_instance = 0
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(64)
        self._conns = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns += 1
                cid = self._conns
            threading.Thread(target=self._serve, args=(conn, cid), daemon=True).start()

    def _serve(self, conn: socket.socket, cid: int) -> None:
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                unpacker.feed(data)
                for kind, msgid, method, args in unpacker:
                    assert kind == 0
                    with self._lock:
                        self.received.append((cid, method, args[0] if args else None))
                    error, result = self._answer(method, args[0] if args else None)
                    out = b""
                    if self.notify_pid is not None:
                        out += msgpack.packb([2, "serverPid", self.notify_pid()])
                    reply_id = msgid + 1000 if self.wrong_msgid else msgid
                    out += msgpack.packb([1, reply_id, error, result], use_bin_type=True)
                    conn.sendall(out)

    def _next_step(self, eid: int) -> Any:
        remaining = self._events[eid]
        if not remaining:
            del self._events[eid]
            return "ret"
        method, args = remaining.pop(0)
        return {"Method": method, "Args": args}

    def _answer(self, method: str, arg: Any) -> tuple[str | None, Any]:
        with self._lock:
            if method == "plugin.StartInstance":
                if self.start_error:
                    return self.start_error, None
                iid = self._next_instance
                self._next_instance += 1
                return None, {"Id": iid, "Name": arg["Name"], "Config": json.loads(arg["Config"])}
            if method == "plugin.CloseInstance":
                return None, {"Id": arg}
            if method == "plugin.HandleEvent":
                if self.fail_next_events_with:
                    return self.fail_next_events_with.pop(0), None
                eid = self._next_event
                self._next_event += 1
                calls = self.script.get(arg["EventName"], []) if isinstance(self.script, dict) else self.script
                self._events[eid] = list(calls)
                return None, {"EventId": eid, "Data": self._next_step(eid)}
            if method.startswith("plugin.Step"):
                eid = arg["EventId"]
                return None, {"EventId": eid, "Data": self._next_step(eid)}
            return f"unknown method {method}", None

    def messages(self, method: str) -> list[Any]:
        with self._lock:
            return [arg for _, m, arg in self.received if m == method]

    def steps(self) -> list[tuple[str, Any]]:
        with self._lock:
            return [(m, arg["Data"]) for _, m, arg in self.received if m.startswith("plugin.Step")]


DUMP = [
    {"Name": "fake", "Priority": 1000, "Version": "1.0", "Phases": ["access", "log"],
     "Schema": {"name": "fake", "fields": [{"config": {"type": "record", "fields": [
         {"level": {"type": "string", "default": "strict"}},
         {"limit": {"type": "integer", "default": 10}},
         {"note": {"type": "string"}},
         {"nested": {"type": "record", "required": True, "fields": [{"depth": {"type": "integer", "default": 3}}]}},
     ]}}]}},
    {"Name": "second-plugin-in-dump", "Priority": 5, "Version": "1.0", "Phases": ["access"],
     "Schema": {"name": "second-plugin-in-dump", "fields": []}},
]

DECK = {
    "_format_version": "3.0",
    "services": [{"name": "svc", "url": "http://upstream.internal:8080", "routes": [
        {"name": "r", "paths": ["/api"], "plugins": [{"name": "fake", "config": {"limit": 3}}]},
    ]}],
}


def _spec(tmp_path: Path, phases: tuple[str, ...] = ("access",)) -> PluginServerSpec:
    """A server Kong does not need to start (the fake serves the socket); query_cmd prints DUMP."""
    dump = json.dumps([{**DUMP[0], "Phases": list(phases)}, DUMP[1]])
    return PluginServerSpec(
        name="fake",
        start_cmd=[sys.executable, "-c", "import time; time.sleep(120)"],
        query_cmd=[sys.executable, "-c", f"import sys; sys.stdout.write({dump!r})"],
        socket=str(tmp_path / "fake.sock"),
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Callable[..., tuple[KongStandIn, FakePluginServer]]:
    opened: list[tuple[KongStandIn, FakePluginServer]] = []

    def make(script: list[Call] | dict[str, list[Call]], deck: dict[str, Any] = DECK,
             **kw: Any) -> tuple[KongStandIn, FakePluginServer]:
        spec = _spec(tmp_path, kw.pop("phases", ("access",)))
        fake = FakePluginServer(spec.socket, script, notify_pid=kw.pop("notify_pid", None))
        gw = KongStandIn.from_deck(deck, servers=[spec], rpc_timeout=5, **kw)
        gw.start()
        opened.append((gw, fake))
        return gw, fake

    yield make
    for gw, fake in opened:
        gw.close()
        fake.close()


def test_only_the_first_plugin_of_the_dump_is_registered(gateway: Any) -> None:
    deck = {**DECK, "plugins": [{"name": "second-plugin-in-dump"}]}
    with pytest.raises(ConfigError, match=r"second-plugin-in-dump' is not supported.*fake"):
        gateway([], deck)


def test_start_instance_config_has_defaults_nulls_and_kong_keys(gateway: Any) -> None:
    gw, fake = gateway([])
    r = gw.request("GET", "/api/x")
    assert r.status == 200
    (start,) = fake.messages("plugin.StartInstance")
    assert start["Name"] == "fake"
    config = json.loads(start["Config"])
    assert config["level"] == "strict" and config["limit"] == 3
    assert "note" in config and config["note"] is None
    assert config["nested"] == {"depth": 3}
    assert config["__plugin_id"] and config["__seq__"] == 1
    assert config["__key__"].startswith("plugins:fake:" + config["route_id"])
    handle = fake.messages("plugin.HandleEvent")
    assert handle == [{"InstanceId": 0, "EventName": "access"}]


def test_instance_is_reused_across_requests(gateway: Any) -> None:
    gw, fake = gateway([("kong.request.get_method", [])])
    for _ in range(3):
        assert gw.request("GET", "/api").status == 200
    assert len(fake.messages("plugin.StartInstance")) == 1
    gw.wait_log_phase()
    events = fake.messages("plugin.HandleEvent")
    assert [(m["InstanceId"], m["EventName"]) for m in events].count((0, "access")) == 3


def test_typed_steps_and_multimap_and_raw_body_quirks(gateway: Any) -> None:
    gw, fake = gateway([
        ("kong.request.get_headers", []),
        ("kong.request.get_query", []),
        ("kong.request.get_raw_body", []),
        ("kong.client.get_consumer", []),
        ("kong.client.get_credential", []),
        ("kong.router.get_route", []),
        ("kong.router.get_service", []),
        ("kong.request.get_header", ["X-Single"]),
    ])
    r = gw.request("POST", "/api?flag&a=1&a=2&b=", headers=[("X-Single", "one"), ("X-Dup", "1"), ("X-Dup", "2")],
                   body=b"\x00\xffbinary")
    assert r.status == 200
    steps = fake.steps()
    methods = [m for m, _ in steps]
    assert methods == ["plugin.StepMultiMap", "plugin.StepMultiMap", "plugin.Step", "plugin.StepConsumer",
                       "plugin.StepCredential", "plugin.StepRoute", "plugin.StepService", "plugin.Step"]
    headers, query, body = steps[0][1], steps[1][1], steps[2][1]
    assert headers["x-single"] == ["one"] and headers["x-dup"] == ["1", "2"]
    assert query == {"flag": [], "a": ["1", "2"], "b": [""]}
    assert body == b"\x00\xffbinary" and isinstance(body, bytes)
    assert steps[3][1] is None and steps[4][1] is None
    assert steps[5][1]["name"] == "r" and steps[6][1]["name"] == "svc"
    assert steps[7][1] == "one"
    assert r.pdk_calls == {"fake": {"access": 8}}
    assert r.rpc_seconds > 0 and r.rpc_calls == 1 + 1 + 8


def test_empty_multimap_is_sent_as_a_map(gateway: Any) -> None:
    gw, fake = gateway([("kong.request.get_query", [])])
    gw.request("GET", "/api")
    (step,) = fake.steps()
    assert step == ("plugin.StepMultiMap", {})


def test_consecutive_calls_of_one_event_come_from_a_pool(gateway: Any) -> None:
    gw, fake = gateway([("kong.request.get_method", []), ("kong.request.get_path", [])])
    gw.request("GET", "/api")
    conns = [cid for cid, m, _ in fake.received if m != "plugin.StartInstance"]
    # one connection suffices sequentially: every call is taken from and returned to the keepalive pool
    assert len(conns) == 3
    assert gw.external_plugin("fake").rpc.connections_opened >= 1


def test_exit_in_access_sends_no_step_and_skips_later_plugins(gateway: Any) -> None:
    deck = {**DECK, "plugins": [{"name": "request-size-limiting", "config": {"allowed_payload_size": 1,
                                                                             "size_unit": "bytes"}}]}
    gw, fake = gateway([("kong.response.exit", [418, {"message": "teapot"}, {"X-Why": "fake"}]),
                        ("kong.request.get_method", [])], deck)
    r = gw.request("POST", "/api", body=b"far more than one byte")
    assert r.status == 418
    assert r.json() == {"message": "teapot"}
    assert r.headers["x-why"] == "fake"
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.upstream_request is None
    assert fake.steps() == []  # the event is abandoned, never answered
    assert r.pdk_calls == {"fake": {"access": 1}}


def test_response_error_uses_kongs_default_message(gateway: Any) -> None:
    gw, _ = gateway([("kong.response.error", [429])])
    r = gw.request("GET", "/api")
    assert (r.status, r.json()) == (429, {"message": "Too many requests"})


def test_unknown_pdk_method_is_answered_with_null_and_logged(gateway: Any) -> None:
    gw, fake = gateway([("kong.request.no_such_thing", [1]), ("kong.request.get_method", [])])
    r = gw.request("GET", "/api")
    assert r.status == 200
    assert fake.steps() == [("plugin.Step", None), ("plugin.Step", "GET")]
    assert any("could not find pdk method: kong.request.no_such_thing" in e for e in r.errors)


def test_pdk_call_with_bad_arguments_is_a_lua_error_and_a_500(gateway: Any) -> None:
    gw, fake = gateway([("kong.request.get_header", [42])])
    r = gw.request("GET", "/api")
    assert (r.status, r.json()) == (500, {"message": "An unexpected error occurred"})
    assert fake.steps() == []
    assert any("header name must be a string" in e for e in r.errors)


def test_start_instance_failure_is_a_500(gateway: Any) -> None:
    gw, fake = gateway([])
    fake.start_error = "config.limit: must be positive"
    r = gw.request("GET", "/api")
    assert (r.status, r.json()) == (500, {"message": "An unexpected error occurred"})
    assert any("starting instance: config.limit: must be positive" in e for e in r.errors)
    assert r.upstream_request is None


def test_event_error_is_logged_and_the_request_proxied(gateway: Any) -> None:
    gw, fake = gateway([])
    fake.fail_next_events_with = ["handler exploded"]
    r = gw.request("GET", "/api")
    assert r.status == 200 and r.upstream_request is not None  # OSS 3.9 fails open
    assert any("handler exploded" in e for e in r.errors)


def test_no_plugin_instance_restarts_the_instance_and_retries(gateway: Any) -> None:
    gw, fake = gateway([("kong.request.get_method", [])])
    assert gw.request("GET", "/api").status == 200
    fake.fail_next_events_with = ["no plugin instance #0"]
    r = gw.request("GET", "/api")
    assert r.status == 200 and r.errors == []
    assert len(fake.messages("plugin.StartInstance")) == 2
    gw.wait_log_phase()
    access = [m["InstanceId"] for m in fake.messages("plugin.HandleEvent") if m["EventName"] == "access"]
    assert access == [0, 0, 1]  # the failed attempt, then the retry on the new instance


def test_changed_server_pid_drops_cached_instances(gateway: Any) -> None:
    pid = [100]
    gw, fake = gateway([], notify_pid=lambda: pid[0])
    gw.request("GET", "/api")
    gw.request("GET", "/api")
    assert len(fake.messages("plugin.StartInstance")) == 1
    pid[0] = 101  # the server restarted
    gw.request("GET", "/api")
    gw.request("GET", "/api")
    assert len(fake.messages("plugin.StartInstance")) == 2


def test_mismatched_response_id_is_a_lua_assert(gateway: Any) -> None:
    gw, fake = gateway([])
    fake.wrong_msgid = True
    r = gw.request("GET", "/api")
    assert r.status == 500
    assert any("unexpected RPC response ID" in e for e in r.errors)


def test_a_server_that_never_answers_times_out_and_the_request_is_proxied(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(spec.socket)
    silent.listen(8)
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.extend(silent.accept()[0] for _ in range(4)), daemon=True).start()
    try:
        with KongStandIn.from_deck(DECK, servers=[spec], rpc_timeout=0.3) as gw:
            r = gw.request("GET", "/api")
        assert r.status == 500  # StartInstance got no answer: get_instance_id raises
        assert any("no data" in e for e in r.errors)
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


def test_log_phase_runs_after_the_response_with_saved_data(gateway: Any) -> None:
    script = [("kong.response.get_status", []), ("kong.request.get_header", ["x-consumer-username"]),
              ("kong.ctx.shared.get", ["mark"]), ("kong.log.serialize", []),
              ("kong.nginx.req_start_time", [])]
    deck = {**DECK, "consumers": [{"username": "ann", "keyauth_credentials": [{"key": "secret-key"}]}],
            "plugins": [{"name": "key-auth"}]}
    gw, fake = gateway({"log": script}, deck, phases=("access", "log"))
    r = gw.request("GET", "/api", headers={"apikey": "secret-key", "Authorization": "Basic dXNlcjpwYXNz"},
                   start_time=1_700_000_000.25)
    assert r.status == 200
    gw.wait_log_phase()
    events = fake.messages("plugin.HandleEvent")
    assert [e["EventName"] for e in events] == ["access", "log"]
    log_steps = [d for _, d in fake.steps()]
    status, username, mark, serialized, start = log_steps
    assert status == 200 and username == "ann" and mark is None
    data = json.loads(serialized)
    assert data["request"]["headers"]["authorization"] == "REDACTED"
    assert data["response"]["status"] == 200
    assert data["consumer"]["username"] == "ann"
    assert data["started_at"] == 1_700_000_000_250
    assert start == 1_700_000_000.25
    assert r.pdk_calls["fake"]["log"] == len(script)
