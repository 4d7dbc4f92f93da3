"""The suite's Lua companion ``ai-suite-context`` running for real (its handler.lua in LuaJIT).

It must hand an external plugin, in access and through ONE ``kong.ctx.shared.get``, the same facts
``kong.log.serialize()`` reports in the log phase -- nothing secret -- and sit after the auth
plugins and before the suite's first plugin.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from kong_plugins import companion
from kong_plugins.errors import ConfigError
from kong_plugins.standin import KongStandIn
from kong_plugins.standin._context import RequestContext
from kong_plugins.standin._luaplugin import load_lua_plugin
from kong_plugins.standin._pdk import Pdk
from kong_plugins.standin._rpc import LuaError
from tests.standin.test_standin_03_protocol import DECK, gateway  # noqa: F401  (fixture)

FACTS = [("kong.ctx.shared.get", [companion.FACTS_KEY])]


def deck(*plugins: dict[str, Any]) -> dict[str, Any]:
    return {
        **DECK,
        "consumers": [{"username": "ann", "custom_id": "gold:acme", "tags": ["tier:gold", "tenant:acme"],
                       "keyauth_credentials": [{"key": "secret-key"}]}],
        "plugins": [{"name": "key-auth"}, *plugins],
    }


def test_an_external_plugin_reads_the_serialize_subset_in_access_with_one_call(gateway: Any) -> None:  # noqa: F811
    gw, fake = gateway({"access": FACTS, "log": [("kong.log.serialize", [])]}, deck({"name": companion.NAME}),
                       phases=("access", "log"))
    r = gw.request("POST", "/api/x?q=1", headers={"apikey": "secret-key", "Authorization": "Bearer secret-token"},
                   body=b'{"prompt":"hi"}', client_ip="10.9.8.7", start_time=1_700_000_000.125)
    assert r.status == 200
    gw.wait_log_phase()
    facts, serialized = (data for _, data in fake.steps())
    logged = json.loads(serialized)
    assert facts["request"]["method"] == logged["request"]["method"] == "POST"
    assert facts["request"]["uri"] == logged["request"]["uri"] == "/api/x?q=1"
    assert facts["request"]["size"] == logged["request"]["size"]
    assert facts["client_ip"] == logged["client_ip"] == "10.9.8.7"
    assert facts["started_at"] == logged["started_at"] == 1_700_000_000_125
    assert facts["route"] == {"id": logged["route"]["id"], "name": "r"}
    assert facts["service"] == {"id": logged["service"]["id"], "name": "svc"}
    assert facts["consumer"] == {"id": logged["consumer"]["id"], "username": "ann", "custom_id": "gold:acme",
                                 "tags": ["tier:gold", "tenant:acme"]}
    assert facts["authenticated_entity"]["id"] == logged["authenticated_entity"]["id"]
    assert "tls" not in facts["request"]  # plain HTTP
    # the body, for the suite's plugins that read it (no Content-Type was sent: none published)
    assert facts["request"]["body"] == '{"prompt":"hi"}' and not facts["request"]["headers"]
    # nothing secret: no header but Content-Type (not the bearer token, not the API key), no
    # credential material
    text = json.dumps(facts)
    assert "secret" not in text
    assert r.pdk_calls["fake"]["access"] == 1


def test_the_body_travels_with_the_facts_up_to_the_configured_size(gateway: Any) -> None:  # noqa: F811
    gw, fake = gateway({"access": FACTS}, deck({"name": companion.NAME, "config": {"request_body_max_bytes": 64}}))

    def published(method: str, body: bytes, **headers: str) -> Any:
        before = len(fake.steps())
        assert gw.request(method, "/api", headers={"apikey": "secret-key", **headers}, body=body).status == 200
        (_, facts), = fake.steps()[before:]
        return facts["request"]

    request = published("POST", b'{"instances": [[1, 2]]}', **{"Content-Type": "application/json; charset=utf-8"})
    assert request["body"] == '{"instances": [[1, 2]]}'
    assert request["headers"] == {"content-type": "application/json; charset=utf-8"}
    assert published("PUT", b"x" * 64)["body"] == "x" * 64  # at the limit
    assert published("GET", b"")["body"] == ""  # neither Content-Length nor Transfer-Encoding: no body
    # above the limit, or chunked (its length unknown until read): each plugin reads it itself
    assert "body" not in published("POST", b"x" * 65)
    assert "body" not in published("POST", b"x" * 10, **{"Transfer-Encoding": "chunked"})


def test_no_body_travels_when_the_size_is_zero(gateway: Any) -> None:  # noqa: F811
    gw, fake = gateway({"access": FACTS}, deck({"name": companion.NAME, "config": {"request_body_max_bytes": 0}}))
    assert gw.request("POST", "/api", headers={"apikey": "secret-key"}, body=b"{}").status == 200
    ((_, facts),) = fake.steps()
    assert "body" not in facts["request"]


def test_https_requests_carry_the_client_verification_status(gateway: Any) -> None:  # noqa: F811
    gw, fake = gateway({"access": FACTS}, deck({"name": companion.NAME}))
    assert gw.request("GET", "/api", headers={"apikey": "secret-key"}, scheme="https").status == 200
    ((_, facts),) = fake.steps()
    assert facts["request"]["tls"] == {"client_verify": "NONE"}


def test_without_the_companion_the_shared_table_is_empty(gateway: Any) -> None:  # noqa: F811
    gw, fake = gateway({"access": FACTS}, deck())
    assert gw.request("GET", "/api", headers={"apikey": "secret-key"}).status == 200
    assert fake.steps() == [("plugin.Step", None)]


def test_an_anonymous_request_has_no_consumer_or_credential(gateway: Any) -> None:  # noqa: F811
    gw, fake = gateway({"access": FACTS}, {**DECK, "plugins": [{"name": companion.NAME}]})
    assert gw.request("GET", "/api").status == 200
    ((_, facts),) = fake.steps()
    assert "consumer" not in facts and "authenticated_entity" not in facts
    assert facts["route"]["name"] == "r" and facts["request"]["method"] == "GET"


def test_it_runs_after_the_auth_plugins_and_before_the_suite(gateway: Any) -> None:  # noqa: F811
    gw, _ = gateway({}, deck({"name": companion.NAME}))
    order = gw.plugin_order
    assert order.index("key-auth") < order.index(companion.NAME) < order.index("fake")
    # basic-auth 1100 and hmac-auth 1030 (kong/plugins/*/handler.lua) set consumers too; the suite's
    # first plugin, ai-extraction-guard, runs at 1010
    assert 1010 < companion.PRIORITY < 1030


def test_its_schema_refuses_config_and_consumer_scoped_instances() -> None:
    base = {"_format_version": "3.0", "consumers": deck()["consumers"]}
    with pytest.raises(ConfigError, match=r"plugins\[ai-suite-context\]\.config\.anything"):
        KongStandIn.from_deck({**base, "plugins": [{"name": companion.NAME, "config": {"anything": 1}}]}).start()
    scoped = {**base, "plugins": [{"name": companion.NAME, "consumer": "ann"}]}
    with pytest.raises(ConfigError, match=r"plugins\[ai-suite-context\]\.consumer.*must be null"):
        KongStandIn.from_deck(scoped).start()


# -- the loader's fidelity, with handlers written for the test ----------------------------------------------

SCHEMA = 'return { name = "probe-lua", fields = { { config = { type = "record", fields = {} } } } }'


def _ctx(pdk: Pdk) -> RequestContext:
    return RequestContext(method="GET", path="/", raw_query="", scheme="http", host="gw", port=80,
                          client_ip="127.0.0.1", start_time=1.0, request_headers=[], body=b"",
                          client_body_buffer_size=8192, pdk=pdk)


def _pdk() -> Pdk:
    return Pdk("node", lambda ctx, level, msg: None, lambda ctx: {}, lambda ident, by: None)


def test_a_lua_plugin_calling_serialize_in_access_gets_kongs_phase_error() -> None:
    handler = """
      local P = { PRIORITY = 5, VERSION = "1" }
      function P:access(conf) kong.ctx.shared.before = true; kong.log.serialize() end
      return P"""
    plugin = load_lua_plugin("probe-lua", handler, SCHEMA)
    ctx = _ctx(_pdk())
    with pytest.raises(LuaError, match=r"function cannot be called in access phase \(only in: log\)"):
        plugin.access(ctx, {}, deck_config(), lambda: 0.0)
    assert ctx.ctx_shared == {"before": True}


def test_an_api_the_stand_in_does_not_emulate_is_a_lua_error_not_a_silent_nil() -> None:
    handler = """
      local P = { PRIORITY = 5, VERSION = "1" }
      function P:access(conf) return ngx.req.get_headers() end
      return P"""
    with pytest.raises(LuaError, match=r"ngx\.req is not emulated"):
        load_lua_plugin("probe-lua", handler, SCHEMA).access(_ctx(_pdk()), {}, deck_config(), lambda: 0.0)


def test_a_lua_plugin_with_other_phases_is_refused_when_loaded() -> None:
    handler = 'local P = { PRIORITY = 5, VERSION = "1" }; function P:header_filter() end; return P'
    with pytest.raises(ConfigError, match="only the access and log phases"):
        load_lua_plugin("probe-lua", handler, SCHEMA)


GUARD_HANDOFF = "ai_extraction_guard.body"
GUARD_TAP = "ai_extraction_guard.tap"


@pytest.mark.parametrize("key", [GUARD_HANDOFF, "ai_suite.decided.ai-extraction-guard"])
def test_the_log_phase_completes_the_guards_hand_off_before_its_log_timer_reads_it(gateway: Any,  # noqa: F811
                                                                                   key: str) -> None:
    """ai-extraction-guard's log timer reads kong.ctx.shared after the whole log phase (plugin.lua
    saves the table by reference): the companion's log handler adds the response size serialize
    would report and the response tap's summary, each a round trip the guard does not make."""
    handed = {"body": '{"instances": [[1, 2]]}', "client": "consumer:c", "tenant": "default"}
    tap = {"m": [0.25], "o": 3}
    gw, fake = gateway({"access": [*FACTS, ("kong.ctx.shared.set", [key, handed]),
                                   ("kong.ctx.shared.set", [GUARD_TAP, tap])],
                        "log": [("kong.ctx.shared.get", [key]), ("kong.log.serialize", [])]},
                       deck({"name": companion.NAME}), phases=("access", "log"))
    r = gw.request("POST", "/api/x", headers={"apikey": "secret-key"}, body=b'{"prompt":"hi"}')
    assert r.status == 200
    gw.wait_log_phase()
    completed, serialized = list(fake.steps())[-2:]
    size = json.loads(serialized[1])["response"]["size"]
    assert completed[1]["response_size"] == size > 0
    assert completed[1]["tap"] == tap
    assert {k: completed[1][k] for k in handed} == handed  # the hand-off itself unchanged


def test_a_table_without_a_body_under_the_guards_key_is_left_as_it_is(gateway: Any) -> None:  # noqa: F811
    mark = {"decision": "allow"}  # a decision mark of a request without an analysable body
    key = "ai_suite.decided.ai-extraction-guard"
    gw, fake = gateway({"access": [*FACTS, ("kong.ctx.shared.set", [key, mark])],
                        "log": [("kong.ctx.shared.get", [key])]}, deck({"name": companion.NAME}),
                       phases=("access", "log"))
    assert gw.request("GET", "/api/x", headers={"apikey": "secret-key"}).status == 200
    gw.wait_log_phase()
    assert list(fake.steps())[-1][1] == mark


def deck_config() -> Any:
    from kong_plugins.standin._entities import parse_deck

    return parse_deck({"_format_version": "3.0"})


def test_the_companion_completes_the_hand_off_under_the_keys_the_guard_uses() -> None:
    from kong_plugins.extraction_guard.handler import BODY_KEY, TAP_KEY
    from kong_plugins.marks import mark_key

    lua = companion.handler_source()
    for key in (BODY_KEY, mark_key("ai-extraction-guard"), TAP_KEY):
        assert f'"{key}"' in lua, key
    assert (GUARD_HANDOFF, GUARD_TAP) == (BODY_KEY, TAP_KEY)


def test_a_route_scoped_instance_overrides_the_global_one(gateway: Any) -> None:  # noqa: F811
    """Kong's precedence: the route's own ai-suite-context (here publishing no body, for a route
    whose uploads should stream) wins over the global one."""
    source = deck({"name": companion.NAME})
    source["services"] = [{**service, "routes": [{**route, "plugins": [
        *route.get("plugins", []), {"name": companion.NAME, "config": {"request_body_max_bytes": 0}}]}
        for route in service["routes"]]} for service in source["services"]]
    gw, fake = gateway({"access": FACTS}, source)
    assert gw.request("POST", "/api", headers={"apikey": "secret-key"}, body=b"{}").status == 200
    ((_, facts),) = fake.steps()
    assert "body" not in facts["request"] and facts["route"]["name"] == "r"
