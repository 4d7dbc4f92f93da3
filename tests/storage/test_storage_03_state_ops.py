"""Generic state operations behave the same on every backend (the memory twins included)."""

from __future__ import annotations

import pytest

from kong_plugins.errors import StorageError
from kong_plugins.storage import make_key

from .conftest import Backend


def key(*parts: str) -> str:
    return make_key("test-state", *parts)


def test_set_get_delete_and_mget(backend: Backend) -> None:
    st, now = backend.storage, backend.now()
    st.set(key("a"), "alpha", now=now)
    st.set(key("b"), "béta:{x}", now=now)
    assert st.get(key("a"), now=now) == "alpha"
    assert st.mget([key("a"), key("missing"), key("b")], now=now) == ["alpha", None, "béta:{x}"]
    assert st.delete(key("a"), key("missing")) == 1
    assert st.get(key("a"), now=now) is None


def test_values_expire_after_their_ttl(backend: Backend) -> None:
    st = backend.storage
    st.set(key("ttl"), "v", ttl=0.2, now=backend.now())
    assert st.get(key("ttl"), now=backend.now()) == "v"
    backend.advance(0.3)
    assert st.get(key("ttl"), now=backend.now()) is None


def test_incr_sets_its_ttl_once_unless_refreshed(backend: Backend) -> None:
    st = backend.storage
    assert st.incr(key("n"), 2, ttl=0.4, now=backend.now()) == 2
    backend.advance(0.25)
    assert st.incr(key("n"), 3, ttl=0.4, now=backend.now()) == 5
    backend.advance(0.25)
    # the window opened by the first increment has closed
    assert st.get(key("n"), now=backend.now()) is None

    assert st.incr(key("r"), 1, ttl=0.4, refresh_ttl=True, now=backend.now()) == 1
    backend.advance(0.25)
    st.incr(key("r"), 1, ttl=0.4, refresh_ttl=True, now=backend.now())
    backend.advance(0.25)
    assert st.get(key("r"), now=backend.now()) == "2"


def test_hash_increments_accumulate_per_field(backend: Backend) -> None:
    st, now = backend.storage, backend.now()
    assert st.hincr(key("h"), {"requests": 1, "score": 0.5}, ttl=60, now=now) == {"requests": 1.0, "score": 0.5}
    assert st.hincr(key("h"), {"score": 1.25, "tokens": -3}, ttl=60, now=now) == {"score": 1.75, "tokens": -3.0}
    assert st.hgetall(key("h"), now=now) == {"requests": "1", "score": "1.75", "tokens": "-3"}
    assert st.hgetall(key("nothing"), now=now) == {}


def test_hyperloglog_counts_distinct_elements(backend: Backend) -> None:
    st, now = backend.storage, backend.now()
    assert st.pfadd(key("hll"), ["p1", "p2", "p3"], ttl=60, now=now) is True
    assert st.pfadd(key("hll"), ["p1", "p2"], now=now) is False
    assert st.pfcount(key("hll"), now=now) == 3
    st.pfadd(key("big"), [f"prompt-{i}" for i in range(5000)], now=now)
    # Redis and the memory twin both promise about 0.81% standard error at this precision
    assert abs(st.pfcount(key("big"), now=now) - 5000) < 5000 * 0.05


def test_wrong_type_is_a_storage_error(backend: Backend) -> None:
    st, now = backend.storage, backend.now()
    st.set(key("s"), "text", now=now)
    with pytest.raises(StorageError):
        st.incr(key("s"), now=now)
    with pytest.raises(StorageError):
        st.hincr(key("s"), {"f": 1}, now=now)


def test_invalid_arguments_are_rejected_before_storage(backend: Backend) -> None:
    with pytest.raises(ValueError):
        backend.storage.set(key("x"), "v", ttl=0)
    with pytest.raises(ValueError):
        backend.storage.hincr(key("x"), {"f": float("nan")})
