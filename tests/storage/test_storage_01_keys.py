"""make_key: injective for any parts, one Cluster slot per hash tag."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kong_plugins.storage import CrossSlotError, make_key
from kong_plugins.storage.keys import check_same_slot, key_slot

# Parts an attacker controls: consumer names, claims, paths -- structural characters included.
part = st.text(alphabet=st.sampled_from(["a", "b", ":", "{", "}", "%", "3", "A", "7", "B", "D", "é", "🙂"]) |
               st.characters(blacklist_categories=("Cs",)), max_size=8)
key_args = st.tuples(part.filter(bool), st.lists(part, max_size=4), st.none() | part.filter(bool))


@given(key_args, key_args)
def test_distinct_arguments_never_share_a_key(a: tuple, b: tuple) -> None:
    if a != b:
        assert make_key(a[0], *a[1], hash_tag=a[2]) != make_key(b[0], *b[1], hash_tag=b[2])


@given(part.filter(bool), st.lists(part, max_size=4), st.lists(part, max_size=4), part.filter(bool))
def test_keys_with_one_hash_tag_share_a_cluster_slot(ns: str, p1: list, p2: list, tag: str) -> None:
    k1, k2 = make_key(ns, *p1, hash_tag=tag), make_key("other", *p2, hash_tag=tag)
    assert key_slot(k1) == key_slot(k2)
    check_same_slot([k1, k2])


def test_crafted_parts_cannot_merge_or_inject_a_tag() -> None:
    assert make_key("q", "a:b") != make_key("q", "a", "b")
    assert make_key("q", "a%3Ab") != make_key("q", "a:b")
    # a part that looks like a hash tag must not become one
    assert "{" not in make_key("q", "{tenant-b}")
    assert key_slot(make_key("q", "{t}", hash_tag="x")) == key_slot(make_key("q", "y", hash_tag="x"))


def test_key_has_fixed_prefix_and_readable_shape() -> None:
    assert make_key("quota", "tenant-a", "rps", hash_tag="c1") == "kp:quota:{c1}:tenant-a:rps"


@pytest.mark.parametrize("kwargs", [{"namespace": ""}, {"namespace": "q", "hash_tag": ""}])
def test_empty_namespace_or_tag_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_key(kwargs.pop("namespace"), "x", **kwargs)


def test_unencodable_text_is_rejected() -> None:
    with pytest.raises(ValueError):
        make_key("q", "\udc80")


def test_keys_without_a_common_tag_are_reported_with_both_slots() -> None:
    with pytest.raises(CrossSlotError, match="slot"):
        check_same_slot([make_key("q", "1"), make_key("q", "2")])
