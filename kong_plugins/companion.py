"""``ai-suite-context``: the suite's small Lua companion plugin, shipped as package data.

An external plugin cannot call ``kong.log.serialize()`` in the access phase: the plugin-server
bridge runs ``kong.log.serialize()`` there (``exposed_api`` in
``kong/runloop/plugin_servers/plugin.lua``) and serialize is a log-phase function
(``kong/pdk/log.lua``, ``prepare_serialize`` -> ``check_phase(PHASES_LOG)``): a Lua error, and
Kong's 500. Asking for each fact separately costs one plugin-server round trip per fact. The
companion runs inside Kong (no round trip), after the authentication plugins, and leaves one
serialize-shaped table in ``kong.ctx.shared[FACTS_KEY]``; the suite's plugins read it with one
``kong.ctx.shared.get`` (``kong_plugins.identity.gather_facts``), and fall back to individual
PDK calls, with a warning, when it is not enabled.

In the log phase it completes ai-extraction-guard's hand-off (the table the guard's access phase
left in ``kong.ctx.shared`` for its log timer) with the response's size as serialize reports it
(``var.bytes_sent``) and the response tap's summary: the guard's log timer reads
``kong.ctx.shared`` by reference after Kong's whole log phase (``build_phases`` in
``plugin.lua``), so each value is a round trip it does not make.

Install: copy :data:`LUA_DIR` to ``kong/plugins/ai-suite-context`` on Kong's Lua path (the image:
``/usr/local/share/lua/5.1/kong/plugins/ai-suite-context``), add ``ai-suite-context`` to
``plugins`` and enable it globally (``kong.yml``).
"""

from __future__ import annotations

import re
from importlib.resources import files
from importlib.resources.abc import Traversable

NAME = "ai-suite-context"
#: The ``kong.ctx.shared`` key the companion writes (a plugin-only table: clients cannot set it).
FACTS_KEY = "ai_suite_facts"
#: The Lua sources: ``handler.lua`` and ``schema.lua``, laid out as Kong's ``kong.plugins.<name>``.
LUA_DIR: Traversable = files("kong_plugins").joinpath("lua", "kong", "plugins", NAME)


def handler_source() -> str:
    return LUA_DIR.joinpath("handler.lua").read_text(encoding="utf-8")


def schema_source() -> str:
    return LUA_DIR.joinpath("schema.lua").read_text(encoding="utf-8")


def _handler_constant(name: str) -> str:
    found = re.search(rf"^\s*{name}\s*=\s*\"?([\w.]+)\"?,\s*$", handler_source(), re.M)
    if found is None:  # pragma: no cover - the shipped handler declares both
        raise RuntimeError(f"{NAME}/handler.lua declares no {name}")
    return found.group(1)


#: Read from handler.lua, so the Python side can never disagree with what Kong loads.
PRIORITY = int(_handler_constant("PRIORITY"))
VERSION = _handler_constant("VERSION")

__all__ = ["FACTS_KEY", "LUA_DIR", "NAME", "PRIORITY", "VERSION", "handler_source", "schema_source"]
