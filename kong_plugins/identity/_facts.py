"""What Kong tells a plugin about a request, as a serialize-shaped table, parsed once.

The shape is ``kong.log.serialize()``'s (``kong/pdk/log.lua``, 3.9): the request line and headers,
the matched route and service, the authenticated consumer and credential
(``authenticated_entity``), the client IP Kong resolved (``var.remote_addr`` after the realip
module, i.e. honouring ``trusted_ips`` / ``real_ip_header``) and the request start time. Two
producers:

- the log phase: ``kong.log.serialize()`` itself, answered from the data Kong saved when the
  response finished (``kong/runloop/plugin_servers/plugin.lua``, ``build_phases``), so it also
  carries the response status and headers and the ``ai`` statistics Kong's ai-proxy plugins add
  with ``kong.log.set_serialize_value``;
- the access and response phases, where serialize is a Lua error (``check_phase(PHASES_LOG)``):
  the subset the companion plugin ``ai-suite-context`` publishes in ``kong.ctx.shared``, or the
  same subset assembled from individual PDK calls (``_gather.py``) -- no headers there.

Only fields Kong sets from its own state are read here. Request headers are kept for callers that
need a specific one, but identity never comes from them: ``X-Consumer-*`` and friends can be sent
by any client (KONG_RUNTIME.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from kong_plugins.frozen import positional_builder


class MalformedFacts(ValueError):
    """The facts (serialize's answer or the companion's table) are not the documented object."""


@dataclass(frozen=True, slots=True)
class Consumer:
    id: str
    username: str | None = None
    custom_id: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Entity:
    """A route or a service: the fields the plugins use to name a model."""

    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """One request as Kong resolved it. ``started_at`` is seconds since the epoch."""

    method: str = ""
    uri: str = ""
    size: int = 0
    client_ip: str = ""
    started_at: float = 0.0
    consumer: Consumer | None = None
    credential_id: str | None = None
    route: Entity | None = None
    service: Entity | None = None
    tls_client_verify: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    response_status: int | None = None
    response_headers: Mapping[str, Any] = field(default_factory=dict)
    ai: Mapping[str, Any] = field(default_factory=dict)
    latency_ms: float = 0.0
    #: The request body the companion read (``request.body``, up to its
    #: ``request_body_max_bytes``; ``b""`` for a request without one); None when it did not --
    #: not enabled, a chunked or larger body, or serialize's data, which never has one. Then a
    #: plugin asks Kong (``kong.request.get_raw_body``).
    body: bytes | None = None

    @property
    def ended_at(self) -> float:
        """When the response finished (log phase), from Kong's own latency figures."""
        return self.started_at + self.latency_ms / 1000.0

    def header(self, name: str) -> str | None:
        """First value of a request header (lower-case name), as serialize reports it."""
        return _first(self.headers.get(name.lower()))

    def response_header(self, name: str) -> str | None:
        return _first(self.response_headers.get(name.lower()))


# parse_facts builds these on every request (in access, and in ai-tier-quota's log phase again):
# through mutable twins (positionally, in field order), ~1.7 us less per call than the frozen
# constructors; the same objects.
_build_facts = positional_builder(RequestFacts)
_build_consumer = positional_builder(Consumer)
_build_entity = positional_builder(Entity)


def _first(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


# Every object read here is tested with ``_is_object``: JSON and the companion's table give plain
# dicts (or nothing), which the first two tests answer in a few nanoseconds, where
# ``isinstance(v, Mapping)`` alone goes through the ABC machinery (~0.15 us, ~20 per call); any
# other mapping still takes the last test, so what is accepted is unchanged.


def _is_object(value: Any) -> bool:
    return type(value) is dict or (value is not None and isinstance(value, Mapping))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _entity(value: Any) -> Entity | None:
    if not _is_object(value):
        return None
    id_, name = value.get("id"), value.get("name")
    if type(id_) is str and (type(name) is str or name is None):
        return _known_entity(id_, name)
    return _build_entity(_str(id_), _str(name))  # id, name


@lru_cache(maxsize=4096)
def _known_entity(id_: str, name: str | None) -> Entity:
    """Routes and services recur on every request: the same (frozen) Entity for the same pair."""
    return _build_entity(id_ or None, name or None)  # id, name


@lru_cache(maxsize=4096)
def _known_consumer(id_: str, username: str | None, custom_id: str | None, tags: Any) -> Consumer | None:
    """A consumer recurs on each of its requests: the same (frozen) Consumer for the same fields."""
    return _parse_consumer({"id": id_, "username": username, "custom_id": custom_id,
                            "tags": list(tags) if type(tags) is tuple else tags})


def _parse_consumer(value: Any) -> Consumer | None:
    if not _is_object(value):
        return None
    id_ = value.get("id")
    if not _str(id_):
        return None
    tags = value.get("tags")
    tag_tuple = tuple(t for t in tags if isinstance(t, str)) if tags and isinstance(tags, list) else ()
    # id, username, custom_id, tags (positional: cheaper than keywords)
    return _build_consumer(str(id_), _str(value.get("username")), _str(value.get("custom_id")), tag_tuple)


def _headers(value: Any) -> dict[str, Any]:
    if not _is_object(value):
        return {}
    return {str(k).lower(): v for k, v in value.items()}


def _table(value: Any) -> Mapping[str, Any]:
    """``value`` if it is an object, else an empty one."""
    return value if _is_object(value) else _EMPTY


_EMPTY: Mapping[str, Any] = {}


def load_serialized(raw: str | bytes) -> Any:
    """serialize's JSON text, parsed: orjson (~3x faster on it), the standard parser for what
    orjson refuses (NaN -- Kong's cjson writes it as a bare token -- and integers beyond 64 bits).
    Raises ValueError on text that is not JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


@dataclass(frozen=True, slots=True)
class FactsNeeded:
    """Which facts a plugin reads. Without the companion, only these are fetched, one PDK call
    each (``gather_facts``); from the companion's table, only these are parsed -- the others keep
    their empty defaults either way, so a plugin sees the same facts with or without it."""

    consumer: bool = True
    credential: bool = True
    route: bool = True
    service: bool = True
    client_ip: bool = True
    started_at: bool = True
    #: method and uri
    request_line: bool = True
    size: bool = True
    tls: bool = False
    #: The request headers the facts carry (the companion publishes Content-Type only; serialize
    #: all of them): never fetched one by one, parsed only when a plugin reads one.
    headers: bool = True

    @property
    def fallback_calls(self) -> int:
        """PDK round trips of the fallback (method and uri are two calls)."""
        return (self.consumer + self.credential + self.route + self.service + self.client_ip
                + self.started_at + 2 * self.request_line + self.size + self.tls)


#: Every fact: what parse_facts reads by default (serialize's data in a log phase).
EVERY_FACT = FactsNeeded(tls=True)


def parse_facts(serialized: str | bytes | Mapping[str, Any], needed: FactsNeeded = EVERY_FACT) -> RequestFacts:
    """Parse serialize's answer (a JSON string) or a serialize-shaped table (companion, fallback).

    Only the facts ``needed`` names are read (``gather_facts`` passes the plugin's own); the
    others keep their empty defaults. Missing parts become None/empty; a value that is not a JSON
    object raises MalformedFacts.
    """
    if type(serialized) is dict:  # the companion's table, in access: most calls
        data: Any = serialized
    elif isinstance(serialized, str | bytes):
        try:
            data = load_serialized(serialized)
        except ValueError as exc:
            raise MalformedFacts("kong.log.serialize() did not return JSON") from exc
    else:
        data = serialized
    if not _is_object(data):
        raise MalformedFacts("kong.log.serialize() did not return a JSON object")
    # Every plugin parses facts once or twice a request, most of them from the companion's table
    # in access: a fact not needed is not read, and the log phase's parts (response, ai,
    # latencies, which that table never has) are looked at only when present. Each Python line
    # here costs ~3x more in a plugin server woken by Kong's answer than in a loop.
    get = data.get
    request = get("request")
    if type(request) is not dict:
        request = _table(request)
    rget = request.get
    method = uri = ""
    if needed.request_line:
        method, uri = rget("method"), rget("uri")
        method = method if type(method) is str else _str(method) or ""
        uri = uri if type(uri) is str else _str(uri) or ""
    size: Any = rget("size") if needed.size else 0
    tls = rget("tls") if needed.tls else None
    headers = rget("headers") if needed.headers else None
    body = rget("body")
    client_ip = get("client_ip") if needed.client_ip else ""
    started = get("started_at") if needed.started_at else 0
    consumer = get("consumer") if needed.consumer else None
    entity = get("authenticated_entity") if needed.credential else None
    route = get("route") if needed.route else None
    service = get("service") if needed.service else None
    response = get("response")
    status: Any = None
    response_headers: Any = None
    if response is not None:
        response = _table(response)
        status, response_headers = response.get("status"), response.get("headers")
    ai = get("ai")
    latencies = get("latencies")
    latency: Any = None if latencies is None else latencies.get("request") if _is_object(latencies) else None
    # The shapes of every request, tested inline (a call each costs more than its work in a plugin
    # server woken by Kong's answer); anything else goes through the general helpers as before.
    if type(consumer) is dict:
        cget = consumer.get
        consumer_id, username, custom_id, tags = cget("id"), cget("username"), cget("custom_id"), cget("tags")
        if type(consumer_id) is str and (username is None or type(username) is str) and (
                custom_id is None or type(custom_id) is str):
            key_tags = () if tags is None else tuple(tags) if type(tags) is list else tags
            try:
                consumer = _known_consumer(consumer_id, username, custom_id, key_tags)
            except TypeError:  # a tag (or tags) that cannot be a cache key: not a real consumer's
                consumer = _parse_consumer(consumer)
        else:
            consumer = _parse_consumer(consumer)
    elif consumer is not None:
        consumer = _parse_consumer(consumer)
    # Positional, in field order: keywords cost ~0.6 us more for sixteen fields.
    return _build_facts(
        method,  # method
        uri,  # uri
        size if type(size) is int and 0 < size < _MAX_SIZE
        else int(size) if _is_number(size) and 0 < size < _MAX_SIZE else 0,  # size
        client_ip if type(client_ip) is str else _str(client_ip) or "",  # client_ip
        float(started) / 1000.0 if isinstance(started, _NUMBER) and -_MAX_MS < started < _MAX_MS else 0.0,  # started
        consumer,  # consumer
        _str(entity.get("id")) if entity is not None and _is_object(entity) else None,  # credential_id
        None if route is None else _entity(route),  # route
        None if service is None else _entity(service),  # service
        None if tls is None else _str(_table(tls).get("client_verify")),  # tls_client_verify
        {} if headers is None else _headers(headers),  # headers
        int(status) if isinstance(status, int) and not isinstance(status, bool) else None,  # response_status
        {} if response_headers is None else _headers(response_headers),  # response_headers
        {} if ai is None else ai if _is_object(ai) else {},  # ai
        0.0 if latency is None
        else float(latency) if _is_number(latency) and 0 < latency < _MAX_MS else 0.0,  # latency_ms
        None if body is None else _body(body),  # body
    )


def _body(value: Any) -> bytes | None:
    """The companion's ``request.body``: a Lua string, i.e. any bytes, which msgpack carries as
    str and the runtime decodes with ``surrogateescape`` -- encoded back, the very bytes."""
    if type(value) is str:
        return value.encode("utf-8", "surrogateescape")
    if type(value) is bytes:
        return value
    return None


_NUMBER = (int, float)
#: Numbers no real request has, read as absent: serialize's text may hold integers beyond 64 bits,
#: Infinity and NaN (the standard parser reads them: ``load_serialized``), where ``int``/``float``
#: would raise OverflowError or carry NaN into every later comparison (NaN fails both bounds).
_MAX_SIZE = 2**63
_MAX_MS = 1e15  # milliseconds: ~31,700 years


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)
