"""The Kong 3.9 stand-in: routing, the plugin phases, the upstream call and the response.

Phases follow ``kong/init.lua`` (3.9):

- **access** -- ``execute_access_plugins_iterator``: plugins in priority order (highest first),
  each in its own coroutine with ``ctx.delay_response`` set; ``kong.response.exit``/``error``
  stores a delayed response and the remaining plugins are skipped (but still *collected* for the
  later phases, as the collecting iterator keeps walking); a Lua error inside a handler is logged
  and becomes ``500 {"message":"An unexpected error occurred"}``. For external plugins the only
  such Lua error is ``get_instance_id``'s ``error(err)`` when StartInstance fails (or a PDK call
  with bad arguments); an RPC error of an event is only logged, so the request is proxied.
- configuration lookup per plugin follows the precedence of ``kong/runloop/plugins_iterator.lua``
  (consumer+route+service, consumer+route, consumer+service, route+service, consumer, route,
  service, global), evaluated when the plugin's turn comes, so plugins below an auth plugin see
  the consumer it set.
- **response** -- ``Kong.response``: only when a collected plugin has a ``response`` handler
  (buffered proxying); the upstream status/headers/body are available to the PDK; an exit there
  replaces the response (``ngx.exit``), a Lua error becomes a 500.
- **log** -- ``build_phases`` in ``plugin_servers/plugin.lua``: after the response, in a timer, with
  the data saved at log time (``kong.log.serialize()``, request/response headers, status,
  ``kong.ctx.shared``, ``ngx.ctx`` clone, ``req_start_time``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

import httpx

from kong_plugins.errors import ConfigError

from ._context import (
    DelayedResponse,
    ExitResponse,
    RequestContext,
    SavedData,
    headers_multimap,
    parse_query,
)
from ._defaults import fill_plugin_config, required_missing
from ._entities import DEFAULT_WS_ID, DeckConfig, Route, parse_deck, route_matches_path
from ._external import ExternalPlugin
from ._pdk import KONG_VERSION, SERVER_HEADER, Pdk, lua_value, make_error
from ._process import ManagedServer, PluginServerError, PluginServerSpec, query_plugin_info
from ._rpc import DEFAULT_RPC_TIMEOUT, LuaError, MsgpackRpc
from ._stock import STOCK_PLUGINS, StockPlugin

log = logging.getLogger("kong_plugins.standin")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
UNEXPECTED = ExitResponse(
    500, b'{"message":"An unexpected error occurred"}', [("Content-Type", "application/json; charset=utf-8")]
)


# -- public value types ---------------------------------------------------------------------------------


@dataclass
class UpstreamRequest:
    """What the upstream service receives after the plugins ran."""

    method: str
    path: str
    query: str
    headers: httpx.Headers
    body: bytes
    service: str
    host: str
    port: int
    protocol: str

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}{self.path}" + (
            f"?{self.query}" if self.query else ""
        )

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class UpstreamResponse:
    """An upstream's answer; ``body`` may be bytes, text or a JSON-serialisable value."""

    status: int = 200
    headers: Mapping[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    body: Any = b""

    def encoded(self) -> tuple[list[tuple[str, str]], bytes]:
        pairs = list(self.headers.items()) if isinstance(self.headers, Mapping) else list(self.headers)
        if isinstance(self.body, bytes):
            return pairs, self.body
        if isinstance(self.body, str):
            return pairs, self.body.encode()
        if not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
        return pairs, json.dumps(self.body).encode()


UpstreamHandler = Callable[[UpstreamRequest], UpstreamResponse]


def echo_upstream(request: UpstreamRequest) -> UpstreamResponse:
    """The default upstream: 200 with a JSON echo of what it received."""
    return UpstreamResponse(
        200,
        {"Content-Type": "application/json"},
        {
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": dict(request.headers.items()),
            "body": request.body.decode("utf-8", "replace"),
        },
    )


@dataclass
class StandInResponse:
    """The downstream response, plus what the stand-in observed while producing it.

    ``pdk_calls`` and the RPC timings keep growing while the log phase runs; call
    ``KongStandIn.wait_log_phase()`` before reading the log phase's share.
    """

    status: int
    headers: httpx.Headers
    body: bytes
    upstream_request: UpstreamRequest | None
    source: str
    _ctx: RequestContext

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def pdk_calls(self) -> dict[str, dict[str, int]]:
        """PDK round trips per plugin per phase (each ``{Method, Args}`` answered with a Step)."""
        return self._ctx.pdk_calls

    @property
    def rpc_seconds(self) -> float:
        """Time in plugin RPC for this request (send to answer, summed; stand-in work excluded)."""
        return self._ctx.account.seconds

    @property
    def rpc_seconds_by_phase(self) -> dict[str, float]:
        return dict(self._ctx.account.seconds_by_phase)

    @property
    def rpc_seconds_by_plugin(self) -> dict[tuple[str, str], float]:
        """RPC seconds per ``(plugin, phase)``; the access phase's share is what the client waited."""
        return dict(self._ctx.rpc_seconds_by_plugin)

    @property
    def decided_by(self) -> str | None:
        """The plugin that ended the request (``kong.response.exit``/``error`` or a Lua error)."""
        return self._ctx.decided_by

    @property
    def rpc_calls(self) -> int:
        return self._ctx.account.calls

    @property
    def errors(self) -> list[str]:
        """Lines Kong would have written at ``err`` level (or above) while handling this request."""
        return list(self._ctx.errors)

    @property
    def request_id(self) -> str:
        return self._ctx.request_id


@dataclass(frozen=True)
class LogRecord:
    level: str
    plugin: str
    message: str
    request_id: str


# -- plugins as the iterator sees them --------------------------------------------------------------------


@dataclass
class _Registered:
    name: str
    priority: int
    phases: frozenset[str]
    stock: StockPlugin | None = None
    external: ExternalPlugin | None = None


_Combo = tuple[str | None, str | None, str | None]


class KongStandIn:
    """A Kong 3.9 data plane in a Python process, driving real plugin-server processes."""

    def __init__(
        self,
        config: DeckConfig,
        servers: Iterable[PluginServerSpec] = (),
        upstreams: Mapping[str, UpstreamHandler] | None = None,
        *,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        start_timeout: float = 30.0,
        client_body_buffer_size: int = 8192,
        clock: Callable[[], float] = time.time,
        http_fallback: bool = False,
        node_id: str | None = None,
        log_workers: int = 4,
    ) -> None:
        if rpc_timeout <= 0:
            raise ConfigError("rpc_timeout", "must be > 0")
        self.config = config
        self.specs = list(servers)
        self.upstreams = dict(upstreams or {})
        self.rpc_timeout = rpc_timeout
        self.start_timeout = start_timeout
        self.client_body_buffer_size = client_body_buffer_size
        self.clock = clock
        self.http_fallback = http_fallback
        self.node_id = node_id or str(uuid.uuid4())
        self.logs: deque[LogRecord] = deque(maxlen=20000)
        self.pdk = Pdk(self.node_id, self._emit, self._serialize, self._load_consumer)
        self._log_workers = log_workers
        self._servers: dict[str, ManagedServer] = {}
        self._external: dict[str, ExternalPlugin] = {}
        self._plugins: list[_Registered] = []
        self._confs: dict[str, dict[_Combo, dict[str, Any]]] = {}
        self._pending: set[Future[None]] = set()
        self._pending_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._started = False
        self._seq = 0

    @classmethod
    def from_deck(
        cls,
        source: str | os.PathLike[str] | dict[str, Any],
        servers: Iterable[PluginServerSpec] = (),
        upstreams: Mapping[str, UpstreamHandler] | None = None,
        **options: Any,
    ) -> KongStandIn:
        """Build a stand-in from a decK file (path or dict); nothing starts before ``start()``."""
        return cls(parse_deck(source), servers, upstreams, **options)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def __enter__(self) -> KongStandIn:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Query every server, load the plugins from the decK file, start the servers."""
        if self._started:
            return
        infos = [(spec, query_plugin_info(spec)) for spec in self.specs]
        for spec, info in infos:
            if info.protocol != "MsgPack:1":
                raise PluginServerError(
                    f"pluginserver {spec.name}: protocol {info.protocol} "
                    "is not supported by the stand-in (MsgPack:1 only)"
                )
            if info.name in self._external or info.name in STOCK_PLUGINS:
                raise PluginServerError(f"duplicate plugin name [{info.name}] (server {spec.name})")
            rpc = MsgpackRpc(spec.socket, self.rpc_timeout)
            plugin = ExternalPlugin(info, rpc, self.pdk, self._emit)
            rpc.on_notification = plugin.on_notification
            self._external[info.name] = plugin
        self._load_plugins()
        self._executor = ThreadPoolExecutor(
            max_workers=self._log_workers, thread_name_prefix="kong-log-timer"
        )
        self._started = True
        try:
            for spec in self.specs:
                server = ManagedServer(spec)
                self._servers[spec.name] = server
                server.start()
            for server in self._servers.values():
                server.wait_for_socket(self.start_timeout)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let pending log timers finish, then stop every server the stand-in started."""
        try:
            if self._executor is not None:
                try:
                    self.wait_log_phase(timeout=self.rpc_timeout + 5)
                except Exception as exc:  # closing must stop the servers whatever a timer did
                    log.warning("log phase at close: %s", exc)
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
        finally:
            for server in self._servers.values():
                server.stop()
            for plugin in self._external.values():
                plugin.rpc.close()
            self._started = False

    def wait_log_phase(self, timeout: float | None = 30.0) -> None:
        """Block until the log timers of every request so far have run."""
        with self._pending_lock:
            pending = set(self._pending)
        if not pending:
            return
        done, not_done = wait_futures(pending, timeout=timeout)
        for fut in done:
            exc = fut.exception()
            if exc is not None:
                raise exc
        if not_done:
            raise TimeoutError(f"{len(not_done)} log timers still running after {timeout}s")

    # -- introspection used by tests -----------------------------------------------------------------------
    def server(self, name: str) -> ManagedServer:
        return self._servers[name]

    def external_plugin(self, name: str) -> ExternalPlugin:
        return self._external[name]

    def log_entry(self, response: StandInResponse) -> dict[str, Any]:
        """What Kong's file-log writes for this request: ``kong.log.serialize()`` as of its log phase."""
        return self._serialize(response._ctx)

    @property
    def plugin_order(self) -> list[str]:
        """Loaded plugin names in the order the access phase runs them."""
        return [p.name for p in self._plugins]

    # -- configuration ---------------------------------------------------------------------------------------
    def _load_plugins(self) -> None:
        supported = sorted([*STOCK_PLUGINS, *self._external])
        registered: dict[str, _Registered] = {}
        for entity in self.config.plugins:
            path = f"plugins[{entity.name}]"
            if entity.name in STOCK_PLUGINS:
                stock = STOCK_PLUGINS[entity.name]
                if stock.no_consumer and entity.consumer_id is not None:
                    raise ConfigError(f"{path}.consumer", "value must be null")
                conf = stock.prepare(entity.config, f"{path}.config")
                phases = frozenset({"access", "log"}) if stock.log is not None else frozenset({"access"})
                reg = registered.setdefault(
                    entity.name, _Registered(entity.name, stock.priority, phases, stock=stock)
                )
            elif entity.name in self._external:
                ext = self._external[entity.name]
                conf = fill_plugin_config(ext.info.schema, entity.config)
                missing = required_missing(ext.info.schema, conf)
                if missing:
                    raise ConfigError(f"{path}.config.{missing[0]}", "required field missing")
                reg = registered.setdefault(
                    entity.name, _Registered(entity.name, ext.priority, ext.phases, external=ext)
                )
            else:
                raise ConfigError(
                    path,
                    f"plugin '{entity.name}' is not supported by the stand-in; "
                    f"supported: {', '.join(supported)}",
                )
            del reg
            if not entity.enabled:
                continue
            self._seq += 1
            conf = copy.copy(conf)  # keeps a serverless config's compiled handler (a dict subclass)
            for key, value in (
                ("route_id", entity.route_id),
                ("service_id", entity.service_id),
                ("consumer_id", entity.consumer_id),
                ("plugin_instance_name", entity.instance_name),
            ):
                if value is not None:
                    conf[key] = value
            conf["__plugin_id"] = entity.id
            conf["__key__"] = (
                f"plugins:{entity.name}:{entity.route_id or ''}:{entity.service_id or ''}:"
                f"{entity.consumer_id or ''}::{DEFAULT_WS_ID}"
            )
            conf["__seq__"] = self._seq
            self._confs.setdefault(entity.name, {})[
                (entity.route_id, entity.service_id, entity.consumer_id)
            ] = conf
        self._plugins = sorted(registered.values(), key=lambda p: (-p.priority, p.name))

    def _lookup_conf(
        self, name: str, route_id: str, service_id: str | None, consumer_id: str | None
    ) -> dict[str, Any] | None:
        confs = self._confs.get(name)
        if not confs:
            return None
        with_consumer: list[_Combo] = [
            (route_id, service_id, consumer_id),
            (route_id, None, consumer_id),
            (None, service_id, consumer_id),
        ]
        without: list[_Combo] = [(route_id, service_id, None)]
        tail: list[_Combo] = [(route_id, None, None), (None, service_id, None), (None, None, None)]
        combos = (
            [*with_consumer, *without, (None, None, consumer_id), *tail]
            if consumer_id is not None
            else [*without, *tail]
        )
        for combo in combos:
            conf = confs.get(combo)
            if conf is not None:
                return conf
        return None

    # -- logging sink -------------------------------------------------------------------------------------
    def _emit(self, ctx: RequestContext, level: str, message: str) -> None:
        record = LogRecord(level, ctx.current_plugin, message, ctx.request_id)
        self.logs.append(record)
        if level in ("err", "crit", "alert", "emerg"):
            with ctx.lock:
                ctx.errors.append(f"[{ctx.current_plugin}] {message}" if ctx.current_plugin else message)
        pylevel = {
            "debug": logging.DEBUG,
            "info": logging.INFO,
            "notice": logging.INFO,
            "warn": logging.WARNING,
        }.get(level, logging.ERROR)
        log.log(pylevel, "[%s] %s", ctx.current_plugin or "kong", message)

    def _load_consumer(self, ident: str, by_username: bool) -> dict[str, Any] | None:
        for consumer in self.config.consumers:
            if consumer.id == ident or (by_username and consumer.entity.get("username") == ident):
                return consumer.entity
        return None

    # -- serialize (kong/pdk/log.lua) ----------------------------------------------------------------------
    def _serialize(self, ctx: RequestContext) -> dict[str, Any]:
        """``kong.log.serialize()`` with the default serialize values of ``kong/pdk/log.lua``.

        ``request.headers.authorization`` / ``proxy-authorization`` are replaced by
        ``"REDACTED"`` (mode ``replace``: only when present). ``authenticated_entity`` copies the
        credential's ``id`` and ``consumer_id`` (the latter absent on 3.x credentials, which carry
        ``consumer = {id}`` instead).
        """
        headers = headers_multimap(ctx.request_headers, 100)
        for name in ("authorization", "proxy-authorization"):
            if name in headers:
                headers[name] = "REDACTED"
        response_headers = headers_multimap(ctx.response_headers, 100)
        upstream_uri = ""
        if ctx.upstream_path is not None and ctx.proxied:
            upstream_uri = ctx.upstream_path + (f"?{ctx.upstream_query}" if ctx.upstream_query else "")
        # ngx.now() - ngx.req.start_time() in Kong: elapsed since the request began, whatever
        # start time it was given.
        elapsed_ms = (time.perf_counter() - ctx.received_perf) * 1000
        data: dict[str, Any] = {
            "request": {
                "id": ctx.request_id,
                "uri": ctx.request_uri,
                "url": f"{ctx.scheme}://{ctx.host}:{ctx.port}{ctx.request_uri}",
                "querystring": parse_query(ctx.raw_query) or {},
                "method": ctx.method,
                "headers": headers,
                "size": len(ctx.body),
            },
            "upstream_uri": upstream_uri,
            "response": {
                "status": ctx.response_status or 0,
                "headers": response_headers,
                "size": len(ctx.response_body or b""),
            },
            "latencies": {
                "kong": round(ctx.latencies.get("kong", 0.0)),
                "proxy": round(ctx.latencies["proxy"]) if "proxy" in ctx.latencies else -1,
                "request": round(elapsed_ms),
                "receive": 0,
            },
            "route": ctx.route,
            "service": ctx.service,
            "consumer": ctx.consumer,
            "client_ip": ctx.client_ip,
            "started_at": int(ctx.start_time * 1000),
            "workspace": DEFAULT_WS_ID,
            "workspace_name": "default",
            "source": self.pdk.response_get_source(ctx),
        }
        if ctx.proxied:
            data["upstream_status"] = str(ctx.service_response_status)
            data["tries"] = [
                {
                    "balancer_latency": 0,
                    "port": ctx.service["port"] if ctx.service else 80,
                    "balancer_start": int(ctx.start_time * 1000),
                    "ip": "127.0.0.1",
                }
            ]
        if ctx.credential is not None:
            entity = {"id": ctx.credential.get("id")}
            if ctx.credential.get("consumer_id") is not None:
                entity["consumer_id"] = ctx.credential["consumer_id"]
            data["authenticated_entity"] = entity
        return {k: v for k, v in data.items() if v is not None}

    # -- routing ------------------------------------------------------------
    def _match(self, method: str, path: str, host: str) -> tuple[Route, str] | None:
        best: tuple[int, Route, str] | None = None
        for route in self.config.routes:
            if route.methods and method not in route.methods:
                continue
            if route.hosts and host not in route.hosts:
                continue
            if not route.paths:
                candidate = (0, route, "")
            else:
                lengths = [(n, p) for p in route.paths if (n := route_matches_path(p, path)) is not None]
                if not lengths:
                    continue
                n, p = max(lengths)
                candidate = (n, route, path[:n] if p.startswith("~") else p)
            if best is None or candidate[0] > best[0]:
                best = candidate
        return (best[1], best[2]) if best else None

    # -- the request ------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        body: bytes | str = b"",
        client_ip: str = "127.0.0.1",
        start_time: float | None = None,
        *,
        scheme: str = "http",
        host: str | None = None,
        port: int | None = None,
    ) -> StandInResponse:
        """Handle one client request as Kong would and return the downstream response."""
        if not self._started:
            raise RuntimeError("KongStandIn is not started: use it as a context manager or call start()")
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        raw_body = body.encode() if isinstance(body, str) else bytes(body)
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        for k, v in pairs:
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"header names and values must be str, got {k!r}: {v!r}")
        host_header = next((v for k, v in pairs if k.lower() == "host"), None)
        host_name = (host or (host_header.split(":")[0] if host_header else "localhost")).lower()
        if host_header is None:
            pairs.insert(0, ("Host", host_name))
        if raw_body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in pairs):
            pairs.append(("Content-Length", str(len(raw_body))))
        path_only, _, raw_query = path.partition("?")
        started = self.clock() if start_time is None else start_time
        ctx = RequestContext(
            method=method.upper(),
            path=path_only,
            raw_query=raw_query,
            scheme=scheme,
            host=host_name,
            port=port or (443 if scheme == "https" else 80),
            client_ip=client_ip,
            start_time=started,
            request_headers=pairs,
            body=raw_body,
            client_body_buffer_size=self.client_body_buffer_size,
            emit=self._emit,
            pdk=self.pdk,
        )
        matched = self._match(ctx.method, ctx.path, host_name)
        if matched is None:
            ctx.exited = True
            resp = make_error(404, "no Route matched with those values")
            return self._finish_exit(ctx, resp, [], None)
        route, prefix = matched
        service = self.config.service_by_id(route.service_id)
        ctx.route, ctx.service = route.entity, service.entity if service else None
        collected = self._access(ctx, route)
        if ctx.delayed_response is not None:
            return self._finish_exit(ctx, ctx.delayed_response, collected, None)
        return self._proxy(ctx, route, prefix, collected)

    def _access(self, ctx: RequestContext, route: Route) -> list[tuple[_Registered, dict[str, Any]]]:
        collected: list[tuple[_Registered, dict[str, Any]]] = []
        service_id = ctx.service["id"] if ctx.service else None
        t0 = time.perf_counter()
        for plugin in self._plugins:
            consumer_id = ctx.consumer.get("id") if ctx.consumer else None
            conf = self._lookup_conf(plugin.name, route.id, service_id, consumer_id)
            if conf is None:
                continue
            collected.append((plugin, conf))
            if ctx.delayed_response is not None or "access" not in plugin.phases:
                continue
            self._run(ctx, plugin, conf, "access")
        ctx.latencies["kong"] = (time.perf_counter() - t0) * 1000
        return collected

    def _run(self, ctx: RequestContext, plugin: _Registered, conf: dict[str, Any], phase: str) -> bool:
        """Run one handler; False when it ended the request (exit or Lua error)."""
        ctx.phase = phase
        ctx.current_plugin = plugin.name
        ctx.current_plugin_id = str(conf["__plugin_id"])
        rpc_before = ctx.account.seconds
        try:
            if plugin.stock is not None:
                run = plugin.stock.log if phase == "log" else plugin.stock.access
                assert run is not None
                run(ctx, conf, self.config, self.clock)
            elif plugin.external is not None:
                plugin.external.handle_event(conf, phase, ctx)
            return True
        except DelayedResponse:
            if phase != "log":
                ctx.decided_by = plugin.name
            return False
        except LuaError as exc:
            self._emit(ctx, "err", str(exc))
            if phase == "log":
                # a Lua error in a timer is logged by nginx; the response is already sent
                return False
            ctx.unexpected = True
            ctx.delayed_response = UNEXPECTED
            ctx.decided_by = plugin.name
            return False
        finally:
            ctx.current_plugin = ""
            if plugin.external is not None:
                key = (plugin.name, phase)
                spent = ctx.account.seconds - rpc_before
                with ctx.lock:
                    ctx.rpc_seconds_by_plugin[key] = ctx.rpc_seconds_by_plugin.get(key, 0.0) + spent

    def _upstream_request(self, ctx: RequestContext, route: Route, prefix: str) -> UpstreamRequest:
        service = ctx.service or {}
        if ctx.upstream_path is None:
            rest = ctx.path[len(prefix) :] if route.strip_path and prefix else ctx.path
            base = service.get("path") or "/"
            if not rest:
                upstream_path = base
            elif base.endswith("/") and rest.startswith("/"):
                upstream_path = base + rest[1:]
            elif not base.endswith("/") and not rest.startswith("/"):
                upstream_path = base + "/" + rest
            else:
                upstream_path = base + rest
            ctx.upstream_path = upstream_path
        if ctx.upstream_query is None:
            ctx.upstream_query = ctx.raw_query
        body = ctx.upstream_body if ctx.upstream_body is not None else ctx.body
        headers = [
            (k, v) for k, v in ctx.request_headers if k.lower() not in HOP_BY_HOP and k.lower() != "host"
        ]
        xff = ", ".join(
            [v for k, v in ctx.request_headers if k.lower() == "x-forwarded-for"] + [ctx.client_ip]
        )
        headers = [
            (k, v)
            for k, v in headers
            if not k.lower().startswith("x-forwarded-") and k.lower() != "x-real-ip"
        ]
        svc_host = str(service.get("host", "localhost"))
        svc_port = int(service.get("port", 80))
        preserve = bool(ctx.route and ctx.route.get("preserve_host"))
        host_value = (
            ctx.host if preserve else (svc_host if svc_port in (80, 443) else f"{svc_host}:{svc_port}")
        )
        headers = [
            ("Host", host_value),
            *headers,
            ("X-Forwarded-For", xff),
            ("X-Forwarded-Proto", ctx.scheme),
            ("X-Forwarded-Host", ctx.host),
            ("X-Forwarded-Port", str(ctx.port)),
            ("X-Forwarded-Path", ctx.path),
            ("X-Real-IP", ctx.client_ip),
        ]
        if body:
            headers.append(("Content-Length", str(len(body))))
        return UpstreamRequest(
            ctx.method,
            ctx.upstream_path,
            ctx.upstream_query or "",
            httpx.Headers(headers),
            body,
            str(service.get("name") or service.get("id")),
            svc_host,
            svc_port,
            str(service.get("protocol", "http")),
        )

    def _call_upstream(self, request: UpstreamRequest) -> UpstreamResponse:
        handler = self.upstreams.get(request.service) or self.upstreams.get(request.host)
        if handler is not None:
            return handler(request)
        if self.http_fallback:
            with httpx.Client(timeout=60.0) as client:
                r = client.request(request.method, request.url, headers=request.headers, content=request.body)
            return UpstreamResponse(r.status_code, list(r.headers.multi_items()), r.content)
        return echo_upstream(request)

    def _proxy(
        self,
        ctx: RequestContext,
        route: Route,
        prefix: str,
        collected: list[tuple[_Registered, dict[str, Any]]],
    ) -> StandInResponse:
        up_req = self._upstream_request(ctx, route, prefix)
        responders = [(p, c) for p, c in collected if "response" in p.phases]
        ctx.buffered_proxying = bool(responders)
        ctx.proxied = True
        t0 = time.perf_counter()
        up_resp = self._call_upstream(up_req)
        ctx.latencies["proxy"] = (time.perf_counter() - t0) * 1000
        up_headers, up_body = up_resp.encoded()
        ctx.service_response_status = up_resp.status
        ctx.service_response_headers = up_headers
        ctx.service_response_body = up_body
        ctx.response_status = up_resp.status
        set_in_access = ctx.response_headers
        overridden = {k.lower() for k, _ in set_in_access}
        ctx.response_headers = [
            (k, v) for k, v in up_headers if k.lower() not in HOP_BY_HOP and k.lower() not in overridden
        ] + set_in_access
        ctx.response_body = up_body
        if responders:
            for plugin, conf in responders:
                if not self._run(ctx, plugin, conf, "response"):
                    exit_resp = ctx.delayed_response or UNEXPECTED
                    ctx.proxied = not ctx.unexpected and not ctx.exited
                    return self._finish_exit(ctx, exit_resp, collected, up_req)
        headers = [
            *ctx.response_headers,
            ("Content-Length", str(len(ctx.response_body or b""))),
            ("Via", f"1.1 {SERVER_HEADER}"),
            ("X-Kong-Upstream-Latency", str(round(ctx.latencies["proxy"]))),
            ("X-Kong-Proxy-Latency", str(round(ctx.latencies.get("kong", 0.0)))),
            ("X-Kong-Request-Id", ctx.request_id),
        ]
        response = StandInResponse(
            ctx.response_status or 200,
            httpx.Headers(headers),
            ctx.response_body or b"",
            up_req,
            "service",
            ctx,
        )
        self._schedule_log(ctx, collected)
        return response

    def _finish_exit(
        self,
        ctx: RequestContext,
        exit_resp: ExitResponse,
        collected: list[tuple[_Registered, dict[str, Any]]],
        up_req: UpstreamRequest | None,
    ) -> StandInResponse:
        exit_names = {k.lower() for k, _ in exit_resp.headers}
        kept = [
            (k, v)
            for k, v in ctx.response_headers
            if k.lower() not in exit_names and k.lower() not in HOP_BY_HOP
        ]
        headers = [
            *kept,
            *exit_resp.headers,
            ("Content-Length", str(len(exit_resp.body))),
            ("Server", SERVER_HEADER),
            ("X-Kong-Response-Latency", str(round(ctx.latencies.get("kong", 0.0)))),
            ("X-Kong-Request-Id", ctx.request_id),
        ]
        ctx.response_status = exit_resp.status
        ctx.response_headers = headers
        ctx.response_body = exit_resp.body
        ctx.proxied = False
        source = self.pdk.response_get_source(ctx)
        response = StandInResponse(
            exit_resp.status, httpx.Headers(headers), exit_resp.body, up_req, source, ctx
        )
        self._schedule_log(ctx, collected)
        return response

    # -- log phase ------------------------------------------------------------
    def _schedule_log(self, ctx: RequestContext, collected: list[tuple[_Registered, dict[str, Any]]]) -> None:
        # Kong's log phase runs every plugin's log handler in priority order: a Lua one at once, an
        # external one by scheduling its timer (plugin.lua, build_phases), which runs after the
        # whole log phase -- and reads kong.ctx.shared by reference, so it sees the Lua writes.
        for plugin, conf in collected:
            if plugin.stock is not None and "log" in plugin.phases:
                self._run(ctx, plugin, conf, "log")
        loggers = [(p, c) for p, c in collected if "log" in p.phases and p.external is not None]
        if not loggers or self._executor is None:
            return
        ctx.phase = "log"
        serialize_data = self._serialize(ctx)
        request_headers = headers_multimap(ctx.request_headers, 100)
        response_headers = headers_multimap(ctx.response_headers, 100)
        jobs = [
            (
                p,
                c,
                SavedData(
                    p.name,
                    serialize_data,
                    dict(ctx.ngx_ctx),
                    ctx.ctx_shared,
                    request_headers,
                    response_headers,
                    ctx.response_status or 0,
                    ctx.start_time,
                ),
            )
            for p, c in loggers
        ]
        fut = self._executor.submit(self._log_timer, ctx, jobs)
        with self._pending_lock:
            self._pending.add(fut)
        fut.add_done_callback(self._forget)

    def _forget(self, fut: Future[None]) -> None:
        with self._pending_lock:
            self._pending.discard(fut)

    def _log_timer(
        self, ctx: RequestContext, jobs: list[tuple[_Registered, dict[str, Any], SavedData]]
    ) -> None:
        for plugin, conf, saved in jobs:
            ctx.saved = saved
            try:
                self._run(ctx, plugin, conf, "log")
            finally:
                ctx.saved = None


def lua_roundtrip(value: Any) -> Any:
    """Exposed for tests: the shape a value takes after a trip through Lua (see ``lua_value``)."""
    return lua_value(value)


__all__ = [
    "KONG_VERSION",
    "KongStandIn",
    "LogRecord",
    "StandInResponse",
    "UpstreamRequest",
    "UpstreamResponse",
    "echo_upstream",
]
