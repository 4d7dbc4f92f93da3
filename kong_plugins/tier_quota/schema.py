"""The ``ai-tier-quota`` config schema: what Kong validates and what the plugin parses once.

Cross-field rules (a tier that does not exist, contradicting windows, a limit that limits nothing,
a usage source the server was not started for...) live in :mod:`.config`, next to this file, and
run at StartInstance, naming the field.
"""

from __future__ import annotations

from kong_plugins import schema as s
from kong_plugins.identity import IDENTITY_RECORD
from kong_plugins.marks import DECISION_MARK_FIELD
from kong_plugins.storage.config import STORAGE_RECORD

from .tenancy import SCOPE_FIELD, TENANCY_FIELDS

NAME_PATTERN = "^[%w][%w_.:@-]*$"

#: Quota fields of a limit, with the rule they become.
REQUEST_WINDOWS = ("per_second", "per_minute", "per_hour", "per_day")
TOKEN_WINDOWS = ("tokens_per_minute", "tokens_per_day")
LIMIT_BY = ("consumer", "credential", "tenant", "ip")


def _count(what: str) -> s.Integer:
    return s.Integer(gt=0, description=what)


LIMIT_RECORD = s.Record([
    s.Field("models", s.Set(s.String(), default=["*"], len_min=1,
                            description="Models (service or route names, see model_by) this limit applies "
                                        "to; '*' means every model the tier may call."), required=True),
    s.Field("limit_by", s.String(default="consumer", one_of=LIMIT_BY,
                                 description="Whose requests share the counters: consumer (falls back to a "
                                             "verified JWT subject, then the client IP), credential, tenant "
                                             "or ip."), required=True),
    SCOPE_FIELD,
    s.Field("per_second", _count("Requests per second: at most this many in any rolling second (sliding window).")),
    s.Field("per_minute", _count("Requests per minute: at most this many in any rolling minute (sliding window).")),
    s.Field("per_hour", _count("Requests per hour: at most this many in any rolling hour (sliding window).")),
    s.Field("per_day", _count("Requests per UTC calendar day; the count restarts at 00:00 UTC.")),
    s.Field("concurrency", _count("Requests of this caller in flight at once for the model.")),
    s.Field("tokens_per_minute", _count("LLM tokens in any rolling minute: prompt estimate plus max_tokens "
                                        "reserved before the call, settled with the real usage afterwards.")),
    s.Field("tokens_per_day", _count("LLM tokens per UTC calendar day, reserved and settled like "
                                     "tokens_per_minute.")),
])

TIER_RECORD = s.Record([
    s.Field("name", s.String(match=NAME_PATTERN, len_max=64,
                             description="Tier name, as consumers carry it in a 'tier:<name>' tag."),
            required=True),
    s.Field("models", s.Set(s.String(), len_min=1,
                            description="Models this tier may call (service or route names, see model_by); "
                                        "'*' allows all. Others are denied with 403."), required=True),
    s.Field("limits", s.Array(LIMIT_RECORD, default=[],
                              description="Quotas of this tier; every matching limit applies."), required=True),
])

GLOBAL_LIMIT_RECORD = s.Record([
    s.Field("model", s.String(description="Model (service or route name) protected by this flood limit."),
            required=True),
    s.Field("per_second", _count("Requests per second to the model, whoever sends them.")),
    s.Field("per_minute", _count("Requests per minute to the model, whoever sends them.")),
    s.Field("concurrency", _count("Requests in flight to the model at once, whoever sends them.")),
])

TOKENS_RECORD = s.Record([
    s.Field("estimate_from", s.String(
        default="body", one_of=("body", "request_size"),
        description="body: read the request body (one PDK call) for the prompt and max_tokens; "
                    "request_size: estimate from the size Kong reports, reserve default_max_tokens.",
    ), required=True),
    s.Field("bytes_per_token", s.Number(
        default=4.0, between=(1, 16),
        description="Prompt bytes per estimated token; lower is more conservative.",
    ), required=True),
    s.Field("default_max_tokens", s.Integer(
        default=1024, between=(1, 10_000_000),
        description="Completion tokens reserved when the request does not say max_tokens.",
    ), required=True),
    s.Field("max_body_bytes", s.Integer(
        default=1_048_576, between=(1024, 67_108_864),
        description="Largest request body read for the estimate; larger bodies are estimated from size.",
    ), required=True),
    s.Field("usage_source", s.String(
        default="log", one_of=("log", "response_body", "none"),
        description="Where the real usage comes from: log (ai-proxy statistics or usage_header, no "
                    "buffering), response_body (needs the buffering server variant), none (keep the "
                    "reservation).",
    ), required=True),
    s.Field("usage_header", s.String(
        description="Response header carrying the total tokens of the call, read in the log phase.",
    )),
    s.Field("max_plausible_tokens", s.Integer(
        default=2_000_000, between=(1, 1_000_000_000),
        description="A reported usage above this is treated as absurd and ignored (reservation kept).",
    ), required=True),
], description="How LLM tokens are estimated before the call and settled after it.")

FALLBACK_RECORD = s.Record([
    s.Field("enabled", s.Boolean(default=False, description="When storage fails, decide with local "
                                 "in-process limits per caller instead of failure_mode alone."), required=True),
    s.Field("per_second", _count("Local requests per second per caller while storage is down.")),
    s.Field("per_minute", _count("Local requests per minute per caller while storage is down.")),
], description="Local limits used only while the shared storage is unavailable.")

SCHEMA = s.Record([
    s.Field("default_tier", s.String(
        default="free", match=NAME_PATTERN,
        description="Tier of callers no identity source assigns one (anonymous callers included).",
    ), required=True),
    s.Field("unknown_tier", s.String(
        default="default_tier", one_of=("default_tier", "deny"),
        description="What a caller whose tier is not configured gets: the default tier, or a 403.",
    ), required=True),
    s.Field("model_by", s.String(
        default="service", one_of=("service", "route"),
        description="Which Kong entity names the model: the service (default) or the route.",
    ), required=True),
    s.Field("tiers", s.Array(TIER_RECORD, len_min=1,
                             description="The tiers, their allowed models and their quotas."), required=True),
    s.Field("global_limits", s.Array(GLOBAL_LIMIT_RECORD, default=[],
                                     description="Flood limits per model, regardless of caller."),
            required=True),
    *TENANCY_FIELDS,
    s.Field("identity", IDENTITY_RECORD, required=True),
    s.Field("tokens", TOKENS_RECORD, required=True),
    s.Field("storage", STORAGE_RECORD, required=True),
    s.Field("failure_mode", s.String(
        default="open", one_of=("open", "closed"),
        description="When storage or the plugin fails: open lets requests through, closed answers 503/500.",
    ), required=True),
    s.Field("fallback", FALLBACK_RECORD, required=True),
    s.Field("shadow", s.Boolean(
        default=False,
        description="Decide and report (headers, logs) without blocking: for rolling out new limits.",
    ), required=True),
    s.Field("hide_client_headers", s.Boolean(
        default=False, description="Do not send RateLimit-* and X-RateLimit-* headers to the client.",
    ), required=True),
    s.Field("upstream_headers", s.Boolean(
        default=False,
        description="Send X-AI-Tier, X-AI-Tenant and X-AI-Token-Reservation upstream (also visible to "
                    "later plugins); costs one PDK call per request.",
    ), required=True),
    s.Field("concurrency_lease_seconds", s.Integer(
        default=600, between=(1, 86400),
        description="A request in flight stops counting after this long even if its log phase never ran.",
    ), required=True),
    s.Field("error_message", s.String(
        default="API rate limit exceeded", len_max=200,
        description="Message of the 429 body; the body also names the rule class that denied.",
    ), required=True),
    DECISION_MARK_FIELD,
])
