"""JWT verification: what a platform team relies on -- good tokens pass, every classic attack fails."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest

from kong_plugins.errors import ConfigError
from kong_plugins.identity import IdentityResolver, parse_facts, parse_identity_config
from tests.identity.identity_helpers import (
    HMAC_SECRET,
    NOW,
    ec_key,
    forge,
    identity_config,
    public_pem,
    resolver,
    rsa_key,
    serialized,
)

CLAIMS = {"sub": "u-7", "iss": "https://idp", "aud": "gateway", "tier": "gold", "tenant": "acme",
          "exp": NOW + 300, "iat": NOW - 10}


def rsa_resolver(**jwt_overrides: Any) -> IdentityResolver:
    settings = {"enabled": True, "keys": [{"kid": "k1", "key": public_pem(rsa_key())}], "issuer": "https://idp",
                "audience": ["gateway"], **jwt_overrides}
    return resolver(tier_sources=["jwt_claim"], tenant_sources=["jwt_claim"], jwt=settings)


def rs256(claims: dict[str, Any], kid: str = "k1") -> str:
    return jwt.encode(claims, rsa_key(), algorithm="RS256", headers={"kid": kid})


def resolve(res: IdentityResolver, token: str | None, scheme: str = "Bearer") -> Any:
    header = f"{scheme} {token}" if token is not None else None
    return res.resolve(parse_facts(serialized()), token_header=header)


def test_a_valid_token_gives_tier_tenant_and_subject() -> None:
    res = rsa_resolver()
    assert res.needs_authorization_header == "authorization"
    identity = resolve(res, rs256(CLAIMS))
    assert identity.jwt_error is None
    assert (identity.tier, identity.tenant) == ("gold", "acme")
    assert identity.subject_for("consumer") == ("jwt", "11:https://idp|u-7")
    assert not identity.anonymous


@pytest.mark.parametrize(("claims", "reason"), [
    ({**CLAIMS, "exp": NOW - 31}, "expired"),
    ({**CLAIMS, "nbf": NOW + 31}, "not_yet_valid"),
    ({**CLAIMS, "iss": "https://evil"}, "bad_issuer"),
    ({**CLAIMS, "aud": "other"}, "bad_audience"),
    ({k: v for k, v in CLAIMS.items() if k != "exp"}, "missing_exp"),
])
def test_claims_are_checked_against_kongs_request_time(claims: dict[str, Any], reason: str) -> None:
    identity = resolve(rsa_resolver(), rs256(claims))
    assert identity.jwt_error == reason
    assert identity.tier is None and identity.anonymous


def test_leeway_tolerates_small_clock_skew() -> None:
    assert resolve(rsa_resolver(), rs256({**CLAIMS, "exp": NOW - 29})).jwt_error is None
    assert resolve(rsa_resolver(), rs256({**CLAIMS, "nbf": NOW + 29})).jwt_error is None


def test_alg_none_is_refused() -> None:
    token = forge({"alg": "none", "typ": "JWT"}, CLAIMS, None)
    assert resolve(rsa_resolver(), token).jwt_error == "algorithm_not_allowed"


def test_hs256_signed_with_the_rsa_public_key_is_refused_even_when_hs256_is_allowed() -> None:
    pem = public_pem(rsa_key())
    token = forge({"alg": "HS256", "typ": "JWT", "kid": "k1"}, CLAIMS, pem.encode())
    assert resolve(rsa_resolver(), token).jwt_error == "algorithm_not_allowed"
    both = rsa_resolver(algorithms=["RS256", "HS256"],
                        keys=[{"kid": "k1", "key": pem}, {"kid": "k2", "key": HMAC_SECRET}])
    assert resolve(both, token).jwt_error == "unknown_key"
    token_no_kid = forge({"alg": "HS256", "typ": "JWT"}, CLAIMS, pem.encode())
    assert resolve(both, token_no_kid).jwt_error == "bad_signature"


def test_hmac_tokens_verify_with_a_configured_secret() -> None:
    res = rsa_resolver(algorithms=["HS256"], keys=[{"key": HMAC_SECRET}])
    token = jwt.encode(CLAIMS, HMAC_SECRET, algorithm="HS256")
    assert resolve(res, token).tier == "gold"
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert resolve(res, tampered).jwt_error == "bad_signature"


def test_jwks_document_and_key_ids() -> None:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key().public_key()))
    jwk.update({"kid": "ec-1", "alg": "ES256", "use": "sig"})
    res = rsa_resolver(keys=[], algorithms=["ES256"], jwks=json.dumps({"keys": [jwk]}))
    good = jwt.encode(CLAIMS, ec_key(), algorithm="ES256", headers={"kid": "ec-1"})
    assert resolve(res, good).tier == "gold"
    other_kid = jwt.encode(CLAIMS, ec_key(), algorithm="ES256", headers={"kid": "ec-2"})
    assert resolve(res, other_kid).jwt_error == "unknown_key"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 20000])
def test_malformed_tokens_are_errors_not_crashes(token: str) -> None:
    identity = resolve(rsa_resolver(), token)
    assert identity.tier is None
    assert identity.jwt_error in (None, "malformed")


def test_other_schemes_and_missing_headers_mean_no_token() -> None:
    assert resolve(rsa_resolver(), rs256(CLAIMS), scheme="Basic").jwt_error is None
    assert resolve(rsa_resolver(), rs256(CLAIMS), scheme="Basic").tier is None
    assert resolve(rsa_resolver(), None).anonymous


def test_errors_never_contain_the_token() -> None:
    token = rs256({**CLAIMS, "exp": NOW - 1000})
    identity = resolve(rsa_resolver(), token)
    assert identity.jwt_error is not None and token not in repr(identity)


@pytest.mark.parametrize(("jwt_settings", "field"), [
    ({"algorithms": ["HS256"], "keys": [{"key": "short-secret"}]}, "identity.jwt.keys[0].key"),
    ({"keys": [{"key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}]}, "identity.jwt.keys[0].key"),
    ({"keys": [{"key": "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----"}]},
     "identity.jwt.keys[0].key"),
    ({"algorithms": ["ES256"], "keys": [{"key": "PLACEHOLDER_RSA"}]}, "identity.jwt.keys[0].key"),
    ({"jwks": "{not json"}, "identity.jwt.jwks"),
])
def test_bad_key_material_is_rejected_at_instance_start(jwt_settings: dict[str, Any], field: str) -> None:
    for key in jwt_settings.get("keys", []):
        if key["key"] == "PLACEHOLDER_RSA":
            key["key"] = public_pem(rsa_key())
    with pytest.raises(ConfigError) as info:
        parse_identity_config(identity_config(jwt={"enabled": True, **jwt_settings}))
    assert info.value.field == field
    assert "short-secret" not in str(info.value)


def test_none_cannot_even_be_configured() -> None:
    with pytest.raises(ConfigError) as info:
        identity_config(jwt={"enabled": True, "algorithms": ["none"]})
    assert info.value.field == "identity.jwt.algorithms[0]"
