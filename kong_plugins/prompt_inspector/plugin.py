"""The access-phase handler: gather in one PDK call, decide in pure code, act once.

PDK round trips on the allow path: HandleEvent and ``kong.ctx.shared.get`` of the request facts
the Lua companion ``ai-suite-context`` publishes, which carry the Content-Type and the body (up to
its ``request_body_max_bytes``) -- two; with ``decision_mark`` a third, ``kong.ctx.shared.set``
(see ``kong_plugins.marks``). A body the companion left out (chunked, above its limit or above
this plugin's ``max_body_bytes``) is asked of Kong, ``kong.request.get_raw_body(max_body_bytes)``,
and without the companion the Content-Type too, ``kong.request.get_header``: four calls then, as
without the facts plus their (empty) read. Kong 3.9's ``get_raw_body`` reads a body
that nginx buffered to a temporary file (above ``client_body_buffer_size``, 8 KB by default) only
when given ``max_allowed_file_size`` and the file is not larger (``kong/pdk/request.lua``); it
answers ``nil`` otherwise, which reaches us as ``None`` and becomes a 413.

A block leaves through ``kong.response.exit``, which never returns (the runtime unwinds the
handler, as Kong's coroutine yields). Decision lines go to the plugin server's log -- no RPC -- as
one JSON object: decision, families, score, signal names, secret kinds and an HMAC of the inspected
text, never the text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from kong_plugins.companion import FACTS_KEY
from kong_plugins.identity import parse_facts
from kong_plugins.marks import mark_key, mark_value
from kong_plugins.pdk import Kong

from .bodies import PayloadError, Segment, check_predict, detect_format, extract, parse_json
from .config import InspectorConfig, parse_config
from .engine import Inspector, Verdict
from .schemas import builtin_validator
from .secrets import find_secrets

__all__ = ["Decision", "Plugin"]

LOG = logging.getLogger("kong_plugins.prompt_inspector")
_SEVERITY = {"allow": 0, "log": 1, "flag": 2, "block": 3}


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request; ``record`` is the log line (None: nothing worth logging)."""

    action: str  # allow | log | flag | block | reject
    status: int = 200
    body: dict[str, Any] | None = None
    header_value: str | None = None
    record: dict[str, Any] | None = None
    families: tuple[str, ...] = ()
    score: float = 0.0
    secrets: tuple[str, ...] = field(default_factory=tuple)


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _schema_error(validator: Draft202012Validator, body: Any) -> PayloadError | None:
    errors = sorted(validator.iter_errors(body), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if not errors:
        return None
    err = errors[0]
    where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return PayloadError(422, "schema_violation",
                        f"request body does not match the expected schema ({err.validator} failed)", where)


class Plugin:
    """ai-prompt-inspector: payload checks, injection/jailbreak detection, secrets, actions."""

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.conf: InspectorConfig = parse_config(config)
        self.failure_mode = "closed" if self.conf.fail_closed else "open"
        self.inspector = Inspector(self.conf.detection)
        self._clock = clock
        self._hash_key = self.conf.log_hash_key or random_bytes(32)
        #: Read by the runtime too: it marks ``failed_open`` when a handler raises in open mode.
        self.decision_mark_key = mark_key("ai-prompt-inspector") if self.conf.decision_mark else None

    # -- phase -----------------------------------------------------------------------------------
    def access(self, kong: Kong) -> None:
        content_type, body = self._request(kong)
        decision = self.decide(content_type, body)
        if decision.record is not None:
            LOG.warning(json.dumps(decision.record, sort_keys=True))
        if decision.action in ("block", "reject"):
            kong.response.exit(decision.status, decision.body, {"Content-Type": "application/json"})
        elif decision.action == "flag" and decision.header_value is not None:
            kong.service.request.set_header(self.conf.flag_header, decision.header_value)
        if self.decision_mark_key is not None:
            # The allow path only reads, so the mark is one more round trip (kong_plugins.marks).
            kong.ctx.shared.set(self.decision_mark_key, mark_value(decision.action))

    def _request(self, kong: Kong) -> tuple[str | None, bytes | None]:
        """The Content-Type and the raw body: from the companion's facts (one round trip) when they
        carry the body, else from Kong."""
        limit = self.conf.limits.max_body_bytes
        published = kong.ctx.shared.get(FACTS_KEY)
        if isinstance(published, dict):  # only plugins write kong.ctx.shared: anything else is absent
            facts = parse_facts(published)
            content_type = facts.header("content-type")
            if facts.body is not None and len(facts.body) <= limit:
                return content_type, facts.body
        else:
            content_type = kong.request.get_header("content-type")
        # Larger than the limit here: Kong's answer decides (a body nginx kept in memory is
        # returned whatever its size, one in a file only within the limit), as without the facts.
        return content_type, kong.request.get_raw_body(limit)

    # -- pure decision ---------------------------------------------------------------------------
    def decide(self, content_type: str | None, body: bytes | None, path_hint: str = "") -> Decision:
        """The decision for a request with this Content-Type and raw body (None: too large to read)."""
        started = self._clock()
        try:
            segments, fmt = self._payload(content_type, body, path_hint)
        except PayloadError as exc:
            rejected = {"plugin": "ai-prompt-inspector", "decision": "reject", "status": exc.status,
                        "reason": exc.error_type}
            return Decision("reject", exc.status, exc.body(), record=rejected)
        if segments is None:
            return Decision("allow")
        texts = [seg.text for seg in segments if seg.role in self.conf.inspect_roles]
        verdict = self.inspector.detect(texts)
        secrets: list[str] = []
        if self.conf.secrets_action != "off":
            secrets = find_secrets(texts, self.conf.secret_kinds)
        action = self._action(verdict, secrets)
        if action == "allow":
            return Decision("allow", score=verdict.score)
        record: dict[str, Any] = {
            "plugin": "ai-prompt-inspector",
            "decision": action,
            "shadow": self.conf.shadow,
            "families": list(verdict.families) if verdict.detected else [],
            "score": verdict.score,
            "signals": list(verdict.signals),
            "secrets": secrets,
            "format": fmt,
            "texts": len(texts),
            "text_hmac": self._digest(texts),
            "elapsed_us": round((self._clock() - started) * 1e6),
        }
        families = tuple(verdict.families) if verdict.detected else ()
        if self.conf.shadow:
            return Decision("log", record=record, families=families, score=verdict.score, secrets=tuple(secrets))
        if action == "block":
            body_out = {"error": {"type": "request_rejected", "message": self.conf.block_message}}
            return Decision("block", self.conf.block_status, body_out, record=record, families=families,
                            score=verdict.score, secrets=tuple(secrets))
        header = None
        if action == "flag":
            parts = [f"families={','.join(families)}" if families else "", f"score={verdict.score:.2f}",
                     f"secrets={','.join(secrets)}" if secrets else ""]
            header = "flagged; " + "; ".join(p for p in parts if p)
        return Decision(action, header_value=header, record=record, families=families,
                        score=verdict.score, secrets=tuple(secrets))

    def _action(self, verdict: Verdict, secrets: Sequence[str]) -> str:
        action = "allow"
        if verdict.detected:
            chosen = [self.conf.family_actions.get(f, self.conf.action) for f in verdict.families]
            chosen = [a for a in chosen if a != "off"] if chosen else [self.conf.action]
            for candidate in chosen:
                if _SEVERITY[candidate] > _SEVERITY[action]:
                    action = candidate
        if secrets and _SEVERITY[self.conf.secrets_action] > _SEVERITY[action]:
            action = self.conf.secrets_action
        return action

    def _payload(
        self, content_type: str | None, body: bytes | None, path_hint: str
    ) -> tuple[list[Segment] | None, str]:
        """Payload checks; the segments to inspect, or None when there is no body at all."""
        conf = self.conf
        if body is None:
            raise PayloadError(413, "payload_too_large", f"request body exceeds {conf.limits.max_body_bytes} bytes")
        if not body:
            return None, ""
        if _media_type(content_type) not in conf.content_types:
            accepted = ", ".join(sorted(conf.content_types))
            raise PayloadError(415, "unsupported_media_type", f"Content-Type must be one of: {accepted}")
        parsed = parse_json(bytes(body), conf.limits)
        fmt = conf.format if conf.format != "auto" else detect_format(parsed, path_hint)
        if conf.validate_schema:
            validator = builtin_validator(fmt)
            error = _schema_error(validator, parsed) if validator is not None else None
            if error is not None:
                raise error
        if conf.user_schema is not None:
            error = _schema_error(conf.user_schema, parsed)
            if error is not None:
                raise error
        found = extract(parsed, fmt, conf.text_paths)
        if found.message_count > conf.max_messages:
            raise PayloadError(413, "too_many_messages", f"at most {conf.max_messages} messages per request")
        if conf.allowed_models and found.model is not None and found.model not in conf.allowed_models:
            raise PayloadError(422, "model_not_allowed", "the requested model is not available on this route",
                               "model")
        if conf.allowed_models and found.model is None and fmt not in ("tf_serving", "torchserve", "kserve_v2"):
            raise PayloadError(422, "model_required", "a model must be named in the request", "model")
        if conf.max_tokens is not None and found.max_tokens is not None and found.max_tokens > conf.max_tokens:
            raise PayloadError(422, "max_tokens_exceeded", f"at most {conf.max_tokens} output tokens may be requested",
                               "max_tokens")
        check_predict(found.instances, conf.predict)
        return found.segments, fmt

    def _digest(self, texts: Sequence[str]) -> str:
        mac = hmac.new(self._hash_key, digestmod=hashlib.sha256)
        for text in texts:
            mac.update(text.encode("utf-8", "surrogatepass"))
            mac.update(b"\x00")
        return mac.hexdigest()[:32]
