"""kong.yml, the reference deployment, on the Kong stand-in with the suite's real plugin servers.

Used by the no-Docker demo (``kong-ai-demo``), the replay command and ``tests/deployment``::

    with reference_gateway(prefix, clock=clock) as gw:
        gw.request("POST", "/v1/chat/completions", headers={"apikey": FREE_KEY, ...}, body=...)

The plugin servers are our runtime (``python -m kong_plugins.runtime.cli NAME``), one process per
plugin as Kong 3.9 requires, on the in-memory storage kong.yml configures.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from kong_plugins import SUITE_PLUGINS
from kong_plugins.standin import KongStandIn, PluginServerSpec, UpstreamHandler

from .models import MODELS

#: The demo credentials of kong.yml (DEMO values: a real deployment replaces them).
FREE_KEY = "free-demo-key"
PREMIUM_KEY = "premium-demo-key"
DOCQA_KEY = "docqa-demo-key"
JWT_ISSUER = "analytics-service-issuer"
JWT_SECRET = "analytics-demo-secret-0123456789abcdef"

#: Route paths of kong.yml.
CHAT = "/v1/chat/completions"
IMAGES = "/v1/images/analyze"
DOCQA = "/v1/docqa/ask"
CLASSIFIER = "/v1/models/classifier:predict"

INTERNAL_IP = "10.20.0.7"
EXTERNAL_IP = "203.0.113.9"


def find_kong_yml(explicit: str | os.PathLike[str] | None = None) -> Path:
    """kong.yml: the given path, else ./kong.yml, else the one at the root of this checkout."""
    candidates = [Path(explicit)] if explicit else [Path.cwd() / "kong.yml",
                                                   Path(__file__).resolve().parents[2] / "kong.yml"]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"kong.yml not found (tried {tried}); run from the repository root or pass --deck")


def suite_servers(
    prefix: str | os.PathLike[str], names: Iterable[str] = tuple(SUITE_PLUGINS)
) -> list[PluginServerSpec]:
    """One plugin server per suite plugin, sockets under ``prefix`` (as kong.conf would set them)."""
    return [PluginServerSpec.suite(name, prefix=prefix) for name in names]


def reference_gateway(
    prefix: str | os.PathLike[str],
    *,
    deck: str | os.PathLike[str] | dict[str, Any] | None = None,
    clock: Callable[[], float] = time.time,
    upstreams: Mapping[str, UpstreamHandler] | None = None,
    rpc_timeout: float = 10.0,
    **options: Any,
) -> KongStandIn:
    """The stand-in loaded with kong.yml (or ``deck``), the suite's servers and the demo models."""
    source: str | os.PathLike[str] | dict[str, Any] = deck if isinstance(deck, dict) else find_kong_yml(deck)
    return KongStandIn.from_deck(
        source,
        servers=suite_servers(prefix),
        upstreams={**MODELS, **(upstreams or {})},
        clock=clock,
        rpc_timeout=rpc_timeout,
        **options,
    )


def jwt_token(now: float, *, lifetime: float = 3600.0, secret: str = JWT_SECRET) -> str:
    """A JWT for kong.yml's ``analytics-service`` consumer (HS256, ``iss`` names the credential)."""
    import jwt

    return jwt.encode({"iss": JWT_ISSUER, "exp": int(now + lifetime), "sub": "nightly-batch"}, secret,
                      algorithm="HS256")


__all__ = [
    "CHAT", "CLASSIFIER", "DOCQA", "DOCQA_KEY", "EXTERNAL_IP", "FREE_KEY", "IMAGES", "INTERNAL_IP", "JWT_ISSUER",
    "JWT_SECRET", "PREMIUM_KEY", "find_kong_yml", "jwt_token", "reference_gateway", "suite_servers",
]
