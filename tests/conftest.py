"""Fixtures shared by every test area: real redis-server processes (plain, Cluster, Sentinel)."""

pytest_plugins = ["kong_plugins.testing.redis_servers"]
