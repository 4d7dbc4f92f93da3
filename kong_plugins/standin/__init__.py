"""A Kong 3.9 stand-in that drives external plugin-server processes exactly as Kong does.

It exists for three users: the suite's own protocol-level tests, the no-Docker demo, and plugin
authors who want to test their kong-pdk plugins without a Kong (see the ``kong_standin`` pytest
fixture in ``kong_plugins.testing.pytest_plugin``).

::

    from kong_plugins.standin import KongStandIn, PluginServerSpec

    gw = KongStandIn.from_deck("kong.yml", servers=[PluginServerSpec.suite("ai-tier-quota", prefix=tmp)])
    with gw:
        r = gw.request("POST", "/v1/chat/completions", headers={"apikey": "k"}, body=b"{}")
        gw.wait_log_phase()

Everything Kong-specific is written from Kong's Lua source (Kong/kong 3.9):
``kong/runloop/plugin_servers/{process,plugin}.lua``, ``rpc/mp_rpc.lua``, ``kong/init.lua``,
``kong/pdk/*.lua`` -- including each function's ``check_phase``: a PDK call in a phase Kong forbids
is a Lua error, Kong's 500 in access (``_phases.py``) -- and
``kong/plugins/{key-auth,jwt,acl,ip-restriction,request-size-limiting}``; each module names the
files it follows. Lua plugins really run in LuaJIT: ``pre-function``/``post-function`` and the
suite's companion ``ai-suite-context`` (``_serverless.py``, ``_luaplugin.py``).

Errors::

    ConfigError          bad decK file or plugin config (raised by from_deck / start)
    PluginServerError    a server's query_cmd or start_cmd failed, or its socket never came up
"""

from ._context import DelayedResponse
from ._gateway import (
    KongStandIn,
    LogRecord,
    StandInResponse,
    UpstreamHandler,
    UpstreamRequest,
    UpstreamResponse,
    echo_upstream,
)
from ._process import PluginInfo, PluginServerError, PluginServerSpec, query_plugin_info
from ._rpc import DEFAULT_RPC_TIMEOUT, LuaError

__all__ = [
    "DEFAULT_RPC_TIMEOUT",
    "DelayedResponse",
    "KongStandIn",
    "LogRecord",
    "LuaError",
    "PluginInfo",
    "PluginServerError",
    "PluginServerSpec",
    "StandInResponse",
    "UpstreamHandler",
    "UpstreamRequest",
    "UpstreamResponse",
    "echo_upstream",
    "query_plugin_info",
]
