"""Kong Gateway plugins that protect ML inference endpoints and LLM APIs.

Subpackages:

- ``kong_plugins.runtime``  -- our plugin server for Kong's external plugin protocol (msgpack RPC).
- ``kong_plugins.standin``  -- a Kong 3.9 stand-in that drives plugin servers as Kong does (tests, demo).
- ``kong_plugins.storage``  -- counters and state: in-memory default, Redis single / Sentinel / Cluster.
- ``kong_plugins.schema``   -- declarative plugin schemas: Kong's dump format and typed config parsing.
- one subpackage per plugin, each exposing ``NAME``, ``VERSION``, ``PRIORITY``, ``SCHEMA`` and ``Plugin``.
"""

__version__ = "0.1.0"

#: The suite's plugins: Kong plugin name -> importable module serving it.
SUITE_PLUGINS: dict[str, str] = {
    "ai-tier-quota": "kong_plugins.tier_quota",
    "ai-prompt-inspector": "kong_plugins.prompt_inspector",
    "ai-extraction-guard": "kong_plugins.extraction_guard",
}

__all__ = ["SUITE_PLUGINS", "__version__"]
