"""The request facts of the access (or response) phase, in as few PDK round trips as possible.

``kong.log.serialize()`` is a log-phase function (``kong/pdk/log.lua``, ``prepare_serialize`` ->
``check_phase(PHASES_LOG)``); outside the log timer the plugin-server bridge calls it for real
(``kong/runloop/plugin_servers/plugin.lua``, ``exposed_api``) and the Lua error makes the request a
500. So before the log phase the facts come from:

1. the companion plugin ``ai-suite-context`` (:mod:`kong_plugins.companion`), which Kong runs
   in-process after the authentication plugins and which leaves one serialize-shaped table in
   ``kong.ctx.shared``: **one** ``kong.ctx.shared.get``. Only plugins write ``kong.ctx.shared``;
   a client cannot set it.
2. without the companion (the get answers nil), the individual PDK calls the caller's config needs
   -- correct, but one round trip each (:meth:`FactsNeeded.fallback_calls`) -- and a warning, once
   per process, naming the companion.

Each PDK function used is legal where the suite calls it (``access`` and the buffered ``response``
phase): ``kong.client.get_consumer/get_credential`` (``AUTH_AND_LATER``, ``kong/pdk/client.lua``),
``kong.router.get_route/get_service`` (``kong/pdk/router.lua``), ``kong.client.get_forwarded_ip``,
``kong.request.get_start_time/get_method/get_path_with_query`` (``kong/pdk/request.lua``) and
``kong.nginx.get_var`` (an ``exposed_api`` wrapper without a phase check). The values equal what
serialize reports in the log phase (same ``ngx.ctx`` entities, ``var.remote_addr``,
``var.request_uri``, ``var.request_length``, start time), so access-phase state can be matched in
the log phase.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from kong_plugins.companion import FACTS_KEY, NAME

from ._facts import FactsNeeded, RequestFacts, parse_facts

log = logging.getLogger("kong_plugins.identity")


class _Shared(Protocol):
    def get(self, key: str) -> Any: ...


class _Ctx(Protocol):
    @property
    def shared(self) -> _Shared: ...


class _Client(Protocol):
    def get_consumer(self) -> dict[str, Any] | None: ...
    def get_credential(self) -> dict[str, Any] | None: ...
    def get_forwarded_ip(self) -> str: ...


class _Router(Protocol):
    def get_route(self) -> dict[str, Any] | None: ...
    def get_service(self) -> dict[str, Any] | None: ...


class _Request(Protocol):
    def get_start_time(self) -> float: ...
    def get_method(self) -> str: ...
    def get_path_with_query(self) -> str: ...


class _Nginx(Protocol):
    def get_var(self, name: str) -> str | None: ...


class FactsPDK(Protocol):
    """The PDK subset :func:`gather_facts` uses (``kong_plugins.pdk.Kong`` satisfies it)."""

    @property
    def ctx(self) -> _Ctx: ...
    @property
    def client(self) -> _Client: ...
    @property
    def router(self) -> _Router: ...
    @property
    def request(self) -> _Request: ...
    @property
    def nginx(self) -> _Nginx: ...


_warned = threading.Event()


def _warn_once(needed: FactsNeeded) -> None:
    if _warned.is_set():
        return
    _warned.set()
    log.warning(
        "kong.ctx.shared has no %r: the companion plugin %s is not enabled, so request facts cost %d PDK "
        "round trips per request instead of 1; install it and enable it globally "
        "(README.md section 'The reference deployment')",
        FACTS_KEY, NAME, 1 + needed.fallback_calls)


def gather_facts(kong: FactsPDK, needed: FactsNeeded) -> RequestFacts:
    """The request as Kong resolved it, before the log phase (see the module docstring)."""
    published = kong.ctx.shared.get(FACTS_KEY)
    if published is not None:
        return parse_facts(published, needed)
    _warn_once(needed)
    data: dict[str, Any] = {}
    request: dict[str, Any] = {}
    if needed.consumer:
        data["consumer"] = kong.client.get_consumer()
    if needed.credential:
        credential = kong.client.get_credential()
        if isinstance(credential, dict):
            data["authenticated_entity"] = {"id": credential.get("id")}
    if needed.route:
        data["route"] = kong.router.get_route()
    if needed.service:
        data["service"] = kong.router.get_service()
    if needed.client_ip:
        data["client_ip"] = kong.client.get_forwarded_ip()
    if needed.started_at:
        data["started_at"] = kong.request.get_start_time()
    if needed.request_line:
        request["method"] = kong.request.get_method()
        request["uri"] = kong.request.get_path_with_query()
    if needed.size:
        size = kong.nginx.get_var("request_length")
        request["size"] = int(size) if isinstance(size, str) and size.isdigit() else size
    if needed.tls:
        request["tls"] = {"client_verify": kong.nginx.get_var("ssl_client_verify")}
    data["request"] = request
    return parse_facts(data, needed)


def reset_companion_warning() -> None:
    """Tests: let the next fallback warn again."""
    _warned.clear()


__all__ = ["FactsNeeded", "FactsPDK", "gather_facts", "reset_companion_warning"]
