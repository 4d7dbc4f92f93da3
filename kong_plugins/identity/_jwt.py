"""JWT verification for identity: pyjwt for the cryptography, our own rules around it.

Refused by construction, not by hoping pyjwt catches it:

- ``alg: none`` and any algorithm outside the configured allow-list (``none`` cannot be listed);
- key-type confusion: every configured key is parsed once into a typed key, and a token is only
  checked against keys whose *type* fits its ``alg`` -- an HS256 token is never verified with an
  RSA public key used as an HMAC secret, an RS256 token never with a shared secret;
- weak keys: HMAC secrets shorter than the hash and RSA keys under 2048 bits are rejected at
  instance start, and private keys are refused (the gateway only needs public keys);
- time claims (``exp``, ``nbf``, ``iat``) are checked with the injected clock and a leeway, so
  tests and replays are deterministic; ``iss`` and ``aud`` against the config.

Tokens are never logged or echoed: errors carry a reason class only.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from kong_plugins.errors import ConfigError

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
OKP_ALGORITHMS = ("EdDSA",)
ALL_ALGORITHMS = HMAC_ALGORITHMS + RSA_ALGORITHMS + EC_ALGORITHMS + OKP_ALGORITHMS

_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
MAX_TOKEN_BYTES = 16 * 1024


class JwtError(Exception):
    """A token was presented but is not acceptable; ``reason`` is a stable, token-free class."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key, typed: ``algorithms`` are the allowed algorithms this key can verify."""

    kid: str | None
    key: Any
    algorithms: tuple[str, ...]


def _family(key: Any) -> tuple[str, ...]:
    if isinstance(key, bytes):
        return HMAC_ALGORITHMS
    if isinstance(key, rsa.RSAPublicKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return tuple(alg for alg, curve in _EC_CURVES.items() if key.curve.name == curve)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return OKP_ALGORITHMS
    return ()


def _load_pem(text: str, path: str) -> Any:
    data = text.encode()
    if b"PRIVATE KEY" in data:
        raise ConfigError(path, "a private key is not needed to verify tokens: configure the public key")
    try:
        if b"CERTIFICATE" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(path, "not a valid PEM public key or certificate") from exc


def _typed_key(raw: Any, kid: str | None, allowed: Sequence[str], path: str) -> VerificationKey:
    if isinstance(raw, rsa.RSAPublicKey) and raw.key_size < 2048:
        raise ConfigError(path, "RSA keys must have at least 2048 bits")
    algorithms = tuple(a for a in _family(raw) if a in allowed)
    if isinstance(raw, bytes):
        algorithms = tuple(a for a in algorithms if len(raw) >= _HMAC_MIN_BYTES[a])
        if not algorithms:
            raise ConfigError(path, "an HMAC secret needs an allowed HS algorithm and at least as many bytes "
                              "as its hash (32 for HS256)")
    if not algorithms:
        raise ConfigError(path, "no allowed algorithm can use this type of key")
    return VerificationKey(kid, raw, algorithms)


def parse_keys(
    keys: Sequence[Mapping[str, Any]], jwks: str | None, allowed: Sequence[str], path: str
) -> tuple[VerificationKey, ...]:
    """Typed verification keys from the config's ``keys`` list and JWKS document."""
    result: list[VerificationKey] = []
    for i, entry in enumerate(keys):
        entry_path = f"{path}.keys[{i}].key"
        text = entry.get("key") or ""
        raw: Any = _load_pem(text, entry_path) if text.lstrip().startswith("-----BEGIN") else text.encode()
        result.append(_typed_key(raw, entry.get("kid"), allowed, entry_path))
    if jwks:
        try:
            key_set = jwt.PyJWKSet.from_json(jwks)
        except (jwt.PyJWKSetError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}.jwks", "not a usable JWKS document") from exc
        for j, jwk in enumerate(key_set.keys):
            raw_key = jwk.key
            if hasattr(raw_key, "public_key") and not isinstance(raw_key, bytes):
                raise ConfigError(f"{path}.jwks", f"key {j} is a private key: publish public keys only")
            typed = _typed_key(raw_key, jwk.key_id, allowed, f"{path}.jwks")
            if jwk.algorithm_name and jwk.algorithm_name in typed.algorithms:
                typed = VerificationKey(typed.kid, typed.key, (jwk.algorithm_name,))
            result.append(typed)
    return tuple(result)


@dataclass(frozen=True, slots=True)
class JwtSettings:
    algorithms: tuple[str, ...]
    keys: tuple[VerificationKey, ...]
    issuer: str | None
    audience: tuple[str, ...]
    leeway: float
    require_exp: bool


class JwtVerifier:
    """Verifies bearer tokens; successful verifications are cached by token digest."""

    def __init__(self, settings: JwtSettings, clock: Callable[[], float], cache_size: int = 4096) -> None:
        self.settings = settings
        self._clock = clock
        self._cache: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def verify(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The token's claims, or JwtError with a reason class."""
        if len(token) > MAX_TOKEN_BYTES:
            raise JwtError("malformed")
        when = self._clock() if now is None else now
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        with self._lock:
            cached = self._cache.get(digest)
            if cached is not None:
                self._cache.move_to_end(digest)
        if cached is None:
            cached = self._verify_signature(token)
            with self._lock:
                self._cache[digest] = cached
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        self._check_claims(cached, when)
        return cached

    def _verify_signature(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise JwtError("malformed") from exc
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            raise JwtError("algorithm_not_allowed")
        kid = header.get("kid")
        candidates = [
            k for k in self.settings.keys
            if alg in k.algorithms and (kid is None or k.kid is None or k.kid == kid)
        ]
        if not candidates:
            raise JwtError("unknown_key")
        options: dict[str, Any] = {
            "verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
            "verify_aud": False, "verify_iss": False, "verify_sub": False, "verify_jti": False,
        }
        for candidate in candidates:
            try:
                claims = jwt.decode(token, candidate.key, algorithms=[alg], options=options)  # type: ignore[arg-type]
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as exc:
                raise JwtError("malformed") from exc
            if not isinstance(claims, dict):
                raise JwtError("malformed")
            return claims
        raise JwtError("bad_signature")

    def _check_claims(self, claims: Mapping[str, Any], now: float) -> None:
        leeway = self.settings.leeway
        exp = claims.get("exp")
        if exp is None:
            if self.settings.require_exp:
                raise JwtError("missing_exp")
        elif not _is_time(exp):
            raise JwtError("malformed")
        elif now > float(exp) + leeway:
            raise JwtError("expired")
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_time(nbf) or now + leeway < float(nbf)):
            raise JwtError("not_yet_valid")
        iat = claims.get("iat")
        if iat is not None and (not _is_time(iat) or now + leeway < float(iat)):
            raise JwtError("issued_in_future")
        if self.settings.issuer is not None and claims.get("iss") != self.settings.issuer:
            raise JwtError("bad_issuer")
        if self.settings.audience:
            aud = claims.get("aud")
            audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(a in self.settings.audience for a in audiences if isinstance(a, str)):
                raise JwtError("bad_audience")


def _is_time(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def bearer_token(header_value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, None for any other scheme."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def claim(claims: Mapping[str, Any], path: str) -> str | None:
    """A string claim by dotted path (``realm_access.tier``); numbers are accepted as text."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) and value else None
