"""``kong-ai-replay``: what the suite would have decided for traffic Kong already logged.

Input: JSON lines as Kong's ``file-log`` writes them (``cjson.encode(kong.log.serialize())`` per
request, ``kong/plugins/file-log/handler.lua``; ``http-log`` posts the same objects, one per line
when saved). Each line is replayed through the Kong stand-in loaded with a decK file (kong.yml by
default) and the suite's real plugin servers, **at the time it was logged** (``started_at``, ms):
Kong's request start time is what ai-tier-quota and ai-extraction-guard count windows with, so a
day of logs replays as that day, in seconds. Try new numbers in a copy of kong.yml before
enforcing them.

What a log line can and cannot give back (``kong/pdk/log.lua`` ``serialize``):

- identity: credentials are not logged (key-auth's ``hide_credentials`` removes the key, serialize
  redacts ``authorization``), so the logged ``consumer`` is authenticated again with its credential
  from the decK file (a key, or a JWT minted with its HS* secret); a consumer the file does not
  know, or one with only RS/ES keys, is replayed unauthenticated and says so;
- bodies are not logged by default: with ``custom_fields_by_lua = {["request.body"] = "return
  kong.request.get_raw_body()"}`` they are replayed (the inspector then sees the prompt), otherwise
  the request has no body (nothing to inspect; token reservations use ``default_max_tokens``);
- the model's answer is the logged status, with the logged ``X-Usage-Total-Tokens`` header when
  present, so token settlement follows the real usage.

Lines are replayed in ``started_at`` order. A line that cannot be replayed (not JSON, not an
object, no method/uri, no usable ``started_at``) is reported with its number and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from kong_plugins.errors import ConfigError
from kong_plugins.standin import KongStandIn, PluginServerError, UpstreamRequest, UpstreamResponse
from kong_plugins.standin._entities import DeckConfig, parse_deck

from .models import USAGE_HEADER
from .reference import find_kong_yml, reference_gateway
from .scenarios import Outcome, outcome_of

#: Request headers never replayed: recomputed by the stand-in, or hop-by-hop.
_DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "apikey"})


class MalformedLine(ValueError):
    """A log line that cannot be replayed; the message says why."""


@dataclass(frozen=True)
class LoggedRequest:
    line: int
    started_at: float
    method: str
    uri: str
    headers: list[tuple[str, str]]
    body: bytes
    client_ip: str
    consumer: str | None
    logged_status: int | None
    usage_header: str | None


@dataclass(frozen=True)
class Replayed:
    request: LoggedRequest
    outcome: Outcome
    note: str = ""

    @property
    def changed(self) -> bool:
        return self.request.logged_status is not None and self.request.logged_status != self.outcome.status


def _header_pairs(raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise MalformedLine("request.headers is not an object")
    pairs: list[tuple[str, str]] = []
    for name, value in raw.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str | int | float) and not isinstance(v, bool):
                pairs.append((str(name), str(v)))
    return pairs


def parse_line(number: int, text: str) -> LoggedRequest:
    """One file-log line; raises :class:`MalformedLine` naming what is wrong."""
    try:
        entry = json.loads(text)
    except ValueError as exc:
        raise MalformedLine(f"not JSON ({exc})") from None
    if not isinstance(entry, dict):
        raise MalformedLine(f"a JSON {type(entry).__name__}, not a serialize() object")
    request = entry.get("request")
    if not isinstance(request, dict):
        raise MalformedLine("no request object")
    method, uri = request.get("method"), request.get("uri")
    if not isinstance(method, str) or not method:
        raise MalformedLine("request.method missing")
    if not isinstance(uri, str) or not uri.startswith("/"):
        raise MalformedLine("request.uri missing or not a path")
    started = entry.get("started_at")
    if isinstance(started, bool) or not isinstance(started, int | float) or started <= 0:
        raise MalformedLine("started_at missing or not a positive number of milliseconds")
    headers = [(k, v) for k, v in _header_pairs(request.get("headers")) if k.lower() not in _DROPPED
               and not (k.lower() == "authorization" and v == "REDACTED")]
    body = request.get("body")
    raw_body = body.encode() if isinstance(body, str) else b""
    consumer = entry.get("consumer")
    username = consumer.get("username") or consumer.get("id") if isinstance(consumer, dict) else None
    logged_response = entry.get("response")
    response: dict[str, Any] = logged_response if isinstance(logged_response, dict) else {}
    status = response.get("status") if isinstance(response.get("status"), int) else None
    usage = None
    for name, value in _header_pairs(response.get("headers")):
        if name.lower() == USAGE_HEADER.lower():
            usage = value
    logged_ip = entry.get("client_ip")
    client_ip = logged_ip if isinstance(logged_ip, str) else "127.0.0.1"
    return LoggedRequest(number, float(started) / 1000.0, method.upper(), uri, headers, raw_body, client_ip,
                         str(username) if username else None, status, usage)


def read_log(lines: Iterable[str]) -> tuple[list[LoggedRequest], list[tuple[int, str]]]:
    """Parsed requests in ``started_at`` order, and ``(line number, error)`` for the rest."""
    parsed: list[LoggedRequest] = []
    errors: list[tuple[int, str]] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            parsed.append(parse_line(number, text))
        except MalformedLine as exc:
            errors.append((number, str(exc)))
    parsed.sort(key=lambda r: (r.started_at, r.line))
    return parsed, errors


class Credentials:
    """The credential a logged consumer authenticates with again, from the decK file."""

    def __init__(self, config: DeckConfig) -> None:
        self._config = config

    def headers_for(self, username: str | None, now: float) -> tuple[list[tuple[str, str]], str]:
        if username is None:
            return [], ""
        consumer = self._config.consumer_by_id_or_name(username)
        if consumer is None:
            return [], f"consumer {username} is not in the decK file: replayed unauthenticated"
        if consumer.keyauth_credentials:
            return [("apikey", str(consumer.keyauth_credentials[0]["key"]))], ""
        for secret in consumer.jwt_secrets:
            algorithm = str(secret.get("algorithm") or "HS256")
            if algorithm.startswith("HS") and secret.get("secret"):
                import jwt

                token = jwt.encode({"iss": secret["key"], "exp": int(now + 3600)}, str(secret["secret"]),
                                   algorithm=algorithm)
                return [("Authorization", f"Bearer {token}")], ""
        return [], f"consumer {username} has no key or HS* JWT secret to replay with: replayed unauthenticated"


def _logged_upstream(logged: dict[str, LoggedRequest]) -> Any:
    def answer(request: UpstreamRequest) -> UpstreamResponse:
        original = logged.get(request.headers.get("x-replay-line", ""))
        status = original.logged_status if original and original.logged_status and original.logged_status < 600 \
            else 200
        headers = {"Content-Type": "application/json"}
        if original is not None and original.usage_header is not None:
            headers[USAGE_HEADER] = original.usage_header
        return UpstreamResponse(status if status >= 200 else 200, headers, b"{}")

    return answer


def replay(gw: KongStandIn, requests: list[LoggedRequest], credentials: Credentials) -> list[Replayed]:
    by_line = {str(r.line): r for r in requests}
    upstream = _logged_upstream(by_line)
    for service in gw.config.services:
        gw.upstreams[service.name] = upstream
    results: list[Replayed] = []
    for request in requests:
        extra, note = credentials.headers_for(request.consumer, request.started_at)
        started = request.started_at
        gw.clock = _fixed(started)  # JWT expiry and anything else on Kong's clock: the logged time
        response = gw.request(request.method, request.uri,
                              headers=[*request.headers, *extra, ("X-Replay-Line", str(request.line))],
                              body=request.body, client_ip=request.client_ip, start_time=started)
        gw.wait_log_phase()  # settle tokens before the next line, as time moves on
        results.append(Replayed(request, outcome_of(response), note))
    return results


def _fixed(at: float) -> Callable[[], float]:
    return lambda: at


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def report(results: list[Replayed], errors: list[tuple[int, str]], out: TextIO, *, per_line: bool = True) -> None:
    if per_line:
        print(f"{'line':>6}  {'started_at (UTC)':24}  {'consumer':18} {'request':40} {'logged':>6}  replayed",
              file=out)
        rows: list[tuple[int, str]] = [(r.request.line, _row(r)) for r in results]
        rows += [(number, f"{number:6d}  error: {message}") for number, message in errors]
        for _, row in sorted(rows):
            print(row, file=out)
    decisions = Counter(r.outcome.label.split(" (Retry-After")[0] for r in results)
    changed = [r for r in results if r.changed]
    print(f"\n{len(results) + len(errors)} lines: {len(results)} replayed, {len(errors)} malformed", file=out)
    print("What the suite decides:", file=out)
    for label, count in decisions.most_common():
        print(f"  {count:7d} x {label}", file=out)
    transitions = Counter(f"{r.request.logged_status} -> {r.outcome.status}" for r in changed)
    print(f"Different from the logged status: {len(changed)}"
          + (" (" + ", ".join(f"{k}: {v}" for k, v in transitions.most_common()) + ")" if changed else ""), file=out)
    refused = Counter(r.request.consumer or "(anonymous)" for r in results if r.outcome.status >= 400)
    if refused:
        print("Refused, by consumer: " + ", ".join(f"{c} {n}" for c, n in refused.most_common()), file=out)


def _row(r: Replayed) -> str:
    req = r.request
    target = f"{req.method} {req.uri}"[:40]
    logged = str(req.logged_status) if req.logged_status is not None else "-"
    mark = "  <- changed" if r.changed else ""
    note = f"  [{r.note}]" if r.note else ""
    return (f"{req.line:6d}  {_when(req.started_at):24}  {(req.consumer or '-')[:18]:18} {target:40} "
            f"{logged:>6}  {r.outcome.label}{mark}{note}")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    stream = out if out is not None else sys.stdout
    parser = argparse.ArgumentParser(prog="kong-ai-replay",
                                     description="Replay Kong file-log/http-log JSON lines through the suite.")
    parser.add_argument("log", help="file of JSON lines (kong.log.serialize() objects); '-' reads stdin")
    parser.add_argument("--deck", help="decK file to decide with (default: kong.yml of this checkout)")
    parser.add_argument("--summary", action="store_true", help="print only the aggregate, not every line")
    args = parser.parse_args(argv)
    try:
        deck = find_kong_yml(args.deck)
        if args.log == "-":
            requests, errors = read_log(sys.stdin)
        else:
            with open(args.log, encoding="utf-8", errors="replace") as handle:
                requests, errors = read_log(handle)
    except (FileNotFoundError, IsADirectoryError) as exc:
        print(f"kong-ai-replay: {exc}", file=stream)
        return 1
    try:
        credentials = Credentials(parse_deck(deck))
        results: list[Replayed] = []
        if requests:  # nothing replayable: no plugin server to start
            with tempfile.TemporaryDirectory(prefix="kong-ai-replay-") as prefix, \
                    reference_gateway(prefix, deck=deck) as gw:
                results = replay(gw, requests, credentials)
    except (ConfigError, PluginServerError) as exc:
        print(f"kong-ai-replay: {exc}", file=stream)
        return 1
    report(results, errors, stream, per_line=not args.summary)
    return 0


def write_log_line(entry: dict[str, Any]) -> str:
    """A serialize() object as file-log writes it: one JSON object per line."""
    return json.dumps(entry, separators=(",", ":")) + "\n"


__all__ = ["Credentials", "LoggedRequest", "MalformedLine", "Replayed", "main", "parse_line", "read_log", "replay",
           "report", "write_log_line"]

if __name__ == "__main__":
    sys.exit(main())
