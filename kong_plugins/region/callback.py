"""The SOAR callback: a playbook blocks or revokes through an HMAC-signed HTTP request.

``kong-ai-ops --region eu callback --listen 0.0.0.0:9107`` serves ``POST /v1/denylist`` with a
JSON body::

    {"action": "block", "tenant": "acme", "subject": "consumer:4f1c...", "ttl": 3600,
     "why": "INC-1234: extraction alert confirmed"}
    {"action": "block", "subject": "ip:203.0.113.9", "ttl": 600, "why": "botnet"}     (every tenant)
    {"action": "revoke", "tenant": "acme", "credential": "<credential id>", "ttl": 86400, "why": "..."}
    {"action": "unblock" | "unrevoke", ...same fields without ttl}

signed like the guard's outgoing SOAR webhooks (``extraction_guard.alerts``), so one shared secret
and one verification routine serve both directions: ``X-Timestamp`` (seconds) and
``X-Signature-256: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``, plus a unique
``X-Event-Id``. Refused: a bad or missing signature (401), a timestamp more than 5 minutes off
(401), an event id seen in the last 10 minutes (409, replay), a body that is not such an object
or a TTL above ``max_ttl`` (400). Accepted decisions are recorded through the region's
:class:`~kong_plugins.region.Denylist` with ``who = soar:<name>`` and the body's ``why``, and
replicated by the sync worker like any other; the answer is the audit event (200).

Never logged: the secret, signatures, bodies. Bodies are capped at 16 KiB.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kong_plugins.errors import StorageError
from kong_plugins.extraction_guard.alerts import sign

from .denylist import Denylist, DenylistEvent

log = logging.getLogger("kong_plugins.region.callback")

MAX_BODY = 16 * 1024
MAX_SKEW_S = 300.0
REPLAY_WINDOW_S = 600.0


class CallbackError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SoarCallback:
    """Verifies and applies one callback request (pure of HTTP, so it is tested directly)."""

    def __init__(self, denylist: Denylist, secret: str, *, name: str = "soar", max_ttl: float = 30 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 16:
            raise ValueError("the callback secret must have at least 16 characters")
        self.denylist = denylist
        self._secret = secret
        self.name = name
        self.max_ttl = max_ttl
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def handle(self, body: bytes, headers: dict[str, str]) -> DenylistEvent:
        now = self.clock()
        timestamp = headers.get("x-timestamp", "")
        signature = headers.get("x-signature-256", "")
        event_id = headers.get("x-event-id", "")
        try:
            skew = abs(now - float(timestamp))
        except ValueError:
            raise CallbackError(401, "missing or bad X-Timestamp") from None
        if skew > MAX_SKEW_S:
            raise CallbackError(401, "X-Timestamp too far from now")
        if not hmac.compare_digest(sign(self._secret, timestamp, body), signature):
            raise CallbackError(401, "bad signature")
        if not event_id or len(event_id) > 200:
            raise CallbackError(400, "X-Event-Id is required")
        with self._lock:
            for seen_id in [k for k, t in self._seen.items() if now - t > REPLAY_WINDOW_S]:
                del self._seen[seen_id]
            if event_id in self._seen:
                raise CallbackError(409, "this X-Event-Id was already processed")
            self._seen[event_id] = now
        try:
            return self._apply(json.loads(body))
        except CallbackError:
            with self._lock:
                self._seen.pop(event_id, None)
            raise
        except (ValueError, TypeError, KeyError) as exc:
            with self._lock:
                self._seen.pop(event_id, None)
            raise CallbackError(400, f"bad request: {type(exc).__name__}") from None

    def _apply(self, doc: Any) -> DenylistEvent:
        if not isinstance(doc, dict):
            raise CallbackError(400, "the body must be a JSON object")
        action = doc.get("action")
        why = doc.get("why")
        tenant = doc.get("tenant")
        if not isinstance(why, str) or not why:
            raise CallbackError(400, "why is required")
        if tenant is not None and not isinstance(tenant, str):
            raise CallbackError(400, "tenant must be a string")
        who = f"soar:{self.name}"
        if action in ("block", "revoke"):
            ttl = doc.get("ttl")
            if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= self.max_ttl:
                raise CallbackError(400, f"ttl must be a number of seconds in (0, {self.max_ttl:g}]")
        if action == "block":
            return self.denylist.block(str(doc["subject"]), tenant=tenant, ttl=float(doc["ttl"]), who=who, why=why)
        if action == "unblock":
            return self.denylist.unblock(str(doc["subject"]), tenant=tenant, who=who, why=why)
        if action in ("revoke", "unrevoke"):
            if not tenant:
                raise CallbackError(400, "revocations need the tenant")
            if action == "revoke":
                return self.denylist.revoke(str(doc["credential"]), tenant=tenant, ttl=float(doc["ttl"]), who=who,
                                            why=why)
            return self.denylist.unrevoke(str(doc["credential"]), tenant=tenant, who=who, why=why)
        raise CallbackError(400, "action must be block, unblock, revoke or unrevoke")


def make_server(callback: SoarCallback, address: tuple[str, int]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "kong-ai-ops-callback"

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/denylist":
                self._answer(404, {"message": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                self._answer(400 if length <= 0 else 413, {"message": "body missing or too large"})
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                event = callback.handle(body, headers)
            except CallbackError as exc:
                self._answer(exc.status, {"message": exc.message})
                return
            except StorageError:
                self._answer(503, {"message": "the region's storage is unavailable, retry"})
                return
            self._answer(200, event.as_dict())

        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            payload = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

    return ThreadingHTTPServer(address, Handler)


def serve(denylist: Denylist, secret: str, address: tuple[str, int], *, name: str = "soar",
          max_ttl: float = 30 * 86400) -> None:
    server = make_server(SoarCallback(denylist, secret, name=name, max_ttl=max_ttl), address)
    print(json.dumps({"event": "listening", "address": f"{address[0]}:{server.server_address[1]}"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


__all__ = ["CallbackError", "SoarCallback", "make_server", "serve"]
