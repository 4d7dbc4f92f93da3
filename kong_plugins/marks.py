"""Decision marks: how the suite's security plugins let Kong fail closed when they cannot decide.

Kong 3.9 OSS proxies a request when an external plugin's RPC fails: a dead plugin server, a
refused connection or a timeout is only logged (``kong/runloop/plugin_servers/rpc/mp_rpc.lua``,
``Rpc:handle_event``), so a security plugin that never ran looks exactly like one that allowed the
request. The pattern that closes the hole:

1. each suite plugin with ``decision_mark = true`` records its decision in ``kong.ctx.shared``
   under :func:`mark_key` -- ``{"decision": "allow" | "flag" | "shadow" | "degraded" |
   "failed_open", ...}`` -- before its access handler returns; a refusal needs no mark (the
   plugin's ``kong.response.exit`` ends the phase, so nothing below it runs);
2. Kong's bundled ``post-function`` (priority -1000, the last access plugin) runs the Lua of
   :func:`guard_lua` on the route and answers ``503`` when a plugin the route requires left no
   mark.

Which failures close: the plugin server is down or unreachable, its RPC times out or breaks, the
event is abandoned. Which do not: a plugin that *decided* to let a request through -- its storage
is down with ``failure_mode = open``, it runs in shadow mode, or its handler raised while it is
configured to fail open (the runtime then marks ``failed_open`` on its behalf, see
``kong_plugins.runtime.server``). The operator's fail-open choice stays a choice; an outage of the
plugin itself is no longer a silent bypass.

Cost, in PDK round trips on the allow path (each is one RPC, ~60 us here):

- ai-tier-quota: **none** wherever it sets rate-limit headers (every route with a tier limit):
  that write, ``kong.response.set_headers``, is replaced by ``kong.ctx.shared.set`` of a mark
  carrying the headers as ``response_headers``; the guard applies them (``kong.response.set_headers``
  in Lua, no RPC). One where it has no header to set (no limit applies to the caller, e.g. the
  internal tier on kong.yml's docqa route). When a later plugin refuses the request the guard does
  not run, so the RateLimit headers are absent from that refusal.
- ai-extraction-guard: **none** when it reads a body (the mark carries the body it already hands
  to its log phase through ``kong.ctx.shared``), one when the request has no body to analyse.
- ai-prompt-inspector: **one**. Its allow path makes only reads (Content-Type, body) and Kong has
  no PDK call that reads and writes at once, so the mark is one more round trip.

The mark lives in ``kong.ctx.shared``, which only Kong and its plugins can write: nothing a client
sends can forge it (``kong/pdk/ctx.lua``: the table is per request, in ``ngx.ctx``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kong_plugins import schema as s

#: Prefix of the ``kong.ctx.shared`` keys holding the marks.
MARK_PREFIX = "ai_suite.decided."

#: The field every suite plugin embeds in its schema.
DECISION_MARK_FIELD = s.Field("decision_mark", s.Boolean(
    default=False,
    description="Record this plugin's decision in kong.ctx.shared so that the fail-closed post-function "
                "guard can refuse (503) requests the plugin never decided, e.g. when its server is down.",
), required=True)

GUARD_STATUS = 503
GUARD_MESSAGE = "Service temporarily unavailable"


def mark_key(plugin_name: str) -> str:
    """The ``kong.ctx.shared`` key of a plugin's mark."""
    return MARK_PREFIX + plugin_name


def mark_value(decision: str, *, response_headers: Mapping[str, str] | None = None,
               **extra: Any) -> dict[str, Any]:
    """A mark: the decision, the response headers the guard must set, and plugin-specific data."""
    # A Lua table cannot hold nil: unset extras are left out rather than sent as null.
    value: dict[str, Any] = {"decision": decision, **{k: v for k, v in extra.items() if v is not None}}
    if response_headers:
        value["response_headers"] = dict(response_headers)
    return value


def guard_lua(required: Sequence[str]) -> str:
    """The Lua for a route's ``post-function`` ``config.access``: 503 unless every plugin marked.

    It returns a function (the 0.2.0+ form of ``kong/plugins/pre-function/_handler.lua``), so the
    list is built once per worker and each request only indexes ``kong.ctx.shared``.
    """
    for name in required:
        if not name or '"' in name or "\\" in name:
            raise ValueError(f"not a plugin name: {name!r}")
    names = ", ".join(f'"{name}"' for name in required)
    return f"""-- fail-closed guard: refuse what a required security plugin did not decide
local required = {{ {names} }}
return function()
  local shared = kong.ctx.shared
  for i = 1, #required do
    local mark = shared["{MARK_PREFIX}" .. required[i]]
    if mark == nil then
      kong.log.err("fail-closed: ", required[i], " left no decision (plugin server down or failing)")
      return kong.response.exit({GUARD_STATUS}, {{ message = "{GUARD_MESSAGE}" }})
    end
    if type(mark) == "table" and type(mark.response_headers) == "table" then
      kong.response.set_headers(mark.response_headers)
    end
  end
end
"""


__all__ = ["DECISION_MARK_FIELD", "GUARD_MESSAGE", "GUARD_STATUS", "MARK_PREFIX", "guard_lua", "mark_key",
           "mark_value"]
