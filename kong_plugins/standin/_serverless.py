"""Kong's bundled ``pre-function`` / ``post-function``: the configured Lua really runs, in LuaJIT.

Written from Kong 3.9's ``kong/plugins/pre-function/{_handler,_schema}.lua`` (shared by
``post-function``, whose ``handler.lua`` only sets priority -1000), ``kong/tools/sandbox.lua`` and
the ``kong-lua-sandbox`` rock it loads:

- config: one array of Lua strings per phase (``certificate``, ``rewrite``, ``access``,
  ``header_filter``, ``body_filter``, ``log``), at least one non-empty; each string must parse
  (``error parsing post-function: <err>`` otherwise), checked when the decK file is loaded;
- each string is compiled in a sandbox (``untrusted_lua = sandbox``, Kong's default): text chunks
  only, an environment of the safe standard functions plus ``kong`` and ``ngx``; the chunk's first
  run either *is* the handler (the 0.1.0 form) or *returns* the handler, which is kept and called
  from then on (0.2.0+: upvalues survive between requests) -- ``compile_phase_array``;
- it runs in the access phase like any access plugin: in a coroutine, where ``kong.response.exit``
  stores the delayed response and yields for good (``kong/pdk/response.lua``), and a Lua error is
  logged and becomes Kong's 500 (``kong/init.lua``, ``execute_access_plugins_iterator``).

The ``kong`` table is an emulation of the PDK subset a gateway guard needs -- ``kong.ctx.shared``
(the request's real shared table, so external plugins' marks are visible), ``kong.request``
(``get_path``, ``get_method``, ``get_header``), ``kong.client.get_ip``, ``kong.response`` (``exit``,
``error``, ``set_header``, ``set_headers``) and ``kong.log`` -- with Kong's argument checks. Indexing
anything else is a Lua error naming what the stand-in does not emulate, so a test never passes on
an API that is silently missing. Only ``access`` functions run: a decK file configuring another
phase is refused when loaded, rather than ignored.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from kong_plugins.errors import ConfigError

from ._context import DelayedResponse, RequestContext
from ._entities import DeckConfig
from ._pdk import make_error, make_exit
from ._rpc import LuaError

PHASES = ("certificate", "rewrite", "access", "header_filter", "body_filter", "log")
SUPPORTED_PHASES = ("access",)

SERVERLESS_SCHEMA: list[dict[str, Any]] = [
    {phase: {"type": "array", "required": True, "default": [], "elements": {"type": "string"}}}
    for phase in PHASES
]

# The Lua side: the sandbox, the emulated ``kong`` table and Kong's compile_phase_array, as one
# chunk. ``current`` is the request binding (a Python object) while a handler runs.
_HOST_LUA = r"""
local python_binding = ...
local current = nil

-- kong-lua-sandbox's safe list (BASE_ENV); string.rep is withheld while sandboxed code runs.
local SAFE = [[
_VERSION assert error ipairs next pairs pcall select tonumber tostring type unpack xpcall
coroutine.create coroutine.resume coroutine.running coroutine.status coroutine.wrap coroutine.yield
math.abs math.acos math.asin math.atan math.atan2 math.ceil math.cos math.cosh math.deg math.exp
math.fmod math.floor math.frexp math.huge math.ldexp math.log math.log10 math.max math.min math.modf
math.pi math.pow math.rad math.random math.sin math.sinh math.sqrt math.tan math.tanh
os.clock os.difftime os.time
string.byte string.char string.find string.format string.gmatch string.gsub string.len string.lower
string.match string.reverse string.sub string.upper
table.insert table.maxn table.remove table.sort
]]

local function strict(name, t)
  return setmetatable(t, { __index = function(_, key)
    error(name .. "." .. tostring(key) .. " is not emulated by the Kong stand-in", 2)
  end })
end

local function check_access()
  if current == nil or current.phase() ~= "access" then
    error("function cannot be called in " .. (current and current.phase() or "init") .. " phase", 3)
  end
end

local function check_header(name, value)
  if type(name) ~= "string" then
    error(string.format("invalid header name %q: got %s, expected string", tostring(name), type(name)), 3)
  end
  local tv = type(value)
  if tv == "table" then
    for _, v in ipairs(value) do
      if type(v) ~= "string" then
        error(string.format("invalid header value in array %q: got %s, expected string", name, type(v)), 3)
      end
    end
  elseif tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
    error(string.format("invalid header value for %q: got %s, expected array of string, string, number or boolean",
                        name, tv), 3)
  end
end

local log = {}
for _, level in ipairs({ "err", "warn", "notice", "info", "debug", "crit", "alert", "emerg" }) do
  log[level] = function(...)
    local parts = {}
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      parts[#parts + 1] = type(v) == "table" and "table" or tostring(v)
    end
    current.log(level, table.concat(parts))
  end
end
setmetatable(log, {
  __call = function(_, ...) return log.notice(...) end,
  __index = function(_, key)
    error("kong.log." .. tostring(key) .. " is not emulated by the Kong stand-in", 2)
  end,
})

local response = {}
function response.exit(status, body, headers)
  check_access()
  if type(status) ~= "number" then error("code must be a number", 2) end
  if status < 100 or status > 599 then error("code must be a number between 100 and 599", 2) end
  if body ~= nil and type(body) ~= "string" and type(body) ~= "table" then
    error("body must be a nil, string or table", 2)
  end
  if headers ~= nil and type(headers) ~= "table" then error("headers must be a nil or table", 2) end
  for k, v in pairs(headers or {}) do check_header(k, v) end
  current.exit(status, body, headers)
  coroutine.yield()
end
function response.error(status, message, headers)
  check_access()
  if type(status) ~= "number" then error("code must be a number", 2) end
  if status < 400 or status > 599 then error("code must be a number between 400 and 599", 2) end
  if message ~= nil and type(message) ~= "string" and type(message) ~= "table" then
    error("message must be a nil, a string or a table", 2)
  end
  if headers ~= nil and type(headers) ~= "table" then error("headers must be a nil or table", 2) end
  current.error(status, message, headers)
  coroutine.yield()
end
function response.set_header(name, value)
  check_access()
  check_header(name, value)
  current.set_header(name, value)
end
function response.set_headers(headers)
  check_access()
  if type(headers) ~= "table" then error("headers must be a table", 2) end
  for k, v in pairs(headers) do check_header(k, v) end
  for k, v in pairs(headers) do current.set_header(k, v) end
end

local request = {}
function request.get_path() return current.path() end
function request.get_method() return current.method() end
function request.get_header(name)
  if type(name) ~= "string" then error("header name must be a string", 2) end
  return current.header(name)
end

local client = {}
function client.get_ip() return current.client_ip() end

local ctx = setmetatable({}, { __index = function(_, key)
  if key == "shared" then return current.shared end
  error("kong.ctx." .. tostring(key) .. " is not emulated by the Kong stand-in", 2)
end })

local kong = strict("kong", {
  ctx = ctx,
  log = log,
  request = strict("kong.request", request),
  response = strict("kong.response", response),
  client = strict("kong.client", client),
})
local ngx = strict("ngx", {})

local BASE = {}
SAFE:gsub("%S+", function(id)
  local module, method = id:match("([^%.]+)%.([^%.]+)")
  if module then
    BASE[module] = BASE[module] or {}
    BASE[module][method] = _G[module][method]
  else
    BASE[id] = _G[id]
  end
end)

local function new_env()
  local env = {}
  for k, v in pairs(BASE) do
    if type(v) == "table" then
      local copy = {}
      for k2, v2 in pairs(v) do copy[k2] = v2 end
      env[k] = copy
    else
      env[k] = v
    end
  end
  env._G = env
  env.kong = kong
  env.ngx = ngx
  return env
end

-- sandbox.sandbox(code, { env = { kong = kong, ngx = ngx } }) in sandbox mode
local function sandbox(code, chunk_name)
  local f, err = load(code, chunk_name, "t", new_env())
  if not f then return nil, err end
  return function(...)
    local results = { pcall(f, ...) }
    if not results[1] then error(results[2], 0) end
    return unpack(results, 2, table.maxn(results))
  end
end

local function parse_error(code, plugin_name)
  local _, err = load(code, "=" .. plugin_name, "t", {})
  if err then return "error parsing " .. plugin_name .. ": " .. err end
  return nil
end

-- compile_phase_array of kong/plugins/pre-function/_handler.lua
local function compile(codes, plugin_name)
  local compiled = {}
  for i = 1, #codes do
    local func = assert(sandbox(codes[i], "=" .. plugin_name))
    local first_run_complete = false
    compiled[i] = function()
      if not first_run_complete then
        first_run_complete = true
        local result = func()          -- may call kong.response.exit (the coroutine never resumes)
        if type(result) == "function" then
          func = result                -- 0.2.0+: the chunk returned the handler, with upvalues
          compiled[i] = func
          func()
        end
        compiled[i] = func
      else
        compiled[i] = func             -- the first run exited early: run it again, for real
        func()
      end
    end
  end
  return function()
    for _, f in ipairs(compiled) do f() end
  end
end

-- execute_access_plugins_iterator: each handler in its own coroutine
local function run(handler, binding)
  current = binding
  local co = coroutine.create(handler)
  local ok, err = coroutine.resume(co)
  current = nil
  if not ok then return false, tostring(err) end
  return true, coroutine.status(co)
end

return { compile = compile, run = run, parse_error = parse_error }
"""


#: The key under which the Lua plugin host sends a string with non-ASCII bytes, as hex.
LUA_BYTES_MARK = "__stand_in_lua_bytes__"


def lua_to_python(value: Any) -> Any:
    """A Lua value as cjson would encode it: array tables -> list, other tables -> dict."""
    lua_type = _LuaHost.get().lua_type
    if lua_type(value) == "table":
        items = list(value.items())
        if len(items) == 1 and items[0][0] == LUA_BYTES_MARK and isinstance(items[0][1], str):
            # a Lua string holding non-ASCII bytes, sent as hex by the plugin host (_luaplugin)
            return bytes.fromhex(items[0][1]).decode("utf-8", "surrogateescape")
        keys = [k for k, _ in items]
        if keys and all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(1, len(keys) + 1)):
            return [lua_to_python(v) for _, v in sorted(items)]
        return {str(k): lua_to_python(v) for k, v in items}
    if lua_type(value) is not None:
        return f"<{lua_type(value)}>"  # functions, coroutines: no JSON form, kept descriptive
    return value


class _Binding:
    """The request as the Lua side sees it (``current``); every method is called from Lua."""

    def __init__(self, ctx: RequestContext, shared: Any, log: Callable[[RequestContext, str, str], None]) -> None:
        self.ctx = ctx
        self.shared = shared
        self._log = log

    def phase(self) -> str:
        return self.ctx.phase

    def path(self) -> str:
        return self.ctx.path

    def method(self) -> str:
        return self.ctx.method

    def header(self, name: str) -> str | None:
        return self.ctx.get_request_header(name)

    def client_ip(self) -> str:
        return self.ctx.client_ip

    def log(self, level: str, message: str) -> None:
        self._log(self.ctx, level, message)

    def set_header(self, name: str, value: Any) -> None:
        converted = lua_to_python(value)
        values = [str(v) for v in converted] if isinstance(converted, list) else [_header_text(converted)]
        self.ctx.set_response_header(str(name), values if len(values) > 1 else values[0])

    def exit(self, status: int, body: Any, headers: Any) -> None:
        self._store(make_exit(int(status), lua_to_python(body), _headers(headers)))

    def error(self, status: int, message: Any, headers: Any) -> None:
        converted = lua_to_python(message)
        text = json.dumps(converted, separators=(",", ":")) if isinstance(converted, dict | list) else converted
        self._store(make_error(int(status), text, _headers(headers)))

    def _store(self, response: Any) -> None:
        # ctx.KONG_EXITED = true; the first delayed response wins (kong/pdk/response.lua)
        self.ctx.exited = True
        if self.ctx.delayed_response is None:
            self.ctx.delayed_response = response


def _header_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _headers(value: Any) -> dict[str, Any] | None:
    converted = lua_to_python(value)
    if not converted:
        return None
    if isinstance(converted, dict):
        return {k: [_header_text(x) for x in v] if isinstance(v, list) else _header_text(v)
                for k, v in converted.items()}
    return None


class _LuaHost:
    """One LuaJIT state for every serverless plugin of the process; lupa serialises its use."""

    _instance: _LuaHost | None = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        try:
            from lupa import luajit21 as lua_module
        except ImportError:  # a platform without the LuaJIT build: the same code runs on Lua 5.x
            import lupa as lua_module
        #: Each lupa build has its own object types: ask the one that made the runtime.
        self.lua_type: Callable[[Any], str | None] = lua_module.lua_type
        self.runtime = lua_module.LuaRuntime(unpack_returned_tuples=True, register_eval=False,
                                             register_builtins=False)
        host = self.runtime.execute(_HOST_LUA)
        self.compile = host["compile"]
        self.run = host["run"]
        self.parse_error = host["parse_error"]
        self.lock = threading.RLock()

    @classmethod
    def get(cls) -> _LuaHost:
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = _LuaHost()
            return cls._instance


class CompiledFunctions(dict[str, Any]):
    """A serverless plugin's filled config, carrying its compiled access handler."""

    access_handler: Any = None


def prepare_serverless(plugin_name: str, conf: dict[str, Any], path: str) -> CompiledFunctions:
    """Fill, check and compile a ``pre-function`` / ``post-function`` config (decK load time)."""
    known = set(PHASES)
    for key in conf:
        if key not in known:
            if key == "functions":
                raise ConfigError(f"{path}.functions", "the 0.x 'functions' field was removed in Kong 3.0; "
                                  "use 'access' (or another phase)")
            raise ConfigError(f"{path}.{key}", "unknown field")
    filled = CompiledFunctions()
    for phase in PHASES:
        value = conf.get(phase, [])
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}.{phase}", "expected an array of strings (Lua code)")
        filled[phase] = list(value)
    if not any(filled[phase] for phase in PHASES):
        names = ", ".join(f"'config.{p}'" for p in PHASES)
        raise ConfigError(path, f"at least one of these fields must be non-empty: {names}")
    for phase in PHASES:
        if filled[phase] and phase not in SUPPORTED_PHASES:
            raise ConfigError(f"{path}.{phase}", f"the Kong stand-in runs only the access phase of "
                              f"{plugin_name}; {phase} functions would be ignored")
    host = _LuaHost.get()
    with host.lock:
        for i, code in enumerate(filled["access"]):
            err = host.parse_error(code, plugin_name)
            if err is not None:
                raise ConfigError(f"{path}.access[{i}]", str(err))
        filled.access_handler = host.compile(host.runtime.table_from(filled["access"]), plugin_name)
    return filled


def serverless_access(
    ctx: RequestContext, conf: dict[str, Any], config: DeckConfig, clock: Callable[[], float]
) -> None:
    """Run the compiled access functions for one request; raises like a stock plugin's access."""
    handler = getattr(conf, "access_handler", None)
    if handler is None:
        return
    host = _LuaHost.get()
    with host.lock:
        shared = host.runtime.table_from(ctx.ctx_shared, recursive=True)
        ok, status = host.run(handler, _Binding(ctx, shared, ctx.emit))
        # kong.ctx.shared is one table for all plugins: keep what the Lua wrote for later phases
        written = lua_to_python(shared)
    ctx.ctx_shared.clear()
    if isinstance(written, dict):
        ctx.ctx_shared.update(written)
    if not ok:
        raise LuaError(str(status))
    if status == "suspended":  # kong.response.exit/error yielded: the handler never resumes
        raise DelayedResponse()


__all__ = ["PHASES", "SERVERLESS_SCHEMA", "CompiledFunctions", "lua_to_python", "prepare_serverless",
           "serverless_access"]
