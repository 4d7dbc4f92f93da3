"""ai-extraction-guard: detect model extraction and API abuse per client, and respond automatically.

Where things are decided:

- ``detector.py``  -- per-request evidence, per-client CUSUM scores, levels, explanations (pure);
- ``guard.py``     -- the access check (denylists, throttle, mitigations) and log-phase learning;
- ``handler.py``   -- the Kong phases (``Plugin``); ``tap.py`` the optional response-phase companion;
- ``baseline.py``, ``state.py``, ``sketches.py``, ``payloads.py`` -- what the detector is built on;
- ``alerts.py``    -- the SOAR webhook; ``schema.py`` / ``config.py`` -- configuration.
"""

import os

# The guard's matrices are tiny (at most 64 x 64 per route); OpenBLAS's default thread pool only adds
# contention with Kong's workers -- measured here: one 64-d eigendecomposition took 100 ms with the
# pool on a busy 2-core host and 1.2 ms single-threaded. Must precede numpy's first import; an
# operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from .handler import Plugin
from .schema import SCHEMA

NAME = "ai-extraction-guard"
VERSION = "0.1.0"
#: After the auth plugins (jwt 1450, key-auth 1250) so the consumer is known; before
#: ip-restriction (990), acl (950) and rate limiting (910) so a revoked or blocked client is refused
#: before anything else spends work or quota on it.
PRIORITY = 1010

Schema = SCHEMA.kong_fields()
version = VERSION
priority = PRIORITY

__all__ = ["NAME", "PRIORITY", "SCHEMA", "VERSION", "Plugin", "Schema", "priority", "version"]
