"""Multi-region state: global limits from regional counters, global denylists, the exchange between.

Each region runs its own Kong nodes and its own Redis; nothing on a request path crosses a
region. What must hold globally is exchanged asynchronously by one sync worker per region
(``kong-ai-region-sync``):

- **usage** of global-approximate limits (:mod:`.exchange`): plugins note which global counters
  changed (:mod:`.journal`, in process, flushed off-path), the worker ships per-bucket usage to
  the other regions, where it lands in the remote-usage hash the limiter script adds to the local
  count -- still one Redis round trip per decision. :mod:`.health` notices a stale exchange;
- **denylists** (:mod:`.denylist`): blocks and revocations written with their TTL, audited
  (who, why, when) and replicated in order to every region.

Operators use ``kong-ai-ops`` (:mod:`.ops`); SOAR playbooks call its HMAC-signed callback server.
Configuration: the plugins' ``region`` block and the regions file (:mod:`.config`). The design,
the over-admission bound and the measured figures are in the README ("Multi-tenant, multi-region").
"""

from .config import (
    REGION_RECORD,
    SINGLE_REGION,
    RegionConfig,
    RegionsFile,
    load_regions_file,
    parse_region_config,
    parse_regions_file,
)
from .denylist import (
    ActiveEntry,
    Denylist,
    DenylistEvent,
    DenylistReplicator,
    global_verdict_key,
    revoked_key,
    state_key,
    verdict_key,
)
from .exchange import SyncReport, UsageExchange, read_health
from .health import ExchangeHealth, shared_health
from .journal import JournalFlusher, UsageJournal, UsageMark, flush_shared_journals, shared_journal

__all__ = [
    "REGION_RECORD",
    "SINGLE_REGION",
    "ActiveEntry",
    "Denylist",
    "DenylistEvent",
    "DenylistReplicator",
    "ExchangeHealth",
    "JournalFlusher",
    "RegionConfig",
    "RegionsFile",
    "SyncReport",
    "UsageExchange",
    "UsageJournal",
    "UsageMark",
    "flush_shared_journals",
    "global_verdict_key",
    "load_regions_file",
    "parse_region_config",
    "parse_regions_file",
    "read_health",
    "revoked_key",
    "shared_health",
    "shared_journal",
    "state_key",
    "verdict_key",
]
