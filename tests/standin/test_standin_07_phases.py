"""Kong's PDK phase checks in the stand-in: ``check_phase`` masks and what the log timer can reach.

Unit level (the emulated PDK called as the bridge calls it) and through the protocol: a forbidden
call in access is Kong's 500, in the response phase too, and in the log timer only a logged error.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kong_plugins.standin._context import RequestContext, SavedData
from kong_plugins.standin._pdk import Pdk
from kong_plugins.standin._phases import PHASE_CHECKS, PHASE_ORDER, phase_error
from kong_plugins.standin._rpc import LuaError
from tests.standin.test_standin_03_protocol import DECK, gateway  # noqa: F401  (fixture)

DISABLED = "API disabled in the current context"


def make_ctx(phase: str, *, saved: bool = False, buffered: bool = False) -> RequestContext:
    ctx = RequestContext(
        method="POST", path="/v1/chat", raw_query="a=1", scheme="http", host="gw", port=8000,
        client_ip="10.1.2.3", start_time=1_700_000_000.5, request_headers=[("Host", "gw"), ("X-A", "1")],
        body=b"{}", client_body_buffer_size=8192, phase=phase,
        consumer={"id": "c-1", "username": "ann"}, credential={"id": "cred-1"},
        route={"id": "r-1", "name": "chat"}, service={"id": "s-1", "name": "textgen"},
    )
    ctx.proxied = phase in ("response", "log")
    ctx.buffered_proxying = buffered
    ctx.service_response_status = 200
    ctx.service_response_body = b"answer"
    if saved:
        ctx.saved = SavedData("p", {"saved": True}, {}, ctx.ctx_shared, {"x-a": "1"}, {}, 200, ctx.start_time)
    return ctx


@pytest.fixture
def pdk() -> Pdk:
    return Pdk("node-1", lambda ctx, level, msg: None, lambda ctx: {"live": True}, lambda ident, by: None)


def call(pdk: Pdk, ctx: RequestContext, method: str, *args: Any) -> Any:
    return pdk.call(ctx, method, list(args))


def test_the_message_is_kongs_with_the_accepted_phases_in_kongs_order() -> None:
    assert phase_error("access", PHASE_CHECKS["kong.log.serialize"]) == \
        "function cannot be called in access phase (only in: log)"
    assert phase_error("access", PHASE_CHECKS["kong.response.get_status"]) == (
        "function cannot be called in access phase "
        "(only in: response, header_filter, body_filter, log, error, admin_api)")
    assert all(set(mask) <= set(PHASE_ORDER) for mask in PHASE_CHECKS.values())


@pytest.mark.parametrize(("method", "args"), [
    ("kong.log.serialize", ()),                       # kong/pdk/log.lua: @phases log
    ("kong.response.get_status", ()),                 # response.lua header_body_log
    ("kong.response.get_header", ("x",)),
    ("kong.response.get_source", ()),
    ("kong.service.response.get_status", ()),         # service/response.lua header_body_log
    ("kong.service.response.get_raw_body", ()),
    ("kong.response.get_raw_body", ()),               # body_filter only
])
def test_access_refuses_what_only_later_phases_may_call(pdk: Pdk, method: str, args: tuple[Any, ...]) -> None:
    with pytest.raises(LuaError, match="function cannot be called in access phase"):
        call(pdk, make_ctx("access"), method, *args)


def test_access_allows_the_request_client_router_and_context_functions(pdk: Pdk) -> None:
    ctx = make_ctx("access")
    assert call(pdk, ctx, "kong.client.get_consumer")["username"] == "ann"
    assert call(pdk, ctx, "kong.client.get_credential") == {"id": "cred-1"}
    assert call(pdk, ctx, "kong.router.get_route")["name"] == "chat"
    assert call(pdk, ctx, "kong.client.get_forwarded_ip") == "10.1.2.3"
    assert call(pdk, ctx, "kong.request.get_start_time") == 1_700_000_000_500
    assert call(pdk, ctx, "kong.request.get_path_with_query") == "/v1/chat?a=1"
    assert call(pdk, ctx, "kong.request.get_raw_body", 1024) == b"{}"
    call(pdk, ctx, "kong.ctx.shared.set", "k", {"v": 1})
    assert call(pdk, ctx, "kong.ctx.shared.get", "k") == {"v": 1}
    call(pdk, ctx, "kong.response.set_headers", {"X-B": "2"})
    call(pdk, ctx, "kong.service.request.set_header", "X-C", "3")


def test_response_phase_reads_the_buffered_response_but_cannot_serialize_or_touch_the_upstream_request(
        pdk: Pdk) -> None:
    ctx = make_ctx("response", buffered=True)
    assert call(pdk, ctx, "kong.service.response.get_raw_body") == b"answer"
    assert call(pdk, ctx, "kong.service.response.get_status") == 200
    assert call(pdk, ctx, "kong.client.get_consumer")["id"] == "c-1"  # AUTH_AND_LATER has response
    call(pdk, ctx, "kong.response.set_header", "X-D", "4")
    with pytest.raises(LuaError, match="cannot be called in response phase \\(only in: log\\)"):
        call(pdk, ctx, "kong.log.serialize")
    with pytest.raises(LuaError, match="cannot be called in response phase \\(only in: rewrite, access\\)"):
        call(pdk, ctx, "kong.service.request.set_headers", {"X-E": "5"})


def test_the_log_timer_answers_the_exposed_wrappers_from_saved_data(pdk: Pdk) -> None:
    ctx = make_ctx("log", saved=True)
    assert json.loads(call(pdk, ctx, "kong.log.serialize")) == {"saved": True}
    assert call(pdk, ctx, "kong.request.get_header", "x-a") == "1"
    assert call(pdk, ctx, "kong.response.get_status") == 200
    # ngx.ctx is the clone the timer restored: consumer, route and start time still answer
    assert call(pdk, ctx, "kong.client.get_consumer")["id"] == "c-1"
    assert call(pdk, ctx, "kong.router.get_service")["name"] == "textgen"
    assert call(pdk, ctx, "kong.request.get_start_time") == 1_700_000_000_500


@pytest.mark.parametrize("method", ["kong.request.get_method", "kong.request.get_path", "kong.client.get_ip",
                                    "kong.client.get_forwarded_ip", "kong.request.get_query",
                                    "kong.service.response.get_status"])
def test_the_log_timer_has_no_request_to_read(pdk: Pdk, method: str) -> None:
    with pytest.raises(LuaError, match=DISABLED):
        call(pdk, make_ctx("log", saved=True), method)
    with pytest.raises(LuaError, match=DISABLED):
        call(pdk, make_ctx("log", saved=True), "kong.nginx.get_var", "remote_addr")


def test_the_log_timer_reads_the_upstream_response_only_when_it_was_buffered(pdk: Pdk) -> None:
    buffered = make_ctx("log", saved=True, buffered=True)
    assert call(pdk, buffered, "kong.service.response.get_status") == 200
    assert call(pdk, buffered, "kong.service.response.get_raw_body") == b"answer"
    with pytest.raises(LuaError, match="only available with buffered proxying"):
        call(pdk, make_ctx("log", saved=True), "kong.service.response.get_raw_body")


def test_the_log_timer_cannot_answer_or_change_the_request(pdk: Pdk) -> None:
    ctx = make_ctx("log", saved=True)
    with pytest.raises(LuaError, match="cannot be called in log phase"):
        call(pdk, ctx, "kong.response.exit", 403)
    with pytest.raises(LuaError, match="cannot be called in log phase"):
        call(pdk, ctx, "kong.request.get_raw_body")


def test_a_lua_plugin_gets_no_saved_data_wrappers(pdk: Pdk) -> None:
    """Only the plugin-server bridge wraps functions; a Lua plugin calling serialize in access fails
    the same way, and in the log phase it reaches the real function."""
    with pytest.raises(LuaError, match="only in: log"):
        pdk.invoke(make_ctx("access"), "kong.log.serialize", [], exposed_api=False)
    assert json.loads(pdk.invoke(make_ctx("log"), "kong.log.serialize", [], exposed_api=False)) == {"live": True}


# -- through the protocol --------------------------------------------------------------------------------


def test_serialize_in_the_response_phase_is_a_500(gateway: Any) -> None:  # noqa: F811
    gw, fake = gateway({"response": [("kong.log.serialize", [])]}, phases=("access", "response"))
    r = gw.request("GET", "/api")
    assert (r.status, r.json()) == (500, {"message": "An unexpected error occurred"})
    assert any("cannot be called in response phase (only in: log)" in e for e in r.errors)
    assert [m for m, _ in fake.steps()] == []  # the failing call is never answered


def test_a_forbidden_call_in_the_log_timer_is_only_logged(gateway: Any) -> None:  # noqa: F811
    gw, fake = gateway({"log": [("kong.log.serialize", []), ("kong.request.get_method", []),
                                ("kong.ctx.shared.get", ["never"])]}, phases=("access", "log"))
    r = gw.request("GET", "/api")
    assert r.status == 200
    gw.wait_log_phase()
    assert any(DISABLED in e for e in r.errors)
    # serialize answered (saved data); get_method raised; the call after it was never made
    assert [m for m, _ in fake.steps()] == ["plugin.Step"]
    assert r.pdk_calls["fake"]["log"] == 2
