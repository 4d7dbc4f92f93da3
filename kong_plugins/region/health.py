"""Is the exchange keeping this region informed? Checked in the background, read per request.

Every sync worker writes ``from:<its region>`` into every region's health hash each round
(:func:`~kong_plugins.region.exchange.read_health`). A plugin server reads its own region's hash
once per ``check_interval`` in a background thread (a greenlet under gevent) and keeps the
answer in memory, so deciding whether global-approximate limits run on the fallback costs no
round trip on the request path.

A peer is **stale** when its heartbeat is older than ``stale_after`` or has never been seen: this
region then does not know what the peer admitted lately, and the stated fallback applies
(``region.exchange_fallback``): ``share`` divides the limit by the number of regions so the global
bound holds without the exchange, ``full`` keeps the whole limit per region.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Sequence

from kong_plugins.errors import StorageError
from kong_plugins.storage import Storage

from .exchange import read_health

log = logging.getLogger("kong_plugins.region")


class ExchangeHealth:
    """The peers this region has (not) heard from recently."""

    def __init__(self, storage: Storage, peers: Sequence[str], stale_after: float,
                 check_interval: float = 1.0) -> None:
        self.storage = storage
        self.peers = tuple(peers)
        self.stale_after = stale_after
        self.check_interval = check_interval
        self._stale: frozenset[str] = frozenset(self.peers)
        self._checked = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def stale_peers(self) -> frozenset[str]:
        return self._stale

    @property
    def degraded(self) -> bool:
        """True while some peer's usage may be unknown here (read on the request path: no I/O)."""
        return bool(self._stale)

    def check(self) -> frozenset[str]:
        """Read the health hash now; the stale peers (kept unchanged when the read fails)."""
        try:
            ages = read_health(self.storage)
        except StorageError as exc:
            log.warning("region health: reading heartbeats failed: %s", type(exc.__cause__ or exc).__name__)
            return self._stale
        stale = frozenset(p for p in self.peers if ages.get(f"from:{p}", float("inf")) > self.stale_after)
        if stale != self._stale or not self._checked:
            if stale:
                log.warning("region exchange stale for %s: global limits use the fallback", ", ".join(sorted(stale)))
            elif self._checked:
                log.warning("region exchange healthy again")
        self._stale, self._checked = stale, True
        return stale

    def start(self) -> None:
        with self._lock:
            if self._thread is not None or not self.peers:
                if not self.peers:
                    self._stale = frozenset()
                return
            self._thread = threading.Thread(target=self._run, name="region-health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        self.check()
        while not self._stop.wait(self.check_interval):
            self.check()


_SHARED: dict[Hashable, ExchangeHealth] = {}
_SHARED_LOCK = threading.Lock()


def shared_health(settings: Hashable, storage: Storage, peers: Sequence[str], stale_after: float) -> ExchangeHealth:
    """The process's health checker for one storage target and peer set (started on first use)."""
    key = (settings, tuple(sorted(peers)), stale_after)
    with _SHARED_LOCK:
        health = _SHARED.get(key)
        if health is None:
            health = _SHARED[key] = ExchangeHealth(storage, peers, stale_after)
            health.start()
        return health


__all__ = ["ExchangeHealth", "shared_health"]
