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


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "build",
    [
        lambda n: "4111 " * (n // 5),  # digit groups that never complete a card number's shape
        lambda n: "1" * n,  # one endless digit run
        lambda n: "a." * (n // 2),  # email local part without an @
        lambda n: "a@b" * (n // 3),  # many @ signs, no domain suffix
        lambda n: "aws secret " * (n // 11),  # the AWS secret key prefix over and over
        lambda n: "AKIA" * (n // 4),  # key prefixes without the 16 characters behind them
        lambda n: "-----BEGIN " * (n // 11),
        lambda n: "sk-" * (n // 3),
    ],
    ids=["card-groups", "digit-run", "email-dots", "email-ats", "aws-secret", "akia", "pem", "sk"],
)
def test_secret_patterns_stay_linear_on_input_built_against_them(build: object) -> None:
    import time

    assert callable(build)

    def cost(n: int) -> float:
        text = build(n)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            find_secrets([text])
            best = min(best, time.perf_counter() - start)
        return best

    small, large = cost(20_000), cost(160_000)
    # 8x the input; quadratic matching would take ~64x. Generous for a shared machine.
    assert large < 30 * max(small, 2e-3)
