"""The declarative config of ai-extraction-guard (Kong dump + validation); cross-field rules in config.py."""

from __future__ import annotations

from kong_plugins import schema as s
from kong_plugins.identity import IDENTITY_RECORD
from kong_plugins.marks import DECISION_MARK_FIELD
from kong_plugins.region.config import REGION_RECORD
from kong_plugins.storage.config import STORAGE_RECORD

_THRESHOLDS = s.Record([
    s.Field("flag", s.Number(default=3.0, gt=0, description=(
        "Extraction score at which a client is flagged: a header to the upstream and a log line."))),
    s.Field("throttle", s.Number(default=5.0, gt=0, description=(
        "Extraction score at which a client gets the tighter throttle_limit."))),
    s.Field("block", s.Number(default=8.0, gt=0, description=(
        "Extraction score at which a client is refused (403) for block_ttl_s on every gateway node."))),
    s.Field("revoke", s.Number(default=24.0, gt=0, description=(
        "Extraction score at which the client's credential is put on the revocation denylist."))),
    s.Field("abuse_flag", s.Number(default=4.0, gt=0, description=(
        "Volume score (rate, bursts, payload size, output tokens) at which a client is flagged."))),
    s.Field("abuse_throttle", s.Number(default=8.0, gt=0, description=(
        "Volume score at which a client is throttled; volume alone never blocks."))),
], default={}, description="Score thresholds of the decision levels (CUSUM units; see the README).")

_MITIGATIONS = s.Record([
    s.Field("refuse_logit_bias_with_logprobs", s.Boolean(default=False, description=(
        "Refuse (400) LLM requests that combine logit_bias with logprobs, the logit-extraction primitive."))),
    s.Field("max_top_logprobs", s.Integer(gt=-1, description=(
        "Refuse LLM requests asking for more top_logprobs than this; unset means no cap."))),
    s.Field("max_logit_bias_entries", s.Integer(gt=-1, description=(
        "Refuse LLM requests with more logit_bias entries than this; unset means no cap."))),
    s.Field("max_instances", s.Integer(gt=0, description=(
        "Refuse predict requests with more instances than this (batched probing); unset means no cap."))),
], default={}, description="Policy mitigations enforced in the access phase, each switchable.")

_WEBHOOK = s.Record([
    s.Field("url", s.String(description="SOAR webhook URL receiving HMAC-signed JSON decision events.")),
    s.Field("secret", s.String(description=(
        "HMAC-SHA256 key signing each event (X-Signature-256 header); at least 16 characters; never logged."))),
    s.Field("timeout_s", s.Number(default=2.0, between=(0.1, 60), description=(
        "Seconds one delivery attempt may take; delivery is asynchronous and never delays a request."))),
    s.Field("max_retries", s.Integer(default=5, between=(0, 20), description=(
        "Retries of a failed delivery, with exponential backoff and jitter, before the event is dropped."))),
    s.Field("queue_size", s.Integer(default=1000, between=(1, 100000), description=(
        "Events waiting for delivery at most; beyond it new events are dropped and counted."))),
    s.Field("min_level", s.String(default="block", one_of=["flag", "throttle", "block", "revoke"], description=(
        "Lowest decision level sent to the webhook; every decision is logged regardless."))),
], default={}, description="SOAR webhook for decisions (optional).")

_FEATURE_STATS = s.Record([
    s.Field("mean", s.Array(s.Number(), description="Per-feature mean of the model's training data.")),
    s.Field("std", s.Array(s.Number(), description="Per-feature standard deviation of the training data.")),
    s.Field("min", s.Array(s.Number(), description="Per-feature minimum of the training data.")),
    s.Field("max", s.Array(s.Number(), description="Per-feature maximum of the training data.")),
], description=(
    "Known feature statistics of a numeric predict API, used from the first request instead of waiting "
    "for baseline_min_samples learned rows."))

SCHEMA = s.Record([
    s.Field("client_by", s.String(default="consumer", one_of=["consumer", "credential", "tenant", "ip"],
                                  description=(
        "What a client is: the Kong consumer, its credential, its tenant (custom_id) or the client IP; "
        "falls back to the IP when the request carries no such identity."))),
    s.Field("group_by", s.String(default="ip", one_of=["none", "ip", "ip_prefix", "tenant"], description=(
        "Second level scored across clients, to catch one attack split over several keys."))),
    s.Field("shadow", s.Boolean(default=False, description=(
        "Shadow mode: score, log and alert, but never refuse, throttle or add headers."))),
    s.Field("thresholds", _THRESHOLDS),
    s.Field("score_half_life_s", s.Number(default=86400.0, gt=0, description=(
        "Half-life of a client's scores while idle: how long past evidence is remembered."))),
    s.Field("block_ttl_s", s.Number(default=3600.0, gt=0, description="Seconds a block lasts.")),
    s.Field("throttle_ttl_s", s.Number(default=900.0, gt=0, description="Seconds a throttle lasts.")),
    s.Field("flag_ttl_s", s.Number(default=900.0, gt=0, description="Seconds a flag lasts.")),
    s.Field("throttle_limit", s.Integer(default=10, gt=0, description=(
        "Requests per throttle_window_s a throttled client may still make."))),
    s.Field("throttle_window_s", s.Number(default=60.0, gt=0, description=(
        "Window of the throttle limit, in seconds."))),
    s.Field("revoke_enabled", s.Boolean(default=True, description=(
        "Put credentials of clients reaching thresholds.revoke (or blocked 3 times) on the revocation list."))),
    s.Field("revoke_ttl_s", s.Number(default=2592000.0, gt=0, description=(
        "Seconds a credential stays revoked (an operator may delete the key sooner)."))),
    s.Field("flag_header", s.String(default="X-Extraction-Risk", match="^[A-Za-z0-9-]+$", description=(
        "Request header sent upstream for flagged and throttled clients (level and score)."))),
    s.Field("burst_min_requests", s.Number(default=50.0, gt=0, description=(
        "Requests per ~10 s below which a client's rate is never an anomaly (cold-start default)."))),
    s.Field("burst_factor", s.Number(default=4.0, gt=1, description=(
        "A burst is this many times the client's own long-run rate."))),
    s.Field("payload_z", s.Number(default=4.0, gt=0, description=(
        "Standard deviations of log payload size above the route's norm that count as anomalous."))),
    s.Field("baseline_min_samples", s.Integer(default=200, gt=9, description=(
        "Requests (rows) a route baseline must learn before the signals relying on it are used."))),
    s.Field("feature_stats", _FEATURE_STATS),
    s.Field("max_rows_per_request", s.Integer(default=8, between=(1, 256), description=(
        "Instances of one predict request analysed (the first ones); bounds per-request compute."))),
    s.Field("recent_inputs", s.Integer(default=16, between=(2, 64), description=(
        "Recent inputs remembered per client to recognise systematic perturbations."))),
    s.Field("near_duplicate_distance", s.Number(default=0.02, gt=0, description=(
        "RMS distance in standard deviations below which two inputs are near-duplicates."))),
    s.Field("low_margin", s.Number(default=0.1, between=(0, 1), description=(
        "Top-1 minus top-2 probability below which a prediction is near the decision boundary."))),
    s.Field("allowed_biased_tokens", s.Integer(default=16, gt=0, description=(
        "Distinct logit_bias token ids a client may use with logprobs before it counts as a sweep."))),
    s.Field("template_hamming", s.Integer(default=16, between=(0, 32), description=(
        "SimHash bit distance under which two different prompts share a template."))),
    s.Field("output_tokens_per_hour", s.Number(default=100000.0, gt=0, description=(
        "Output tokens per hour above which a client's volume is anomalous (distillation)."))),
    s.Field("max_body_bytes", s.Integer(default=65536, between=(1024, 16777216), description=(
        "Request bodies above this size are not analysed (only counted)."))),
    s.Field("state_ttl_s", s.Number(default=604800.0, gt=0, description=(
        "Seconds an idle client's behavioural state is kept."))),
    s.Field("failure_mode", s.String(default="open", one_of=["open", "closed"], description=(
        "When storage fails: open lets requests through, closed answers 503."))),
    s.Field("mitigations", _MITIGATIONS),
    s.Field("webhook", _WEBHOOK),
    s.Field("storage", STORAGE_RECORD, required=True),
    s.Field("identity", IDENTITY_RECORD, required=True),
    s.Field("region", REGION_RECORD, required=True),
    DECISION_MARK_FIELD,
])
