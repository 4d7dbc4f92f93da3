"""Atomic storage scripts: Lua for Redis, a Python twin for the memory backend, one registry.

A :class:`Script` pairs a Lua source (package data, loaded with ``importlib.resources``) with a
Python function that does the same thing against the memory backend's :class:`MemoryState`.
Redis runs the Lua atomically (EVALSHA, with an EVAL fallback on NOSCRIPT); the memory backend
runs the twin under its lock, so both are atomic and both are one call for the caller.

Time: Lua scripts read the server clock (``redis.call('TIME')``) so that every gateway node
agrees on it; twins receive ``now_us`` -- the ``now`` the caller passed (Kong's request start
time), so a replay of the same requests reproduces the same decisions.

Plugins register their own scripts explicitly::

    MY_SCRIPT = register_script(Script.from_package("my_plugin", "scripts/thing.lua", _thing_twin))

There is no discovery magic: the registry is a dict filled by these calls at import time; it
exists so that operators' tools can list and preload every script the process may run.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

#: What scripts accept as arguments (Redis receives their ``str()``; twins get them as they are).
ScriptArg = str | int | float


class MemoryState(Protocol):
    """The memory backend's view of its keys, handed to twins while its lock is held.

    Expired keys read as absent. Values are Python objects owned by the store: a twin may mutate
    a dict it got from ``get`` in place, then call ``touch`` or ``set`` to record the new expiry.
    """

    def get(self, key: str) -> Any:
        """The value under ``key`` or ``None`` (absent or expired)."""

    def set(self, key: str, value: Any, expires_at_us: int | None) -> None:
        """Store ``value``; ``expires_at_us`` is an absolute time in microseconds, or no expiry."""

    def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""

    def expires_at(self, key: str) -> int | None:
        """The absolute expiry of ``key`` in microseconds, ``None`` without one or when absent."""

    def touch(self, key: str, expires_at_us: int | None) -> None:
        """Change the expiry of an existing key."""


#: A twin: (state, keys, args, now in microseconds) -> the reply Redis would give.
Twin = Callable[[MemoryState, Sequence[str], Sequence[ScriptArg], int], Any]


@dataclass(frozen=True)
class Script:
    """A Lua script and its Python twin; ``sha`` is what EVALSHA sends."""

    name: str
    lua: str
    twin: Twin = field(compare=False)
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.lua.encode("utf-8")).hexdigest())

    @classmethod
    def from_package(cls, package: str, path: str, twin: Twin, name: str | None = None,
                     prelude: Sequence[str] = ()) -> Script:
        """Load ``path`` (e.g. ``"scripts/limiter.lua"``) from ``package``'s data files, after the
        ``prelude`` files: Lua functions several scripts share (Redis cannot include a script in
        another, so the source sent is the concatenation)."""
        files = resources.files(package)
        lua = "\n".join(files.joinpath(p).read_text(encoding="utf-8") for p in (*prelude, path))
        return cls(name=name or f"{package}:{path}", lua=lua, twin=twin)


class ScriptRegistry:
    """Every script a process may run, by name. Registering a different script under a used
    name is an error: two plugins silently sharing a name would run each other's code."""

    def __init__(self) -> None:
        self._scripts: dict[str, Script] = {}
        self._lock = threading.Lock()

    def register(self, script: Script) -> Script:
        with self._lock:
            known = self._scripts.get(script.name)
            if known is not None and known.sha != script.sha:
                raise ValueError(f"a different script is already registered as {script.name!r}")
            self._scripts[script.name] = script
        return script

    def get(self, name: str) -> Script:
        return self._scripts[name]

    def all(self) -> tuple[Script, ...]:
        return tuple(self._scripts.values())


#: The process-wide registry used by :func:`register_script`.
REGISTRY = ScriptRegistry()


def register_script(script: Script) -> Script:
    """Register ``script`` in the process-wide registry and return it (for module-level use)."""
    return REGISTRY.register(script)


__all__ = ["REGISTRY", "MemoryState", "Script", "ScriptArg", "ScriptRegistry", "Twin", "register_script"]
