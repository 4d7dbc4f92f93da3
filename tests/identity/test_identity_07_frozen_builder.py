"""kong_plugins.frozen: what parse_facts builds through a mutable twin is the frozen object itself."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from kong_plugins.frozen import positional_builder
from kong_plugins.identity import Consumer, RequestFacts, parse_facts
from tests.identity.identity_helpers import serialized


@dataclass(frozen=True, slots=True)
class _Sample:
    name: str
    size: int = 3
    tags: dict[str, str] = field(default_factory=dict)


def test_a_built_object_is_the_frozen_class_s_own() -> None:
    build = positional_builder(_Sample)
    built = build("a", 5, {"k": "v"})
    assert type(built) is _Sample
    assert built == _Sample("a", 5, {"k": "v"}) and repr(built) == repr(_Sample("a", 5, {"k": "v"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.name = "b"  # type: ignore[misc]
    # defaults as the class has them, a fresh mutable default each time
    assert build("a") == _Sample("a") and build("a").tags is not build("a").tags
    hashable = positional_builder(Consumer)
    assert hash(hashable("c-1", "alice", None, ("t",))) == hash(Consumer("c-1", "alice", None, ("t",)))


def test_parse_facts_gives_frozen_facts_equal_to_the_constructor_s() -> None:
    facts = parse_facts(serialized(consumer={"id": "c-1", "username": "alice", "tags": ["tier:gold"]},
                                   credential="cred-1"))
    assert type(facts) is RequestFacts and type(facts.consumer) is Consumer
    assert facts == RequestFacts(*(getattr(facts, f.name) for f in dataclasses.fields(RequestFacts)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.client_ip = "1.2.3.4"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.consumer.id = "someone-else"  # type: ignore[misc, union-attr]


def test_classes_it_cannot_build_are_refused_at_once() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    for cls in (NoSlots, Mutable, PostInit):
        with pytest.raises(TypeError, match=cls.__name__):
            positional_builder(cls)
