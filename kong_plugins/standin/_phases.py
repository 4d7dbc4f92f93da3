"""Where Kong lets each PDK function run: ``check_phase`` masks and the log timer's limits.

Kong checks the phase at the top of most PDK functions (``kong/pdk/private/phases.lua``
``check_phase``): outside the accepted phases it raises ``error("function cannot be called in
<phase> phase (only in: <names>)")`` -- a Lua error. For an external plugin that error is raised
inside ``call_pdk_method`` of the bridge loop (``kong/runloop/plugin_servers/rpc/mp_rpc.lua``),
which does not catch it: no Step is sent back, the plugin handler unwinds and, in the access
phase, ``kong/init.lua`` answers ``500 {"message":"An unexpected error occurred"}``. In the log
timer the error only ends the timer (nginx logs it); the response has already left.

External plugins do not call the PDK directly: ``exposed_api`` in
``kong/runloop/plugin_servers/plugin.lua`` wraps a few functions so that, in the log timer, they
answer from the data saved when the log phase began (``kong.log.serialize``, ``kong.ctx.shared.*``,
``kong.nginx.{get,set}_ctx``, ``kong.nginx.req_start_time``, ``kong.request.get_header(s)``,
``kong.response.get_status/get_header(s)/get_source``). Outside the timer (no saved data) the
wrappers call the real function, phase check included: ``kong.log.serialize`` in ``access`` is
``kong.log.serialize()`` there, which ``prepare_serialize`` refuses (``check_phase(PHASES_LOG)``,
``kong/pdk/log.lua``).

The log timer (``ngx.timer.at``) has no request: ``ngx.var``, ``ngx.req.*`` and ``ngx.resp.*``
raise "API disabled in the current context" there (lua-resty-core, ``ngx_http_lua_ffi_var_get``
refuses a fake connection), while ``ngx.ctx`` is the clone the timer restored
(``get_ctx_table(saved.ngx_ctx)``) with ``KONG_PHASE`` = log. So functions reading ``ngx.ctx``
(consumer, credential, route, service, start time, plugin id) still work in the timer, and those
reading the request (method, path, query, client address, ``kong.nginx.get_var``) fail.

The masks below are transcribed from Kong 3.9's ``kong/pdk/*.lua`` (after Kong/kong#7109 added the
``response`` pseudo-phase to them); phase names are listed in ``get_phases_names`` order (bit
order of ``PHASES``), which is the order Kong's message prints them in.
"""

from __future__ import annotations

from ._rpc import LuaError

#: ``kong/pdk/private/phases.lua`` ``PHASES`` in bit order (init_worker 0x1 ... admin_api 0x10000000).
PHASE_ORDER = (
    "init_worker", "certificate", "rewrite", "access", "balancer", "response", "cluster_listener",
    "header_filter", "body_filter", "log", "preread", "error", "admin_api",
)


def phase_mask(*names: str) -> frozenset[str]:
    unknown = set(names) - set(PHASE_ORDER)
    if unknown:
        raise ValueError(f"unknown phase(s): {sorted(unknown)}")
    return frozenset(names)


#: ``phases.request``: the alias most request getters use.
REQUEST = phase_mask("rewrite", "access", "response", "cluster_listener", "header_filter", "body_filter", "log",
                     "error", "admin_api")
#: ``check_not_phase(PHASES.init_worker)`` (client addresses, ``request.get_port``): every request phase.
NOT_INIT_WORKER = phase_mask(*(p for p in PHASE_ORDER if p != "init_worker"))
#: ``kong/pdk/request.lua`` ``before_content`` (``get_raw_body``, ``get_body``).
BEFORE_CONTENT = phase_mask("rewrite", "access", "response", "error", "admin_api")
#: ``kong/pdk/client.lua`` ``AUTH_AND_LATER`` (consumer, credential, ``load_consumer``, protocol).
AUTH_AND_LATER = phase_mask("access", "response", "header_filter", "body_filter", "log")
#: ``kong/pdk/router.lua`` ``ROUTER_PHASES``.
ROUTER = phase_mask("access", "response", "header_filter", "body_filter", "log")
#: ``kong/pdk/response.lua`` ``rewrite_access_header`` (setters, ``exit``, ``error``).
RESPONSE_WRITE = phase_mask("rewrite", "access", "response", "header_filter", "error", "admin_api")
#: ``kong/pdk/response.lua`` ``header_body_log`` (getters of the downstream response).
RESPONSE_READ = phase_mask("response", "header_filter", "body_filter", "log", "error", "admin_api")
#: ``kong/pdk/service/request.lua`` ``access_and_rewrite``.
SERVICE_REQUEST = phase_mask("rewrite", "access")
#: ``kong/pdk/service/request.lua`` ``access_rewrite_balancer`` (``set_header``, ``set_path``, ``set_raw_body``).
SERVICE_REQUEST_BALANCER = phase_mask("rewrite", "access", "balancer")
#: ``kong/pdk/service/response.lua`` ``header_body_log``.
SERVICE_RESPONSE = phase_mask("response", "header_filter", "body_filter", "log")
#: ``kong/pdk/log.lua`` ``PHASES_LOG`` (``serialize``, through ``prepare_serialize``).
LOG = phase_mask("log")

#: PDK function -> the phases its ``check_phase`` accepts. A function absent here has no phase
#: check (``kong.ctx.shared`` and ``kong.nginx.*`` wrappers, ``kong.log.<level>``, ``kong.node.*``,
#: ``kong.plugin.get_id``, ``kong.nginx.get_subsystem``).
PHASE_CHECKS: dict[str, frozenset[str]] = {
    # kong/pdk/request.lua
    "kong.request.get_scheme": REQUEST,
    "kong.request.get_host": REQUEST,
    "kong.request.get_port": NOT_INIT_WORKER,
    "kong.request.get_forwarded_scheme": REQUEST,
    "kong.request.get_forwarded_host": REQUEST,
    "kong.request.get_forwarded_port": REQUEST,
    "kong.request.get_http_version": REQUEST,
    "kong.request.get_method": REQUEST,
    "kong.request.get_path": REQUEST,
    "kong.request.get_raw_path": REQUEST,
    "kong.request.get_path_with_query": REQUEST,
    "kong.request.get_raw_query": REQUEST,
    "kong.request.get_query_arg": REQUEST,
    "kong.request.get_query": REQUEST,
    "kong.request.get_header": REQUEST,
    "kong.request.get_headers": REQUEST,
    "kong.request.get_raw_body": BEFORE_CONTENT,
    "kong.request.get_start_time": REQUEST,
    # kong/pdk/client.lua
    "kong.client.get_ip": NOT_INIT_WORKER,
    "kong.client.get_forwarded_ip": NOT_INIT_WORKER,
    "kong.client.get_credential": AUTH_AND_LATER,
    "kong.client.load_consumer": AUTH_AND_LATER,
    "kong.client.get_consumer": AUTH_AND_LATER,
    "kong.client.authenticate": phase_mask("access"),
    "kong.client.get_protocol": AUTH_AND_LATER,
    # kong/pdk/router.lua
    "kong.router.get_route": ROUTER,
    "kong.router.get_service": ROUTER,
    # kong/pdk/response.lua
    "kong.response.get_status": RESPONSE_READ,
    "kong.response.get_header": RESPONSE_READ,
    "kong.response.get_headers": RESPONSE_READ,
    "kong.response.get_source": RESPONSE_READ,
    "kong.response.set_status": RESPONSE_WRITE,
    "kong.response.set_header": RESPONSE_WRITE,
    "kong.response.add_header": RESPONSE_WRITE,
    "kong.response.clear_header": RESPONSE_WRITE,
    "kong.response.set_headers": RESPONSE_WRITE,
    "kong.response.get_raw_body": phase_mask("body_filter"),
    "kong.response.exit": RESPONSE_WRITE,
    "kong.response.error": RESPONSE_WRITE,
    # kong/pdk/service/request.lua
    "kong.service.request.set_path": SERVICE_REQUEST_BALANCER,
    "kong.service.request.set_raw_query": SERVICE_REQUEST,
    "kong.service.request.set_header": SERVICE_REQUEST_BALANCER,
    "kong.service.request.add_header": SERVICE_REQUEST,
    "kong.service.request.clear_header": SERVICE_REQUEST,
    "kong.service.request.set_headers": SERVICE_REQUEST,
    "kong.service.request.set_raw_body": SERVICE_REQUEST_BALANCER,
    # kong/pdk/service/response.lua
    "kong.service.response.get_status": SERVICE_RESPONSE,
    "kong.service.response.get_headers": SERVICE_RESPONSE,
    "kong.service.response.get_header": SERVICE_RESPONSE,
    "kong.service.response.get_raw_body": SERVICE_RESPONSE,
    # kong/pdk/log.lua
    "kong.log.serialize": LOG,
}

#: ``exposed_api`` wrappers that answer from the saved data in the log timer (no check, no ngx.var).
SERVED_FROM_SAVED = frozenset({
    "kong.log.serialize",
    "kong.nginx.get_ctx",
    "kong.nginx.set_ctx",
    "kong.ctx.shared.get",
    "kong.ctx.shared.set",
    "kong.request.get_headers",
    "kong.request.get_header",
    "kong.response.get_status",
    "kong.response.get_headers",
    "kong.response.get_header",
    "kong.response.get_source",
    "kong.nginx.req_start_time",
})

#: Functions that read the request through ``ngx.var`` / ``ngx.req`` with no saved-data wrapper:
#: in the log timer they pass the phase check (``KONG_PHASE`` is log) and then fail.
NEEDS_REQUEST = frozenset({
    "kong.request.get_scheme",
    "kong.request.get_host",
    "kong.request.get_port",
    "kong.request.get_forwarded_scheme",
    "kong.request.get_forwarded_host",
    "kong.request.get_forwarded_port",
    "kong.request.get_http_version",
    "kong.request.get_method",
    "kong.request.get_path",
    "kong.request.get_raw_path",
    "kong.request.get_path_with_query",
    "kong.request.get_raw_query",
    "kong.request.get_query_arg",
    "kong.request.get_query",
    "kong.client.get_ip",
    "kong.client.get_forwarded_ip",
    "kong.nginx.get_var",
})

#: lua-resty-core's error for ngx.var / ngx.req in a timer.
TIMER_CONTEXT_ERROR = "API disabled in the current context"


def phase_error(current: str, accepted: frozenset[str]) -> str:
    """``check_phase``'s message, accepted phases in Kong's order."""
    names = ", ".join(p for p in PHASE_ORDER if p in accepted)
    return f"function cannot be called in {current} phase (only in: {names})"


def enforce(method: str, phase: str, in_log_timer: bool, *, exposed_api: bool = True) -> None:
    """Raise the :class:`LuaError` Kong raises for ``method`` called in ``phase``, if any.

    ``exposed_api``: the call comes through the plugin-server bridge (external plugins), whose
    wrappers answer from saved data in the log timer; a Lua plugin calls the PDK itself.
    """
    if in_log_timer and exposed_api and method in SERVED_FROM_SAVED:
        return
    accepted = PHASE_CHECKS.get(method)
    if accepted is not None and phase not in accepted:
        raise LuaError(phase_error(phase, accepted))
    if in_log_timer and method in NEEDS_REQUEST:
        raise LuaError(TIMER_CONTEXT_ERROR)


__all__ = [
    "NEEDS_REQUEST",
    "PHASE_CHECKS",
    "PHASE_ORDER",
    "SERVED_FROM_SAVED",
    "TIMER_CONTEXT_ERROR",
    "enforce",
    "phase_error",
    "phase_mask",
]
