"""The plugin's configuration: the declarative SCHEMA and its parsing into frozen settings.

Everything that can fail on a bad config fails here, once, at StartInstance, with a
:class:`~kong_plugins.errors.ConfigError` naming the field: custom patterns are compiled with RE2,
the user JSON Schema is checked against Draft 2020-12 and compiled, text paths are parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from kong_plugins import schema as s
from kong_plugins.errors import ConfigError
from kong_plugins.marks import DECISION_MARK_FIELD

from .bodies import FORMATS, PayloadLimits, PredictLimits, TextPath
from .detectors import FAMILIES
from .engine import DetectionSettings, compile_re2
from .normalise import DecodeLimits
from .secrets import SECRET_KINDS

ROLES = ["system", "user", "assistant", "tool", "document"]
ACTIONS = ["block", "flag", "log"]
FAMILY_ACTIONS = ["block", "flag", "log", "off"]

_PATTERNS = s.Array(
    s.String(len_max=1000, description="One RE2 regular expression (no backreferences or look-around)."),
    default=[], len_max=100,
    description="RE2 patterns, matched in linear time against each text as sent and in its normalised form.",
)

SCHEMA = s.Record([
    s.Field("action", s.String(default="block", one_of=ACTIONS, description=(
        "What to do when a prompt scores above the threshold: block (reject), flag (forward with a header "
        "and log a line) or log (log only). Per-family overrides live in family_actions."))),
    s.Field("family_actions", s.Map(
        keys=s.String(one_of=list(FAMILIES), description="Detector family name."),
        values=s.String(one_of=FAMILY_ACTIONS, description="Action for this family, or off to ignore it."),
        default={}, description=(
            "Per-family action overriding the default action, e.g. {\"persona_jailbreak\": \"flag\"}; "
            "off disables a family's detectors."))),
    s.Field("shadow", s.Boolean(default=False, description=(
        "Shadow mode: compute and log every decision but never block or add headers."))),
    s.Field("threshold", s.Number(default=0.7, between=(0.05, 1), description=(
        "Score (0..1) from which a prompt counts as an injection or jailbreak attempt."))),
    s.Field("inspect_roles", s.Set(s.String(one_of=ROLES, description="A message role."),
                                   default=["user"], len_min=1, description=(
        "Message roles whose text is scanned for injection: user by default; add tool and document "
        "to catch indirect injection in retrieved content."))),
    s.Field("block_status", s.Integer(default=400, one_of=[400, 403], description=(
        "HTTP status returned when a prompt is blocked."))),
    s.Field("block_message", s.String(default="The request was rejected by the gateway's content policy.",
                                      len_max=300, description=(
        "Message in the JSON body of a blocked request; keep it vague so it teaches attackers nothing."))),
    s.Field("flag_header", s.String(default="X-Prompt-Inspector", match="^[A-Za-z0-9-]+$", description=(
        "Request header added for the upstream when a prompt is flagged (value: families and score)."))),
    s.Field("allow_patterns", s.Array(_PATTERNS.elements, default=[], len_max=100, description=(
        "RE2 patterns: a request whose text matches one skips the injection detectors (payload checks, "
        "deny patterns and secrets still apply)."))),
    s.Field("deny_patterns", s.Array(_PATTERNS.elements, default=[], len_max=100, description=(
        "RE2 patterns: a match in any inspected text (as sent, or folded to lowercase ASCII) "
        "scores as family custom_deny."))),
    s.Field("max_decode_depth", s.Integer(default=2, between=(0, 4), description=(
        "How many nested encodings (base64, hex, rot13, URL, Unicode tags) are decoded and rescanned."))),
    s.Field("format", s.String(default="auto", one_of=["auto", *FORMATS], description=(
        "Request body format; auto recognises OpenAI chat/completions/responses, Anthropic messages, "
        "generic prompt/input/inputs, TF-Serving, TorchServe and KServe v2 bodies."))),
    s.Field("text_paths", s.Array(s.Record([
        s.Field("path", s.String(len_max=300, description="Path such as $.data.items[*].text."), required=True),
        s.Field("role", s.String(default="user", one_of=ROLES, description="Role given to texts found there.")),
    ], description="A custom text location."), default=[], len_max=50, description=(
        "Extra JSON paths holding text to inspect, for custom formats (dotted keys, [n] and [*])."))),
    s.Field("allowed_content_types", s.Array(s.String(description="A media type such as application/json."),
                                             default=["application/json"], len_min=1, description=(
        "Accepted request media types (parameters such as charset are ignored); others get 415."))),
    s.Field("max_body_bytes", s.Integer(default=1048576, between=(1, 67108864), description=(
        "Largest request body accepted (413 above). Bodies above Kong's client_body_buffer_size are read "
        "from nginx's temporary file up to this size."))),
    s.Field("max_json_depth", s.Integer(default=32, between=(1, 256), description=(
        "Deepest JSON nesting accepted (413 above)."))),
    s.Field("max_json_keys", s.Integer(default=10000, between=(1, 10000000), description=(
        "Most object keys in the whole body (413 above)."))),
    s.Field("max_array_length", s.Integer(default=100000, between=(1, 100000000), description=(
        "Longest JSON array accepted (413 above)."))),
    s.Field("max_string_length", s.Integer(default=1048576, between=(1, 67108864), description=(
        "Longest JSON string in characters (413 above)."))),
    s.Field("max_messages", s.Integer(default=256, between=(1, 100000), description=(
        "Most messages (chat turns, responses input items) in one request (413 above)."))),
    s.Field("allowed_models", s.Array(s.String(description="A model name."), default=[], description=(
        "Models callers may request; empty allows any (422 otherwise)."))),
    s.Field("max_tokens", s.Integer(gt=0, description=(
        "Ceiling on the requested completion length (max_tokens, max_completion_tokens, "
        "max_output_tokens, max_new_tokens); 422 above. Unset: no ceiling."))),
    s.Field("validate_schema", s.Boolean(default=True, description=(
        "Validate bodies of recognised formats against the built-in JSON Schemas (422 on mismatch)."))),
    s.Field("json_schema", s.String(len_max=65536, description=(
        "A JSON Schema (Draft 2020-12, as JSON text) every body must satisfy, compiled at instance start."))),
    s.Field("predict", s.Record([
        s.Field("max_instances", s.Integer(gt=0, description="Most instances per predict request (422 above).")),
        s.Field("vector_dimension", s.Integer(gt=0, description="Exact length of each input vector (422 otherwise).")),
        s.Field("min_value", s.Number(description="Smallest numeric input accepted (422 below).")),
        s.Field("max_value", s.Number(description="Largest numeric input accepted (422 above).")),
    ], description="Checks for TF-Serving, TorchServe and KServe predict bodies."), required=True),
    s.Field("secrets", s.Record([
        s.Field("action", s.String(default="off", one_of=["off", "block", "flag", "log"], description=(
            "What to do when a prompt carries secrets or PII: off, block, flag or log."))),
        s.Field("kinds", s.Set(s.String(one_of=list(SECRET_KINDS), description="A secret or PII kind."),
                               default=list(SECRET_KINDS), description="Secret and PII kinds to look for.")),
    ], description="Secrets and PII detection in inspected texts (API keys, cloud credentials, cards)."),
        required=True),
    s.Field("log_hash_key", s.String(len_max=256, description=(
        "Key for the HMAC of inspected text in decision logs, so logs of several nodes correlate; "
        "unset: a random key per instance."))),
    s.Field("fail_closed", s.Boolean(default=True, description=(
        "If inspection itself fails unexpectedly, refuse the request (500) instead of letting it through."))),
    DECISION_MARK_FIELD,
])


@dataclass(frozen=True, slots=True)
class InspectorConfig:
    """Parsed, immutable configuration of one plugin instance."""

    action: str
    family_actions: dict[str, str]
    shadow: bool
    inspect_roles: frozenset[str]
    block_status: int
    block_message: str
    flag_header: str
    detection: DetectionSettings
    format: str
    text_paths: tuple[TextPath, ...]
    content_types: frozenset[str]
    limits: PayloadLimits
    max_messages: int
    allowed_models: frozenset[str]
    max_tokens: int | None
    validate_schema: bool
    user_schema: Draft202012Validator | None
    predict: PredictLimits
    secrets_action: str
    secret_kinds: tuple[str, ...]
    log_hash_key: bytes | None
    fail_closed: bool
    decision_mark: bool = False


def _compile_patterns(field: str, patterns: list[str]) -> tuple[str, ...]:
    for i, pattern in enumerate(patterns):
        try:
            compile_re2(pattern)
        except ValueError as exc:
            raise ConfigError(f"{field}[{i}]", f"not a valid RE2 pattern: {exc}") from None
    return tuple(patterns)


# Keys Kong adds to the conf it sends a plugin server next to the schema's own fields (the stand-in
# reproduces them from kong/runloop/plugin_servers); they are scoping facts, not configuration.
_KONG_SCOPE_KEYS = frozenset({"route_id", "service_id", "consumer_id", "plugin_instance_name"})


def parse_config(raw: dict[str, Any] | None) -> InspectorConfig:
    """Validate Kong's config for this plugin and build the frozen :class:`InspectorConfig`."""
    own = {k: v for k, v in (raw or {}).items() if k not in _KONG_SCOPE_KEYS}
    conf = SCHEMA.validate(own)
    family_actions: dict[str, str] = dict(conf["family_actions"])
    disabled = frozenset(f for f, a in family_actions.items() if a == "off")
    detection = DetectionSettings(
        threshold=float(conf["threshold"]),
        decode=DecodeLimits(max_depth=int(conf["max_decode_depth"])),
        allow_patterns=_compile_patterns("allow_patterns", conf["allow_patterns"]),
        deny_patterns=_compile_patterns("deny_patterns", conf["deny_patterns"]),
        disabled_families=disabled,
    )
    text_paths: list[TextPath] = []
    for i, entry in enumerate(conf["text_paths"]):
        try:
            text_paths.append(TextPath.parse(entry["path"], entry["role"]))
        except ValueError as exc:
            raise ConfigError(f"text_paths[{i}].path", str(exc)) from None
    user_schema: Draft202012Validator | None = None
    if conf["json_schema"] is not None:
        try:
            document = json.loads(conf["json_schema"])
            Draft202012Validator.check_schema(document)
        except ValueError:
            raise ConfigError("json_schema", "not valid JSON") from None
        except SchemaError as exc:
            raise ConfigError("json_schema", f"not a valid Draft 2020-12 schema: {exc.message}") from None
        user_schema = Draft202012Validator(document)
    predict = conf["predict"]
    if predict["min_value"] is not None and predict["max_value"] is not None and (
        predict["min_value"] > predict["max_value"]
    ):
        raise ConfigError("predict.min_value", "must not exceed predict.max_value")
    key = conf["log_hash_key"]
    return InspectorConfig(
        action=conf["action"],
        family_actions=family_actions,
        shadow=bool(conf["shadow"]),
        inspect_roles=frozenset(conf["inspect_roles"]),
        block_status=int(conf["block_status"]),
        block_message=conf["block_message"],
        flag_header=conf["flag_header"],
        detection=detection,
        format=conf["format"],
        text_paths=tuple(text_paths),
        content_types=frozenset(t.strip().lower() for t in conf["allowed_content_types"]),
        limits=PayloadLimits(
            max_body_bytes=int(conf["max_body_bytes"]),
            max_depth=int(conf["max_json_depth"]),
            max_keys=int(conf["max_json_keys"]),
            max_array_length=int(conf["max_array_length"]),
            max_string_length=int(conf["max_string_length"]),
        ),
        max_messages=int(conf["max_messages"]),
        allowed_models=frozenset(conf["allowed_models"]),
        max_tokens=conf["max_tokens"],
        validate_schema=bool(conf["validate_schema"]),
        user_schema=user_schema,
        predict=PredictLimits(
            max_instances=predict["max_instances"], vector_dimension=predict["vector_dimension"],
            min_value=predict["min_value"], max_value=predict["max_value"],
        ),
        secrets_action=conf["secrets"]["action"],
        secret_kinds=tuple(conf["secrets"]["kinds"]),
        log_hash_key=key.encode() if key is not None else None,
        fail_closed=bool(conf["fail_closed"]),
        decision_mark=bool(conf["decision_mark"]),
    )
