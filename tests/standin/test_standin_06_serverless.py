"""Kong's bundled pre-function / post-function in the stand-in: the configured Lua really runs (LuaJIT).

Expectations follow ``kong/plugins/pre-function/{_handler,_schema}.lua`` and the sandbox of
``kong/tools/sandbox.lua``: priorities, the 0.1.0 and 0.2.0+ chunk forms, ``kong.response.exit``
ending the access phase, Lua errors as Kong's 500, parse errors when the file is loaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kong_plugins.errors import ConfigError
from kong_plugins.marks import guard_lua, mark_key
from kong_plugins.standin import KongStandIn


def deck(post: list[str] | None = None, pre: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    plugins: list[dict[str, Any]] = []
    if post is not None:
        plugins.append({"name": "post-function", "config": {"access": post, **extra}})
    if pre is not None:
        plugins.append({"name": "pre-function", "config": {"access": pre}})
    return {
        "_format_version": "3.0",
        "services": [{"name": "svc", "url": "http://svc.internal:8000", "routes": [
            {"name": "guarded", "paths": ["/guarded"], "plugins": plugins},
            {"name": "open", "paths": ["/open"]},
        ]}],
        "consumers": [{"username": "alice", "keyauth_credentials": [{"key": "alice-key"}]}],
        "plugins": [{"name": "key-auth", "route": "guarded", "config": {"anonymous": None}}],
    }


@pytest.fixture
def gateway() -> Iterator[Any]:
    opened: list[KongStandIn] = []

    def make(source: dict[str, Any]) -> KongStandIn:
        gw = KongStandIn.from_deck(source)
        gw.start()
        opened.append(gw)
        return gw

    yield make
    for gw in opened:
        gw.close()


KEY = {"apikey": "alice-key"}


def test_exit_in_access_ends_the_phase_with_kong_json(gateway: Any) -> None:
    gw = gateway(deck(['return kong.response.exit(418, { message = "teapot", path = kong.request.get_path() })']))
    r = gw.request("GET", "/guarded/x", headers=KEY)
    assert r.status == 418
    assert r.json() == {"message": "teapot", "path": "/guarded/x"}
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.upstream_request is None and r.source == "exit"
    assert gw.request("GET", "/open").status == 200  # the plugin is scoped to its route


def test_priorities_post_function_runs_after_auth_pre_function_before(gateway: Any) -> None:
    gw = gateway(deck(["kong.response.set_header('X-Post', 'ran')"], pre=["kong.response.set_header('X-Pre', 'ran')"]))
    assert gw.plugin_order == ["pre-function", "key-auth", "post-function"]
    denied = gw.request("GET", "/guarded")
    assert denied.status == 401
    assert denied.headers.get("x-pre") == "ran" and "x-post" not in denied.headers
    allowed = gw.request("GET", "/guarded", headers=KEY)
    assert allowed.headers["x-post"] == "ran" and allowed.headers["x-pre"] == "ran"


def test_returned_function_keeps_its_upvalues_across_requests(gateway: Any) -> None:
    counter = """
    local n = 0
    return function()
      n = n + 1
      kong.response.set_header("X-Count", n)
    end
    """
    gw = gateway(deck([counter]))
    counts = [gw.request("GET", "/guarded", headers=KEY).headers["x-count"] for _ in range(3)]
    assert counts == ["1", "2", "3"]


def test_a_lua_error_is_kongs_500_and_is_logged(gateway: Any) -> None:
    gw = gateway(deck(['error("kaboom")']))
    r = gw.request("GET", "/guarded", headers=KEY)
    assert r.status == 500 and r.json() == {"message": "An unexpected error occurred"}
    assert any("kaboom" in e for e in r.errors)


def test_the_sandbox_withholds_unsafe_functions(gateway: Any) -> None:
    probe = """
    local found = {}
    for _, name in ipairs({ "os", "io", "require", "load", "loadstring", "setmetatable", "rawset" }) do
      local value = _G[name]
      if name == "os" then value = os.execute end
      if value ~= nil then found[#found + 1] = name end
    end
    if string.rep ~= nil then found[#found + 1] = "string.rep" end
    kong.response.set_header("X-Unsafe", #found == 0 and "none" or table.concat(found, ","))
    """
    gw = gateway(deck([probe]))
    assert gw.request("GET", "/guarded", headers=KEY).headers["x-unsafe"] == "none"


def test_an_api_the_stand_in_does_not_emulate_is_a_named_error(gateway: Any) -> None:
    gw = gateway(deck(["kong.service.request.set_header('X-A', '1')"]))
    r = gw.request("GET", "/guarded", headers=KEY)
    assert r.status == 500
    assert any("kong.service is not emulated by the Kong stand-in" in e for e in r.errors)


def test_bad_arguments_raise_kongs_errors(gateway: Any) -> None:
    gw = gateway(deck(["kong.response.exit('nope')"]))
    r = gw.request("GET", "/guarded", headers=KEY)
    assert r.status == 500 and any("code must be a number" in e for e in r.errors)


@pytest.mark.parametrize(("config", "field", "message"), [
    ({"access": ["return ("]}, "access[0]", "error parsing post-function"),
    ({"access": []}, "", "at least one of these fields must be non-empty"),
    ({"log": ["kong.log.err('x')"]}, "log", "runs only the access phase"),
    ({"functions": ["return"]}, "functions", "removed in Kong 3.0"),
    ({"access": [1]}, "access", "array of strings"),
])
def test_bad_config_is_refused_when_the_file_loads(config: dict[str, Any], field: str, message: str) -> None:
    source = deck()
    source["services"][0]["routes"][0]["plugins"] = [{"name": "post-function", "config": config}]
    with pytest.raises(ConfigError, match=message) as info:
        KongStandIn.from_deck(source).start()
    assert info.value.field.endswith(f"config.{field}" if field else "config")


def test_guard_refuses_without_marks_and_applies_the_carried_headers(gateway: Any) -> None:
    marker = f"""
    if kong.request.get_header("x-decided") then
      kong.ctx.shared["{mark_key('ai-tier-quota')}"] = {{ decision = "allow",
        response_headers = {{ ["RateLimit-Remaining"] = "9" }} }}
    end
    """
    gw = gateway(deck([guard_lua(["ai-tier-quota"])], pre=[marker]))
    refused = gw.request("GET", "/guarded", headers=KEY)
    assert refused.status == 503 and refused.json() == {"message": "Service temporarily unavailable"}
    assert refused.upstream_request is None
    assert any("ai-tier-quota left no decision" in e for e in refused.errors)
    passed = gw.request("GET", "/guarded", headers={**KEY, "x-decided": "1"})
    assert passed.status == 200 and passed.headers["ratelimit-remaining"] == "9"


def test_kong_ctx_shared_written_in_lua_stays_for_the_rest_of_the_request(gateway: Any) -> None:
    gw = gateway(deck(["kong.ctx.shared.seen = { path = kong.request.get_path(), n = 2 }"]))
    r = gw.request("GET", "/guarded", headers=KEY)
    assert r.status == 200
    assert r._ctx.ctx_shared["seen"] == {"path": "/guarded", "n": 2}
