"""Built-in JSON Schemas (Draft 2020-12) of the request formats, compiled once per process.

They check the shape the gateway relies on (types of the fields texts are read from, roles, token
limits) and deliberately say nothing about large numeric payloads: validating every element of a
1 MB tensor in Python would cost more than the inspection itself.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jsonschema import Draft202012Validator

__all__ = ["BUILTIN_SCHEMAS", "builtin_validator"]

_TEXT_BLOCKS: dict[str, Any] = {
    "type": "array",
    "items": {"type": "object", "properties": {"type": {"type": "string"}, "text": {"type": "string"}}},
}
_CONTENT: dict[str, Any] = {"anyOf": [{"type": "string"}, _TEXT_BLOCKS, {"type": "null"}]}
_TOKENS: dict[str, Any] = {"type": "integer", "minimum": 1}

BUILTIN_SCHEMAS: dict[str, dict[str, Any]] = {
    "openai_chat": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "model": {"type": "string"},
            "messages": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object", "required": ["role"],
                    "properties": {
                        "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
                        "content": _CONTENT,
                    },
                },
            },
            "max_tokens": _TOKENS, "max_completion_tokens": _TOKENS,
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "stream": {"type": "boolean"},
        },
    },
    "openai_completions": {
        "type": "object", "required": ["prompt"],
        "properties": {
            "model": {"type": "string"},
            "prompt": {"anyOf": [{"type": "string"}, {"type": "array"}]},
            "max_tokens": _TOKENS,
        },
    },
    "openai_responses": {
        "type": "object", "required": ["input"],
        "properties": {
            "model": {"type": "string"},
            "instructions": {"type": ["string", "null"]},
            "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": ["object", "string"]}}]},
            "max_output_tokens": _TOKENS,
        },
    },
    "anthropic_messages": {
        "type": "object", "required": ["messages"],
        "properties": {
            "model": {"type": "string"},
            "system": {"anyOf": [{"type": "string"}, _TEXT_BLOCKS]},
            "messages": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object", "required": ["role", "content"],
                    "properties": {"role": {"enum": ["user", "assistant"]}, "content": _CONTENT},
                },
            },
            "max_tokens": _TOKENS,
        },
    },
    # Generic bodies are also where custom formats land (text_paths), so nothing is required: the
    # schema only pins the types of the fields texts and token limits are read from.
    "generic": {
        "type": ["object", "array", "string"],
        "properties": {
            "model": {"type": "string"},
            "prompt": {"type": ["string", "array", "object"]},
            "input": {"type": ["string", "array", "object"]},
            "inputs": {"type": ["string", "array", "object"]},
            "documents": {"type": ["string", "array", "object"]},
            "parameters": {"type": "object", "properties": {"max_new_tokens": _TOKENS, "max_tokens": _TOKENS}},
            "max_new_tokens": _TOKENS, "max_tokens": _TOKENS,
        },
    },
    "torchserve": {"type": "object", "required": ["data"]},
    "tf_serving": {
        "type": "object",
        "anyOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
        "properties": {"signature_name": {"type": "string"}, "instances": {"type": "array"}},
    },
    "kserve_v2": {
        "type": "object", "required": ["inputs"],
        "properties": {
            "inputs": {
                "type": "array",
                "items": {
                    "type": "object", "required": ["name", "shape", "datatype", "data"],
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {"type": "string"},
                        "data": {"type": "array"},
                    },
                },
            },
        },
    },
}


@cache
def builtin_validator(fmt: str) -> Draft202012Validator | None:
    """The compiled validator of a format (None for formats without a built-in schema)."""
    schema = BUILTIN_SCHEMAS.get(fmt)
    if schema is None:
        return None
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)
