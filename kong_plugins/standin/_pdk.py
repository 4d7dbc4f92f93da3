"""Kong's PDK, emulated over a :class:`RequestContext`, as the plugin-server bridge calls it.

``call_pdk_method`` and the ``must_fix`` table follow ``kong/runloop/plugin_servers/rpc/mp_rpc.lua``;
the saved-data overrides of the log timer follow ``exposed_api`` in
``kong/runloop/plugin_servers/plugin.lua``; each function follows its ``kong/pdk/*.lua``
counterpart (``request``, ``response``, ``client``, ``router``, ``ctx``, ``log``, ``nginx``,
``service/request``, ``service/response``), including the Lua ``error()`` raised on bad arguments.
Where Kong lets each function run -- its ``check_phase`` mask, and what the log timer can still
reach -- is in ``_phases.py`` and enforced for every call in :meth:`Pdk.invoke`: a forbidden call
is a Lua error that unwinds the plugin handler (Kong's 500 in the access phase; only logged in the
log timer). Functions returning ``nil, err`` in Lua return only ``nil`` here, because
``call_pdk_method`` keeps the first return value only.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Callable
from typing import Any

from ._context import (
    DelayedResponse,
    ExitResponse,
    RequestContext,
    headers_multimap,
    parse_query,
)
from ._phases import TIMER_CONTEXT_ERROR, enforce
from ._rpc import LuaError

log = logging.getLogger("kong_plugins.standin")

KONG_VERSION = "3.9.1"
SERVER_HEADER = f"kong/{KONG_VERSION}"

#: ``kong/pdk/response.lua`` default messages for ``kong.response.error``.
HTTP_MESSAGES: dict[int, str] = {
    400: "Bad request",
    401: "Unauthorized",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    407: "Proxy authentication required",
    408: "Request timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length required",
    412: "Precondition failed",
    413: "Payload too large",
    414: "URI too long",
    415: "Unsupported media type",
    416: "Range not satisfiable",
    417: "Expectation failed",
    418: "I'm a teapot",
    421: "Misdirected request",
    422: "Unprocessable entity",
    423: "Locked",
    424: "Failed dependency",
    425: "Too early",
    426: "Upgrade required",
    428: "Precondition required",
    429: "Too many requests",
    431: "Request header fields too large",
    451: "Unavailable for legal reasons",
    494: "Request header or cookie too large",
    500: "An unexpected error occurred",
    501: "Not implemented",
    502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable",
    504: "The upstream server is timing out",
    505: "HTTP version not supported",
    506: "Variant also negotiates",
    507: "Insufficient storage",
    508: "Loop detected",
    510: "Not extended",
    511: "Network authentication required",
}

JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# -- encodings shared with the stock plugins -----------------------------------------------------------


def lua_value(value: Any) -> Any:
    """What a value looks like after a trip through Lua tables and lua-MessagePack.

    LuaJIT has one number type and lua-MessagePack packs integral numbers as integers; an empty
    table has no keys, so it packs as an empty *array*; a table with keys 1..n is an array.
    """
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        if not value:
            return []
        keys = list(value.keys())
        if all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
            return [lua_value(value[k]) for k in sorted(keys)]
        return {k: lua_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [lua_value(v) for v in value]
    return value


def fix_mmap(value: Any) -> Any:
    """mp_rpc.lua ``fix_mmap``: one value -> 1-element list, bare flag -> [], empty -> {}."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for k, v in value.items():
        if v is True:
            out[k] = []
        elif isinstance(v, str):
            out[k] = [v]
        else:
            out[k] = v
    return out


def fix_raw(value: Any) -> Any:
    """mp_rpc.lua ``fix_raw``: a body travels as msgpack *binary*."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value


MUST_FIX: dict[str, Callable[[Any], Any]] = {
    "kong.request.get_query": fix_mmap,
    "kong.request.get_headers": fix_mmap,
    "kong.response.get_headers": fix_mmap,
    "kong.service.response.get_headers": fix_mmap,
    "kong.request.get_raw_body": fix_raw,
    "kong.response.get_raw_body": fix_raw,
    "kong.service.response.get_raw_body": fix_raw,
}

#: mp_rpc.lua ``get_step_method`` ``by_pdk_method``.
STEP_BY_METHOD: dict[str, str] = {
    "kong.client.get_credential": "plugin.StepCredential",
    "kong.client.load_consumer": "plugin.StepConsumer",
    "kong.client.get_consumer": "plugin.StepConsumer",
    "kong.client.authenticate": "plugin.StepCredential",
    "kong.node.get_memory_stats": "plugin.StepMemoryStats",
    "kong.router.get_route": "plugin.StepRoute",
    "kong.router.get_service": "plugin.StepService",
    "kong.request.get_query": "plugin.StepMultiMap",
    "kong.request.get_headers": "plugin.StepMultiMap",
    "kong.response.get_headers": "plugin.StepMultiMap",
    "kong.service.response.get_headers": "plugin.StepMultiMap",
}


def get_step_method(method: str, pdk_res: Any, pdk_err: Any = None) -> tuple[str, Any]:
    """mp_rpc.lua ``get_step_method``.

    ``StepError`` needs a second return value; mp_rpc's ``call_pdk_method`` keeps only the first,
    so with MsgPack:1 in Kong 3.9 the bridge never sends it (kept here to mirror the Lua).
    """
    if not pdk_res and pdk_err:
        return "plugin.StepError", pdk_err
    if isinstance(pdk_res, dict) and pdk_res.get("_method"):
        return str(pdk_res["_method"]), pdk_res
    return STEP_BY_METHOD.get(method, "plugin.Step"), pdk_res


def _encode_body(body: Any, headers: list[tuple[str, str]]) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogateescape")
    if isinstance(body, dict | list):
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", JSON_CONTENT_TYPE))
        return json.dumps(body, separators=(",", ":")).encode()
    raise LuaError("body must be a nil, string or table")


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    if headers is None or headers == []:
        return []
    if not isinstance(headers, dict):
        raise LuaError("headers must be a nil or table")
    pairs: list[tuple[str, str]] = []
    for k, v in headers.items():
        if isinstance(v, list):
            pairs.extend((str(k), _header_value(k, x)) for x in v)
        else:
            pairs.append((str(k), _header_value(k, v)))
    return pairs


def _header_value(name: Any, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(lua_value(value))
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    raise LuaError(
        f'invalid header value for "{name}": got {_lua_type(value)}, '
        "expected array of string, string, number or boolean"
    )


def _lua_type(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str | bytes):
        return "string"
    return "table"


def _check_status(status: Any, low: int, high: int) -> int:
    if not isinstance(status, int | float) or isinstance(status, bool):
        raise LuaError("code must be a number")
    if status < low or status > high:
        raise LuaError(f"code must be a number between {low} and {high}")
    return int(status)


def make_exit(status: int, body: Any, headers: Any) -> ExitResponse:
    """The response ``kong.response.exit`` sends (``send`` in ``kong/pdk/response.lua``)."""
    pairs = _header_pairs(headers)
    raw = _encode_body(body, pairs)
    return ExitResponse(status, raw, pairs)


def make_error(status: int, message: Any = None, headers: Any = None) -> ExitResponse:
    """``kong.response.error``: ``{"message": ...}`` with the default text of the status."""
    if message is None:
        message = HTTP_MESSAGES.get(status, f"The upstream server responded with {status}")
    return make_exit(status, {"message": message}, headers)


def trigger_exit(ctx: RequestContext, response: ExitResponse) -> None:
    """Store the response and abandon the running handler (see :class:`DelayedResponse`)."""
    ctx.exited = True
    if ctx.phase == "access" or ctx.phase == "rewrite":
        if ctx.delayed_response is None:
            ctx.delayed_response = response
    else:
        ctx.delayed_response = response
    raise DelayedResponse()


# -- the PDK functions ---------------------------------------------------------------------------------

PdkFunction = Callable[..., Any]


class Pdk:
    """Kong's ``kong.*`` functions over one gateway's state (entities, node id, log sink)."""

    def __init__(
        self,
        node_id: str,
        log_sink: Callable[[RequestContext, str, str], None],
        serialize: Callable[[RequestContext], dict[str, Any]],
        consumer_lookup: Callable[[str, bool], dict[str, Any] | None],
    ) -> None:
        self.node_id = node_id
        self._log = log_sink
        self._serialize = serialize
        self._consumer_lookup = consumer_lookup
        self.functions: dict[str, PdkFunction] = self._build()

    def call(self, ctx: RequestContext, method: str, args: Any) -> Any:
        """mp_rpc.lua ``call_pdk_method``: look up, unpack args, call, keep ret, apply ``must_fix``."""
        if method not in self.functions:
            self._log(ctx, "err", f"could not find pdk method: {method}")
            return None
        if isinstance(args, list):
            call_args: list[Any] = args
        elif isinstance(args, dict):
            # Lua's unpack() of a map-shaped table yields nothing
            call_args = []
        else:
            call_args = [args]
        ret = self.invoke(ctx, method, call_args, exposed_api=True)
        fix = MUST_FIX.get(method)
        if fix is not None:
            return fix(ret)
        return lua_value(ret)

    def invoke(self, ctx: RequestContext, method: str, args: list[Any], *, exposed_api: bool) -> Any:
        """Run one PDK function as Kong would in ``ctx.phase``: phase check first (``_phases.py``).

        ``exposed_api``: called through the plugin-server bridge, whose wrappers answer from the
        saved data in the log timer; False for a Lua plugin calling the PDK itself.
        """
        fn = self.functions.get(method)
        if fn is None:
            raise LuaError(f"attempt to call field '{method.rsplit('.', 1)[-1]}' (a nil value)")
        enforce(method, ctx.phase, ctx.saved is not None, exposed_api=exposed_api)
        return fn(ctx, *args)

    # The table below is long but flat on purpose: one line per PDK function Kong exposes.
    def _build(self) -> dict[str, PdkFunction]:
        f: dict[str, PdkFunction] = {
            "kong.request.get_header": self.request_get_header,
            "kong.request.get_headers": self.request_get_headers,
            "kong.request.get_raw_body": self.request_get_raw_body,
            "kong.request.get_method": lambda ctx: ctx.method,
            "kong.request.get_path": lambda ctx: ctx.path,
            "kong.request.get_raw_path": lambda ctx: ctx.path,
            "kong.request.get_path_with_query": lambda ctx: ctx.request_uri,
            "kong.request.get_raw_query": lambda ctx: ctx.raw_query,
            "kong.request.get_query": self.request_get_query,
            "kong.request.get_query_arg": self.request_get_query_arg,
            "kong.request.get_start_time": self.request_get_start_time,
            "kong.request.get_scheme": lambda ctx: ctx.scheme,
            "kong.request.get_host": lambda ctx: ctx.host,
            "kong.request.get_port": lambda ctx: ctx.port,
            "kong.request.get_forwarded_scheme": lambda ctx: ctx.scheme,
            "kong.request.get_forwarded_host": lambda ctx: ctx.host,
            "kong.request.get_forwarded_port": lambda ctx: ctx.port,
            "kong.request.get_http_version": lambda ctx: 1.1,
            "kong.client.get_ip": lambda ctx: ctx.client_ip,
            "kong.client.get_forwarded_ip": lambda ctx: ctx.client_ip,
            "kong.client.get_consumer": lambda ctx: ctx.consumer,
            "kong.client.get_credential": lambda ctx: ctx.credential,
            "kong.client.authenticate": self.client_authenticate,
            "kong.client.load_consumer": self.client_load_consumer,
            "kong.client.get_protocol": self.client_get_protocol,
            "kong.router.get_route": lambda ctx: ctx.route,
            "kong.router.get_service": lambda ctx: ctx.service,
            "kong.response.exit": self.response_exit,
            "kong.response.error": self.response_error,
            "kong.response.set_header": self.response_set_header,
            "kong.response.add_header": self.response_add_header,
            "kong.response.clear_header": self.response_clear_header,
            "kong.response.set_headers": self.response_set_headers,
            "kong.response.set_status": self.response_set_status,
            "kong.response.get_status": self.response_get_status,
            "kong.response.get_header": self.response_get_header,
            "kong.response.get_headers": self.response_get_headers,
            "kong.response.get_source": self.response_get_source,
            "kong.response.get_raw_body": self.response_get_raw_body,
            "kong.service.request.set_header": self.service_request_set_header,
            "kong.service.request.add_header": self.service_request_add_header,
            "kong.service.request.clear_header": self.service_request_clear_header,
            "kong.service.request.set_headers": self.service_request_set_headers,
            "kong.service.request.set_raw_body": self.service_request_set_raw_body,
            "kong.service.request.set_path": self.service_request_set_path,
            "kong.service.request.set_raw_query": self.service_request_set_raw_query,
            "kong.service.response.get_status": self.service_response_get_status,
            "kong.service.response.get_headers": self.service_response_get_headers,
            "kong.service.response.get_header": self.service_response_get_header,
            "kong.service.response.get_raw_body": self.service_response_get_raw_body,
            "kong.ctx.shared.get": self.ctx_shared_get,
            "kong.ctx.shared.set": self.ctx_shared_set,
            "kong.nginx.get_var": self.nginx_get_var,
            "kong.nginx.req_start_time": self.nginx_req_start_time,
            "kong.nginx.get_ctx": self.nginx_get_ctx,
            "kong.nginx.set_ctx": self.nginx_set_ctx,
            "kong.nginx.get_subsystem": lambda ctx: "http",
            "kong.log.serialize": self.log_serialize,
            "kong.node.get_id": lambda ctx: self.node_id,
            "kong.node.get_hostname": lambda ctx: socket.gethostname(),
            "kong.plugin.get_id": lambda ctx: ctx.current_plugin_id,
        }
        for level in ("alert", "crit", "err", "warn", "notice", "info", "debug"):
            f[f"kong.log.{level}"] = self._logger(level)
        f["kong.log.inspect"] = self._logger("debug")
        return f

    def _logger(self, level: str) -> PdkFunction:
        def emit(ctx: RequestContext, *parts: Any) -> None:
            self._log(ctx, level, "".join(_tostring(p) for p in parts))

        return emit

    # kong.request ------------------------------------------------------------------------------------
    def request_get_header(self, ctx: RequestContext, name: Any = None) -> Any:
        if not isinstance(name, str):
            raise LuaError("header name must be a string")
        if ctx.saved is not None:
            value = _ci_get(ctx.saved.request_headers, name)
            return value[0] if isinstance(value, list) else value
        return ctx.get_request_header(name)

    def request_get_headers(self, ctx: RequestContext, max_headers: Any = None) -> Any:
        if ctx.saved is not None:
            return ctx.saved.request_headers
        limit = _check_max(max_headers, "max_headers", 100)
        return headers_multimap(ctx.request_headers, limit)

    def request_get_raw_body(self, ctx: RequestContext, max_allowed_file_size: Any = None) -> Any:
        """Bodies above ``client_body_buffer_size`` sit in a file, as nginx buffers them.

        Kong 3.9's ``get_raw_body(max_allowed_file_size)`` reads such a file only when given the
        argument and the file is not larger; otherwise it returns ``nil, err`` -- a plain ``nil``
        to an external plugin.
        """
        body = ctx.body
        if len(body) <= ctx.client_body_buffer_size:
            return body
        if max_allowed_file_size is None:
            self._log(
                ctx,
                "debug",
                "request body did not fit into client body buffer, "
                "consider raising 'client_body_buffer_size'",
            )
            return None
        if not isinstance(max_allowed_file_size, int | float):
            raise LuaError("max_allowed_file_size must be a number")
        if len(body) > max_allowed_file_size:
            return None
        return body

    def request_get_query(self, ctx: RequestContext, max_args: Any = None) -> Any:
        return parse_query(ctx.raw_query, _check_max(max_args, "max_args", 100))

    def request_get_query_arg(self, ctx: RequestContext, name: Any = None) -> Any:
        if not isinstance(name, str):
            raise LuaError("query argument name must be a string")
        value = parse_query(ctx.raw_query).get(name)
        return value[0] if isinstance(value, list) else value

    def request_get_start_time(self, ctx: RequestContext) -> Any:
        return math.floor(ctx.start_time * 1000)

    # kong.client ---------------------------------------------------------------------------------------
    def client_authenticate(self, ctx: RequestContext, consumer: Any = None, credential: Any = None) -> None:
        if not consumer and not credential:
            raise LuaError("either credential or consumer must be provided")
        if consumer is not None and not isinstance(consumer, dict):
            raise LuaError("consumer must be a table or nil")
        if credential is not None and not isinstance(credential, dict):
            raise LuaError("credential must be a table or nil")
        ctx.consumer = consumer or None
        ctx.credential = credential or None

    def client_get_protocol(self, ctx: RequestContext, allow_terminated: Any = None) -> Any:
        """A route with one protocol answers it from ngx.ctx; otherwise the scheme (ngx.var)."""
        protocols = (ctx.route or {}).get("protocols") or ["http", "https"]
        if ctx.route is None:
            return None
        if len(protocols) == 1:
            return protocols[0]
        if ctx.saved is not None:
            raise LuaError(TIMER_CONTEXT_ERROR)
        return ctx.scheme

    def client_load_consumer(self, ctx: RequestContext, ident: Any = None, by_username: Any = False) -> Any:
        if not isinstance(ident, str):
            raise LuaError("consumer_id must be a string")
        return self._consumer_lookup(ident, bool(by_username))

    # kong.response -------------------------------------------------------------------------------------
    def response_exit(
        self, ctx: RequestContext, status: Any = None, body: Any = None, headers: Any = None
    ) -> None:
        trigger_exit(ctx, make_exit(_check_status(status, 100, 599), body, headers))

    def response_error(
        self, ctx: RequestContext, status: Any = None, message: Any = None, headers: Any = None
    ) -> None:
        trigger_exit(ctx, make_error(_check_status(status, 400, 599), message, headers))

    def response_set_header(self, ctx: RequestContext, name: Any = None, value: Any = None) -> None:
        _check_header_name(name)
        ctx.set_response_header(name, _header_value_or_list(name, value))

    def response_add_header(self, ctx: RequestContext, name: Any = None, value: Any = None) -> None:
        _check_header_name(name)
        ctx.response_headers.append((name, _header_value(name, value)))

    def response_clear_header(self, ctx: RequestContext, name: Any = None) -> None:
        _check_header_name(name)
        ctx.clear_response_header(name)

    def response_set_headers(self, ctx: RequestContext, headers: Any = None) -> None:
        if headers == []:
            return
        if not isinstance(headers, dict):
            raise LuaError("headers must be a table")
        for k, v in headers.items():
            _check_header_name(k)
            ctx.set_response_header(k, _header_value_or_list(k, v))

    def response_set_status(self, ctx: RequestContext, status: Any = None) -> None:
        ctx.response_status = _check_status(status, 100, 599)

    def response_get_status(self, ctx: RequestContext) -> Any:
        if ctx.saved is not None:
            return ctx.saved.response_status
        # ngx.status reads 0 until a status is set (proxied response or exit)
        return ctx.response_status if ctx.response_status is not None else 0

    def response_get_header(self, ctx: RequestContext, name: Any = None) -> Any:
        if not isinstance(name, str):
            raise LuaError("header name must be a string")
        if ctx.saved is not None:
            value = _ci_get(ctx.saved.response_headers, name)
            return value[0] if isinstance(value, list) else value
        value = _ci_get(headers_multimap(ctx.response_headers), name)
        return value[0] if isinstance(value, list) else value

    def response_get_headers(self, ctx: RequestContext, max_headers: Any = None) -> Any:
        if ctx.saved is not None:
            return ctx.saved.response_headers
        return headers_multimap(ctx.response_headers, _check_max(max_headers, "max_headers", 100))

    def response_get_source(self, ctx: RequestContext) -> str:
        if ctx.unexpected:
            return "error"
        if ctx.exited:
            return "exit"
        if ctx.proxied:
            return "service"
        return "error"

    def response_get_raw_body(self, ctx: RequestContext) -> Any:
        return ctx.response_body

    # kong.service.request --------------------------------------------------------------------------------
    def service_request_set_header(self, ctx: RequestContext, name: Any = None, value: Any = None) -> None:
        _check_header_name(name)
        ctx.set_request_header(name, _header_value_or_list(name, value))

    def service_request_add_header(self, ctx: RequestContext, name: Any = None, value: Any = None) -> None:
        _check_header_name(name)
        ctx.add_request_header(name, _header_value(name, value))

    def service_request_clear_header(self, ctx: RequestContext, name: Any = None) -> None:
        _check_header_name(name)
        ctx.clear_request_header(name)

    def service_request_set_headers(self, ctx: RequestContext, headers: Any = None) -> None:
        if headers == []:
            return
        if not isinstance(headers, dict):
            raise LuaError("headers must be a table")
        for k, v in headers.items():
            _check_header_name(k)
            ctx.set_request_header(k, _header_value_or_list(k, v))

    def service_request_set_raw_body(self, ctx: RequestContext, body: Any = None) -> None:
        if not isinstance(body, str | bytes):
            raise LuaError("body must be a string")
        ctx.upstream_body = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body

    def service_request_set_path(self, ctx: RequestContext, path: Any = None) -> None:
        if not isinstance(path, str) or not path.startswith("/"):
            raise LuaError("path must be a string starting with '/'")
        ctx.upstream_path = path

    def service_request_set_raw_query(self, ctx: RequestContext, query: Any = None) -> None:
        if not isinstance(query, str):
            raise LuaError("query must be a string")
        ctx.upstream_query = query

    # kong.service.response ---------------------------------------------------------------------------------
    # With buffered proxying (a plugin with a response phase on the route) the upstream status,
    # headers and body live in ngx.ctx (buffered_status/headers/body), which the log timer's
    # clone still holds; otherwise they come from ngx.var / ngx.resp, which a timer cannot read.
    def service_response_get_status(self, ctx: RequestContext) -> Any:
        self._unbuffered_in_timer(ctx)
        return ctx.service_response_status

    def service_response_get_headers(self, ctx: RequestContext, max_headers: Any = None) -> Any:
        limit = _check_max(max_headers, "max_headers", 100)
        self._unbuffered_in_timer(ctx)
        return headers_multimap(ctx.service_response_headers, limit)

    def service_response_get_header(self, ctx: RequestContext, name: Any = None) -> Any:
        if not isinstance(name, str):
            raise LuaError("name must be a string")
        self._unbuffered_in_timer(ctx)
        value = _ci_get(headers_multimap(ctx.service_response_headers), name)
        return value[0] if isinstance(value, list) else value

    def service_response_get_raw_body(self, ctx: RequestContext) -> Any:
        if not ctx.buffered_proxying:
            raise LuaError("service body is only available with buffered proxying "
                           "(see: kong.service.request.enable_buffering function)")
        return ctx.service_response_body or b""

    @staticmethod
    def _unbuffered_in_timer(ctx: RequestContext) -> None:
        if ctx.saved is not None and not ctx.buffered_proxying:
            raise LuaError(TIMER_CONTEXT_ERROR)

    # kong.ctx.shared / kong.nginx ------------------------------------------------------------------------
    def ctx_shared_get(self, ctx: RequestContext, key: Any = None) -> Any:
        shared = ctx.saved.ctx_shared if ctx.saved is not None else ctx.ctx_shared
        return shared.get(key) if isinstance(key, str) else None

    def ctx_shared_set(self, ctx: RequestContext, key: Any = None, value: Any = None) -> None:
        shared = ctx.saved.ctx_shared if ctx.saved is not None else ctx.ctx_shared
        if not isinstance(key, str):
            raise LuaError("table index is nil")
        if value is None:
            shared.pop(key, None)
        else:
            shared[key] = _lua_stored(value)

    def nginx_get_ctx(self, ctx: RequestContext, key: Any = None) -> Any:
        table = ctx.saved.ngx_ctx if ctx.saved is not None else ctx.ngx_ctx
        return table.get(key) if isinstance(key, str) else None

    def nginx_set_ctx(self, ctx: RequestContext, key: Any = None, value: Any = None) -> None:
        table = ctx.saved.ngx_ctx if ctx.saved is not None else ctx.ngx_ctx
        if not isinstance(key, str):
            raise LuaError("table index is nil")
        if value is None:
            table.pop(key, None)
        else:
            table[key] = _lua_stored(value)

    def nginx_req_start_time(self, ctx: RequestContext) -> Any:
        if ctx.saved is not None:
            return ctx.saved.req_start_time
        return ctx.start_time

    def nginx_get_var(self, ctx: RequestContext, name: Any = None) -> Any:
        if not isinstance(name, str):
            return None
        variables: dict[str, Any] = {
            "remote_addr": ctx.client_ip,
            "realip_remote_addr": ctx.client_ip,
            "request_uri": ctx.request_uri,
            "uri": ctx.path,
            "args": ctx.raw_query or None,
            "is_args": "?" if ctx.raw_query else "",
            "host": ctx.host,
            "scheme": ctx.scheme,
            "server_port": str(ctx.port),
            "request_method": ctx.method,
            "request_length": str(len(ctx.body)),
            # what this stand-in's serialize reports as response.size (nginx counts the headers too)
            "bytes_sent": str(len(ctx.response_body or b"")),
            "request_id": ctx.request_id,
            "https": "on" if ctx.scheme == "https" else "",
            # no client certificates in the stand-in: nginx reports NONE on TLS, nothing otherwise
            "ssl_client_verify": "NONE" if ctx.scheme == "https" else None,
            "upstream_uri": ctx.upstream_path,
        }
        if name in variables:
            return variables[name]
        if name.startswith("http_"):
            return ctx.get_request_header(name[5:])
        if name.startswith("arg_"):
            value = parse_query(ctx.raw_query).get(name[4:])
            return value[0] if isinstance(value, list) else value
        return None

    # kong.log.serialize ------------------------------------------------------------------------------------
    def log_serialize(self, ctx: RequestContext) -> str:
        """plugin.lua: ``cjson.encode(saved and saved.serialize_data or kong.log.serialize())``."""
        data = ctx.saved.serialize_data if ctx.saved is not None else self._serialize(ctx)
        return json.dumps(data, separators=(",", ":"))


def _tostring(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return f"table: 0x{id(value):012x}"
    return str(lua_value(value))


def _ci_get(table: dict[str, Any], name: str) -> Any:
    key = name.lower().replace("_", "-")
    for k, v in table.items():
        if k.lower().replace("_", "-") == key:
            return v
    return None


def _check_max(value: Any, what: str, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise LuaError(f"{what} must be a number")
    if value < 1:
        raise LuaError(f"{what} must be >= 1")
    if value > 1000:
        raise LuaError(f"{what} must be <= 1000")
    return int(value)


def _check_header_name(name: Any) -> None:
    if not isinstance(name, str) or not name:
        raise LuaError(f'invalid header name "{name}": got {_lua_type(name)}, expected string')


def _header_value_or_list(name: str, value: Any) -> str | list[str]:
    if isinstance(value, list):
        return [_header_value(name, v) for v in value]
    return _header_value(name, value)


def _lua_stored(value: Any) -> Any:
    """A value as Lua holds it once it arrived over msgpack (bin and str are both strings).

    Kept as text, bytes that are not UTF-8 surrogate-escaped: read back by a plugin server it
    travels as msgpack str holding the very bytes, as lua-MessagePack sends any Lua string."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {k: _lua_stored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lua_stored(v) for v in value]
    return value


def now_ms() -> float:
    return time.time() * 1000
