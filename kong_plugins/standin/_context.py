"""The per-request state Kong's PDK reads and writes (``ngx.var``, ``ngx.ctx``, ``kong.ctx.shared``...).

One :class:`RequestContext` per ``KongStandIn.request``; the PDK emulation in ``_pdk.py`` and the
stock plugins in ``_stock.py`` operate on it, and the log phase reads a :class:`SavedData`
snapshot of it as ``plugin.lua`` saves one for its log timer.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from ._rpc import RpcAccount

if TYPE_CHECKING:
    from ._pdk import Pdk


class DelayedResponse(Exception):
    """``kong.response.exit``/``error`` ran: the handler's coroutine yields and is never resumed.

    ``kong/pdk/response.lua`` stores ``ctx.delayed_response`` and calls ``coroutine.yield()`` when
    ``ctx.delay_response`` is set (access phase); in the buffered ``response`` phase ``ngx.exit``
    ends the request handler instead. Either way the plugin server never gets a Step back.
    """


@dataclass
class ExitResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]]


@dataclass
class SavedData:
    """What ``build_phases`` in ``plugin.lua`` passes to the log timer."""

    plugin_name: str
    serialize_data: dict[str, Any]
    ngx_ctx: dict[str, Any]
    ctx_shared: dict[str, Any]
    request_headers: dict[str, Any]
    response_headers: dict[str, Any]
    response_status: int
    req_start_time: float


def parse_query(raw: str, max_args: int | None = None) -> dict[str, Any]:
    """``ngx.req.get_uri_args``: ``a=1&a=2`` -> list, bare ``flag`` -> True, ``a=`` -> ""."""
    out: dict[str, Any] = {}
    count = 0
    for part in raw.split("&") if raw else []:
        if not part:
            continue
        if max_args is not None and count >= max_args:
            break
        count += 1
        if "=" in part:
            k, v = part.split("=", 1)
            value: Any = unquote_plus(v)
        else:
            k, value = part, True
        key = unquote_plus(k)
        if not key:
            continue
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


def headers_multimap(headers: list[tuple[str, str]], max_headers: int | None = None) -> dict[str, Any]:
    """``ngx.req.get_headers``: lower-cased names, a repeated header becomes a list."""
    out: dict[str, Any] = {}
    for count, (name, value) in enumerate(headers):
        if max_headers is not None and count >= max_headers:
            break
        key = name.lower()
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


@dataclass
class RequestContext:
    """One request's state across phases."""

    method: str
    path: str
    raw_query: str
    scheme: str
    host: str
    port: int
    client_ip: str
    start_time: float
    request_headers: list[tuple[str, str]]
    body: bytes
    client_body_buffer_size: int
    route: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    phase: str = "access"
    consumer: dict[str, Any] | None = None
    credential: dict[str, Any] | None = None
    ctx_shared: dict[str, Any] = field(default_factory=dict)
    ngx_ctx: dict[str, Any] = field(default_factory=dict)
    #: ``kong.response.set_header`` and friends, applied to the downstream response.
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_status: int | None = None
    response_body: bytes | None = None
    delayed_response: ExitResponse | None = None
    unexpected: bool = False
    exited: bool = False
    proxied: bool = False
    #: A collected plugin has a ``response`` handler: Kong buffers the upstream response into
    #: ngx.ctx (``buffered_status/headers/body``), where ``kong.service.response`` reads it.
    buffered_proxying: bool = False
    upstream_path: str | None = None
    upstream_query: str | None = None
    upstream_body: bytes | None = None
    service_response_status: int | None = None
    service_response_headers: list[tuple[str, str]] = field(default_factory=list)
    service_response_body: bytes | None = None
    saved: SavedData | None = None
    current_plugin: str = ""
    current_plugin_id: str = ""
    account: RpcAccount = field(default_factory=RpcAccount)
    pdk_calls: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, float] = field(default_factory=dict)
    #: perf_counter() when the stand-in began the request: latencies are measured from it, so an
    #: injected ``start_time`` (replays, tests) keeps ``started_at + latencies.request`` consistent.
    received_perf: float = field(default_factory=time.perf_counter)
    #: The plugin whose handler ended the request (exit or Lua error); None when proxied.
    decided_by: str | None = None
    #: RPC seconds (send to answer) per plugin per phase, for latency reports.
    rpc_seconds_by_plugin: dict[tuple[str, str], float] = field(default_factory=dict)
    #: The gateway's log sink (``kong.log.*`` of in-process plugins writes through it).
    emit: Callable[[RequestContext, str, str], None] = field(default=lambda ctx, level, message: None)
    #: The gateway's PDK emulation: in-process Lua plugins (``_luaplugin.py``) call it.
    pdk: Pdk | None = None

    # -- request-header helpers (ngx.req.set_header semantics) --------------------------------------
    def get_request_header(self, name: str) -> str | None:
        key = name.lower().replace("_", "-")
        for k, v in self.request_headers:
            if k.lower().replace("_", "-") == key:
                return v
        return None

    def set_request_header(self, name: str, value: str | list[str]) -> None:
        self.clear_request_header(name)
        values = value if isinstance(value, list) else [value]
        self.request_headers.extend((name, v) for v in values)

    def add_request_header(self, name: str, value: str) -> None:
        self.request_headers.append((name, value))

    def clear_request_header(self, name: str) -> None:
        key = name.lower()
        self.request_headers = [(k, v) for k, v in self.request_headers if k.lower() != key]

    # -- response-header helpers ---------------------------------------------------------------------
    def set_response_header(self, name: str, value: str | list[str]) -> None:
        self.clear_response_header(name)
        values = value if isinstance(value, list) else [value]
        self.response_headers.extend((name, v) for v in values)

    def clear_response_header(self, name: str) -> None:
        key = name.lower()
        self.response_headers = [(k, v) for k, v in self.response_headers if k.lower() != key]

    def count_pdk_call(self, plugin: str, phase: str) -> None:
        with self.lock:
            per_plugin = self.pdk_calls.setdefault(plugin, {})
            per_plugin[phase] = per_plugin.get(phase, 0) + 1

    @property
    def request_uri(self) -> str:
        return self.path + (f"?{self.raw_query}" if self.raw_query else "")
