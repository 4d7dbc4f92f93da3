"""Secrets and PII are recognised by kind; card numbers need a valid Luhn checksum."""

from __future__ import annotations

import pytest

from kong_plugins.prompt_inspector.secrets import find_secrets, luhn_ok


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("my key is AKIAIOSFODNN7EXAMPLE ok", "aws_access_key"),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_key"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "gcp_api_key"),
        ("token ghp_" + "a" * 36, "github_token"),
        ("xoxb-1234567890-abcdefghij", "slack_token"),
        ("sk-proj-" + "Ab1" * 16, "openai_key"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE...", "private_key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "private_key"),
        ("write to jane.doe@example.co.uk today", "email"),
        ("card 4111 1111 1111 1111 exp 12/29", "card_number"),
        ("card 5500-0000-0000-0004", "card_number"),
    ],
)
def test_secret_kinds_are_found(text: str, kind: str) -> None:
    assert find_secrets([text]) == [kind]


def test_digit_runs_that_fail_luhn_are_not_cards() -> None:
    assert find_secrets(["order 4111 1111 1111 1112 shipped", "call 1234 5678 9012 3456"]) == []
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_only_requested_kinds_are_reported() -> None:
    assert find_secrets(["jane@example.com AKIAIOSFODNN7EXAMPLE"], kinds=["email"]) == ["email"]
