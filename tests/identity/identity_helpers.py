"""Keys, tokens and serialize() answers for the identity tests."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kong_plugins.identity import IDENTITY_RECORD, IdentityResolver, parse_identity_config

NOW = 1_750_000_000.0
HMAC_SECRET = "s" * 32


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token signed by hand, for what pyjwt refuses to produce (alg none, key confusion)."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    signature = b"" if hmac_key is None else hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def identity_config(**overrides: Any) -> dict[str, Any]:
    raw = IDENTITY_RECORD.validate({})
    for key, value in overrides.items():
        if key == "jwt":
            raw["jwt"] = IDENTITY_RECORD.field("jwt").type.coerce({**raw["jwt"], **value}, "identity.jwt")
        elif key == "mtls":
            raw["mtls"] = IDENTITY_RECORD.field("mtls").type.coerce({**raw["mtls"], **value}, "identity.mtls")
        else:
            raw[key] = value
    return IDENTITY_RECORD.validate(raw)


def resolver(**overrides: Any) -> IdentityResolver:
    return IdentityResolver(parse_identity_config(identity_config(**overrides)), clock=lambda: NOW)


def serialized(
    consumer: dict[str, Any] | None = None,
    credential: str | None = None,
    headers: dict[str, Any] | None = None,
    client_ip: str = "10.0.0.5",
    tls_verify: str | None = None,
) -> str:
    request: dict[str, Any] = {
        "method": "POST", "uri": "/v1/chat/completions", "url": "http://gw:8000/v1/chat/completions",
        "headers": {"host": "gw", "authorization": "REDACTED", **(headers or {})}, "querystring": {}, "size": 321,
    }
    if tls_verify is not None:
        request["tls"] = {"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256", "client_verify": tls_verify}
    data: dict[str, Any] = {
        "request": request,
        "route": {"id": "r-1", "name": "chat"},
        "service": {"id": "s-1", "name": "textgen"},
        "client_ip": client_ip,
        "started_at": int(NOW * 1000),
    }
    if consumer is not None:
        data["consumer"] = consumer
    if credential is not None:
        data["authenticated_entity"] = {"id": credential, "consumer_id": (consumer or {}).get("id")}
    return json.dumps(data)


def client_certificate(common_name: str, san: str) -> str:
    key = ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()
