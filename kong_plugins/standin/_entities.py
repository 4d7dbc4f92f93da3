"""A decK file (``_format_version: "3.0"``) turned into the entities Kong would hold in memory.

Entities carry the fields Kong's DAO returns (``kong/db/schema/entities/*.lua``), because plugins
receive them verbatim from ``kong.router.get_route()``, ``kong.client.get_consumer()`` and
``kong.log.serialize()``. Ids absent from the file are derived deterministically from names so that
test expectations can name them.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kong_plugins.errors import ConfigError

_NS = uuid.UUID("6f1c1c52-9b8e-4f5e-8d1c-7a3f0e0d6c11")
#: The id of Kong's ``default`` workspace in the stand-in.
DEFAULT_WS_ID = str(uuid.uuid5(_NS, "workspace:default"))


def entity_id(kind: str, name: str) -> str:
    """The id the stand-in gives an entity declared without one."""
    return str(uuid.uuid5(_NS, f"{kind}:{name}"))


@dataclass
class Route:
    entity: dict[str, Any]
    service_id: str | None
    paths: list[str]
    methods: list[str] | None
    hosts: list[str] | None
    strip_path: bool

    @property
    def id(self) -> str:
        return str(self.entity["id"])


@dataclass
class Service:
    entity: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.entity["id"])

    @property
    def name(self) -> str:
        return str(self.entity.get("name") or self.entity["id"])


@dataclass
class Consumer:
    entity: dict[str, Any]
    keyauth_credentials: list[dict[str, Any]] = field(default_factory=list)
    jwt_secrets: list[dict[str, Any]] = field(default_factory=list)
    acls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.entity["id"])


@dataclass
class PluginEntity:
    """One ``plugins`` entry with its scope resolved to ids."""

    id: str
    name: str
    config: dict[str, Any]
    enabled: bool
    route_id: str | None
    service_id: str | None
    consumer_id: str | None
    instance_name: str | None
    protocols: list[str]


@dataclass
class DeckConfig:
    services: list[Service]
    routes: list[Route]
    consumers: list[Consumer]
    plugins: list[PluginEntity]

    def consumer_by_id_or_name(self, ident: str) -> Consumer | None:
        for consumer in self.consumers:
            if ident in (consumer.id, consumer.entity.get("username")):
                return consumer
        return None

    def service_by_id(self, ident: str | None) -> Service | None:
        return next((s for s in self.services if s.id == ident), None)


def _now() -> int:
    return int(time.time())


def _ensure_list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, "must be a list")
    return value


def _service_entity(raw: dict[str, Any], path: str, created: int) -> dict[str, Any]:
    name = raw.get("name")
    if raw.get("url"):
        parts = urlsplit(str(raw["url"]))
        protocol, host = parts.scheme or "http", parts.hostname
        port = parts.port or (443 if protocol == "https" else 80)
        svc_path = parts.path or None
    else:
        protocol = str(raw.get("protocol", "http"))
        host = raw.get("host")
        port = int(raw.get("port", 443 if protocol == "https" else 80))
        svc_path = raw.get("path")
    if not host:
        raise ConfigError(f"{path}.host", "a service needs 'url' or 'host'")
    return {
        "id": raw.get("id") or entity_id("service", str(name or host)),
        "name": name,
        "protocol": protocol,
        "host": host,
        "port": port,
        "path": svc_path,
        "retries": raw.get("retries", 5),
        "connect_timeout": raw.get("connect_timeout", 60000),
        "write_timeout": raw.get("write_timeout", 60000),
        "read_timeout": raw.get("read_timeout", 60000),
        "enabled": raw.get("enabled", True),
        "tags": raw.get("tags"),
        "created_at": created,
        "updated_at": created,
        "ws_id": DEFAULT_WS_ID,
    }


def _route(raw: dict[str, Any], service_id: str | None, path: str, created: int) -> Route:
    name = raw.get("name")
    paths = [str(p) for p in _ensure_list(raw.get("paths"), f"{path}.paths")]
    methods = raw.get("methods")
    hosts = raw.get("hosts")
    if not paths and not methods and not hosts:
        raise ConfigError(path, "a route needs at least one of 'paths', 'methods' or 'hosts'")
    for p in paths:
        if not p.startswith("/") and not p.startswith("~"):
            raise ConfigError(f"{path}.paths", f"should start with: / (fixed path) or ~/ (regex path): {p}")
    entity = {
        "id": raw.get("id") or entity_id("route", str(name or f"{service_id}:{paths}:{methods}")),
        "name": name,
        "paths": paths or None,
        "methods": [str(m).upper() for m in methods] if methods else None,
        "hosts": hosts,
        "protocols": raw.get("protocols", ["http", "https"]),
        "strip_path": raw.get("strip_path", True),
        "preserve_host": raw.get("preserve_host", False),
        "regex_priority": raw.get("regex_priority", 0),
        "path_handling": raw.get("path_handling", "v0"),
        "https_redirect_status_code": raw.get("https_redirect_status_code", 426),
        "request_buffering": raw.get("request_buffering", True),
        "response_buffering": raw.get("response_buffering", True),
        "service": {"id": service_id} if service_id else None,
        "tags": raw.get("tags"),
        "created_at": created,
        "updated_at": created,
        "ws_id": DEFAULT_WS_ID,
    }
    return Route(entity, service_id, paths, entity["methods"], hosts, bool(entity["strip_path"]))


def _credential(
    kind: str, raw: Any, consumer_id: str, path: str, created: int, ident_field: str
) -> dict[str, Any]:
    if not isinstance(raw, dict) or not raw.get(ident_field):
        raise ConfigError(path, f"needs '{ident_field}'")
    entity = dict(raw)
    entity.setdefault("id", entity_id(kind, f"{consumer_id}:{raw[ident_field]}"))
    entity["consumer"] = {"id": consumer_id}
    entity.setdefault("created_at", created)
    entity.setdefault("tags", None)
    entity["ws_id"] = DEFAULT_WS_ID
    return entity


def parse_deck(source: str | os.PathLike[str] | dict[str, Any]) -> DeckConfig:
    """Parse a decK file (path or already-loaded dict) into entities; bad input raises ConfigError."""
    if isinstance(source, dict):
        doc: Any = source
    else:
        import yaml

        doc = yaml.safe_load(Path(source).read_text())
    if not isinstance(doc, dict):
        raise ConfigError("", "a decK file must be a mapping")
    fmt = str(doc.get("_format_version", "3.0"))
    if fmt not in ("3.0", "2.1", "1.1"):
        raise ConfigError("_format_version", f"unsupported decK format {fmt}")
    created = _now()
    services: list[Service] = []
    routes: list[Route] = []
    consumers: list[Consumer] = []
    raw_plugins: list[tuple[dict[str, Any], dict[str, str | None], str]] = []

    for i, raw in enumerate(_ensure_list(doc.get("services"), "services")):
        path = f"services[{i}]"
        service = Service(_service_entity(raw, path, created))
        services.append(service)
        for j, rraw in enumerate(_ensure_list(raw.get("routes"), f"{path}.routes")):
            rpath = f"{path}.routes[{j}]"
            route = _route(rraw, service.id, rpath, created)
            routes.append(route)
            for k, praw in enumerate(_ensure_list(rraw.get("plugins"), f"{rpath}.plugins")):
                raw_plugins.append((praw, {"route": route.id}, f"{rpath}.plugins[{k}]"))
        for k, praw in enumerate(_ensure_list(raw.get("plugins"), f"{path}.plugins")):
            raw_plugins.append((praw, {"service": service.id}, f"{path}.plugins[{k}]"))

    by_service_name = {s.entity.get("name"): s for s in services}
    for j, rraw in enumerate(_ensure_list(doc.get("routes"), "routes")):
        rpath = f"routes[{j}]"
        svc_ref = rraw.get("service")
        svc_name = svc_ref.get("name") if isinstance(svc_ref, dict) else svc_ref
        svc = by_service_name.get(svc_name) if svc_name else None
        if svc_name and svc is None:
            raise ConfigError(f"{rpath}.service", f"unknown service '{svc_name}'")
        route = _route(rraw, svc.id if svc else None, rpath, created)
        routes.append(route)
        for k, praw in enumerate(_ensure_list(rraw.get("plugins"), f"{rpath}.plugins")):
            raw_plugins.append((praw, {"route": route.id}, f"{rpath}.plugins[{k}]"))

    seen_usernames: set[str] = set()
    for i, raw in enumerate(_ensure_list(doc.get("consumers"), "consumers")):
        path = f"consumers[{i}]"
        if not raw.get("username") and not raw.get("custom_id"):
            raise ConfigError(path, "at least one of these fields must be non-empty: 'custom_id', 'username'")
        username = raw.get("username")
        if username in seen_usernames:
            raise ConfigError(f"{path}.username", f"duplicate consumer username '{username}'")
        if username:
            seen_usernames.add(username)
        cid = raw.get("id") or entity_id("consumer", str(username or raw.get("custom_id")))
        consumer = Consumer(
            {
                "id": cid,
                "username": username,
                "custom_id": raw.get("custom_id"),
                "tags": raw.get("tags"),
                "created_at": created,
                "updated_at": created,
                "ws_id": DEFAULT_WS_ID,
            }
        )
        for j, craw in enumerate(_ensure_list(raw.get("keyauth_credentials"), f"{path}.keyauth_credentials")):
            consumer.keyauth_credentials.append(
                _credential("keyauth", craw, cid, f"{path}.keyauth_credentials[{j}]", created, "key")
            )
        for j, craw in enumerate(_ensure_list(raw.get("jwt_secrets"), f"{path}.jwt_secrets")):
            cred = _credential("jwt", craw, cid, f"{path}.jwt_secrets[{j}]", created, "key")
            cred.setdefault("algorithm", "HS256")
            cred.setdefault("secret", None)
            cred.setdefault("rsa_public_key", None)
            if cred["algorithm"][:2] in ("RS", "ES", "PS") and not cred["rsa_public_key"]:
                raise ConfigError(
                    f"{path}.jwt_secrets[{j}].rsa_public_key", f"required for algorithm {cred['algorithm']}"
                )
            consumer.jwt_secrets.append(cred)
        for j, craw in enumerate(_ensure_list(raw.get("acls"), f"{path}.acls")):
            consumer.acls.append(_credential("acl", craw, cid, f"{path}.acls[{j}]", created, "group"))
        consumers.append(consumer)
        for k, praw in enumerate(_ensure_list(raw.get("plugins"), f"{path}.plugins")):
            raw_plugins.append((praw, {"consumer": cid}, f"{path}.plugins[{k}]"))

    for k, praw in enumerate(_ensure_list(doc.get("plugins"), "plugins")):
        raw_plugins.append((praw, {}, f"plugins[{k}]"))

    config = DeckConfig(services, routes, consumers, [])
    _check_unique_keys(consumers)
    for praw, scope, path in raw_plugins:
        config.plugins.append(_plugin(praw, scope, path, config, by_service_name))
    _check_duplicate_plugins(config.plugins)
    return config


def _resolve_ref(value: Any, kind: str, config: DeckConfig, services: dict[Any, Service], path: str) -> str:
    ref = value.get("name") or value.get("id") if isinstance(value, dict) else value
    if kind == "service":
        if ref in services:
            return services[ref].id
        if any(s.id == ref for s in config.services):
            return str(ref)
    elif kind == "route":
        for route in config.routes:
            if ref in (route.id, route.entity.get("name")):
                return route.id
    else:
        consumer = config.consumer_by_id_or_name(str(ref))
        if consumer is not None:
            return consumer.id
    raise ConfigError(path, f"unknown {kind} '{ref}'")


def _plugin(
    raw: Any, scope: dict[str, str | None], path: str, config: DeckConfig, services: dict[Any, Service]
) -> PluginEntity:
    if not isinstance(raw, dict) or not raw.get("name"):
        raise ConfigError(path, "a plugin needs a 'name'")
    ids = dict(scope)
    for kind in ("service", "route", "consumer"):
        if raw.get(kind) is not None and kind not in ids:
            ids[kind] = _resolve_ref(raw[kind], kind, config, services, f"{path}.{kind}")
    conf = raw.get("config") or {}
    if not isinstance(conf, dict):
        raise ConfigError(f"{path}.config", "must be a mapping")
    name = str(raw["name"])
    pid = raw.get("id") or entity_id(
        "plugin", f"{name}:{ids.get('route')}:{ids.get('service')}:{ids.get('consumer')}"
    )
    return PluginEntity(
        id=str(pid),
        name=name,
        config=dict(conf),
        enabled=bool(raw.get("enabled", True)),
        route_id=ids.get("route"),
        service_id=ids.get("service"),
        consumer_id=ids.get("consumer"),
        instance_name=raw.get("instance_name"),
        protocols=list(raw.get("protocols") or ["grpc", "grpcs", "http", "https"]),
    )


def _check_unique_keys(consumers: list[Consumer]) -> None:
    seen: set[str] = set()
    for consumer in consumers:
        for cred in consumer.keyauth_credentials:
            if cred["key"] in seen:
                raise ConfigError("keyauth_credentials.key", "UNIQUE violation: a key is used twice")
            seen.add(cred["key"])


def _check_duplicate_plugins(plugins: list[PluginEntity]) -> None:
    seen: set[tuple[str, str | None, str | None, str | None]] = set()
    for p in plugins:
        key = (p.name, p.route_id, p.service_id, p.consumer_id)
        if key in seen:
            raise ConfigError("plugins", f"plugin '{p.name}' configured twice on the same scope")
        seen.add(key)


_REGEX_PREFIX = re.compile(r"^~")


def route_matches_path(route_path: str, request_path: str) -> int | None:
    """Length of the match of one route path (prefix, or ``~`` regex) or None."""
    if _REGEX_PREFIX.match(route_path):
        m = re.match(route_path[1:], request_path)
        return len(m.group(0)) if m else None
    return len(route_path) if request_path.startswith(route_path) else None
