"""Storage key construction: one function, injective by construction, Cluster-aware.

A key reads ``kp:<namespace>[:{<hash tag>}]:<part>:<part>...``. Every component is
percent-escaped for the four characters that carry structure (``%`` ``:`` ``{`` ``}``), so

- no crafted part (``"a:b"``, ``"{x}"``, ``"%3A"``) can fake a separator or a hash tag, which makes
  ``make_key`` injective: distinct argument tuples never produce the same key (tests/storage
  checks this with Hypothesis);
- the only ``{...}`` in a key is the hash tag we put there, so Redis Cluster hashes exactly the
  tag and every key built with the same ``hash_tag`` lands on the same slot -- the condition for
  one Lua script to touch all the keys of one decision.

Redis Cluster hashes the *first* ``{...}`` with non-empty content; the tag therefore sits right
after the namespace and cannot be empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from redis.crc import key_slot as _key_slot

KEY_PREFIX = "kp"

# str.translate with a dict is the fastest escaping the stdlib offers for a handful of characters.
_ESCAPES = str.maketrans({"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D"})


def escape_part(part: str) -> str:
    """Percent-escape the structural characters of one key component."""
    return part.translate(_ESCAPES)


def make_key(namespace: str, *parts: str, hash_tag: str | None = None) -> str:
    """Build a storage key from a namespace and parts; see the module docstring for the format.

    Raises ``ValueError`` for an empty namespace or hash tag, and for text that cannot be encoded
    as UTF-8 (lone surrogates), which Redis could not store under the same name anyway.
    """
    if not namespace:
        raise ValueError("a key namespace must not be empty")
    pieces = [KEY_PREFIX, namespace.translate(_ESCAPES)]
    if hash_tag is not None:
        if not hash_tag:
            raise ValueError("a hash tag must not be empty: Redis Cluster would ignore '{}'")
        pieces.append("{" + hash_tag.translate(_ESCAPES) + "}")
    pieces.extend(p.translate(_ESCAPES) for p in parts)
    key = ":".join(pieces)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("key parts must be encodable as UTF-8") from exc
    return key


@lru_cache(maxsize=65536)
def key_slot(key: str) -> int:
    """The Redis Cluster slot of ``key`` (cached: decisions reuse the same keys constantly)."""
    return _key_slot(key.encode("utf-8"))


#: Suffixes of the keys the region exchange derives from a global rule's key. A ``%`` followed by
#: a letter never comes out of :func:`escape_part`, so no built key can end like these.
REMOTE_SUFFIX = ":%remote"
INBOX_SUFFIX = ":%inbox"
LANE_MARK = "%L"


def remote_key_of(key: str) -> str:
    """The hash holding the other regions' (and lanes') usage of a global rule; same slot as ``key``."""
    return key + REMOTE_SUFFIX


def inbox_key_of(key: str) -> str:
    """The hash the exchange keeps per-source usage snapshots of ``key`` in; same slot as ``key``."""
    return key + INBOX_SUFFIX


def lane_key(key: str, lane: int) -> str:
    """``key`` moved to hash-tag lane ``lane``: the same key with ``%L<lane>`` appended to its tag.

    Splitting one hot global key over lanes spreads it over Cluster slots; the exchange sums the
    lanes. ``key`` must have a hash tag (``make_key(..., hash_tag=...)``).
    """
    start = key.find("{")
    end = key.find("}", start + 1)
    if start < 0 or end < 0:
        raise ValueError("only a key with a hash tag can be split into lanes")
    if lane < 0:
        raise ValueError("a lane is a non-negative integer")
    return f"{key[:end]}{LANE_MARK}{lane}{key[end:]}"


class CrossSlotError(ValueError):
    """The keys of one script call hash to different Cluster slots.

    A programming error, not an outage: it is raised by every backend (memory included) before
    anything is sent, so a rule set that works on one backend works on Redis Cluster too. Give
    the keys of one decision the same ``hash_tag``.
    """


def check_same_slot(keys: Sequence[str]) -> None:
    """Raise :class:`CrossSlotError` unless all ``keys`` share one Redis Cluster slot."""
    if len(keys) < 2:
        return
    first = key_slot(keys[0])
    for key in keys[1:]:
        if key_slot(key) != first:
            raise CrossSlotError(
                f"keys of one call must share a Redis Cluster slot (use one hash_tag): "
                f"{keys[0]!r} is in slot {first}, {key!r} in slot {key_slot(key)}"
            )


__all__ = [
    "INBOX_SUFFIX",
    "KEY_PREFIX",
    "LANE_MARK",
    "REMOTE_SUFFIX",
    "CrossSlotError",
    "check_same_slot",
    "escape_part",
    "inbox_key_of",
    "key_slot",
    "lane_key",
    "make_key",
    "remote_key_of",
]
