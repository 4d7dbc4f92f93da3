"""The per-client state's binary format: every field comes back as it was written, whatever parts
a state has (the codec skips absent parts and cuts the four integer lists out of one read)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from kong_plugins.extraction_guard.state import ClientState


def _state(seed: int) -> ClientState:
    r = np.random.default_rng(seed)
    st = ClientState.new(1_700_000_000.0 + seed)
    st.n, st.extraction, st.level, st.taught = seed, float(r.random()), seed % 5, seed % 7
    st.coverage = int(r.integers(0, 2**62)) << int(r.integers(0, 190))

    def ints(most: int) -> tuple[int, ...]:
        size = int(r.integers(0, most + 1)) if seed % 2 else most
        return tuple(int(x) for x in r.integers(-2**63, 2**63 - 1, size, dtype=np.int64))

    # each list on its own or together, so a wrong cut between them shows
    st.prompts = ints(16) if seed % 3 else ()
    st.simhashes = ints(16) if seed % 5 else ()
    st.biased_ids = ints(128) if seed % 4 == 0 else ()
    st.members = ints(6) if seed % 7 else ()
    if seed % 6 == 0:
        st.contrib = {f"signal_{q}": float(r.random()) for q in range(int(r.integers(1, 5)))}
    if seed % 8:
        width, capacity = int(r.integers(1, 80)), int(r.integers(1, 17))
        for _ in range(int(r.integers(1, 3 * capacity))):  # partial and full (wrapped) rings
            st.push_row(r.normal(size=width).astype(np.float32), capacity)
        if seed % 2:
            st.last_diff = r.normal(size=width).astype(np.float32)
        if seed % 3 == 0:
            st.step_profile = r.normal(size=width).astype(np.float32)
    return st


@pytest.mark.parametrize("seed", range(60))
def test_a_state_reads_back_field_by_field(seed: int) -> None:
    st = _state(seed)
    blob = st.to_bytes()
    back = ClientState.from_bytes(blob)
    assert back is not None
    for name in ClientState.__dataclass_fields__:
        mine, theirs = getattr(st, name), getattr(back, name)
        if name == "rows" and mine is not None:
            # the filled slots come back; the ring keeps its capacity and stays writable
            filled = min(st.rows_n, mine.shape[0])
            assert theirs.shape == mine.shape and theirs.dtype == np.float32 and theirs.flags.writeable
            assert theirs[:filled].tobytes() == mine[:filled].tobytes()
            assert not theirs[filled:].any()
        elif isinstance(mine, np.ndarray):
            assert theirs.tobytes() == mine.tobytes()
        else:
            assert theirs == mine and type(theirs) is type(mine), name
    assert back.to_bytes() == blob


def test_a_float64_ring_is_stored_as_float32() -> None:
    st = _state(1)
    assert st.rows is not None
    wide = ClientState(**{name: getattr(st, name) for name in ClientState.__dataclass_fields__})
    wide.rows = st.rows.astype(np.float64)
    assert wide.to_bytes() == st.to_bytes()


@pytest.mark.parametrize("seed", [0, 1, 6, 12, 15])
def test_cut_or_padded_bytes_read_as_nothing(seed: int) -> None:
    blob = _state(seed).to_bytes()
    for cut in (len(blob) - 1, len(blob) - 8, len(blob) // 2):
        assert ClientState.from_bytes(blob[:cut]) is None
    assert ClientState.from_bytes(blob + b"\0" * 8) is None


def test_a_decoded_state_does_not_keep_the_stored_bytes_alive() -> None:
    # StateCache counts a decoded state's arrays at their size: a step vector viewing the whole
    # blob would keep ~4 KB per cached client alive uncounted.
    st = _state(3)
    assert st.last_diff is not None and st.step_profile is not None and st.rows is not None
    blob = st.to_bytes()
    before = sys.getrefcount(blob)
    back = ClientState.from_bytes(blob)
    assert back is not None and back.last_diff is not None and back.step_profile is not None
    assert sys.getrefcount(blob) == before
    assert back.kept is not None and back.kept.base is None  # its own array, which the kernel changes in place
