"""pytest plugin (``pytest11`` entry point): the ``kong_standin`` fixture for testing kong-pdk plugins.

A plugin author tests a plugin module without a Kong::

    def test_blocks_without_header(kong_standin):
        gw = kong_standin(
            {"_format_version": "3.0",
             "services": [{"name": "api", "url": "http://api.internal",
                           "routes": [{"name": "r", "paths": ["/"]}]}],
             "plugins": [{"name": "my_plugin", "config": {"limit": 3}}]},
            plugins=["path/to/my_plugin.py"],
        )
        r = gw.request("GET", "/")
        assert r.status == 403

``kong_standin(deck, plugins=(), *, servers=(), upstreams=None, stock_kong_pdk=False, **options)``
starts one plugin server per entry of ``plugins`` (a ``.py`` path or an importable module) on our
runtime -- or on kong-pdk's own dedicated server with ``stock_kong_pdk=True`` -- plus any
explicit :class:`~kong_plugins.standin.PluginServerSpec` in ``servers``, and returns a started
:class:`~kong_plugins.standin.KongStandIn`. ``options`` go to ``KongStandIn`` (``rpc_timeout``,
``clock``, ``client_body_buffer_size``...). Everything is stopped when the test ends.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest

from kong_plugins.standin import KongStandIn, PluginServerSpec, UpstreamHandler

KongStandInFactory = Callable[..., KongStandIn]


@pytest.fixture
def kong_standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KongStandInFactory]:
    """Factory fixture: build and start Kong stand-ins that are closed after the test."""
    opened: list[KongStandIn] = []

    def factory(deck: str | os.PathLike[str] | dict[str, Any],
                plugins: Iterable[str | os.PathLike[str]] = (), *,
                servers: Iterable[PluginServerSpec] = (),
                upstreams: Mapping[str, UpstreamHandler] | None = None,
                stock_kong_pdk: bool = False, **options: Any) -> KongStandIn:
        # unix socket paths are limited to ~107 bytes: keep the prefix short
        prefix = tmp_path_factory.mktemp("kong")
        specs = list(servers)
        for plugin in plugins:
            target = os.fspath(plugin)
            if stock_kong_pdk:
                if not target.endswith(".py"):
                    raise ValueError(f"stock_kong_pdk needs a .py file, got {target!r}")
                specs.append(PluginServerSpec.stock_kong_pdk(target, prefix))
            else:
                specs.append(PluginServerSpec.module(target, prefix))
        gw = KongStandIn.from_deck(deck, servers=specs, upstreams=upstreams, **options)
        gw.start()
        opened.append(gw)
        return gw

    yield factory
    for gw in reversed(opened):
        gw.close()


__all__ = ["KongStandInFactory", "kong_standin"]
