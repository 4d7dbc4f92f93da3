"""SOAR webhook against a local HTTP receiver: signed, asynchronous, retried, bounded; down and slow."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kong_plugins.extraction_guard.alerts import MAX_FAILURE_REASONS, WebhookSink
from kong_plugins.extraction_guard.config import Webhook
from kong_plugins.testing.redis_servers import free_port

pytestmark = pytest.mark.timeout(60)
SECRET = "0123456789abcdef-secret"


class Receiver:
    """A local SOAR endpoint: records verified events; can fail, be slow, or be down."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.fail_next = 0
        self.delay = 0.0
        self.server: ThreadingHTTPServer | None = None
        self.release = threading.Event()
        self.release.set()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.release.wait(10)
                time.sleep(receiver.delay)
                expected = "sha256=" + hmac.new(SECRET.encode(), self.headers["X-Timestamp"].encode() + b"."
                                                + body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(expected, self.headers["X-Signature-256"]):
                    receiver.bad_signatures += 1
                    self.send_response(401)
                elif receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(503)
                else:
                    receiver.events.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    yield r
    r.release.set()
    r.stop()


def _sink(port: int, **kw: Any) -> WebhookSink:
    hook = Webhook(url=f"http://127.0.0.1:{port}/hook", secret=SECRET, timeout_s=kw.pop("timeout_s", 2.0),
                   max_retries=kw.pop("max_retries", 5), queue_size=kw.pop("queue_size", 100))
    return WebhookSink(hook, backoff_base_s=0.05, **kw)


def _wait(cond: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_events_arrive_signed_and_verifiable(receiver: Receiver) -> None:
    receiver.start()
    sink = _sink(receiver.port)
    try:
        assert sink.submit({"event": "ai-extraction-guard.decision", "level": "block", "client": "consumer:x"})
        assert _wait(lambda: len(receiver.events) == 1)
        assert receiver.events[0]["level"] == "block" and receiver.bad_signatures == 0
    finally:
        sink.close()


def test_failed_deliveries_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.start()
    receiver.fail_next = 2
    sink = _sink(receiver.port)
    try:
        sink.submit({"n": 1})
        assert _wait(lambda: len(receiver.events) == 1)
        assert sink.stats.retried == 2 and sink.stats.failures == ["HTTP 503", "HTTP 503"]
    finally:
        sink.close()


def test_receiver_down_then_up_gets_the_event_and_submit_never_waits(receiver: Receiver) -> None:
    sink = _sink(receiver.port, max_retries=8)
    try:
        start = time.perf_counter()
        for i in range(5):
            sink.submit({"n": i})
        assert time.perf_counter() - start < 0.5  # the request path only enqueues
        assert _wait(lambda: sink.stats.retried >= 2)  # connection refused, retried
        receiver.start()
        assert _wait(lambda: len(receiver.events) == 5, timeout=20)
        assert [e["n"] for e in receiver.events] == [0, 1, 2, 3, 4]
    finally:
        sink.close()


def test_a_slow_receiver_times_out_and_a_full_queue_drops_new_events(receiver: Receiver) -> None:
    receiver.start()
    receiver.release.clear()  # the receiver hangs on every request until released
    sink = _sink(receiver.port, timeout_s=0.3, max_retries=0, queue_size=3)
    try:
        start = time.perf_counter()
        accepted = [sink.submit({"n": i}) for i in range(10)]
        assert time.perf_counter() - start < 0.5
        assert accepted.count(True) <= 4 and sink.stats.dropped_full >= 6
        assert _wait(lambda: sink.stats.dropped_failed >= 1)
        assert "ReadTimeout" in sink.stats.failures
    finally:
        receiver.release.set()
        sink.close()


def test_a_receiver_that_stays_down_costs_bounded_memory(receiver: Receiver) -> None:
    """Failures are counted, and only the most recent reasons are kept, however long the outage."""
    sink = _sink(receiver.port, max_retries=0, queue_size=1000)  # receiver never started: refused
    try:
        for i in range(MAX_FAILURE_REASONS + 50):
            assert sink.submit({"n": i})
        assert sink.flush(timeout=30)
        assert sink.stats.dropped_failed == MAX_FAILURE_REASONS + 50
        assert len(sink.stats.failures) == MAX_FAILURE_REASONS
        assert set(sink.stats.failures) == {"ConnectError"}
    finally:
        sink.close()
