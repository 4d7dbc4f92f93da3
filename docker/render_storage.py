"""Point every suite plugin of a decK file at one storage backend, leaving everything else as written.

    python render_storage.py SOURCE TARGET --storage '{"strategy": "redis", "host": "redis", "port": 6379}'

The repository's ``kong.yml`` is the single source of the gateway's behaviour and keeps the
in-memory default so that the no-Docker demo needs no infrastructure. The compose stack mounts it
read-only and renders it once at container start into the file Kong loads
(``KONG_DECLARATIVE_CONFIG``), changing only the ``config.storage`` block of the suite plugins
whose schema has one (found from the installed plugins' own schemas, not from a list here): the
backend keys (strategy, host, port, database, sentinel_*, cluster_nodes) are replaced by the
given ones; tuning keys the file sets (timeouts, pool_size, key_prefix, ...) are kept.
Plugins on services, routes, consumers and global plugins are all covered.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

#: Storage keys that choose the backend; a rendered block takes all of them from --storage.
BACKEND_KEYS = ("strategy", "host", "port", "database", "username", "password", "ssl", "ssl_verify",
                "sentinel_master", "sentinel_nodes", "sentinel_password", "cluster_nodes")


def plugins_with_storage() -> frozenset[str]:
    """Suite plugins whose config schema has a top-level ``storage`` record."""
    from kong_plugins import SUITE_PLUGINS
    from kong_plugins.runtime.module import load_plugin_module

    names = set()
    for name in SUITE_PLUGINS:
        fields = load_plugin_module(name).info()["Schema"]["fields"][0]["config"]["fields"]
        if any("storage" in field for field in fields):
            names.add(name)
    return frozenset(names)


def _plugin_entries(deck: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every plugin entry of a decK file: global, and nested under services/routes/consumers."""
    yield from deck.get("plugins") or []
    for service in deck.get("services") or []:
        yield from service.get("plugins") or []
        for route in service.get("routes") or []:
            yield from route.get("plugins") or []
    for route in deck.get("routes") or []:
        yield from route.get("plugins") or []
    for consumer in deck.get("consumers") or []:
        yield from consumer.get("plugins") or []


def render(deck: dict[str, Any], storage: Mapping[str, Any], targets: frozenset[str]) -> int:
    """Rewrite, in place, the storage block of every plugin named in ``targets``; returns how many."""
    if not isinstance(storage.get("strategy"), str):
        raise ValueError("--storage needs a 'strategy'")
    unknown = set(storage) - set(BACKEND_KEYS)
    if unknown:
        raise ValueError(f"--storage may only set backend keys ({', '.join(BACKEND_KEYS)}); got {sorted(unknown)}")
    count = 0
    for plugin in _plugin_entries(deck):
        if plugin.get("name") not in targets:
            continue
        config = plugin.setdefault("config", {})
        kept = {k: v for k, v in (config.get("storage") or {}).items() if k not in BACKEND_KEYS}
        config["storage"] = {**kept, **storage}
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("source", type=Path, help="decK file to read (kept unchanged)")
    parser.add_argument("target", type=Path, help="decK file to write (what Kong loads)")
    parser.add_argument("--storage", required=True, help="JSON object of storage backend keys")
    args = parser.parse_args(argv)
    if args.source.resolve() == args.target.resolve():
        parser.error("source and target must differ: the source is mounted read-only")
    try:
        storage = json.loads(args.storage)
        if not isinstance(storage, dict):
            raise ValueError("--storage must be a JSON object")
        deck = yaml.safe_load(args.source.read_text())
        count = render(deck, storage, plugins_with_storage())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"render_storage: {exc}", file=sys.stderr)
        return 2
    args.target.parent.mkdir(parents=True, exist_ok=True)
    args.target.write_text(yaml.safe_dump(deck, sort_keys=False))
    print(f"render_storage: {count} plugin(s) now use storage strategy {storage['strategy']} -> {args.target}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
