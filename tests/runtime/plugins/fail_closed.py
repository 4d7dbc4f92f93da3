"""A plugin declaring fail-closed at module level; its access handler always fails."""

from kong_plugins.errors import ConfigError

Schema = ({"limit": {"type": "integer", "description": "Any positive number; 0 is refused."}},)
version = "1.0.0"
priority = 10
failure_mode = "closed"


class Plugin:
    def __init__(self, config):
        if not config.get("limit") or config["limit"] <= 0:
            raise ConfigError("limit", "must be a positive integer")

    def access(self, kong):
        kong.request.get_header("host")
        raise RuntimeError("storage unavailable")

    def log(self, kong):
        raise RuntimeError("log failure is never fail-closed")
