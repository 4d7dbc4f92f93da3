"""The compiled kernels (kernels.py): the same answers as the numpy they replaced, nothing compiled on a request.

A request must never pay for compilation (seconds): every kernel is compiled for the types the
detector passes when a detector is made. And the compiled loops must agree with the direct numpy
formulation of what they measure -- which input is a repeat, which is nearest and how far, which
is one coordinate away, what the route model says of a row.
"""

from __future__ import annotations

import os
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from kong_plugins.extraction_guard import _jit, kernels, payloads, sketches
from kong_plugins.extraction_guard.baseline import GRID_SLACK, FeatureModel
from kong_plugins.extraction_guard.config import GuardConfig
from kong_plugins.extraction_guard.detector import Detector, Observation
from kong_plugins.extraction_guard.state import ClientState

#: What a request calls from Python (measure_rows runs inside score_rows).
DISPATCHERS = (kernels.score_rows, kernels.evaluate_rows)


def _compiled_signatures() -> list[int]:
    return [len(d.signatures) for d in DISPATCHERS]


def test_a_detector_compiles_every_kernel_before_its_first_request() -> None:
    # The detector calls score_rows without its dispatcher (_jit.direct), checked in the tests:
    # a request passing other types than the compiled ones fails here with TypeError (unchecked,
    # its arrays would be misread), where through the dispatcher it would have compiled.
    Detector(GuardConfig())
    before = _compiled_signatures()
    assert all(before)
    det = Detector(GuardConfig(baseline_min_samples=50))
    rng = np.random.default_rng(3)
    t = 1000.0
    # a cold route, then (many clients later) a learned model; one client's one-row and batch
    # requests with repeats and steps; a second width
    for phase in range(2):
        state = None
        for i in range(300):
            t += 1.0
            rows = np.round(rng.normal(size=(1 if i % 3 else 5, 12)), 2)
            if i % 7 == 0:
                rows = np.repeat(rows[:1], 2, axis=0)  # a repeat inside one request
                rows[1, 3] += 0.5  # and one coordinate stepped
            state, _ = det.observe(state if phase else None, Observation(t=t, route="r", rows=rows))
    for i in range(20):
        state, _ = det.observe(state, Observation(t=t + i, route="r2", rows=rng.normal(size=(2, 5))))
    assert det.baselines.get("r").feature_baseline(12).model is not None
    assert _compiled_signatures() == before


def _captured_score_rows_call() -> tuple[Any, ...]:
    """The operands of a real call of ``score_rows``: a client's second request, on a learned route."""
    det = Detector(GuardConfig(baseline_min_samples=20))
    rng = np.random.default_rng(5)
    for i in range(40):  # the route learns its model from 40 one-row clients
        det.observe(None, Observation(t=float(i), route="r", rows=rng.normal(size=(1, 6))))
    state, _ = det.observe(None, Observation(t=50.0, route="r", rows=rng.normal(size=(1, 6))))
    captured: list[tuple[Any, ...]] = []
    checked = det._score_rows

    def capture(*args: Any) -> Any:
        captured.append(args)
        return checked(*args)

    det._score_rows = capture
    det.observe(state, Observation(t=51.0, route="r", rows=rng.normal(size=(3, 6))))
    return captured[0]


def test_the_suite_checks_every_direct_kernel_call() -> None:
    # tests/conftest.py turns the check on for every test (and the plugin servers they start):
    # each request a test makes checks the types of what it passes to the compiled kernels.
    assert os.environ.get(_jit.CHECK_KERNEL_ARGS_ENV) == "1"
    for call in (Detector(GuardConfig())._score_rows, payloads._scan_rows_direct, sketches._sketch_ascii_direct):
        assert call.__qualname__ == "_checked.<locals>.call"


def test_a_direct_kernel_call_refuses_other_types_naming_the_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _captured_score_rows_call()
    monkeypatch.setenv(_jit.CHECK_KERNEL_ARGS_ENV, "1")
    checked = _jit.direct(kernels.score_rows)
    ring64 = (args[0].astype(np.float64), *args[1:])  # a float64 ring where the kernel reads float32
    with pytest.raises(TypeError, match=r"score_rows: argument 0 is array\(float64, 2d, C\), compiled for "
                                        r"array\(float32, 2d, C\)"):
        checked(*ring64)
    with pytest.raises(TypeError, match="score_rows: 15 arguments, compiled for 16"):
        checked(*args[:-1])
    with pytest.raises(TypeError, match=r"_scan_rows: argument 0 is unicode_type"):
        _jit.direct(payloads._scan_rows)('{"instances": [[1]]}', 8)


def test_a_direct_kernel_call_answers_what_the_dispatcher_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _captured_score_rows_call()
    monkeypatch.setenv(_jit.CHECK_KERNEL_ARGS_ENV, "0")
    entry = _jit.direct(kernels.score_rows)
    assert type(entry).__name__ == "builtin_function_or_method"  # the compiled version itself, unchecked

    def fresh() -> tuple[Any, ...]:  # the kernel changes the client's arrays in place: each call its own
        return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)

    through_dispatcher, direct_ = fresh(), fresh()
    answer = kernels.score_rows(*through_dispatcher)
    assert entry(*direct_) == answer
    for a, b in zip(through_dispatcher, direct_, strict=True):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)


def test_a_direct_call_needs_exactly_one_compiled_version() -> None:
    @numba.njit
    def twice(x: Any) -> Any:
        return 2 * x

    with pytest.raises(RuntimeError, match="twice: 0 compiled versions"):
        _jit.direct(twice)
    twice(1)
    assert _jit.direct(twice)(3) == 6
    twice(1.5)
    with pytest.raises(RuntimeError, match="twice: 2 compiled versions"):
        _jit.direct(twice)


def _reference_compare(ring: np.ndarray, rows_n: int, rows: np.ndarray, tol: np.ndarray, inv: np.ndarray,
                       top: int) -> list[tuple[bool, int, int, float]]:
    """Row by row with numpy: (repeat, axis slot, nearest slot, distance), pushing as the kernel does."""
    ring = ring.copy()
    capacity, dim = ring.shape
    out = []
    for r, x in enumerate(rows):
        filled = min(rows_n, capacity)
        if filled == 0:
            out.append((False, -1, -1, 0.0))
        else:
            diff = ring[:filled] - x
            counts = (np.abs(diff) > tol[r]).sum(axis=1)
            if (counts == 0).any():
                out.append((True, -1, -1, 0.0))
                continue
            axis = next((s for s, c in enumerate(counts.tolist()) if 1 <= c <= top), -1)
            d2 = ((diff.astype(np.float64) * inv) ** 2).sum(axis=1)
            nearest = int(np.argmin(d2))
            out.append((False, axis, nearest, float(np.sqrt(d2[nearest] / dim))))
        ring[rows_n % capacity] = x
        rows_n += 1
    return out


@settings(max_examples=60, deadline=None)
@given(seed=hs.integers(0, 2**32 - 1), filled=hs.integers(0, 6), size=hs.integers(1, 5),
       dim=hs.integers(2, 9))
def test_measure_rows_finds_the_repeats_neighbours_and_nearest_inputs_numpy_finds(
        seed: int, filled: int, size: int, dim: int) -> None:
    rng = np.random.default_rng(seed)
    capacity = 4
    ring = np.zeros((capacity, dim), dtype=np.float32)
    pool = np.round(rng.normal(size=(6, dim)), 1).astype(np.float32)  # coarse: repeats and axis steps happen
    for k in range(filled):
        ring[k % capacity] = pool[rng.integers(len(pool))]
    rows = pool[rng.integers(len(pool), size=size)].copy()
    rows[:, rng.integers(dim)] += np.float32(0.5) * rng.integers(0, 2, size=size).astype(np.float32)
    tol = (1e-6 * (np.abs(rows) + 1.0)).astype(np.float32)
    inv = rng.uniform(0.5, 2.0, size=dim).astype(np.float32)
    expected = _reference_compare(ring, filled, rows, tol, inv, top=1)

    flags = np.empty((size, 6), dtype=np.int64)
    values = np.empty((size, 4))
    vectors = np.zeros((2, size, dim), dtype=np.float32)
    n = kernels.measure_rows(ring, filled, rows, tol, inv, True, True, 1, np.ones(dim), np.zeros(0),
                             np.eye(dim), np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.float32), 8, flags,
                             np.empty(size, dtype=np.uint64), values, vectors)
    assert n == filled + sum(1 for e in expected if not e[0])
    for r, (repeat, axis, nearest, distance) in enumerate(expected):
        assert bool(flags[r, 0]) == repeat
        if repeat or (filled == 0 and r == 0):
            continue
        assert flags[r, 2] == axis
        assert values[r, 0] == pytest.approx(distance, rel=1e-5, abs=1e-9)
        assert nearest >= 0


def test_route_model_verdicts_match_their_numpy_definitions() -> None:
    rng = np.random.default_rng(11)
    benign = np.round(rng.normal(5.0, 1.0, size=(600, 6)), 1)
    model = FeatureModel.from_rows(benign)
    assert model.grid is not None
    rows = np.vstack([np.round(rng.normal(5.0, 1.0, size=(20, 6)), 1),   # benign
                      rng.normal(5.0, 1.0, size=(5, 6)),                  # off the 0.1 grid
                      np.round(rng.normal(5.0, 1.0, size=(5, 6)), 3),     # within two decimals of slack
                      np.full((3, 6), 40.0)])                             # far out of domain
    dist, ood, off, finer, _ = model.evaluate(rows)
    z = (rows - model.mean) @ model.whiten.T
    np.testing.assert_allclose(dist, (z * z).sum(axis=1) / (model.dim * model.m_ref), rtol=1e-9)
    beyond = np.maximum(model.lo - rows, rows - model.hi) / model.unit
    np.testing.assert_array_equal(ood, beyond.max(axis=1) > model.ood_limit)
    for plane, verdict in ((1.0, finer), (1.0 / GRID_SLACK, off)):
        scaled = rows / model.grid * plane
        bad = np.abs(scaled - np.rint(scaled)) > 1e-6 * np.maximum(1.0, np.abs(scaled))
        np.testing.assert_array_equal(verdict, bad.any(axis=1))
    assert not off[:20].any() and off[20:25].all() and not off[25:30].any() and finer[25:30].any()
    assert ood[-3:].all() and not ood[:20].any()
    bits = rows @ model._cell_planes > model._cell_offset
    np.testing.assert_array_equal(model.cell(rows), np.packbits(bits, axis=1)[:, 0])


@pytest.mark.parametrize("n_rows", [1, 7, 8, 9, 17])
def test_rows_judged_together_get_the_verdicts_each_gets_alone(n_rows: int) -> None:
    # evaluate_rows sums eight rows' distances side by side, each in its own order: the same
    # bits as a row judged alone (summed on its own); out-of-domain is "any excursion above the
    # limit", NaN excursions included, as the running maximum it replaces was
    rng = np.random.default_rng(n_rows)
    model = FeatureModel.from_rows(np.round(rng.normal(5.0, 1.0, size=(400, 64)), 1))
    rows = np.round(rng.normal(5.0, 1.0, size=(n_rows, 64)), 1) * rng.uniform(0.5, 3.0, size=(n_rows, 1))
    rows[0, 3] = np.nan
    rows[-1, 5] = 60.0
    together = model.verdicts(rows)
    for r in range(n_rows):
        alone = model.verdicts(rows[r:r + 1])
        assert together[0][r].tobytes() == alone[0][0].tobytes()
        assert together[1][:, r].tolist() == alone[1][:, 0].tolist()
        assert together[2][r] == alone[2][0]
    assert together[1][0, -1]


@pytest.mark.parametrize("dim", [1, 3, 4, 6, 7, 64])
def test_the_whitening_product_is_the_triangular_matrix_product(dim: int) -> None:
    # four rows of the matrix at a time from the diagonal, then the rest one by one
    rng = np.random.default_rng(dim)
    upper, x = np.triu(rng.normal(size=(dim, dim))), rng.normal(size=dim)
    out = np.full(dim, np.nan)
    kernels._upper_product(x, upper, out)
    np.testing.assert_allclose(out, upper @ x, rtol=1e-12, atol=1e-12)


def test_the_triangular_whitening_keeps_every_distance_and_angle() -> None:
    # the kernels use the model's upper-triangular factor in place of its whitening matrix: the
    # same lengths and inner products for any vectors, so the same distances and line searches
    rng = np.random.default_rng(5)
    latent = rng.normal(size=(500, 3))
    rows = latent @ rng.normal(size=(3, 12)) + 0.1 * rng.normal(size=(500, 12))  # correlated features
    model = FeatureModel.from_rows(rows)
    upper = model.upper_whiten
    assert not np.tril(upper, -1).any()
    a, b = rng.normal(size=(2, 12))
    np.testing.assert_allclose(np.linalg.norm(upper @ a), np.linalg.norm(model.whiten @ a), rtol=1e-10)
    np.testing.assert_allclose((upper @ a) @ (upper @ b), (model.whiten @ a) @ (model.whiten @ b), rtol=1e-9)


def test_the_triangular_whitening_holds_on_badly_scaled_features() -> None:
    # raw amounts next to constant flags: whiten's conditioning ~1e10, its precision's ~1e20 -- a
    # factor of the precision would be at the edge of float64; the QR of whiten is not
    rng = np.random.default_rng(8)
    rows = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    rows[:, 0] *= 1e9
    rows[:, 1:6] = 1.0
    model = FeatureModel.from_rows(rows)
    for v in rows[:20] - model.mean:
        np.testing.assert_allclose(np.linalg.norm(model.upper_whiten @ v), np.linalg.norm(model.whiten @ v),
                                   rtol=1e-8)


@settings(max_examples=60, deadline=None)
@given(start=hs.integers(0, 40), batches=hs.lists(hs.integers(1, 40), min_size=1, max_size=4))
def test_a_ring_takes_a_batch_of_rows_as_it_would_take_them_one_by_one(start: int, batches: list[int]) -> None:
    capacity, dim = 16, 3
    st = ClientState.new(0.0)
    expected = np.zeros((capacity, dim), dtype=np.float32)
    n = 0
    value = 0.0
    for count in [start, *batches]:
        if count == 0:
            continue
        rows = (value + np.arange(count * dim, dtype=np.float32)).reshape(count, dim)
        value += count * dim
        st.push_rows(rows, capacity)
        for row in rows:  # the reference: slot by slot
            expected[n % capacity] = row
            n += 1
    assert st.rows_n == n
    assert st.rows is not None
    np.testing.assert_array_equal(st.rows, expected)


def _mostly_equal_sorted(values: np.ndarray, one_pct: float) -> bool:
    """The definition: sorted, ceil(0.8 n) consecutive values with the last within one_pct of the first."""
    ordered = np.sort(values)
    n = len(ordered)
    m = -(-4 * n // 5)
    return any(ordered[i + m - 1] <= one_pct * ordered[i] for i in range(n - m + 1))


@settings(max_examples=300, deadline=None)
@given(seed=hs.integers(0, 2**32 - 1), n=hs.integers(1, 64), spread=hs.sampled_from([0.0, 0.004, 0.01, 0.02, 1.0]),
       outliers=hs.integers(0, 20), single=hs.booleans(), special=hs.sampled_from([None, 0.0, np.inf]))
def test_the_sign_step_test_counts_what_sorting_would_find(seed: int, n: int, spread: float, outliers: int,
                                                            single: bool, special: float | None) -> None:
    # moves mostly equal within about `spread`, some of them anywhere: runs at the 80% and 1% edges;
    # the outliers come first, where the kernel's quick rejection picks its candidates
    rng = np.random.default_rng(seed)
    values = rng.uniform(1.0, 1.0 + spread, size=n) * rng.choice([0.5, 2.0])
    k = min(outliers, n)
    values[:k] = rng.uniform(0.1, 10.0, size=k)
    values = np.round(values, int(rng.integers(2, 8)))  # ties and values exactly at the band's edge
    if special is not None:  # a run of zero moves, or of infinite ones (a zero span), anywhere
        values[rng.random(n) < rng.choice([0.1, 0.5, 0.9])] = special
    dtype, one_pct = (np.float32, np.float32(1.01)) if single else (np.float64, 1.01)
    values = values.astype(dtype)
    assert kernels._mostly_equal(values.copy(), one_pct) == _mostly_equal_sorted(values, one_pct)


def _axis_pairs_numpy(sample: np.ndarray, axis_max: int) -> int:
    """The numpy expression the route model's refit used before the kernel (the definition)."""
    changed = np.abs(sample[:, None, :] - sample[None, :, :]) > 1e-6 * (np.abs(sample[None, :, :]) + 1.0)
    moved = changed.sum(axis=2)
    np.fill_diagonal(moved, 0)
    return int(((moved >= 1) & (moved <= axis_max)).sum())


def test_axis_neighbour_pairs_counts_what_the_numpy_expression_counts() -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        dim, n = int(rng.integers(2, 70)), int(rng.integers(8, 120))
        rows = np.round(rng.normal(size=(n, dim)) * 10.0 ** int(rng.integers(-3, 4)), int(rng.integers(0, 4)))
        # near neighbours: copies of other rows with a few coordinates moved, some below the tolerance
        for r in range(0, n, 3):
            rows[r] = rows[rng.integers(0, n)]
            cols = rng.integers(0, dim, size=int(rng.integers(0, 4)))
            steps = rng.choice([1e-9, 1e-7, 1e-5, 0.1, 1.0], size=len(cols))
            rows[r, cols] += steps * rng.choice([-1, 1], size=len(cols))
        rows[0, 0] = np.nan  # never "moved", as in numpy
        sample = np.ascontiguousarray(rows)
        axis_max = int(rng.integers(1, 5))
        assert kernels.axis_neighbour_pairs(sample, axis_max) == _axis_pairs_numpy(sample, axis_max)


def test_a_zero_span_divides_as_it_always_did() -> None:
    # |step| / span is vectorised (IEEE division) only for a span without zeros; with a zero the
    # division raises, as the packing loop's always did
    size, dim = 2, 8
    steps = np.full((size, dim), 0.5, dtype=np.float32)
    span = np.ones(dim)
    span[3] = 0.0
    args = (np.ones(size, dtype=np.bool_), np.full(size, -1, dtype=np.int64), np.full(size, dim, dtype=np.int64),
            steps, np.ones((size, dim), dtype=np.bool_), np.zeros((size, dim), dtype=np.float32), span, np.zeros(0),
            np.zeros(0, dtype=np.float32), np.ones((size, dim)), np.ones(size, dtype=np.bool_),
            np.zeros(0, dtype=np.float32), 4, np.zeros(size, dtype=np.bool_), np.zeros(size), np.full(size, np.nan),
            np.full(size, -1.0))
    with pytest.raises(ZeroDivisionError):
        kernels._step_tests(*args)
    span[3] = 1.0  # without: a sign step, its mean move
    kernels._step_tests(*args)
    assert args[-4].all() and args[-3].tolist() == [0.5, 0.5]


def _reference_step_tests(structure: np.ndarray, axis: np.ndarray, n_near: np.ndarray, step_near: np.ndarray,
                          changed: np.ndarray, rows: np.ndarray, span: np.ndarray, grid: np.ndarray,
                          step0: np.ndarray, vecs: np.ndarray, line_step: np.ndarray, line0: np.ndarray,
                          min_dim: int) -> tuple[list[bool], list[float], list[float], list[float]]:
    """_step_tests's docstring, written with numpy, coordinate sets as masks: (signed, sign mean,
    repeated-step median or NaN, line |cos| or -1) per row."""
    size, dim = step_near.shape
    signed, sign_value = [False] * size, [0.0] * size
    repeat, line_cos = [float("nan")] * size, [-1.0] * size
    prev = step0 if step0.size == dim else None
    for r in range(size):
        if not (structure[r] and n_near[r] >= 4):
            continue
        a, mask = step_near[r], changed[r]
        if axis[r] < 0 and n_near[r] >= max(4, dim // 4) and span.size == dim:
            moves = np.abs(a[mask])
            relative = moves.astype(np.float64) / span[mask]
            if _mostly_equal_sorted(relative, 1.01) or (
                    n_near[r] >= min_dim and _mostly_equal_sorted(moves, np.float32(1.01))):
                signed[r], sign_value[r] = True, float(moves.astype(np.float64).mean())
        if not signed[r] and prev is not None:
            union = mask | (prev != 0)
            ma, mb = np.abs(a[union]), np.abs(prev[union])
            same = int((np.abs(ma - mb) <= np.float32(0.01) * np.maximum(ma, mb)).sum())
            back_and_forth = bool((a[union] == prev[union]).all() or (a[union] == -prev[union]).all())
            if same >= 0.8 * union.sum() and not back_and_forth:
                finer = n_near[r] >= min_dim
                if not finer and grid.size == dim:
                    scaled = a.astype(np.float64) / grid
                    slack = (np.float32(2.4e-7) * (np.abs(rows[r]) + np.float32(1.0))).astype(np.float64) / grid
                    finer = bool((np.abs(scaled - np.rint(scaled)) > slack).any())
                if finer:
                    repeat[r] = float(np.median(np.abs(a[union])))
        prev = a
    last = line0.astype(np.float64) if line0.size == dim else None
    for r in range(size):
        if structure[r]:
            if line_step[r] and last is not None:
                norms = np.linalg.norm(vecs[r]) * np.linalg.norm(last)
                if norms > 0:
                    line_cos[r] = float(abs(vecs[r] @ last) / norms)
            last = vecs[r].astype(np.float32).astype(np.float64)
    return signed, sign_value, repeat, line_cos


@settings(max_examples=300, deadline=None)
@given(seed=hs.integers(0, 2**32 - 1), size=hs.integers(1, 6), dim=hs.sampled_from([4, 5, 8, 12, 16]),
       kept=hs.booleans(), gridded=hs.booleans())
def test_the_step_tests_find_the_sign_steps_repeated_steps_and_lines_their_definition_finds(
        seed: int, size: int, dim: int, kept: bool, gridded: bool) -> None:
    # Steps drawn so that each test goes both ways: a step repeated exactly, within 1% or not,
    # negated (back and forth), all moves equal (a sign step), on a 0.1 grid or finer than it.
    rng = np.random.default_rng(seed)
    base = np.round(rng.uniform(-1, 1, size=dim), 1).astype(np.float32)
    base[rng.random(dim) < 0.3] = 0.0
    steps = np.empty((size, dim), dtype=np.float32)
    for r in range(size):
        kind = rng.integers(6)
        if kind == 0:
            steps[r] = base
        elif kind == 1:
            steps[r] = base * np.float32(rng.choice([1.004, 0.996, 1.02]))
        elif kind == 2:
            steps[r] = -base
        elif kind == 3:
            steps[r] = np.float32(rng.choice([0.1, 0.25])) * rng.choice([-1, 1], size=dim).astype(np.float32)
        elif kind == 4:
            steps[r] = base + np.float32(1e-3) * rng.integers(0, 2, size=dim).astype(np.float32)
        else:
            steps[r] = rng.normal(size=dim).astype(np.float32)
        steps[r, rng.random(dim) < 0.1] = 0.0
        steps[r, rng.random(dim) < 0.1] = np.float32(1e-8)  # moved by less than float32 rounding: not a move
    rows = np.round(rng.uniform(-3, 3, size=(size, dim)), 1).astype(np.float32)
    changed = np.abs(steps) > np.float32(1e-6) * (np.abs(rows) + np.float32(1.0))
    n_near = changed.sum(axis=1).astype(np.int64)
    structure = rng.random(size) < 0.9
    axis = np.where(rng.random(size) < 0.8, -1, 0).astype(np.int64)
    span = rng.choice([1.0, 2.0], size=dim) if rng.random() < 0.8 else np.zeros(0)
    grid = np.full(dim, 0.1) if gridded else np.zeros(0)
    step0 = base.copy() if kept else np.zeros(0, dtype=np.float32)
    line0 = rng.normal(size=dim).astype(np.float32) if kept else np.zeros(0, dtype=np.float32)
    vecs = rng.normal(size=(size, dim))
    vecs[rng.random(size) < 0.3] = line0 if kept else 0.0  # collinear with the last line
    line_step = rng.random(size) < 0.8
    min_dim = int(rng.choice([4, 8, 64]))
    args = (structure, axis, n_near, steps, changed, rows, span, grid, step0, vecs, line_step, line0, min_dim)

    signed, sign_value = np.zeros(size, dtype=np.bool_), np.zeros(size)
    repeat, line_cos = np.full(size, np.nan), np.full(size, -1.0)
    kernels._step_tests(*args, signed, sign_value, repeat, line_cos)
    want_signed, want_value, want_repeat, want_cos = _reference_step_tests(*args)
    assert signed.tolist() == want_signed
    np.testing.assert_allclose(sign_value, want_value, rtol=1e-12)
    np.testing.assert_allclose(repeat, want_repeat, rtol=1e-6)  # NaN where no repeated step
    np.testing.assert_allclose(line_cos, want_cos, rtol=1e-6, atol=1e-12)
