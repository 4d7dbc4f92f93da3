"""Kong's bundled plugins in the stand-in: the outcomes a client sees, with Kong's statuses and messages."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kong_plugins.errors import ConfigError
from kong_plugins.standin import KongStandIn, UpstreamRequest, UpstreamResponse

NOW = 1_700_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(key: Any) -> str:
    return str(key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode())


def deck(plugins: list[dict[str, Any]], route_plugins: list[dict[str, Any]] | None = None,
         consumer_plugins: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "_format_version": "3.0",
        "services": [{"name": "textgen", "url": "http://textgen.internal:8000/v1", "routes": [
            {"name": "chat", "paths": ["/chat"], "methods": ["GET", "POST", "OPTIONS"],
             "plugins": route_plugins or []},
            {"name": "raw", "paths": ["/raw"], "strip_path": False},
        ]}],
        "consumers": [
            {"username": "alice", "custom_id": "c-alice", "tags": ["tier:gold"],
             "keyauth_credentials": [{"key": "alice-key"}], "acls": [{"group": "gold"}],
             "jwt_secrets": [{"key": "alice-iss", "secret": "alice-secret-alice-secret-alice-secret"},
                             {"key": "alice-rsa", "algorithm": "RS256", "rsa_public_key": _pem(RSA_KEY)},
                             {"key": "alice-es", "algorithm": "ES256", "rsa_public_key": _pem(EC_KEY)}],
             "plugins": consumer_plugins or []},
            {"username": "bob", "keyauth_credentials": [{"key": "bob-key"}], "acls": [{"group": "free"}]},
            {"username": "anon"},
        ],
        "plugins": plugins,
    }


@pytest.fixture
def gateway() -> Iterator[Any]:
    opened: list[KongStandIn] = []

    def make(source: dict[str, Any], **kw: Any) -> KongStandIn:
        gw = KongStandIn.from_deck(source, clock=lambda: NOW, **kw)
        gw.start()
        opened.append(gw)
        return gw

    yield make
    for gw in opened:
        gw.close()


# -- routing and configuration ---------------------------------------------------------------------------

def test_unknown_plugin_name_lists_what_is_supported(gateway: Any) -> None:
    supported = r"acl, ai-suite-context, ip-restriction, jwt, key-auth"
    with pytest.raises(ConfigError, match=r"'rate-limiting' is not supported.*" + supported):
        gateway(deck([{"name": "rate-limiting"}]))


def test_no_route_is_a_404_with_kongs_message(gateway: Any) -> None:
    gw = gateway(deck([]))
    r = gw.request("GET", "/nowhere")
    assert (r.status, r.json()) == (404, {"message": "no Route matched with those values"})
    assert r.headers["server"].startswith("kong/3.9")
    assert gw.request("DELETE", "/chat").status == 404  # method not on the route


def test_strip_path_and_service_path(gateway: Any) -> None:
    gw = gateway(deck([]))
    r = gw.request("POST", "/chat/completions?stream=false", body=b"{}")
    assert r.upstream_request is not None
    assert (r.upstream_request.path, r.upstream_request.query) == ("/v1/completions", "stream=false")
    assert r.upstream_request.headers["x-forwarded-for"] == "127.0.0.1"
    assert r.headers["via"].startswith("1.1 kong/3.9")
    raw = gw.request("GET", "/raw/x")
    assert raw.upstream_request is not None and raw.upstream_request.path == "/v1/raw/x"


def test_upstream_handler_per_service(gateway: Any) -> None:
    seen: list[UpstreamRequest] = []

    def model(req: UpstreamRequest) -> UpstreamResponse:
        seen.append(req)
        return UpstreamResponse(201, {"X-Model": "m1"}, {"choices": []})

    gw = gateway(deck([]), upstreams={"textgen": model})
    r = gw.request("POST", "/chat", body=b'{"prompt": "hi"}')
    assert (r.status, r.json(), r.headers["x-model"]) == (201, {"choices": []}, "m1")
    assert seen[0].json() == {"prompt": "hi"}


def test_bad_decks_are_rejected_with_the_field() -> None:
    with pytest.raises(ConfigError, match="routes"):
        KongStandIn.from_deck({"services": [{"name": "s", "url": "http://h", "routes": [{"name": "r"}]}]})
    with pytest.raises(ConfigError, match="username"):
        KongStandIn.from_deck({"consumers": [{"tags": ["x"]}]})
    with pytest.raises(ConfigError, match="unknown consumer 'nobody'"):
        KongStandIn.from_deck({"plugins": [{"name": "acl", "consumer": "nobody", "config": {"allow": ["a"]}}]})


# -- key-auth -----------------------------------------------------------------------------------------------

def test_key_auth_outcomes(gateway: Any) -> None:
    gw = gateway(deck([{"name": "key-auth"}]))
    missing = gw.request("GET", "/chat")
    assert (missing.status, missing.json()) == (401, {"message": "No API key found in request"})
    assert missing.headers["www-authenticate"] == "Key"
    wrong = gw.request("GET", "/chat", headers={"apikey": "nope"})
    assert (wrong.status, wrong.json()) == (401, {"message": "Unauthorized"})
    dup = gw.request("GET", "/chat?apikey=a&apikey=b")
    assert (dup.status, dup.json()) == (401, {"message": "Duplicate API key found"})
    ok = gw.request("GET", "/chat", headers={"apikey": "alice-key"})
    assert ok.status == 200 and ok.upstream_request is not None
    up = ok.upstream_request.headers
    assert up["x-consumer-username"] == "alice" and up["x-consumer-custom-id"] == "c-alice"
    assert up["x-credential-identifier"] and "x-anonymous-consumer" not in up
    assert up["apikey"] == "alice-key"  # hide_credentials defaults to false
    by_query = gw.request("GET", "/chat?apikey=bob-key")
    assert by_query.upstream_request is not None
    assert by_query.upstream_request.headers["x-consumer-username"] == "bob"


def test_key_auth_hide_credentials_and_spoofed_consumer_headers(gateway: Any) -> None:
    gw = gateway(deck([{"name": "key-auth", "config": {"hide_credentials": True, "key_names": ["x-api-key"]}}]))
    r = gw.request("GET", "/chat", headers={"X-Api-Key": "bob-key", "X-Consumer-Username": "alice"})
    assert r.upstream_request is not None
    assert "x-api-key" not in r.upstream_request.headers
    assert r.upstream_request.headers.get_list("x-consumer-username") == ["bob"]


def test_key_auth_anonymous_consumer(gateway: Any) -> None:
    gw = gateway(deck([{"name": "key-auth", "config": {"anonymous": "anon"}}]))
    r = gw.request("GET", "/chat")
    assert r.status == 200 and r.upstream_request is not None
    assert r.upstream_request.headers["x-consumer-username"] == "anon"
    assert r.upstream_request.headers["x-anonymous-consumer"] == "true"


def test_key_auth_preflight_can_be_skipped(gateway: Any) -> None:
    gw = gateway(deck([{"name": "key-auth", "config": {"run_on_preflight": False}}]))
    assert gw.request("OPTIONS", "/chat").status == 200
    assert gw.request("GET", "/chat").status == 401


# -- jwt -------------------------------------------------------------------------------------------------------

def _hs(claims: dict[str, Any], secret: str = "alice-secret-alice-secret-alice-secret") -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def test_jwt_outcomes(gateway: Any) -> None:
    gw = gateway(deck([{"name": "jwt", "config": {"claims_to_verify": ["exp"]}}]))
    none = gw.request("GET", "/chat")
    assert (none.status, none.json(), none.headers["www-authenticate"]) == (401, {"message": "Unauthorized"}, "Bearer")
    good = gw.request("GET", "/chat", headers={"Authorization": "Bearer " + _hs({"iss": "alice-iss", "exp": NOW + 60})})
    assert good.status == 200 and good.upstream_request is not None
    assert good.upstream_request.headers["x-consumer-username"] == "alice"
    assert good.upstream_request.headers["x-credential-identifier"] == "alice-iss"
    expired = gw.request("GET", "/chat?jwt=" + _hs({"iss": "alice-iss", "exp": NOW - 1}))
    assert (expired.status, expired.json()) == (401, {"exp": "token expired"})
    no_exp = gw.request("GET", "/chat?jwt=" + _hs({"iss": "alice-iss"}))
    assert no_exp.json() == {"exp": "must be a number"}
    forged = gw.request("GET", "/chat?jwt=" + _hs({"iss": "alice-iss", "exp": NOW + 60}, "x" * 40))
    assert (forged.status, forged.json()) == (401, {"message": "Invalid signature"})
    stranger = gw.request("GET", "/chat?jwt=" + _hs({"iss": "mallory", "exp": NOW + 60}))
    assert stranger.json() == {"message": "No credentials found for given 'iss'"}
    garbage = gw.request("GET", "/chat?jwt=not.a-token")
    assert garbage.status == 401 and garbage.json()["message"].startswith("Bad token; ")
    assert 'error="invalid_token"' in garbage.headers["www-authenticate"]


def test_jwt_rs256_es256_and_algorithm_mismatch(gateway: Any) -> None:
    gw = gateway(deck([{"name": "jwt"}]))
    rs = jwt.encode({"iss": "alice-rsa"}, RSA_KEY, algorithm="RS256")
    es = jwt.encode({"iss": "alice-es"}, EC_KEY, algorithm="ES256")
    assert gw.request("GET", "/chat?jwt=" + rs).status == 200
    assert gw.request("GET", "/chat?jwt=" + es).status == 200
    wrong_alg = jwt.encode({"iss": "alice-rsa"}, "alice-secret-alice-secret-alice-secret", algorithm="HS256")
    assert gw.request("GET", "/chat?jwt=" + wrong_alg).json() == {"message": "Invalid algorithm"}


def test_jwt_maximum_expiration_and_base64_secret(gateway: Any) -> None:
    with pytest.raises(ConfigError, match="claims_to_verify"):
        gateway(deck([{"name": "jwt", "config": {"maximum_expiration": 60}}]))
    gw = gateway(deck([{"name": "jwt", "config": {"maximum_expiration": 60, "claims_to_verify": ["exp"]}}]))
    far = gw.request("GET", "/chat?jwt=" + _hs({"iss": "alice-iss", "exp": NOW + 3600}))
    assert (far.status, far.json()) == (401, {"exp": "exceeds maximum allowed expiration"})
    raw_secret = b"\x01\x02binary-secret-binary-secret-bin"
    b64 = {**deck([{"name": "jwt", "config": {"secret_is_base64": True}}])}
    b64["consumers"] = [{"username": "carol",
                         "jwt_secrets": [{"key": "carol", "secret": base64.b64encode(raw_secret).decode()}]}]
    gw2 = gateway(b64)
    token = jwt.encode({"iss": "carol"}, raw_secret, algorithm="HS256")
    assert gw2.request("GET", "/chat?jwt=" + token).status == 200


def test_jwt_runs_before_key_auth(gateway: Any) -> None:
    gw = gateway(deck([{"name": "key-auth"}, {"name": "jwt"}, {"name": "acl", "config": {"allow": ["gold"]}},
                       {"name": "ip-restriction", "config": {"allow": ["0.0.0.0/0"]}},
                       {"name": "request-size-limiting"}]))
    assert gw.plugin_order == ["jwt", "key-auth", "ip-restriction", "request-size-limiting", "acl"]
    # jwt rejects first: key-auth's valid key does not help
    r = gw.request("GET", "/chat", headers={"apikey": "alice-key"})
    assert r.json() == {"message": "Unauthorized"} and r.headers["www-authenticate"] == "Bearer"


# -- acl ---------------------------------------------------------------------------------------------------------

def test_acl_allow_deny_and_groups_header(gateway: Any) -> None:
    gw = gateway(deck([{"name": "key-auth"}, {"name": "acl", "config": {"allow": ["gold"]}}]))
    gold = gw.request("GET", "/chat", headers={"apikey": "alice-key"})
    assert gold.status == 200 and gold.upstream_request is not None
    assert gold.upstream_request.headers["x-consumer-groups"] == "gold"
    free = gw.request("GET", "/chat", headers={"apikey": "bob-key"})
    assert (free.status, free.json()) == (403, {"message": "You cannot consume this service"})
    denied = gateway(deck([{"name": "key-auth"}, {"name": "acl", "config": {"deny": ["free"],
                                                                              "hide_groups_header": True}}]))
    assert denied.request("GET", "/chat", headers={"apikey": "bob-key"}).status == 403
    ok = denied.request("GET", "/chat", headers={"apikey": "alice-key"})
    assert ok.status == 200 and ok.upstream_request is not None
    assert "x-consumer-groups" not in ok.upstream_request.headers


def test_acl_without_authentication_is_401_and_config_needs_one_list(gateway: Any) -> None:
    gw = gateway(deck([{"name": "acl", "config": {"allow": ["gold"]}}]))
    assert gw.request("GET", "/chat").json() == {"message": "Unauthorized"}
    with pytest.raises(ConfigError, match="allow"):
        gateway(deck([{"name": "acl", "config": {}}]))


# -- ip-restriction -----------------------------------------------------------------------------------------------

def test_ip_restriction(gateway: Any) -> None:
    gw = gateway(deck([{"name": "ip-restriction", "config": {"deny": ["10.0.0.0/8"]}}]))
    r = gw.request("GET", "/chat", client_ip="10.1.2.3")
    assert (r.status, r.json()) == (403, {"message": "Your IP address is not allowed"})
    assert gw.request("GET", "/chat", client_ip="192.168.0.1").status == 200
    custom = gateway(deck([{"name": "ip-restriction",
                            "config": {"allow": ["192.168.0.0/16", "2001:db8::/32"], "status": 451,
                                       "message": "region blocked"}}]))
    assert custom.request("GET", "/chat", client_ip="2001:db8::1").status == 200
    blocked = custom.request("GET", "/chat", client_ip="8.8.8.8")
    assert (blocked.status, blocked.json()) == (451, {"message": "region blocked"})
    with pytest.raises(ConfigError, match="invalid ip or cidr"):
        gateway(deck([{"name": "ip-restriction", "config": {"allow": ["not-an-ip"]}}]))


# -- request-size-limiting -------------------------------------------------------------------------------------------

def test_request_size_limiting(gateway: Any) -> None:
    gw = gateway(deck([{"name": "request-size-limiting",
                        "config": {"allowed_payload_size": 1, "size_unit": "kilobytes"}}]))
    assert gw.request("POST", "/chat", body=b"x" * 1024).status == 200
    big = gw.request("POST", "/chat", body=b"x" * 1025)
    assert (big.status, big.json()) == (413, {"message": "Request size limit exceeded"})
    expect = gw.request("POST", "/chat", body=b"x" * 1025, headers={"Expect": "100-continue"})
    assert expect.status == 417
    strict = gateway(deck([{"name": "request-size-limiting", "config": {"require_content_length": True}}]))
    r = strict.request("POST", "/chat", headers=[("Transfer-Encoding", "chunked")], body=b"abc")
    assert (r.status, r.json()) == (411, {"message": "A valid Content-Length header is required"})


def test_consumer_scoped_config_wins_over_global(gateway: Any) -> None:
    gw = gateway(deck(
        [{"name": "key-auth"}, {"name": "request-size-limiting",
                                "config": {"allowed_payload_size": 100, "size_unit": "bytes"}}],
        consumer_plugins=[{"name": "request-size-limiting", "config": {"allowed_payload_size": 10,
                                                                       "size_unit": "bytes"}}]))
    body = b"y" * 50
    assert gw.request("POST", "/chat", headers={"apikey": "bob-key"}, body=body).status == 200
    assert gw.request("POST", "/chat", headers={"apikey": "alice-key"}, body=body).status == 413
