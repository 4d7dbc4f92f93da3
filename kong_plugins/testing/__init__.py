"""Test support shipped with the package: real redis-server processes and the Kong stand-in fixture."""
