"""Text normalisation that defeats character-level evasion.

An attacker who wants "ignore previous instructions" past a phrase detector writes it with
Cyrillic look-alikes, zero-width joiners between the letters, fullwidth forms, accents, spaced
letters, leetspeak, or hides it in Unicode tag characters, variation selectors, base64, hex, rot13
or percent-encoding. Every one of those is undone here, into *views* the detectors scan:

- ``light``: invisible characters removed, NFKC, homoglyphs folded to ASCII, case-folded, accents
  stripped; punctuation kept (role delimiters and URLs live in punctuation).
- ``words``: ``light`` plus leetspeak folded, every non-alphanumeric run turned into one space,
  spaced-out letters re-joined, and ``l`` merged into ``i`` (``1``, ``I``, ``l`` and ``|`` are one
  glyph family). Detector phrases are written in the same alphabet through :func:`fold_phrase`.
- ``squashed``: ``words`` without spaces, for letters split by arbitrary separators.

Hidden or encoded segments become extra :class:`View` objects, decoded at most ``max_depth`` levels
deep and within a byte budget, so the work stays linear in the input whatever it contains.

Speed: the passes over a whole text are C loops (``str.translate``, ``bytes.translate``,
``bytes.split``) or RE2 searches over UTF-8 bytes (linear, DFA-driven); Python-level work is per
match, never per character. A 1 MB ASCII prompt is normalised in a few milliseconds.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import json
import re
import sys
import unicodedata
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import unquote

import re2

__all__ = [
    "DecodeLimits",
    "View",
    "expand",
    "fold_phrase",
    "light_view",
    "normalise",
    "words_view",
]


def _load_homoglyphs() -> dict[int, str]:
    text = resources.files("kong_plugins.prompt_inspector.data").joinpath("homoglyphs.json").read_text(encoding="utf-8")
    table: dict[str, str] = json.loads(text)
    return {ord(k): v for k, v in table.items()}


# Zero-width, bidi controls, soft hyphen, word joiners, variation selectors and tag characters carry
# no visible text; after their payload (if any) has been decoded they are simply dropped.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0x1D173, 0x1D17A), (0xE0000, 0xE007F),
    (0xE0100, 0xE01EF),
)
_DELETE: dict[int, str | None] = {
    cp: None for lo, hi in _INVISIBLE_RANGES for cp in range(lo, hi + 1)
}
# Lone surrogates can come out of JSON "\ud800" escapes; they are not text.
_DELETE.update({cp: None for cp in range(0xD800, 0xE000)})
# Runs, not single characters: a megabyte of zero-width characters is one match, not a million.
_INVISIBLE_RE = re.compile(
    "[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _INVISIBLE_RANGES) + "\ud800-\udfff]+"
)

_HOMOGLYPHS = _load_homoglyphs()
# One table: invisible characters out, look-alikes to ASCII (applied after NFKC).
_FOLD_TABLE: dict[int, str | None] = {**_HOMOGLYPHS, **_DELETE}

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s",
                       "l": "i", "|": "i"})


def _bytes_re2(pattern: bytes) -> Any:
    """An RE2 program over bytes, every byte one character (Latin-1): UTF-8 text and stray bytes
    alike are scanned in one linear pass."""
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.max_mem = 8 << 20
    options.log_errors = False
    return re2.compile(pattern, options)


# Three or more single letters joined by one repeated separator ("i g n o r e", "p.r.e.v.i.o.u.s");
# a different separator (or two) ends the run, so "i.g.n.o.r.e p.r.e.v" keeps its word break. One
# branch per separator replaces a backreference (which RE2 does not have); a match is one letter
# followed by (separator, letter) pairs, so the scan is linear.
_SEPARATORS = b" .*_~+/\\-"
_SPACED_RE = _bytes_re2(b"|".join(
    rb"\b[a-z0-9](?:" + re2.escape(bytes([sep])) + rb"[a-z0-9]){2,}\b" for sep in _SEPARATORS))
_SPACED_SPACE_RE = _bytes_re2(rb"\b[a-z0-9](?: [a-z0-9]){2,}\b")
# Runs of spaces left where punctuation was (Python's re: a C-level replacement, no callback).
_SPACE_RUN_RE = re.compile(rb"  +")
# Every byte that is not [0-9a-z] becomes a space (a multi-byte UTF-8 character becomes several,
# collapsed afterwards): the ``words`` alphabet.
_TO_WORDS = bytes(b if (0x30 <= b <= 0x39 or 0x61 <= b <= 0x7A) else 0x20 for b in range(256))
# Every combining mark, deleted after NFKD (diacritic stripping as one C-level translate).
_COMBINING: dict[int, None] = {
    cp: None for cp in range(sys.maxunicode + 1) if unicodedata.combining(chr(cp))
}


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    if decomposed.isascii():
        return decomposed
    return unicodedata.normalize("NFKC", decomposed.translate(_COMBINING))


def light_view(text: str) -> str:
    """Invisible characters removed, NFKC, homoglyphs folded, case-folded, accents stripped."""
    if text.isascii():
        return text.lower()
    out = text
    # Two rounds reach a fixpoint: NFKC can create a character the table folds, and folding can
    # leave a combining sequence NFKC composes.
    for _ in range(2):
        out = unicodedata.normalize("NFKC", out).translate(_FOLD_TABLE).casefold()
        out = _strip_marks(out).translate(_FOLD_TABLE)
        if out.isascii():
            break
    return out


def _despace(data: bytes, regex: Any) -> bytes:
    """``data`` with the separators inside every spaced-letter run removed."""
    pieces: list[bytes] = []
    last = 0
    for match in regex.finditer(data):
        start, end = match.span()
        pieces.append(data[last:start])
        pieces.append(data[start:end].translate(None, _SEPARATORS))
        last = end
    if not pieces:
        return data
    pieces.append(data[last:])
    return b"".join(pieces)


def words_view(light: str) -> str:
    """The phrase-matching alphabet: leetspeak folded, punctuation to spaces, spaced letters joined."""
    # Spaced letters are joined before punctuation collapses: a run uses exactly one separator
    # between letters, so a double space ("i g n o r e  a l l") still separates the words.
    # Joined again after punctuation became spaces ("0:0:0"), so that the result is a fixpoint.
    data = _despace(light.translate(_LEET).encode("utf-8", "replace"), _SPACED_RE)
    out = _SPACE_RUN_RE.sub(b" ", data.translate(_TO_WORDS)).strip(b" ")
    if b" " in out:
        out = _despace(out, _SPACED_SPACE_RE)
    return out.decode("ascii")


def normalise(text: str) -> str:
    """The canonical detection form of ``text`` (idempotent: ``normalise(normalise(t)) == normalise(t)``)."""
    return words_view(light_view(text))


def fold_phrase(pattern: str) -> str:
    """Write a detector phrase in the ``words`` alphabet (``l`` merged into ``i``).

    Only for patterns whose letters are literal lowercase text; escapes such as ``\\b``, ``\\s`` and
    ``\\w`` contain no ``l``.
    """
    return pattern.replace("l", "i")


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on decoding hidden or encoded segments (depth, count, and bytes decoded)."""

    max_depth: int = 2
    max_segments: int = 16
    max_decoded_chars: int = 65_536
    min_encoded_len: int = 16


@dataclass(frozen=True, slots=True)
class View:
    """One scannable rendering of a text segment.

    ``encoding`` is empty for the text as sent, else the chain of decodings that produced it
    (``"base64"``, ``"tags"``, ``"base64>hex"``...). ``raw`` is the case-preserving NFKC text that
    secrets and custom patterns run on.
    """

    raw: str
    light: str
    words: str
    encoding: str = ""

    @property
    def squashed(self) -> str:
        return self.words.replace(" ", "")


# Candidate searches run with RE2 over the UTF-8 bytes of the text (the alphabets are ASCII).
_B64_RE = _bytes_re2(rb"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX_RE = _bytes_re2(rb"(?:\\x|0x)?[0-9a-fA-F]{2}(?:[ :,]?(?:\\x|0x)?[0-9a-fA-F]{2}){7,}")
# Three percent-escapes close together: enough to be worth unquoting, rare in prose.
_PCT_RE = _bytes_re2(rb"%[0-9a-fA-F]{2}(?:[^%]{0,40}%[0-9a-fA-F]{2}){2}")
_ENTITY_RE = _bytes_re2(rb"&#(?:x[0-9a-fA-F]{1,6}|[0-9]{1,7});")
_PCT_ANY_RE = _bytes_re2(rb"%[0-9a-fA-F]{2}")
_PCT_ANY_REVERSED_RE = _bytes_re2(rb"[0-9a-fA-F]{2}%")
_ENTITY_REVERSED_RE = _bytes_re2(rb";(?:[0-9a-fA-F]{1,6}x|[0-9]{1,7})#&")
# What gets decoded: the stretch from the first escape to the last, with this much context either
# side (a phrase may be only partly encoded), so a long text with one encoded link adds a short view.
_ESCAPE_CONTEXT = 256


def _escaped_stretch(data: bytes, regex: Any, reversed_regex: Any) -> str:
    """From the first escape to the last, with context; the last is found by searching the
    reversed bytes for the reversed escape, so no Python loop runs per escape."""
    first = regex.search(data)
    last = reversed_regex.search(data[::-1])
    if first is None or last is None:
        return ""
    start = max(0, first.start() - _ESCAPE_CONTEXT)
    end = min(len(data), len(data) - last.start() + _ESCAPE_CONTEXT)
    return data[start:end].decode("utf-8", "replace")


_ROT13_HINT_RE = _bytes_re2(rb"rot[ _-]?13|caesar|cipher|decod|decrypt|rotat|shift(?:ed)? by")
# Unicode tag characters U+E0020..U+E007E mirror printable ASCII; variation selectors VS1-16 and
# VS17-256 carry one byte each ("emoji smuggling").
_TAGS_RE = re.compile("[\U000e0020-\U000e007e]+")
_TAG_TABLE = {cp: cp - 0xE0000 for cp in range(0xE0020, 0xE007F)}
_SELECTORS_RE = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]+")
_SELECTOR_TABLE = {**{0xFE00 + i: i for i in range(16)}, **{0xE0100 + i: 16 + i for i in range(240)}}


def _printable_ratio(text: str) -> float:
    if not text:
        return 0.0
    good = sum(1 for ch in text if ch.isprintable() or ch in "\n\r\t")
    return good / len(text)


def _as_text(data: bytes) -> str | None:
    """Decoded bytes that read as text (UTF-8, mostly printable, some letters), else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 4 or _printable_ratio(text) < 0.9:
        return None
    letters = sum(1 for ch in text if ch.isalpha())
    if letters < max(3, len(text) // 4):
        return None
    return text


def _decode_tags(text: str) -> str | None:
    """Unicode tag characters (U+E0020..U+E007E) mirror ASCII invisibly: "ASCII smuggling"."""
    chars = "".join(_TAGS_RE.findall(text)).translate(_TAG_TABLE)
    return chars if len(chars) >= 4 else None


def _decode_variation_selectors(text: str) -> str | None:
    """Bytes hidden in variation selectors after a visible character (VS1-16 = 0-15, VS17-256 = 16-255)."""
    hidden = "".join(_SELECTORS_RE.findall(text))
    if len(hidden) < 4:
        return None
    return _as_text(hidden.translate(_SELECTOR_TABLE).encode("latin-1"))


def _decode_base64(candidate: str) -> str | None:
    padded = candidate.rstrip("=")
    padded += "=" * (-len(padded) % 4)
    try:
        if "-" in padded or "_" in padded:
            data = base64.urlsafe_b64decode(padded)
        else:
            data = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _as_text(data)


def _decode_hex(candidate: bytes) -> str | None:
    digits = candidate.replace(b"\\x", b"").replace(b"0x", b"").translate(None, b" :,")
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        return _as_text(bytes.fromhex(digits.decode("ascii")))
    except ValueError:
        return None


def _decodings(raw: str, light: str, chain: str, limits: DecodeLimits) -> list[tuple[str, str]]:
    """(encoding name, decoded text) for every hidden or encoded segment found in ``raw``."""
    found: list[tuple[str, str]] = []
    if not raw.isascii():
        tags = _decode_tags(raw)
        if tags:
            found.append(("tags", tags))
        selectors = _decode_variation_selectors(raw)
        if selectors:
            found.append(("variation-selectors", selectors))
    data = raw.encode("utf-8", "surrogatepass")
    cap = limits.max_decoded_chars
    for match in _B64_RE.finditer(data):
        candidate = match.group(0)
        if len(candidate) > cap:
            continue
        # Long runs of one character class (hex digests, plain words) are not worth decoding.
        if candidate.isalpha() and (candidate.islower() or candidate.isupper()):
            continue
        decoded = _decode_base64(candidate.decode("ascii"))
        if decoded:
            found.append(("base64", decoded))
        if len(found) >= limits.max_segments:
            return found
    for match in _HEX_RE.finditer(data):
        if len(match.group(0)) <= cap:
            decoded = _decode_hex(match.group(0))
            if decoded:
                found.append(("hex", decoded))
        if len(found) >= limits.max_segments:
            return found
    if b"%" in data and _PCT_RE.search(data):
        found.append(("url", unquote(_escaped_stretch(data, _PCT_ANY_RE, _PCT_ANY_REVERSED_RE), errors="replace")))
    if b"&#" in data and _ENTITY_RE.search(data):
        found.append(("html-entities", html.unescape(_escaped_stretch(data, _ENTITY_RE, _ENTITY_REVERSED_RE))))
    # rot13 twice is the identity: a rot13 view is never rotated back.
    if not chain.endswith("rot13") and _ROT13_HINT_RE.search(light.encode("utf-8", "surrogatepass")):
        found.append(("rot13", codecs.encode(raw, "rot13")))
    return found[: limits.max_segments]


def _make_view(text: str, encoding: str) -> View:
    raw = unicodedata.normalize("NFKC", _INVISIBLE_RE.sub("", text)) if not text.isascii() else text
    light = light_view(raw)
    return View(raw=raw, light=light, words=words_view(light), encoding=encoding)


def expand(text: str, limits: DecodeLimits = DecodeLimits()) -> list[View]:
    """``text`` as sent plus every decoded hidden/encoded segment, breadth-first, within ``limits``.

    The decoded segments of one level are decoded again at the next, up to ``limits.max_depth``;
    the total number of decoded characters is capped, so an input made of nested encodings costs
    at most a constant factor over its own length.
    """
    views = [_make_view(text, "")]
    frontier: list[tuple[str, str, str]] = [(text, views[0].light, "")]
    budget = limits.max_decoded_chars
    segments = 0
    for _depth in range(limits.max_depth):
        next_frontier: list[tuple[str, str, str]] = []
        for raw, light, chain in frontier:
            for name, decoded in _decodings(raw, light, chain, limits):
                if segments >= limits.max_segments or budget <= 0:
                    return views
                decoded = decoded[:budget]
                budget -= len(decoded)
                segments += 1
                label = f"{chain}>{name}" if chain else name
                view = _make_view(decoded, label)
                views.append(view)
                next_frontier.append((decoded, view.light, label))
        if not next_frontier:
            break
        frontier = next_frontier
    return views
