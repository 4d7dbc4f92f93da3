"""A marking plugin whose access handler raises after its first PDK call, for the fail-closed tests.

``failure_mode`` (open/closed) is what the operator chose for it; ``decision_mark`` makes the
runtime mark ``failed_open`` on its behalf, as the suite's plugins do (``kong_plugins.marks``).
"""

from typing import Any

Schema = (
    {"failure_mode": {"type": "string", "default": "open", "one_of": ["open", "closed"]}},
    {"fail": {"type": "boolean", "default": True}},
)
version = "0.1.0"
priority = 900
NAME = "failing-guard"


class Plugin:
    def __init__(self, config: dict[str, Any]) -> None:
        self.failure_mode = config.get("failure_mode") or "open"
        self.fail = bool(config.get("fail"))
        self.decision_mark_key = f"ai_suite.decided.{NAME}"

    def access(self, kong: Any) -> None:
        kong.request.get_path()
        if self.fail:
            raise RuntimeError("the plugin's own dependency broke")
        kong.ctx.shared.set(self.decision_mark_key, {"decision": "allow"})
