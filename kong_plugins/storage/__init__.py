"""Storage shared by the plugins: counters, limits and small state, in memory or in Redis.

Public surface (everything else is private)::

    Storage                          the interface (base.py)
    ├── MemoryStorage                default: per process, LRU-bounded, TTLs (memory.py)
    └── RedisStorage                 redis, redis-sentinel, redis-cluster (redis_backend.py)
    build_storage, STORAGE_RECORD    from validated plugin config (config.py)
    make_key, CrossSlotError         injective, Cluster-tagged keys (keys.py)
    Limiter, RateRule, CalendarRule, ConcurrencyRule, GlobalRule, LimitDecision, Reservation
                                     the limits engine (limiter.py)
    Script, register_script          atomic Lua + Python twin pairs (scripting.py)

Errors: backend failures raise :class:`kong_plugins.errors.StorageError`.
"""

from .base import Storage
from .config import STORAGE_FIELDS, STORAGE_RECORD, build_storage, check_storage_config
from .keys import CrossSlotError, make_key
from .limiter import (
    BUCKETS,
    GLOBAL_BUCKETS,
    CalendarRule,
    ConcurrencyRule,
    GlobalRule,
    LimitDecision,
    Limiter,
    RateRule,
    Reservation,
    Rule,
    RuleState,
)
from .memory import MemoryStorage
from .redis_backend import RedisStorage, close_shared_clients
from .scripting import REGISTRY, MemoryState, Script, ScriptArg, register_script

__all__ = [
    "BUCKETS",
    "GLOBAL_BUCKETS",
    "REGISTRY",
    "STORAGE_FIELDS",
    "STORAGE_RECORD",
    "CalendarRule",
    "ConcurrencyRule",
    "CrossSlotError",
    "GlobalRule",
    "LimitDecision",
    "Limiter",
    "MemoryState",
    "MemoryStorage",
    "RateRule",
    "RedisStorage",
    "Reservation",
    "Rule",
    "RuleState",
    "Script",
    "ScriptArg",
    "Storage",
    "build_storage",
    "check_storage_config",
    "close_shared_clients",
    "make_key",
    "register_script",
]
