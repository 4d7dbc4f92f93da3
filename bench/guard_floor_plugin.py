"""The RPC floor of ai-extraction-guard: its PDK calls, in the same order, with none of its work.

Served by our runtime next to the real guard in ``bench_extraction_guard.py``; the guard's RPC time
minus this plugin's is what the guard's own computation (identity, denylist read, mitigations,
detector, storage) adds per request through the runtime.
"""

from __future__ import annotations

from typing import Any

Schema: list[dict[str, Any]] = []
version = "0.1.0"
priority = 1010

BODY_KEY = "guard_floor.body"


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def access(self, kong: Any) -> None:
        # the facts ai-suite-context publishes, the body with them (serialize is log-only)
        facts = kong.ctx.shared.get("ai_suite_facts")
        body = facts["request"]["body"] if isinstance(facts, dict) else None
        # the guard's hand-off: the body and who sent it (the log phase reads no serialize)
        kong.ctx.shared.set(BODY_KEY, {"body": body, "tenant": "default", "client": "consumer:floor",
                                       "group": "ip:127.0.0.1", "credential": "floor", "ip": "127.0.0.1",
                                       "route": "floor", "t": 0.0, "size": len(body or "")})

    def log(self, kong: Any) -> None:
        # the hand-off, which ai-suite-context's log phase completed with the response's size and
        # the tap's summary (with the companion, the guard's only log call)
        kong.ctx.shared.get(BODY_KEY)
