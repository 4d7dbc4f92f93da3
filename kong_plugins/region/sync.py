"""``kong-ai-region-sync``: the per-region worker that exchanges usage and replicates denylists.

Run one per region (two for availability: every step is idempotent -- snapshots are absolute,
denylist events are applied by key and the cursor only moves forward)::

    kong-ai-region-sync --regions regions.yml --region eu

Two loops in one process:

- **usage** every ``exchange.sync_interval_ms``: :meth:`UsageExchange.sync_once` (drain the dirty
  index, ship per-bucket usage, keep what a down region missed as pending, heartbeat);
- **denylist**: :meth:`DenylistReplicator.replicate_once` after waiting on the local audit stream
  (``XREAD BLOCK``, so a new block leaves within one Redis round trip); after a failed pass it
  waits ``denylist_wait_ms`` instead of spinning.

It logs one JSON line per round that did something or failed (``-v``: every round), and exits
cleanly on SIGTERM/SIGINT. Exit status 2 for a bad regions file or region name.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kong_plugins.errors import ConfigError

from .config import RegionsFile, load_regions_file
from .denylist import DenylistReplicator
from .exchange import SyncReport, UsageExchange

log = logging.getLogger("kong_plugins.region.sync")


class SyncWorker:
    """The two loops of one region's worker; :meth:`run` blocks until ``stop`` is set."""

    def __init__(self, regions: RegionsFile, local: str, *, clock: Callable[[], float] = time.time,
                 emit: Callable[[dict[str, Any]], None] | None = None, verbose: bool = False) -> None:
        if local not in regions.storages:
            raise ConfigError("region", f"'{local}' is not in the regions file ({', '.join(regions.names)})")
        stores = {name: regions.storage(name) for name in regions.names}
        self.regions = regions
        self.local = local
        self.exchange = UsageExchange(local, stores, lanes=regions.lanes, clock=clock, batch=regions.batch)
        self.replicator = DenylistReplicator(local, stores, batch=regions.batch, clock=clock)
        self.stop = threading.Event()
        self._emit = emit or _print_json
        self._verbose = verbose
        self.last_usage: SyncReport | None = None

    def usage_round(self) -> SyncReport:
        report = self.exchange.sync_once()
        self.last_usage = report
        if self._verbose or report.failed or report.marks:
            self._emit({"event": "usage", "region": self.local, "marks": report.marks, "merged": report.merged,
                        "failed": report.failed, "pending": report.pending, "ms": round(report.seconds * 1000, 2)})
        return report

    def denylist_round(self) -> dict[str, str]:
        before = dict(self.replicator.applied)
        failures = self.replicator.replicate_once()
        applied = {k: v - before.get(k, 0) for k, v in self.replicator.applied.items() if v != before.get(k, 0)}
        if self._verbose or failures or applied:
            self._emit({"event": "denylist", "region": self.local, "applied": applied, "failed": failures})
        return failures

    def run(self) -> None:
        usage = threading.Thread(target=self._usage_loop, name="region-usage", daemon=True)
        usage.start()
        try:
            self._denylist_loop()
        finally:
            self.stop.set()
            usage.join(timeout=self.regions.sync_interval_s + 5)

    def _usage_loop(self) -> None:
        interval = self.regions.sync_interval_s
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.usage_round()
            except Exception:  # the loop must survive anything one round does
                log.exception("usage round failed")
            self.stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def _denylist_loop(self) -> None:
        wait = self.regions.denylist_wait_s
        failed = False
        while not self.stop.is_set():
            if failed:
                self.stop.wait(wait)
            else:
                self.replicator.wait_for_events(wait)
            try:
                failed = bool(self.denylist_round())
            except Exception:
                log.exception("denylist round failed")
                failed = True


def _print_json(record: dict[str, Any]) -> None:
    record = {"t": round(time.time(), 3), **record}
    sys.stdout.write(json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kong-ai-region-sync", description=__doc__.splitlines()[0])
    parser.add_argument("--regions", required=True, help="the regions file (YAML)")
    parser.add_argument("--region", required=True, help="the region this worker serves")
    parser.add_argument("--once", action="store_true", help="one usage round and one denylist pass, then exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every round")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s [%(name)s] %(levelname)s %(message)s")
    try:
        worker = SyncWorker(load_regions_file(args.regions), args.region, verbose=args.verbose)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.once:
        report = worker.usage_round()
        failures = worker.denylist_round()
        return 1 if report.failed or failures else 0

    def stop(signum: int, frame: object) -> None:
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()
    return 0


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
