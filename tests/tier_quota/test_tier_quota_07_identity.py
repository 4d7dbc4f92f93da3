"""Who is calling, through the plugin: verified JWTs, mTLS certificates, and what ``limit_by`` counts.

Unit tests of the resolver live in tests/identity; these run the real access handler so that a
verified identity is seen to pick the tier (and so the models and quotas), and a bad one is seen to
be refused or ignored -- with the PDK calls each costs.
"""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from tests.identity.identity_helpers import HMAC_SECRET, client_certificate, ec_key, forge, public_pem, rsa_key
from tests.tier_quota.quota_helpers import T0, FakeKong, consumer, gateway_config, plugin, run, serialize

CLAIMS = {"sub": "svc-7", "iss": "https://idp", "aud": "gateway", "tier": "premium", "tenant": "acme",
          "exp": T0 + 300, "iat": T0 - 10}


def jwt_config(**jwt_settings: Any) -> dict[str, Any]:
    settings = {"enabled": True, "algorithms": ["RS256"], "keys": [{"kid": "k1", "key": public_pem(rsa_key())}],
                "issuer": "https://idp", "audience": ["gateway"], **jwt_settings}
    return gateway_config(identity={"tier_sources": ["jwt_claim", "consumer_tag"],
                                    "tenant_sources": ["jwt_claim", "consumer_tag"], "jwt": settings})


def rs256(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, rsa_key(), algorithm="RS256", headers={"kid": "k1"})


def with_token(token: str, **kw: Any) -> FakeKong:
    return FakeKong(serialize(service="imagegen", **kw), headers={"Authorization": f"Bearer {token}"})


def test_a_verified_jwt_claim_picks_the_tier_at_the_cost_of_one_pdk_call() -> None:
    kong = with_token(rs256(CLAIMS))
    assert run(plugin(jwt_config()), kong) is None  # premium may call imagegen; anonymous "free" may not
    assert kong.calls == ["kong.ctx.shared.get", "kong.request.get_header", "kong.response.set_headers"]


@pytest.mark.parametrize(("token", "why"), [
    (rs256({**CLAIMS, "exp": T0 - 60}), "expired beyond the 30 s leeway"),
    (rs256({**CLAIMS, "nbf": T0 + 60}), "not valid yet"),
    (rs256({**CLAIMS, "iss": "https://evil"}), "another issuer"),
    (rs256({**CLAIMS, "aud": "other-gateway"}), "another audience"),
    (forge({"alg": "none", "typ": "JWT", "kid": "k1"}, CLAIMS, None), "alg none"),
    (forge({"alg": "HS256", "typ": "JWT", "kid": "k1"}, CLAIMS, public_pem(rsa_key()).encode()),
     "HS256 signed with the RSA public key as a secret (key confusion)"),
    (jwt.encode(CLAIMS, ec_key(), algorithm="ES256", headers={"kid": "k1"}), "an algorithm not allowed"),
    (rs256(CLAIMS)[:-6] + "AAAAAA", "a tampered signature"),
    ("not-a-jwt", "garbage"),
])
def test_a_bad_token_is_a_401_and_never_lifts_the_tier(token: str, why: str) -> None:
    exited = run(plugin(jwt_config()), with_token(token))
    assert exited is not None, why
    assert (exited.status, exited.body["denied_by"]) == (401, "invalid_token"), why
    assert token not in json.dumps(exited.body)


def test_with_reject_invalid_off_a_bad_token_is_just_anonymous() -> None:
    config = jwt_config(reject_invalid=False)
    expired = rs256({**CLAIMS, "exp": T0 - 60})
    exited = run(plugin(config), with_token(expired))
    # Anonymous callers get the default tier, which may not call imagegen.
    assert exited is not None and (exited.status, exited.body["denied_by"]) == (403, "model_access")
    textgen = FakeKong(serialize(service="textgen"), headers={"Authorization": f"Bearer {expired}"})
    assert run(plugin(config), textgen) is None


def test_the_expiry_is_judged_at_kongs_request_time_not_the_wall_clock() -> None:
    token = rs256({**CLAIMS, "exp": T0 + 10})
    p = plugin(jwt_config(leeway=0), clock=lambda: T0 + 3600)  # the plugin's own clock is an hour later
    assert run(p, with_token(token, at=T0 + 5)) is None
    exited = run(p, with_token(token, at=T0 + 11))
    assert exited is not None and exited.status == 401


def test_a_jwks_document_and_hmac_keys_work_through_the_plugin() -> None:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key().public_key()))
    jwk.update({"kid": "ec-1", "alg": "ES256", "use": "sig"})
    config = jwt_config(keys=[], algorithms=["ES256"], jwks=json.dumps({"keys": [jwk]}))
    good = jwt.encode(CLAIMS, ec_key(), algorithm="ES256", headers={"kid": "ec-1"})
    assert run(plugin(config), with_token(good)) is None
    hmac = jwt_config(keys=[{"key": HMAC_SECRET}], algorithms=["HS256"])
    assert run(plugin(hmac), with_token(jwt.encode(CLAIMS, HMAC_SECRET, algorithm="HS256"))) is None


def test_jwt_callers_are_counted_per_verified_subject() -> None:
    config = jwt_config()
    config["tiers"][1]["limits"] = [{"per_minute": 2}]  # premium
    p = plugin(config)
    alice, bob = rs256({**CLAIMS, "sub": "alice"}), rs256({**CLAIMS, "sub": "bob"})
    assert [run(p, with_token(alice, uri=f"/{i}")) is None for i in range(3)] == [True, True, False]
    assert run(p, with_token(bob)) is None  # same IP, another verified subject


class TlsKong(FakeKong):
    """Answers the certificate chain call as Kong does for a client nginx verified."""

    def __init__(self, *args: Any, chain: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chain = chain

    def call(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == "kong.client.tls.get_full_client_certificate_chain":
            self.calls.append(method)
            return self.chain
        return super().call(method, args)


def mtls_request(verify: str | None, chain: str | None) -> TlsKong:
    data = serialize(service="docqa")
    if verify is not None:
        data["request"]["tls"] = {"version": "TLSv1.3", "client_verify": verify}
    return TlsKong(data, chain=chain)


MTLS_CONFIG = gateway_config(identity={
    "tier_sources": ["mtls_subject", "consumer_tag"], "tenant_sources": ["mtls_subject", "consumer_tag"],
    "mtls": {"enabled": True, "tiers": {"billing.internal": "internal"}, "tenants": {"CN=billing-svc": "corp"}}})


def test_an_internal_service_is_recognised_by_its_verified_certificate() -> None:
    kong = mtls_request("SUCCESS", client_certificate("billing-svc", "billing.internal"))
    kong.body = b"{}"
    assert run(plugin(MTLS_CONFIG), kong) is None  # internal may call docqa
    assert kong.calls == ["kong.ctx.shared.get", "kong.client.tls.get_full_client_certificate_chain",
                          "kong.response.set_headers"]


@pytest.mark.parametrize(("verify", "why"), [
    (None, "plain HTTP"),
    ("NONE", "no certificate presented"),
    ("FAILED:self signed certificate", "a certificate nginx refused"),
])
def test_without_a_verified_certificate_no_pdk_call_and_no_internal_tier(verify: str | None, why: str) -> None:
    kong = mtls_request(verify, client_certificate("billing-svc", "billing.internal"))
    exited = run(plugin(MTLS_CONFIG), kong)
    assert exited is not None and exited.body["denied_by"] == "model_access", why
    assert "kong.client.tls.get_full_client_certificate_chain" not in kong.calls


def test_an_unknown_certificate_gets_the_default_tier() -> None:
    kong = mtls_request("SUCCESS", client_certificate("someone", "someone.example"))
    exited = run(plugin(MTLS_CONFIG), kong)
    assert exited is not None and exited.body["denied_by"] == "model_access"


# -- limit_by ---------------------------------------------------------------------------------------

FIRST = {"consumer": consumer("c1", "free", "acme"), "credential": "key-1", "client_ip": "192.0.2.1"}
#: The second request differs from FIRST in one way; which limit_by values make it share FIRST's counter.
VARIANTS: dict[str, tuple[dict[str, Any], set[str]]] = {
    "same consumer, other credential": ({**FIRST, "credential": "key-2"}, {"consumer", "tenant", "ip"}),
    "same consumer and credential, other IP": ({**FIRST, "client_ip": "192.0.2.9"},
                                               {"consumer", "credential", "tenant"}),
    "other consumer of the tenant, same IP": ({**FIRST, "consumer": consumer("c2", "free", "acme"),
                                               "credential": "key-3"}, {"tenant", "ip"}),
    "other tenant, same IP": ({**FIRST, "consumer": consumer("c3", "free", "globex"), "credential": "key-4"},
                              set()),
}


@pytest.mark.parametrize("limit_by", ["consumer", "credential", "tenant", "ip"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_limit_by_decides_who_shares_a_counter(limit_by: str, variant: str) -> None:
    p = plugin(gateway_config(tiers=[{"name": "free", "models": ["*"],
                                      "limits": [{"per_minute": 1, "limit_by": limit_by}]}]))
    assert run(p, FakeKong(serialize(**FIRST))) is None
    second, sharing = VARIANTS[variant]
    shared = run(p, FakeKong(serialize(**second, uri="/second"))) is not None
    assert shared == (limit_by in sharing)
