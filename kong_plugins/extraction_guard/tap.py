"""ai-extraction-guard-tap: the optional response-phase companion of ai-extraction-guard.

A ``response`` handler makes Kong buffer every upstream response of the routes it is attached
to (``kong/runloop/plugin_servers`` registers the phase; Kong then proxies in buffered mode), so
response-derived signals live in this separate plugin, served by its own plugin server
(``kong-plugins-serve kong_plugins.extraction_guard.tap``) and attached only where buffering is
acceptable: non-streaming predict APIs (top-1/top-2 margins) and LLM routes without streaming
(exact ``usage.completion_tokens``). It parses the body once and leaves a few numbers in
``kong.ctx.shared`` for the guard's log phase; it never changes the response.
"""

from __future__ import annotations

from typing import Any

from kong_plugins import schema as s
from kong_plugins.pdk import Kong

from .handler import TAP_KEY
from .payloads import response_summary

NAME = "ai-extraction-guard-tap"
VERSION = "0.1.0"
#: Phase order does not matter for a response tap; just below the guard for readability.
PRIORITY = 1009

SCHEMA = s.Record([
    s.Field("max_body_bytes", s.Integer(default=1048576, between=(1024, 67108864), description=(
        "Responses larger than this are not parsed (no response-derived signal for them)."))),
    s.Field("max_rows", s.Integer(default=8, between=(1, 256), description=(
        "Prediction rows whose margins are reported; match the guard's max_rows_per_request."))),
])

Schema = SCHEMA.kong_fields()
version = VERSION
priority = PRIORITY


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        conf = SCHEMA.validate(config)
        self.max_body_bytes = int(conf["max_body_bytes"])
        self.max_rows = int(conf["max_rows"])

    def response(self, kong: Kong) -> None:
        body = kong.service.response.get_raw_body()
        if isinstance(body, str):
            body = body.encode("utf-8", "replace")
        if not body or len(body) > self.max_body_bytes:
            return
        summary = response_summary(body, self.max_rows)
        if summary is not None:
            kong.ctx.shared.set(TAP_KEY, summary)
