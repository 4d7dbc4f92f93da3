"""``ai-tier-quota``: tier-aware access and quotas for models -- requests and LLM tokens.

Where things are: :mod:`.schema` (config fields), :mod:`.config` (parsed once, cross-field rules),
:mod:`.decide` (where quota decides: rules, keys, headers -- pure code), :mod:`.tokens` (estimate and
usage), :mod:`.handler` (the phases and their PDK calls), :mod:`.pending` (access -> log hand-off).

Kong learns a plugin's phases from the server's dump, so the phase set is a server-wide choice:
by default the plugin has ``access`` and ``log`` (responses keep streaming); with
``AI_TIER_QUOTA_RESPONSE_PHASE=on`` in the plugin server's environment it also has ``response``,
which lets ``tokens.usage_source = response_body`` read ``usage`` from the body -- and makes Kong
buffer every response of the plugin's routes.
"""

from __future__ import annotations

import os

from .handler import BufferingTierQuota, TierQuota
from .schema import SCHEMA

NAME = "ai-tier-quota"
VERSION = "0.1.0"
#: Below the auth plugins (jwt 1450, key-auth 1250) and acl (950), so the consumer is known and
#: ACL refusals cost no quota; above Kong's rate-limiting (910) and ai-prompt-guard (771).
PRIORITY = 915

Plugin: type[TierQuota] = (
    BufferingTierQuota if os.environ.get("AI_TIER_QUOTA_RESPONSE_PHASE", "").lower() in ("on", "1", "true")
    else TierQuota
)

# kong-pdk module contract
Schema = SCHEMA.kong_fields()
version = VERSION
priority = PRIORITY

__all__ = ["NAME", "PRIORITY", "SCHEMA", "VERSION", "BufferingTierQuota", "Plugin", "Schema", "TierQuota",
           "priority", "version"]
