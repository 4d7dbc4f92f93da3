"""SOAR webhook delivery: HMAC-signed JSON, asynchronous, bounded, retried with backoff.

``WebhookSink.submit`` only puts the event on a bounded queue (``put_nowait``) and returns: a
request never waits for a receiver. One worker thread per sink (a greenlet under the runtime's
gevent monkey patching) delivers events in order; a failed attempt (connection error, timeout,
5xx, 429) is retried after ``base * 2**attempt`` seconds (capped, with jitter) up to
``max_retries`` times, then the event is dropped and counted. A full queue drops the new event and
counts it: under a flood of decisions the gateway keeps its memory bound and the receiver gets the
oldest, already-queued events first.

Signature: ``X-Signature-256: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`` with the
timestamp in ``X-Timestamp`` (seconds) and a unique ``X-Event-Id``, so a receiver can reject
forged and replayed events (the scheme Stripe and GitHub webhooks use).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .config import Webhook

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


#: Failure reasons remembered for operators (the most recent ones): bounded like the queue.
MAX_FAILURE_REASONS = 100


@dataclass
class SinkStats:
    delivered: int = 0
    retried: int = 0
    dropped_full: int = 0
    dropped_failed: int = 0
    failures: list[str] = field(default_factory=list)

    def failed(self, reason: str) -> None:
        self.failures.append(reason)
        if len(self.failures) > MAX_FAILURE_REASONS:
            del self.failures[0]


class WebhookSink:
    """Delivers decision events to one webhook; thread-safe, never blocks its callers."""

    def __init__(self, hook: Webhook, *, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random, backoff_base_s: float = BACKOFF_BASE_S) -> None:
        self.hook = hook
        self.stats = SinkStats()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=hook.queue_size)
        self._client = httpx.Client(timeout=hook.timeout_s, transport=transport)
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._backoff_base = backoff_base_s
        self._idle = threading.Event()
        self._idle.set()
        self._worker = threading.Thread(target=self._run, name="extraction-guard-webhook", daemon=True)
        self._worker.start()

    def submit(self, event: dict[str, Any]) -> bool:
        """Queue an event; False (and counted) when the queue is full."""
        try:
            self._idle.clear()
            self._queue.put_nowait(event)
            return True
        except queue.Full:
            self.stats.dropped_full += 1
            return False

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event is delivered or dropped (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=self.hook.timeout_s + 1)
        self._client.close()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self._deliver(event)
            finally:
                self._queue.task_done()

    def _deliver(self, event: dict[str, Any]) -> None:
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        event_id = uuid.uuid4().hex
        for attempt in range(self.hook.max_retries + 1):
            timestamp = str(int(self._clock()))
            headers = {"Content-Type": "application/json", "X-Event-Id": event_id, "X-Timestamp": timestamp,
                       "X-Signature-256": sign(self.hook.secret, timestamp, body)}
            try:
                response = self._client.post(self.hook.url, content=body, headers=headers)
                if response.status_code < 300:
                    self.stats.delivered += 1
                    return
                retryable = response.status_code >= 500 or response.status_code == 429
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                retryable, reason = True, type(exc).__name__
            self.stats.failed(reason)
            if not retryable or attempt == self.hook.max_retries:
                self.stats.dropped_failed += 1
                return
            self.stats.retried += 1
            delay = min(BACKOFF_MAX_S, self._backoff_base * 2**attempt)
            self._sleep(delay * (0.5 + self._rand() / 2))


_SINKS: dict[tuple[str, str], WebhookSink] = {}
_SINKS_LOCK = threading.Lock()


def shared_sink(hook: Webhook) -> WebhookSink:
    """One sink per (url, secret) in the process: instances on many routes share its worker."""
    key = (hook.url, hook.secret)
    with _SINKS_LOCK:
        sink = _SINKS.get(key)
        if sink is None:
            sink = _SINKS[key] = WebhookSink(hook)
        return sink
