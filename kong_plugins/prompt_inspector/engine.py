"""The pure decision core: texts in, a :class:`Verdict` out. No PDK, no I/O, no clock.

The plugin handler, the evaluation script and the benchmark all call :meth:`Inspector.detect`, so
the figures reported for quality and speed are those of the code that runs in Kong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

from .classifier import default_classifier
from .detectors import SIGNALS, Family, Finding, score_views
from .normalise import DecodeLimits, View, expand

__all__ = ["DetectionSettings", "Inspector", "Verdict", "compile_re2", "default_inspector"]


def compile_re2(pattern: str) -> Any:
    """Compile a user pattern with RE2: linear-time matching whatever the pattern is.

    Raises ``ValueError`` with RE2's message for syntax RE2 does not support (backreferences,
    look-around) or a program larger than RE2's memory budget.
    """
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(detail) from None


@dataclass(frozen=True, slots=True)
class DetectionSettings:
    """Detector configuration, parsed once per plugin instance."""

    threshold: float = 0.7
    min_family_score: float = 0.3
    decode: DecodeLimits = field(default_factory=DecodeLimits)
    allow_patterns: tuple[str, ...] = ()
    deny_patterns: tuple[str, ...] = ()
    disabled_families: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the detectors concluded: ``detected`` when ``score >= threshold``."""

    score: float
    families: tuple[str, ...]
    signals: tuple[str, ...]
    detected: bool
    allowed_by_pattern: bool = False
    family_scores: dict[str, float] = field(default_factory=dict)


class Inspector:
    """Compiled detectors for one configuration (RE2 user patterns compiled once, here)."""

    def __init__(self, settings: DetectionSettings = DetectionSettings()) -> None:
        self.settings = settings
        self._allow = [compile_re2(p) for p in settings.allow_patterns]
        self._deny = [compile_re2(p) for p in settings.deny_patterns]
        self._signals = tuple(s for s in SIGNALS if s.family.value not in settings.disabled_families)
        self._classifier = None if Family.CLASSIFIER.value in settings.disabled_families else default_classifier()

    def views(self, texts: Sequence[str]) -> list[View]:
        out: list[View] = []
        for text in texts:
            if text:
                out.extend(expand(text, self.settings.decode))
        return out

    def detect(self, texts: Sequence[str]) -> Verdict:
        views = self.views(texts)
        extra: list[tuple[str, str, float]] = []
        for index, deny in enumerate(self._deny):
            if any(deny.search(v.raw) or deny.search(v.light) for v in views):
                extra.append((Family.CUSTOM_DENY.value, f"custom_deny.{index}", 1.0))
        if self._allow and any(a.search(v.raw) for a in self._allow for v in views if not v.encoding):
            finding = score_views((), (), extra)
            allowed = True
        else:
            finding = score_views(views, self._signals, extra, self._classifier)
            allowed = False
        return self._verdict(finding, allowed)

    def detect_text(self, text: str) -> Verdict:
        return self.detect((text,))

    def _verdict(self, finding: Finding, allowed: bool) -> Verdict:
        families = finding.hit(self.settings.min_family_score)
        if len(families) > 1 and Family.CLASSIFIER.value in families:
            # The classifier names no attack kind: when a signal family says what the attack is, that
            # family (and its configured action) describes the request; the model still adds to the score.
            families = tuple(f for f in families if f != Family.CLASSIFIER.value)
        return Verdict(
            score=finding.score,
            families=families,
            signals=finding.signals,
            detected=finding.score >= self.settings.threshold,
            allowed_by_pattern=allowed,
            family_scores=dict(finding.families),
        )


def default_inspector() -> Inspector:
    return Inspector(DetectionSettings())
