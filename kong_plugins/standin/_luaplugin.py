"""Lua plugins the suite ships (``ai-suite-context``): their real ``handler.lua`` runs in LuaJIT.

Kong loads a Lua plugin as the modules ``kong.plugins.<name>.handler`` and ``.schema``
(``kong/db/dao/plugins.lua``, ``load_plugin_handler`` / ``load_plugin_schema``): the handler is a
table with ``PRIORITY``, ``VERSION`` and one method per phase, called as ``handler:access(conf)``
in the access runloop (``kong/init.lua``, ``execute_access_plugins_iterator``: a coroutine per
plugin, a Lua error logged and answered with Kong's 500, ``kong.response.exit`` yielding for good).

The stand-in loads both files into the LuaJIT state of the serverless plugins (``_serverless.py``)
with a ``kong`` table whose functions call the stand-in's PDK emulation (``_pdk.Pdk.invoke``) --
the same functions, argument checks and phase checks (``_phases.py``) an external plugin meets,
minus the plugin-server bridge's saved-data wrappers, which only external plugins get.
``kong.ctx.shared`` is the request's shared table (external plugins read what the Lua wrote),
``ngx.var`` reads the request's nginx variables and ``ngx.ctx`` its ``ngx.ctx``. Anything else
(``ngx.*``, ``kong.ctx.plugin``, typedefs beyond the few schemas use) is a Lua error naming what
is not emulated, so a test never passes on a silently missing API. ``access`` and ``log``
handlers are run (the log handler in Kong's log phase, before the external plugins' log timers,
which see its writes to ``kong.ctx.shared``: ``plugin.lua`` saves that table by reference); a
plugin defining other phases is refused when loaded. A Lua table read from ``kong.ctx.shared`` is a
copy here (in Kong, the table itself): a handler that changes one stores it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kong_plugins.errors import ConfigError
from kong_plugins.schema import fill_defaults

from ._context import DelayedResponse, RequestContext
from ._entities import DeckConfig
from ._rpc import LuaError
from ._serverless import _LuaHost, lua_to_python

if TYPE_CHECKING:
    from ._pdk import Pdk

_PLUGIN_LUA = r"""
local binding = nil   -- the request being handled (a Python _PluginBinding), nil between requests

local function not_emulated(name)
  return function(_, key)
    error(name .. "." .. tostring(key) .. " is not emulated by the Kong stand-in", 2)
  end
end

-- one PDK call through the stand-in's emulation (phase checks included)
local function call(path, ...)
  if binding == nil then
    error(path .. " called outside a request", 3)
  end
  local status, value = binding.pdk(path, ...)
  if status == "error" then
    error(value, 3)
  elseif status == "exit" then
    coroutine.yield()               -- kong.response.exit/error: the coroutine never resumes
  end
  return value
end

local NAMESPACES = {
  ["kong.request"] = true, ["kong.response"] = true, ["kong.client"] = true, ["kong.router"] = true,
  ["kong.service"] = true, ["kong.service.request"] = true, ["kong.service.response"] = true,
  ["kong.node"] = true, ["kong.nginx"] = true, ["kong.plugin"] = true, ["kong.log"] = true,
}

local function namespace(prefix)
  local t = {}
  local mt = {
    __index = function(_, key)
      local path = prefix .. "." .. tostring(key)
      local value
      if NAMESPACES[path] then
        value = namespace(path)
      else
        value = function(...) return call(path, ...) end
      end
      rawset(t, key, value)
      return value
    end,
  }
  if prefix == "kong.log" then
    mt.__call = function(_, ...) return call("kong.log.notice", ...) end
  end
  return setmetatable(t, mt)
end

-- A Lua string is bytes; lupa hands Lua strings to Python as UTF-8 text and fails on any other
-- bytes (a request body can hold anything). Strings with non-ASCII bytes cross as hex under
-- BYTES_MARK and become surrogate-escaped text again on the Python side (lua_to_python).
local BYTES_MARK = "__stand_in_lua_bytes__"

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function for_python(value, depth)
  if type(value) == "string" and value:find("[\128-\255]") then
    return { [BYTES_MARK] = hex(value) }
  elseif type(value) == "table" and depth < 64 then
    local copy = {}
    for k, v in pairs(value) do
      copy[k] = for_python(v, depth + 1)
    end
    return copy
  end
  return value
end

local shared = setmetatable({}, {
  __index = function(_, key) return binding.shared_get(key) end,
  __newindex = function(_, key, value) binding.shared_set(key, for_python(value, 0)) end,
})

local kong = namespace("kong")
rawset(kong, "ctx", setmetatable({ shared = shared }, { __index = not_emulated("kong.ctx") }))

local ngx = setmetatable({
  var = setmetatable({}, {
    __index = function(_, name) return binding.var(name) end,
    __newindex = function(_, name) error("ngx.var." .. tostring(name) .. " is read-only in the Kong stand-in", 2) end,
  }),
  ctx = setmetatable({}, {
    __index = function(_, key) return binding.ngx_ctx_get(key) end,
    __newindex = function(_, key, value) binding.ngx_ctx_set(key, value) end,
  }),
}, { __index = not_emulated("ngx") })

-- kong.db.schema.typedefs: the definitions plugin schemas commonly use
local HTTP_PROTOCOLS = { "grpc", "grpcs", "http", "https" }
local typedefs = setmetatable({
  no_consumer = { type = "foreign", reference = "consumers", eq = "__null__" },
  no_route = { type = "foreign", reference = "routes", eq = "__null__" },
  no_service = { type = "foreign", reference = "services", eq = "__null__" },
  protocols_http = { type = "set", required = true, default = HTTP_PROTOCOLS,
                     elements = { type = "string", one_of = HTTP_PROTOCOLS } },
}, { __index = not_emulated("typedefs") })

local MODULES = { ["kong.db.schema.typedefs"] = typedefs }

local function require_stub(name)
  local module = MODULES[name]
  if module == nil then
    error("module '" .. tostring(name) .. "' is not emulated by the Kong stand-in", 2)
  end
  return module
end

local function new_env()
  return {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    rawget = rawget, rawset = rawset, select = select, setmetatable = setmetatable,
    getmetatable = getmetatable, tonumber = tonumber, tostring = tostring, type = type,
    unpack = unpack, xpcall = xpcall, string = string, table = table, math = math,
    require = require_stub, kong = kong, ngx = ngx,
  }
end

local PHASES = { "init_worker", "certificate", "rewrite", "access", "response", "header_filter",
                 "body_filter", "log", "preread" }

local function load_module(code, chunk_name)
  local chunk, err = load(code, chunk_name, "t", new_env())
  if not chunk then
    return nil, err
  end
  local ok, module = pcall(chunk)
  if not ok then
    return nil, tostring(module)
  end
  return module
end

local function load_plugin_table(name, handler_code, schema_code)
  local schema, err = load_module(schema_code, "=" .. name .. "/schema.lua")
  if schema == nil then
    return nil, err
  end
  local handler
  handler, err = load_module(handler_code, "=" .. name .. "/handler.lua")
  if handler == nil then
    return nil, err
  end
  if type(handler) ~= "table" or type(handler.PRIORITY) ~= "number" or type(handler.VERSION) ~= "string" then
    return nil, "handler.lua must return a table with a numeric PRIORITY and a string VERSION"
  end
  if type(schema) ~= "table" or schema.name ~= name or type(schema.fields) ~= "table" then
    return nil, "schema.lua must return a table named '" .. name .. "' with fields"
  end
  local config_fields, no_consumer = nil, false
  for _, field in ipairs(schema.fields) do
    for key, def in pairs(field) do
      if key == "config" then
        config_fields = def.fields
      elseif key == "consumer" and def.eq == "__null__" then
        no_consumer = true
      end
    end
  end
  if type(config_fields) ~= "table" then
    return nil, "schema.lua declares no config record"
  end
  local phases = {}
  for _, phase in ipairs(PHASES) do
    if type(handler[phase]) == "function" then
      phases[#phases + 1] = phase
    end
  end
  return {
    handler = handler, priority = handler.PRIORITY, version = handler.VERSION, phases = phases,
    config_fields = config_fields, no_consumer = no_consumer,
  }
end

local function load_plugin(name, handler_code, schema_code)
  local plugin, err = load_plugin_table(name, handler_code, schema_code)
  if plugin == nil then
    return false, err
  end
  return true, plugin
end

-- execute_access_plugins_iterator: the handler in its own coroutine; the log phase's
-- execute_collected_plugins_iterator calls it the same way as far as the stand-in can tell
local function run_phase(handler, phase, conf, request)
  binding = request
  local co = coroutine.create(function() return handler[phase](handler, conf) end)
  local ok, err = coroutine.resume(co)
  binding = nil
  if not ok then
    return false, tostring(err)
  end
  return true, coroutine.status(co)
end

return { load_plugin = load_plugin, run_phase = run_phase }
"""


class _PluginBinding:
    """One request as the Lua side sees it; every method is called from Lua."""

    def __init__(self, ctx: RequestContext, pdk: Pdk, to_lua: Callable[[Any], Any]) -> None:
        self.ctx = ctx
        self._pdk = pdk
        self._to_lua = to_lua

    def pdk(self, method: str, *args: Any) -> tuple[str, Any]:
        try:
            value = self._pdk.invoke(self.ctx, method, [lua_to_python(a) for a in args], exposed_api=False)
        except LuaError as exc:
            return "error", str(exc)
        except DelayedResponse:
            return "exit", None
        return "ok", self._to_lua(value)

    def shared_get(self, key: Any) -> Any:
        return self._to_lua(self.ctx.ctx_shared.get(key)) if isinstance(key, str) else None

    def shared_set(self, key: Any, value: Any) -> None:
        if not isinstance(key, str):
            raise LuaError("kong.ctx.shared keys are strings in the Kong stand-in")
        if value is None:
            self.ctx.ctx_shared.pop(key, None)
        else:
            self.ctx.ctx_shared[key] = lua_to_python(value)

    def var(self, name: Any) -> Any:
        return self._pdk.nginx_get_var(self.ctx, name)

    def ngx_ctx_get(self, key: Any) -> Any:
        return self._to_lua(self.ctx.ngx_ctx.get(key)) if isinstance(key, str) else None

    def ngx_ctx_set(self, key: Any, value: Any) -> None:
        if isinstance(key, str):
            self.ctx.ngx_ctx[key] = lua_to_python(value)


@dataclass(frozen=True)
class LuaPlugin:
    """A loaded Lua plugin: its handler table, priority, version and config schema."""

    name: str
    priority: int
    version: str
    phases: tuple[str, ...]
    config_schema: list[dict[str, Any]]
    no_consumer: bool
    handler: Any

    def prepare(self, conf: dict[str, Any], path: str) -> dict[str, Any]:
        """Fill the config from schema.lua and refuse unknown fields, as Kong's schema validation does."""
        known = {next(iter(f)) for f in self.config_schema}
        for key in conf:
            if key not in known:
                raise ConfigError(f"{path}.{key}", "unknown field")
        return fill_defaults(self.config_schema, conf)

    def access(self, ctx: RequestContext, conf: dict[str, Any], config: DeckConfig,
               clock: Callable[[], float]) -> None:
        """``handler:access(conf)`` for one request; raises like any plugin's access."""
        self._run_phase("access", ctx, conf)

    def log(self, ctx: RequestContext, conf: dict[str, Any], config: DeckConfig,
            clock: Callable[[], float]) -> None:
        """``handler:log(conf)``: in Kong's log phase, before any external plugin's log timer runs
        (those are ``ngx.timer.at(0)`` callbacks; a log handler cannot yield)."""
        self._run_phase("log", ctx, conf)

    def _run_phase(self, phase: str, ctx: RequestContext, conf: dict[str, Any]) -> None:
        if ctx.pdk is None:  # pragma: no cover - the gateway always sets it
            raise LuaError("no PDK bound to the request")
        host = _LuaHost.get()
        with host.lock:
            runtime = host.runtime

            def to_lua(value: Any) -> Any:
                value = _lua_strings(value)
                if isinstance(value, dict | list):
                    return runtime.table_from(value, recursive=True)
                return value

            lua = _plugin_lua(host)
            ok, status = lua["run_phase"](self.handler, phase, to_lua(dict(conf)), _PluginBinding(ctx, ctx.pdk, to_lua))
        if not ok:
            raise LuaError(str(status))
        if status == "suspended":  # kong.response.exit/error yielded: the handler never resumes
            raise DelayedResponse()


def _lua_strings(value: Any) -> Any:
    """``value`` with its non-ASCII text as the bytes Lua holds (lupa would encode text strictly
    as UTF-8, and a surrogate-escaped body is not): Lua strings are bytes."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {k: _lua_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lua_strings(v) for v in value]
    return value


#: The phases of a Lua plugin the stand-in runs.
_RUN_PHASES = frozenset({"access", "log"})
_LOADED: dict[tuple[str, str, str], LuaPlugin] = {}
_LOAD_LOCK = threading.Lock()


def _plugin_lua(host: _LuaHost) -> Any:
    lua = getattr(host, "plugin_lua", None)
    if lua is None:
        lua = host.runtime.execute(_PLUGIN_LUA)
        host.plugin_lua = lua  # type: ignore[attr-defined]
    return lua


def load_lua_plugin(name: str, handler_code: str, schema_code: str) -> LuaPlugin:
    """Load ``handler.lua`` + ``schema.lua`` once; a broken plugin is a :class:`ConfigError`."""
    key = (name, handler_code, schema_code)
    with _LOAD_LOCK:
        if key in _LOADED:
            return _LOADED[key]
        host = _LuaHost.get()
        with host.lock:
            ok, loaded = _plugin_lua(host)["load_plugin"](name, handler_code, schema_code)
            if not ok:
                raise ConfigError(f"plugins[{name}]", f"cannot load the Lua plugin: {loaded}")
            phases = tuple(str(p) for p in lua_to_python(loaded["phases"]) or [])
            fields = lua_to_python(loaded["config_fields"])
            plugin = LuaPlugin(
                name=name,
                priority=int(loaded["priority"]),
                version=str(loaded["version"]),
                phases=phases,
                config_schema=list(fields) if isinstance(fields, list) else [],
                no_consumer=bool(loaded["no_consumer"]),
                handler=loaded["handler"],
            )
        if set(plugin.phases) - _RUN_PHASES:
            raise ConfigError(f"plugins[{name}]", f"the Kong stand-in runs only the access and log phases of Lua "
                              f"plugins; {name} also defines {sorted(set(plugin.phases) - _RUN_PHASES)}")
        _LOADED[key] = plugin
        return plugin


__all__ = ["LuaPlugin", "load_lua_plugin"]
