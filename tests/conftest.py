"""Fixtures shared by every test area: real redis-server processes (plain, Cluster, Sentinel)."""

import os

# Every call of a kernel made without numba's dispatcher (kong_plugins.extraction_guard._jit.direct)
# checks its arguments' types in the tests, plugin servers started by them included: set before
# any plugin module is imported (the direct calls are made when their modules load).
os.environ.setdefault("KONG_PLUGINS_CHECK_KERNEL_ARGS", "1")

pytest_plugins = ["kong_plugins.testing.redis_servers"]
