"""Secrets and PII in prompts: API keys, cloud credentials, private keys, emails, card numbers.

Patterns are anchored on fixed prefixes or bounded character classes, so each runs in linear time;
card numbers must also pass the Luhn check, which removes most digit runs that merely look like one.
Findings name the kind only; the matched text never leaves this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["SECRET_KINDS", "find_secrets", "luhn_ok"]

_PATTERNS: dict[str, re.Pattern[str]] = {
    "aws_access_key": re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    "aws_secret_key": re.compile(
        r"(?i)aws.{0,20}?(?:secret|private).{0,20}?[=:\"'\s]{1,4}[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),
    "gcp_api_key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])"),
    "gcp_service_account": re.compile(r"\"type\":\s{0,4}\"service_account\""),
    "azure_storage_key": re.compile(r"AccountKey=[A-Za-z0-9+/]{86}=="),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})"),
    "gitlab_token": re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "stripe_key": re.compile(r"\b(?:sk|rk)_live_[A-Za-z0-9]{20,}"),
    "openai_key": re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{32,}"),
    "anthropic_key": re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{32,}"),
    "private_key": re.compile(r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,2}PRIVATE KEY(?: BLOCK)?-----"),
    "email": re.compile(
        r"\b[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"),
    "card_number": re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])"),
}

SECRET_KINDS: tuple[str, ...] = tuple(_PATTERNS)
_DIGITS_RE = re.compile(r"\D")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string (card numbers are 13 to 19 digits)."""
    if not 13 <= len(digits) <= 19 or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_secrets(texts: Iterable[str], kinds: Iterable[str] = SECRET_KINDS) -> list[str]:
    """The kinds of secret or PII present in ``texts``, sorted, without the values."""
    wanted = [k for k in kinds if k in _PATTERNS]
    found: set[str] = set()
    for text in texts:
        for kind in wanted:
            if kind in found:
                continue
            pattern = _PATTERNS[kind]
            if kind == "card_number":
                if any(luhn_ok(_DIGITS_RE.sub("", m.group(0))) for m in pattern.finditer(text)):
                    found.add(kind)
            elif pattern.search(text):
                found.add(kind)
    return sorted(found)
