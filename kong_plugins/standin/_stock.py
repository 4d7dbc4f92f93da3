"""Kong's bundled plugins that the suite's deployments rely on, re-implemented from their Lua.

Each follows ``kong/plugins/<name>/handler.lua`` and ``schema.lua`` of Kong 3.9 (``pre-function`` and
``post-function`` in ``_serverless.py``, which runs their Lua; the suite's own Lua companion
``ai-suite-context`` in ``_luaplugin.py``, which runs its real ``handler.lua``): priority, config
defaults and checks, status codes, messages and the upstream headers they set
(``X-Consumer-*``, ``X-Credential-Identifier``, ``X-Anonymous-Consumer``, ``X-Consumer-Groups``).
They run in-process over the same :class:`RequestContext` and PDK emulation as external plugins.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from jwt.algorithms import get_default_algorithms
from jwt.exceptions import InvalidKeyError

from kong_plugins.errors import ConfigError
from kong_plugins.schema import fill_defaults

from ._context import RequestContext, headers_multimap, parse_query
from ._entities import DeckConfig
from ._luaplugin import LuaPlugin, load_lua_plugin
from ._pdk import make_error, make_exit, trigger_exit
from ._rpc import LuaError
from ._serverless import SERVERLESS_SCHEMA, prepare_serverless, serverless_access

HEADER_CONSUMER_ID = "X-Consumer-ID"
HEADER_CONSUMER_CUSTOM_ID = "X-Consumer-Custom-ID"
HEADER_CONSUMER_USERNAME = "X-Consumer-Username"
HEADER_CREDENTIAL_IDENTIFIER = "X-Credential-Identifier"
HEADER_ANONYMOUS = "X-Anonymous-Consumer"
HEADER_CONSUMER_GROUPS = "X-Consumer-Groups"
HEADER_AUTHENTICATED_GROUPS = "X-Authenticated-Groups"

Access = Callable[[RequestContext, dict[str, Any], DeckConfig, Callable[[], float]], None]


@dataclass(frozen=True)
class StockPlugin:
    name: str
    priority: int
    schema: list[dict[str, Any]]
    access: Access
    check: Callable[[dict[str, Any]], None]
    #: Replaces the generic fill-and-check (the serverless plugins compile their Lua here).
    custom_prepare: Callable[[str, dict[str, Any], str], dict[str, Any]] | None = None
    #: ``consumer = typedefs.no_consumer`` in the schema: a consumer-scoped instance is refused.
    no_consumer: bool = False
    #: The log phase handler (a Lua plugin's ``handler:log``), run before external log timers.
    log: Access | None = None

    def prepare(self, conf: dict[str, Any], path: str) -> dict[str, Any]:
        """Fill defaults and reject bad config as Kong does when it loads the decK file."""
        if self.custom_prepare is not None:
            return self.custom_prepare(self.name, conf, path)
        filled = fill_defaults(self.schema, conf)
        known = {next(iter(f)) for f in self.schema}
        for key in conf:
            if key not in known:
                raise ConfigError(f"{path}.{key}", "unknown field")
        try:
            self.check(filled)
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc.field}", exc.message) from exc
        return filled


def _set_consumer(
    ctx: RequestContext,
    consumer: dict[str, Any] | None,
    credential: dict[str, Any] | None,
    credential_ident: str | None,
) -> None:
    """``set_consumer`` shared by key-auth and jwt (``kong.client.authenticate`` + headers)."""
    if not consumer and not credential:
        raise LuaError("either credential or consumer must be provided")
    ctx.consumer, ctx.credential = consumer, credential
    for header, value in (
        (HEADER_CONSUMER_ID, consumer and consumer.get("id")),
        (HEADER_CONSUMER_CUSTOM_ID, consumer and consumer.get("custom_id")),
        (HEADER_CONSUMER_USERNAME, consumer and consumer.get("username")),
        (HEADER_CREDENTIAL_IDENTIFIER, credential_ident),
    ):
        if value:
            ctx.set_request_header(header, str(value))
        else:
            ctx.clear_request_header(header)
    if credential:
        ctx.clear_request_header(HEADER_ANONYMOUS)
    else:
        ctx.set_request_header(HEADER_ANONYMOUS, "true")


def _set_anonymous(ctx: RequestContext, config: DeckConfig, anonymous: str) -> None:
    consumer = config.consumer_by_id_or_name(anonymous)
    _set_consumer(ctx, consumer.entity if consumer else None, None, None)


def _run_on_preflight(ctx: RequestContext, conf: dict[str, Any]) -> bool:
    return bool(conf["run_on_preflight"]) or ctx.method != "OPTIONS"


# -- key-auth (priority 1250) ------------------------------------------------------------------------------


def _body_params(ctx: RequestContext) -> dict[str, Any]:
    ctype = (ctx.get_request_header("content-type") or "").lower()
    try:
        if ctype.startswith("application/json"):
            parsed = json.loads(ctx.body or b"null")
            return parsed if isinstance(parsed, dict) else {}
        if ctype.startswith("application/x-www-form-urlencoded"):
            return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(ctx.body.decode()).items()}
    except (ValueError, UnicodeDecodeError):
        return {}
    return {}


def _key_auth_do(
    ctx: RequestContext, conf: dict[str, Any], config: DeckConfig
) -> tuple[int, str, dict[str, str]] | None:
    www = f'Key realm="{conf["realm"]}"' if conf.get("realm") else "Key"
    headers = headers_multimap(ctx.request_headers)
    query = parse_query(ctx.raw_query)
    body: dict[str, Any] | None = None
    key: str | None = None
    for name in conf["key_names"]:
        value: Any = None
        if conf["key_in_header"]:
            value = headers.get(name.lower())
        if value is None and conf["key_in_query"]:
            value = query.get(name)
        if value is None and conf["key_in_body"]:
            body = body if body is not None else _body_params(ctx)
            value = body.get(name)
        if isinstance(value, str):
            key = value
            if conf["hide_credentials"]:
                query.pop(name, None)
                ctx.upstream_query = "&".join(f"{k}={v}" for k, v in query.items() if isinstance(v, str))
                ctx.clear_request_header(name)
            break
        if isinstance(value, list):
            return 401, "Duplicate API key found", {"WWW-Authenticate": www}
    if not key:
        return 401, "No API key found in request", {"WWW-Authenticate": www}
    for consumer in config.consumers:
        for cred in consumer.keyauth_credentials:
            if cred["key"] == key:
                _set_consumer(ctx, consumer.entity, cred, cred["id"])
                return None
    return 401, "Unauthorized", {"WWW-Authenticate": www}


def key_auth_access(
    ctx: RequestContext, conf: dict[str, Any], config: DeckConfig, clock: Callable[[], float]
) -> None:
    if not _run_on_preflight(ctx, conf):
        return
    if conf.get("anonymous"):
        if ctx.credential:
            return
        if _key_auth_do(ctx, conf, config) is not None:
            _set_anonymous(ctx, config, conf["anonymous"])
        return
    failure = _key_auth_do(ctx, conf, config)
    if failure is not None:
        status, message, headers = failure
        trigger_exit(ctx, make_error(status, message, headers))


def _check_key_auth(conf: dict[str, Any]) -> None:
    names = conf.get("key_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError("key_names", "must be a non-empty list of header names")


KEY_AUTH_SCHEMA: list[dict[str, Any]] = [
    {"key_names": {"type": "array", "required": True, "default": ["apikey"], "elements": {"type": "string"}}},
    {"hide_credentials": {"type": "boolean", "required": True, "default": False}},
    {"anonymous": {"type": "string"}},
    {"key_in_header": {"type": "boolean", "required": True, "default": True}},
    {"key_in_query": {"type": "boolean", "required": True, "default": True}},
    {"key_in_body": {"type": "boolean", "required": True, "default": False}},
    {"run_on_preflight": {"type": "boolean", "required": True, "default": True}},
    {"realm": {"type": "string"}},
]


# -- jwt (priority 1450) ------------------------------------------------------------------------------------


def _cookies(ctx: RequestContext) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in ctx.request_headers:
        if name.lower() == "cookie":
            for part in value.split(";"):
                if "=" in part:
                    k, v = part.strip().split("=", 1)
                    out.setdefault(k, v)
    return out


def _retrieve_tokens(ctx: RequestContext, conf: dict[str, Any]) -> str | list[str] | None:
    tokens: list[str] = []

    def add(token: str) -> None:
        if token and token not in tokens:
            tokens.append(token)

    query = parse_query(ctx.raw_query)
    for name in conf["uri_param_names"] or []:
        value = query.get(name)
        if isinstance(value, list):
            for v in value:
                if isinstance(v, str):
                    add(v)
        elif isinstance(value, str):
            add(value)
    cookies = _cookies(ctx)
    for name in conf["cookie_names"] or []:
        if cookies.get(name):
            add(cookies[name])
    headers = headers_multimap(ctx.request_headers)
    for name in conf["header_names"] or []:
        value = headers.get(name.lower())
        if isinstance(value, list):
            value = value[0]
        if isinstance(value, str):
            stripped = value.lstrip()
            if stripped[:6].lower() == "bearer" and len(stripped) > 6 and stripped[6].isspace():
                add(stripped[7:].lstrip())
    if not tokens:
        return None
    return tokens[0] if len(tokens) == 1 else tokens


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _decode_token(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """``kong/plugins/jwt/jwt_parser.lua`` ``decode_token``; ValueError carries Kong's message."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("invalid JWT")
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise ValueError("invalid JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("invalid JSON")
    if header.get("typ") not in (None, "JWT"):
        raise ValueError("invalid typ")
    if header.get("alg") not in get_default_algorithms():
        raise ValueError("invalid alg")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def _verify_signature(alg: str, key: str | bytes, signing_input: bytes, signature: bytes) -> bool:
    algorithm = get_default_algorithms()[alg]
    try:
        prepared = algorithm.prepare_key(key)
        return bool(algorithm.verify(signing_input, prepared, signature))
    except (InvalidKeyError, ValueError, TypeError):
        return False


def _verify_claims(claims: dict[str, Any], to_verify: list[str], now: float) -> dict[str, str]:
    errors: dict[str, str] = {}
    for name in to_verify:
        value = claims.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            errors[name] = "must be a number"
        elif name == "exp" and value <= now:
            errors[name] = "token expired"
        elif name == "nbf" and value > now:
            errors[name] = "token not valid yet"
    return errors


def _jwt_do(
    ctx: RequestContext, conf: dict[str, Any], config: DeckConfig, now: float
) -> tuple[int, Any, dict[str, str]] | None:
    base = f'Bearer realm="{conf["realm"]}"' if conf.get("realm") else "Bearer"
    invalid = {"WWW-Authenticate": f'{base} error="invalid_token"'}
    token = _retrieve_tokens(ctx, conf)
    if token is None:
        return 401, {"message": "Unauthorized"}, {"WWW-Authenticate": base}
    if isinstance(token, list):
        return 401, {"message": "Multiple tokens provided"}, invalid
    try:
        header, claims, signing_input, signature = _decode_token(token)
    except ValueError as exc:
        return 401, {"message": f"Bad token; {exc}"}, invalid
    claim_name = conf["key_claim_name"]
    secret_key = claims.get(claim_name, header.get(claim_name))
    if secret_key is None:
        return 401, {"message": f"No mandatory '{claim_name}' in claims"}, invalid
    if secret_key == "":
        return 401, {"message": f"Invalid '{claim_name}' in claims"}, invalid
    found = next(((c, s) for c in config.consumers for s in c.jwt_secrets if s["key"] == secret_key), None)
    if found is None:
        return 401, {"message": f"No credentials found for given '{claim_name}'"}, invalid
    consumer, secret = found
    algorithm = secret.get("algorithm") or "HS256"
    if header.get("alg") != algorithm:
        return 401, {"message": "Invalid algorithm"}, invalid
    key: str | bytes | None = (
        secret.get("secret") if algorithm.startswith("HS") else secret.get("rsa_public_key")
    )
    if conf["secret_is_base64"] and key is not None:
        try:
            key = base64.b64decode(key)
        except (binascii.Error, ValueError):
            key = None
    if not key:
        return 401, {"message": "Invalid key/secret"}, invalid
    if not _verify_signature(algorithm, key, signing_input, signature):
        return 401, {"message": "Invalid signature"}, invalid
    errors = _verify_claims(claims, list(conf["claims_to_verify"] or []), now)
    if errors:
        return 401, errors, invalid
    max_exp = conf["maximum_expiration"]
    if max_exp and max_exp > 0:
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp - now > max_exp:
            return 401, {"exp": "exceeds maximum allowed expiration"}, invalid
    _set_consumer(ctx, consumer.entity, secret, secret["key"])
    ctx.ctx_shared["authenticated_jwt_token"] = token
    return None


def jwt_access(
    ctx: RequestContext, conf: dict[str, Any], config: DeckConfig, clock: Callable[[], float]
) -> None:
    if not _run_on_preflight(ctx, conf):
        return
    now = clock()
    if conf.get("anonymous"):
        if ctx.credential:
            return
        if _jwt_do(ctx, conf, config, now) is not None:
            _set_anonymous(ctx, config, conf["anonymous"])
        return
    failure = _jwt_do(ctx, conf, config, now)
    if failure is not None:
        status, body, headers = failure
        trigger_exit(ctx, make_exit(status, body, headers))


def _check_jwt(conf: dict[str, Any]) -> None:
    claims = conf.get("claims_to_verify") or []
    for claim in claims:
        if claim not in ("exp", "nbf"):
            raise ConfigError("claims_to_verify", f"expected one of: exp, nbf (got {claim!r})")
    max_exp = conf.get("maximum_expiration")
    if not isinstance(max_exp, int | float) or not 0 <= max_exp <= 31536000:
        raise ConfigError("maximum_expiration", "value should be between 0 and 31536000")
    if max_exp > 0 and "exp" not in claims:
        raise ConfigError("claims_to_verify", "must contain 'exp' when maximum_expiration is set")


JWT_SCHEMA: list[dict[str, Any]] = [
    {"uri_param_names": {"type": "set", "default": ["jwt"], "elements": {"type": "string"}}},
    {"cookie_names": {"type": "set", "default": [], "elements": {"type": "string"}}},
    {"key_claim_name": {"type": "string", "default": "iss"}},
    {"secret_is_base64": {"type": "boolean", "required": True, "default": False}},
    {"claims_to_verify": {"type": "set", "elements": {"type": "string"}}},
    {"anonymous": {"type": "string"}},
    {"run_on_preflight": {"type": "boolean", "required": True, "default": True}},
    {"maximum_expiration": {"type": "number", "default": 0}},
    {"header_names": {"type": "set", "default": ["authorization"], "elements": {"type": "string"}}},
    {"realm": {"type": "string"}},
]


# -- acl (priority 950) -------------------------------------------------------------------------------------


def acl_access(
    ctx: RequestContext, conf: dict[str, Any], config: DeckConfig, clock: Callable[[], float]
) -> None:
    deny = bool(conf.get("deny"))
    wanted: list[str] = list(conf["deny"] if deny else conf["allow"] or [])
    consumer_id = ctx.consumer.get("id") if ctx.consumer else None
    if not consumer_id:
        if ctx.credential:
            trigger_exit(ctx, make_error(403, "You cannot consume this service"))
        trigger_exit(ctx, make_error(401))
        return
    consumer = config.consumer_by_id_or_name(str(consumer_id))
    groups = [str(a["group"]) for a in consumer.acls] if consumer else []
    if not groups and not deny:
        if ctx.credential:
            trigger_exit(ctx, make_error(403, "You cannot consume this service"))
        trigger_exit(ctx, make_error(401))
    in_group = any(g in wanted for g in groups)
    blocked = in_group if deny else not in_group
    if blocked:
        trigger_exit(ctx, make_error(403, "You cannot consume this service"))
    if not conf["hide_groups_header"] and groups:
        ctx.set_request_header(HEADER_CONSUMER_GROUPS, ", ".join(groups))


def _check_acl(conf: dict[str, Any]) -> None:
    allow, deny = conf.get("allow"), conf.get("deny")
    if bool(allow) == bool(deny):
        raise ConfigError("", "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'")


ACL_SCHEMA: list[dict[str, Any]] = [
    {"allow": {"type": "array", "elements": {"type": "string"}}},
    {"deny": {"type": "array", "elements": {"type": "string"}}},
    {"hide_groups_header": {"type": "boolean", "required": True, "default": False}},
    {"always_use_authenticated_groups": {"type": "boolean", "required": True, "default": False}},
    {"include_consumer_groups": {"type": "boolean", "default": False}},
]


# -- ip-restriction (priority 990) ---------------------------------------------------------------------------


def _networks(values: list[str] | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(v, strict=False) for v in values or []]


def ip_restriction_access(
    ctx: RequestContext, conf: dict[str, Any], config: DeckConfig, clock: Callable[[], float]
) -> None:
    try:
        addr = ipaddress.ip_address(ctx.client_ip)
    except ValueError:
        trigger_exit(
            ctx,
            make_error(403, "Cannot identify the client IP address, unix domain sockets are not supported."),
        )
        return
    status = conf.get("status") or 403
    message = conf.get("message") or "Your IP address is not allowed"
    deny, allow = _networks(conf.get("deny")), _networks(conf.get("allow"))
    if deny and any(addr in net for net in deny):
        trigger_exit(ctx, make_error(status, message))
    if allow and not any(addr in net for net in allow):
        trigger_exit(ctx, make_error(status, message))


def _check_ip_restriction(conf: dict[str, Any]) -> None:
    if not conf.get("allow") and not conf.get("deny"):
        raise ConfigError("", "at least one of these fields must be non-empty: 'config.allow', 'config.deny'")
    for field in ("allow", "deny"):
        for value in conf.get(field) or []:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as exc:
                raise ConfigError(field, f"invalid ip or cidr range: '{value}'") from exc
    status = conf.get("status")
    if status is not None and not 100 <= status <= 599:
        raise ConfigError("status", "value should be between 100 and 599")


IP_RESTRICTION_SCHEMA: list[dict[str, Any]] = [
    {"allow": {"type": "array", "elements": {"type": "string"}}},
    {"deny": {"type": "array", "elements": {"type": "string"}}},
    {"status": {"type": "number"}},
    {"message": {"type": "string"}},
]


# -- request-size-limiting (priority 951) --------------------------------------------------------------------

_UNIT_FACTOR = {"bytes": 1, "kilobytes": 1024, "megabytes": 2**20}


def request_size_limiting_access(
    ctx: RequestContext, conf: dict[str, Any], config: DeckConfig, clock: Callable[[], float]
) -> None:
    cl = ctx.get_request_header("content-length")
    if conf["require_content_length"] and cl is None:
        trigger_exit(ctx, make_error(411, "A valid Content-Length header is required"))
    try:
        length = int(cl) if cl is not None else None
    except ValueError:
        length = None
    if length is None:
        # Kong reads the body here; one held in a buffer file yields nil and is not checked
        length = len(ctx.body) if len(ctx.body) <= ctx.client_body_buffer_size else None
    if length is None:
        return
    if length > conf["allowed_payload_size"] * _UNIT_FACTOR[conf["size_unit"]]:
        expect = (ctx.get_request_header("expect") or "").strip().lower()
        trigger_exit(ctx, make_error(417 if expect == "100-continue" else 413, "Request size limit exceeded"))


def _check_request_size(conf: dict[str, Any]) -> None:
    if conf.get("size_unit") not in _UNIT_FACTOR:
        raise ConfigError("size_unit", "expected one of: megabytes, kilobytes, bytes")
    size = conf.get("allowed_payload_size")
    if not isinstance(size, int) or isinstance(size, bool):
        raise ConfigError("allowed_payload_size", "expected an integer")


REQUEST_SIZE_SCHEMA: list[dict[str, Any]] = [
    {"allowed_payload_size": {"type": "integer", "default": 128}},
    {"size_unit": {"type": "string", "required": True, "default": "megabytes"}},
    {"require_content_length": {"type": "boolean", "required": True, "default": False}},
]


def _no_check(conf: dict[str, Any]) -> None:
    """The serverless plugins check their config while compiling it (``prepare_serverless``)."""


def _lua_stock_plugin(plugin: LuaPlugin) -> StockPlugin:
    return StockPlugin(plugin.name, plugin.priority, plugin.config_schema, plugin.access, _no_check,
                       lambda name, conf, path: plugin.prepare(conf, path), no_consumer=plugin.no_consumer,
                       log=plugin.log if "log" in plugin.phases else None)


def _suite_companion() -> StockPlugin:
    """``ai-suite-context`` from the package's Lua files (``kong_plugins.companion``)."""
    from kong_plugins import companion

    return _lua_stock_plugin(load_lua_plugin(companion.NAME, companion.handler_source(), companion.schema_source()))


STOCK_PLUGINS: dict[str, StockPlugin] = {
    p.name: p
    for p in (
        StockPlugin("jwt", 1450, JWT_SCHEMA, jwt_access, _check_jwt),
        StockPlugin("key-auth", 1250, KEY_AUTH_SCHEMA, key_auth_access, _check_key_auth),
        StockPlugin(
            "ip-restriction", 990, IP_RESTRICTION_SCHEMA, ip_restriction_access, _check_ip_restriction
        ),
        StockPlugin(
            "request-size-limiting",
            951,
            REQUEST_SIZE_SCHEMA,
            request_size_limiting_access,
            _check_request_size,
        ),
        StockPlugin("acl", 950, ACL_SCHEMA, acl_access, _check_acl),
        # kong/plugins/pre-function/handler.lua and post-function/handler.lua: the same handler
        StockPlugin("pre-function", 1000000, SERVERLESS_SCHEMA, serverless_access, _no_check,
                    prepare_serverless),
        StockPlugin("post-function", -1000, SERVERLESS_SCHEMA, serverless_access, _no_check,
                    prepare_serverless),
        _suite_companion(),
    )
}



def wall_clock() -> float:
    return time.time()
