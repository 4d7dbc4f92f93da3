"""ai-prompt-inspector: LLM prompt and payload inspection at the gateway.

- :mod:`.bodies`    -- bounded JSON parsing, format detection, texts by role, predict-API checks
- :mod:`.normalise` -- the evasion-proof views of a text (homoglyphs, invisibles, encodings, ...)
- :mod:`.detectors` -- injection / jailbreak signals by family and their score
- :mod:`.secrets`   -- API keys, cloud credentials, private keys, emails, Luhn-checked cards
- :mod:`.engine`    -- the pure decision core shared by the plugin, the evaluation and the bench
- :mod:`.config`    -- SCHEMA and its parsing into frozen settings (ConfigError at instance start)
- :mod:`.plugin`    -- the access-phase handler (where the request is decided)
"""

from __future__ import annotations

from .config import SCHEMA
from .plugin import Plugin

NAME = "ai-prompt-inspector"
VERSION = "0.1.0"
#: Above ai-prompt-guard (771) so that it runs first, below the auth plugins (jwt 1450, key-auth
#: 1250) so that unauthenticated requests are refused before any inspection work.
PRIORITY = 775

Schema = SCHEMA.kong_fields()
version = VERSION
priority = PRIORITY

__all__ = ["NAME", "PRIORITY", "SCHEMA", "VERSION", "Plugin", "Schema", "priority", "version"]
