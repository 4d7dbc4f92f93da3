"""The detector's per-row numeric work, compiled (numba): what a request's rows are compared with.

Why compiled. A numeric request is compared with the client's recent inputs (a ring of up to 64
rows) coordinate by coordinate, and each comparison feeds small decisions -- is it a repeat,
which input is nearest, which one is a single coordinate away, is the step the same as the
last one. Written with numpy, that is a few dozen array calls of 1-2 us each per request plus
Python loops over the ring's slots: 100-250 us of a log phase, where the issue allows 100 us
of plugin compute per request in all. Here a request's rows cost one call (``score_rows``): one
pass over the ring (``_compare_rows``), one over the steps (``_step_tests``) and one turning what
they measured into evidence and the client's running ratios, which Python then only reads --
per row, Python did ~8 us of bookkeeping around the measurements -- and the route model's
verdicts (``evaluate_rows``) before them. A group that observes the request too judges the rows
again (~1 us a row): cheaper than a second call's arguments and arrays.

Semantics are those of the numpy code they replace (``detector._Block``'s docstring explains
the signals); float32 where the ring is float32, float64 where numpy promoted. Sums are taken
in order (numpy's are pairwise): values can differ in the last bits, decisions only at exact
ties.

Compilation happens once per process, when this module is imported by a plugin server at
start (``warm``), never on a request. The machine code is cached on disk next to this file
(or under ``NUMBA_CACHE_DIR``) when that is writable, so a restart loads it in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
from numba import types

from ._jit import CRC32_MASK, compiled, crc32_byte

_compiled = compiled()
_compiled_reassociated = compiled(fastmath={"reassoc", "contract"})
_compiled_ieee_division = compiled(error_model="numpy")

#: Hyperplanes of a route's coverage cells (``baseline.planes``: 2**8 cells).
COVERAGE_PLANES = 8


@_compiled_reassociated
def _upper_product(x: np.ndarray, upper: np.ndarray, out: np.ndarray) -> None:
    """``out = upper @ x`` for an upper-triangular ``upper`` (a route model's whitening factor,
    ``FeatureModel.upper_whiten``): row ``i`` sums from column ``i`` on -- half the
    multiplications and half the matrix read of a full product. Each sum may be reordered
    (vectorised), as a BLAS product's is.

    Four rows at a time (from the first one's diagonal: the other three add a few exact zeros):
    each vectorised sum ends in a horizontal reduction, and four independent ones overlap where
    one at a time waited for each."""
    rows, dim = upper.shape
    i = 0
    # (the column loops count from zero: written ``range(i, dim)`` numba's loop was not
    # vectorised, and the product took 4x as long as the full one)
    while i + 4 <= rows:
        t0 = t1 = t2 = t3 = 0.0
        for k in range(dim - i):
            j = i + k
            xj = x[j]
            t0 += xj * upper[i, j]
            t1 += xj * upper[i + 1, j]
            t2 += xj * upper[i + 2, j]
            t3 += xj * upper[i + 3, j]
        out[i], out[i + 1], out[i + 2], out[i + 3] = t0, t1, t2, t3
        i += 4
    while i < rows:
        total = 0.0
        for k in range(dim - i):
            total += x[i + k] * upper[i, i + k]
        out[i] = total
        i += 1


@_compiled
def _crc32(data: np.ndarray) -> int:
    """``zlib.crc32`` of a byte array (the axis anchor's identity, as the numpy code stored it)."""
    crc = CRC32_MASK
    for b in data:
        crc = crc32_byte(crc, b)
    return int(crc ^ CRC32_MASK)


@_compiled_reassociated
def _moved(y: np.ndarray, x: np.ndarray, tolerance: np.ndarray) -> int:
    """Coordinates of ``y - x`` beyond float32 rounding (``tolerance``)."""
    count = 0
    for j in range(x.size):
        count += abs(y[j] - x[j]) > tolerance[j]
    return count


@_compiled_reassociated
def _scaled_distance(y: np.ndarray, x: np.ndarray, inv_scale: np.ndarray) -> float:
    """Squared distance of ``y - x`` scaled by ``inv_scale`` (float32 terms, summed in float64)."""
    total = 0.0
    for j in range(x.size):
        z = (y[j] - x[j]) * inv_scale[j]
        total += z * z
    return total


@_compiled
def _compare_rows(ring: np.ndarray, rows_n: int, rows: np.ndarray, tolerance: np.ndarray,
                 inv_scale: np.ndarray, warm: bool, axis_signal: bool, axis_top: int,
                 duplicate: np.ndarray, structure: np.ndarray, axis: np.ndarray, coords: np.ndarray,
                 anchor: np.ndarray, near2: np.ndarray, n_near: np.ndarray, line_step: np.ndarray,
                 step_near: np.ndarray, changed_near: np.ndarray,
                 step_last: np.ndarray) -> int:
    """Each row against the ring as it is when the row's turn comes, pushing the row after.

    ``ring`` (capacity x dim float32, written in place) holds ``min(rows_n, capacity)`` inputs;
    row ``r`` is compared with each of them: the coordinates that moved by more than float32
    rounding (``tolerance[r]``) and, ``warm`` (the route has scales), the squared scaled distance.
    A row equal to one of them is a ``duplicate`` (not pushed: a retry carries no information);
    any other row seen with a non-empty ring has ``structure``. For those: ``axis`` (the first
    slot, in slot order, at most ``axis_top`` coordinates away, when ``axis_signal``), the
    coordinates moved from it (bit ``c % 64`` of ``coords``) and its CRC-32 (``anchor``); warm,
    the nearest input (the first of the closest: ``near2``, its moved-coordinate count
    ``n_near``, the step ``ring[nearest] - x`` and its moved mask), the step from the previous
    input (``step_last``) and whether that step may be a line search (``line_step``). Returns the
    ring's new input count.
    """
    capacity, dim = ring.shape
    n = rows_n
    for r in range(rows.shape[0]):
        x = rows[r]
        tol = tolerance[r]
        filled = min(n, capacity)
        if filled > 0:
            last = (n - 1) % capacity  # the ring slot of the previous input
            first_axis = -1
            best = -1
            best_d2 = np.inf
            best_count = 0
            last_count = 0
            repeat = False
            for s in range(filled):
                count = _moved(ring[s], x, tol)
                d2 = _scaled_distance(ring[s], x, inv_scale) if warm else 0.0
                if count == 0:
                    repeat = True
                    break
                if axis_signal and first_axis < 0 and count <= axis_top:
                    first_axis = s
                if warm and d2 < best_d2:
                    best, best_d2, best_count = s, d2, count
                if s == last:
                    last_count = count
            if repeat:
                duplicate[r] = True
                continue
            structure[r] = True
            axis[r] = first_axis
            if first_axis >= 0:
                bits = np.uint64(0)
                for j in range(dim):
                    if abs(ring[first_axis, j] - x[j]) > tol[j]:
                        bits |= np.uint64(1) << np.uint64(j % 64)
                coords[r] = bits
                anchor[r] = _crc32(ring[first_axis].view(np.uint8))
            if warm and best >= 0:
                near2[r] = best_d2
                n_near[r] = best_count
                for j in range(dim):
                    d = ring[best, j] - x[j]
                    step_near[r, j] = d
                    changed_near[r, j] = abs(d) > tol[j]
                    step_last[r, j] = ring[last, j] - x[j]
                line_step[r] = axis_signal or last_count > axis_top
        ring[n % capacity] = x
        n += 1
    return n


#: The values ``_mostly_equal`` counts first around each candidate.
_BAND_HEAD = 16


@_compiled
def _mostly_equal(values: np.ndarray, one_pct: float) -> bool:
    """At least 80% of ``values`` within a ``one_pct`` band of each other: ``m = ceil(0.8 n)`` of
    them in ``[a, one_pct * a]`` for one of the values ``a``.

    That is "sorted, some ``m`` consecutive values with the last at most ``one_pct`` times the
    first" (a run starts at a value; the values from the first ``a`` up to ``one_pct * a`` are
    consecutive once sorted), counted instead of sorted: a count is branch-free and vectorises,
    where sorting a step's few dozen magnitudes mispredicts a branch per comparison (~0.5 us a
    step, ~1 us a row with both tests)."""
    n = values.size
    m = -(-4 * n // 5)
    # A cheap necessary condition first, as benign steps almost never pass. A band holding m
    # values holds one of the first n - m + 1 (only n - m lie outside it), and every member w of
    # the band of a member v (values are magnitudes, >= 0) has v <= one_pct w and w <= one_pct v
    # up to float32 rounding: within a factor wide = 1.01 one_pct of each other whatever the
    # rounding. When no candidate has m values that close, no band exists: n^2 / 5 comparisons
    # instead of n^2 (~0.3 -> 0.1 us on a step of 50 moves, tested twice a row).
    # A candidate with m close values has at least m - (n - head) of them among the first
    # ``head``: those are counted first, and a benign candidate (one or two close values) is
    # dismissed after 16 comparisons instead of n (~0.06 -> 0.025 us a test of 60 moves).
    wide = 1.01 * one_pct
    head = min(n, _BAND_HEAD)
    need_in_head = m - (n - head)
    possible = False
    for i in range(n - m + 1):
        v = values[i]
        close = 0
        for j in range(head):
            w = values[j]
            close += (w * wide >= v) & (w <= v * wide)
        if close < need_in_head:
            continue
        close = 0
        for j in range(n):
            w = values[j]
            close += (w * wide >= v) & (w <= v * wide)
        if close >= m:
            possible = True
            break
    if not possible:
        return False
    for i in range(n):
        low = values[i]
        high = one_pct * low
        inside = 0
        for j in range(n):
            inside += (values[j] >= low) & (values[j] <= high)
        if inside >= m:
            return True
    return False


@_compiled_ieee_division
def _divide_magnitudes(step: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    """``out = |step| / scale`` in float64, for a ``scale`` without zeros (its caller checks): the
    quotients the raising division gives, in one vectorised loop."""
    for j in range(step.size):
        out[j] = np.float64(abs(step[j])) / scale[j]


@_compiled
def _step_tests(structure: np.ndarray, axis: np.ndarray, n_near: np.ndarray, step_near: np.ndarray,
                changed_near: np.ndarray, rows: np.ndarray, span: np.ndarray, grid: np.ndarray, step0: np.ndarray,
                vecs: np.ndarray, line_step: np.ndarray, line0: np.ndarray, min_dim: int, signed: np.ndarray,
                sign_value: np.ndarray, repeat: np.ndarray, line_cos: np.ndarray) -> None:
    """Sign steps, repeated steps and line searches of a request's rows (``Detector._structure``).

    Rows with ``structure`` and a nearest input at least 4 coordinates away are "moved". A moved
    row with no axis neighbour that moved ``max(4, dim // 4)`` coordinates is a sign step when
    80% of its moves are equal within 1% relative to the route's ``span`` (or, moving at least
    ``min_dim`` coordinates, in absolute value). A moved row that is not a sign step repeats
    the previous moved row's step (``step0`` before the first) when 80% of their union of moved
    coordinates move by equal magnitudes within 1%, unless it is the same pair of inputs again, and -- under ``min_dim``
    moved coordinates -- only with a step finer than the route's ``grid``: ``repeat`` is the
    median move. ``vecs[r]`` is the whitened step from the previous input of structure row ``r``
    (float64); ``line_cos`` its |cos| with the previous structure row's (as float32, ``line0``
    before the first) where ``line_step``; -1 elsewhere.
    """
    size = structure.shape[0]
    dim = step_near.shape[1]
    wide = max(4, dim // 4)
    one32 = np.float32(1.01)
    pct32 = np.float32(0.01)
    have_span = span.size == dim
    have_grid = grid.size == dim
    prev = step0
    has_prev = step0.size == dim
    # Scratch, two allocations (each costs ~0.03 us): the moved coordinates' magnitudes of one
    # row relative to the span (packed) and every coordinate's before packing, then the moved
    # magnitudes, a repeated step's magnitudes and the last step.
    float64_scratch = np.empty((2, dim), dtype=np.float64)
    relative, ratios = float64_scratch[0], float64_scratch[1]
    float32_scratch = np.empty((3, dim), dtype=np.float32)
    absolute, magnitudes, last_line = float32_scratch[0], float32_scratch[1], float32_scratch[2]
    # (a span without zeros: no division of ``ratios`` can raise)
    span_nonzero = have_span
    for j in range(span.size):
        span_nonzero &= span[j] != 0.0
    for r in range(size):
        moved = structure[r] and n_near[r] >= 4
        if moved:
            mask = changed_near[r]
            a = step_near[r]
            is_signed = False
            if axis[r] < 0 and n_near[r] >= wide and have_span:
                # The moved coordinates packed to the front without a branch per coordinate (which
                # one moved is data, a coin flip to the branch predictor): each one is written at
                # ``count`` and kept by counting it.
                if span_nonzero:
                    # The divisions first, vectorised: in the packing loop each waited for the
                    # divider (~0.08 -> 0.05 us a step of 64 coordinates, packing included).
                    _divide_magnitudes(a, span, ratios)
                else:  # the same quotients, one by one: a zero span raises ZeroDivisionError, as it always did
                    for j in range(dim):
                        ratios[j] = np.float64(abs(a[j])) / span[j]
                count = 0
                for j in range(dim):
                    relative[count] = ratios[j]
                    absolute[count] = abs(a[j])
                    count += mask[j]
                is_signed = _mostly_equal(relative[:count], 1.01) or (
                    n_near[r] >= min_dim and _mostly_equal(absolute[:count], one32))
                if is_signed:
                    # the mean move, summed in coordinate order (an exact 0.0 for the others)
                    # only for a sign step: a chain of 64 additions a step otherwise
                    total = 0.0
                    for j in range(dim):
                        total += abs(a[j]) if mask[j] else 0.0
                    signed[r] = True
                    sign_value[r] = total / count
            if not is_signed and has_prev:
                # Counted without branches, so that the loop vectorises: a coordinate outside the
                # union adds nothing and cannot make the steps unequal.
                n_union = 0
                n_same = 0
                n_unequal = 0
                n_unopposite = 0
                for j in range(dim):
                    b = prev[j]
                    in_union = mask[j] | (b != 0)
                    ma, mb = abs(a[j]), abs(b)
                    n_union += in_union
                    n_same += in_union & (abs(ma - mb) <= pct32 * max(ma, mb))
                    n_unequal += in_union & (a[j] != b)
                    n_unopposite += in_union & (a[j] != -b)
                equal = n_unequal == 0
                opposite = n_unopposite == 0
                # not the same two inputs again (a client going back and forth between two rows)
                if n_same >= 0.8 * n_union and not equal and not opposite:
                    finer = n_near[r] >= min_dim
                    if not finer and have_grid:
                        for j in range(dim):
                            scaled = np.float64(a[j]) / grid[j]
                            err = abs(scaled - np.rint(scaled))
                            tol = np.float64(np.float32(2.4e-7) * (abs(rows[r, j]) + np.float32(1.0))) / grid[j]
                            if err > tol:
                                finer = True
                                break
                    if finer:
                        mags = magnitudes[:n_union]
                        k = 0
                        for j in range(dim):
                            if mask[j] or prev[j] != 0:
                                mags[k] = abs(a[j])
                                k += 1
                        repeat[r] = np.median(mags)
            prev = a
            has_prev = True
    prev_line = line0
    has_prev = line0.size == dim
    for r in range(size):
        if structure[r]:
            v = vecs[r]
            if line_step[r] and has_prev:
                n1 = 0.0
                dot = 0.0
                p2 = np.float32(0.0)
                for j in range(dim):
                    n1 += v[j] * v[j]
                    dot += v[j] * np.float64(prev_line[j])
                    p2 += prev_line[j] * prev_line[j]
                n2 = math.sqrt(p2)
                if n1 > 0 and n2 > 0:
                    line_cos[r] = abs(dot) / (math.sqrt(n1) * n2)
            for j in range(dim):
                last_line[j] = v[j]
            prev_line = last_line
            has_prev = True


@_compiled
def measure_rows(ring: np.ndarray, rows_n: int, rows: np.ndarray, tolerance: np.ndarray, inv_scale: np.ndarray,
                 warm: bool, axis_signal: bool, axis_top: int, span: np.ndarray, grid: np.ndarray,
                 whiten: np.ndarray, step0: np.ndarray, line0: np.ndarray, min_dim: int, flags: np.ndarray,
                 coords: np.ndarray, values: np.ndarray, vectors: np.ndarray) -> int:
    """A request's rows against the client's ring (pushed into it) and their step tests, in one call.

    ``warm``: the route has a model (``inv_scale``, ``span``, ``grid``, ``whiten``); without
    one only repeats, structure and axis neighbours are measured. ``step0`` and ``line0`` are the
    client's kept steps (empty when it has none). Per row ``r``:
    ``flags[r] = (duplicate, structure, axis slot or -1, anchor CRC-32, n_near, signed)``,
    ``coords[r]`` the axis neighbour's moved coordinates, ``values[r] = (distance to the nearest
    input, sign-step mean move, repeated-step median move or NaN, line |cos| or -1)``,
    ``vectors[0, r]`` the step from the nearest input and ``vectors[1, r]`` the whitened step
    from the previous one (float32, as the client's state keeps them). Returns the ring's count.
    """
    size, dim = rows.shape
    # per row, a few arrays each (each allocation costs a compiled kernel ~0.1 us)
    marks = np.zeros((4, size), dtype=np.bool_)
    duplicate, structure, line_step, signed = marks[0], marks[1], marks[2], marks[3]
    counts = np.zeros((3, size), dtype=np.int64)
    axis, anchor, n_near = counts[0], counts[1], counts[2]
    axis[:] = -1
    measures = np.zeros((4, size))
    near2, sign_value, repeat, line_cos = measures[0], measures[1], measures[2], measures[3]
    repeat[:] = np.nan
    line_cos[:] = -1.0
    step_near = vectors[0]
    step_last = np.zeros((size, dim), dtype=np.float32)
    changed_near = np.zeros((size, dim), dtype=np.bool_)
    n: int = _compare_rows(ring, rows_n, rows, tolerance, inv_scale, warm, axis_signal, axis_top, duplicate, structure,
                      axis, coords, anchor, near2, n_near, line_step, step_near, changed_near, step_last)
    if warm and structure.any():
        # Whitened, so that benign steps point anywhere: on correlated data (a few latent
        # factors) raw steps are nearly collinear by chance -- 3% of the time in 2-d.
        vecs = np.zeros((size, whiten.shape[0]))
        step = np.empty(dim)
        for r in range(size):
            if structure[r]:
                for j in range(dim):
                    step[j] = step_last[r, j]
                _upper_product(step, whiten, vecs[r])
                for j in range(dim):
                    vectors[1, r, j] = vecs[r, j]
        _step_tests(structure, axis, n_near, step_near, changed_near, rows, span, grid, step0, vecs,
                    line_step, line0, min_dim, signed, sign_value, repeat, line_cos)
    for r in range(size):
        flags[r, 0] = duplicate[r]
        flags[r, 1] = structure[r]
        flags[r, 2] = axis[r]
        flags[r, 3] = anchor[r]
        flags[r, 4] = n_near[r]
        flags[r, 5] = signed[r]
        values[r, 0] = math.sqrt(near2[r] / dim)
        values[r, 1] = sign_value[r]
        values[r, 2] = repeat[r]
        values[r, 3] = line_cos[r]
    return n


#: Evidence a row can produce in ``score_rows``, in the order ``Detector._rows`` adds it; the
#: detector maps each to its signal name and weight (``off_manifold``'s weight is graded there).
AXIS_FIRST, AXIS_CONFIRMED, SIGN_STEP, REPEATED_STEP, NEAR_DUPLICATE, LINE_SEARCH, OFF_MANIFOLD, OUT_OF_DOMAIN, \
    OFF_GRID, NEW_RARE_REGION = range(10)
#: At most one piece of each kind per row.
EVIDENCE_PER_ROW = 10
#: What ``score_rows`` reports of the client's kept steps (bits of its third result).
KEPT_STEP, KEPT_LINE = 1, 2


@_compiled
def _popcount(value: np.uint64) -> int:
    count = 0
    while value:
        value &= value - np.uint64(1)
        count += 1
    return count


#: ``score_rows``'s ``route`` operand: a route's per-feature vectors, one a row (each padded to the
#: widest, its length in ``settings``), then its scalars (``ROUTE_SCALARS``: distance scale,
#: out-of-domain limit, grid refinement, the furthest benign distance, the near-duplicate distance).
ROUTE_SPAN, ROUTE_GRID, ROUTE_MEAN, ROUTE_LO, ROUTE_HI, ROUTE_INV_UNIT, ROUTE_INV_GRID, ROUTE_CELL_OFFSET, \
    ROUTE_SCALARS = range(9)
#: ``score_rows``'s ``settings`` operand: flags and counts, then the vectors' lengths (``SET_LENGTHS``
#: on, in ``ROUTE_*`` order), then the grid's feature indices and the route's cell counts.
SET_MODEL_ON, SET_AXIS_SIGNAL, SET_AXIS_TOP, SET_MIN_DIM, SET_RARE_OK, SET_CELL_COUNTS, SET_LENGTHS = range(7)
_SET_TAIL = SET_LENGTHS + ROUTE_SCALARS


def route_operands(model_on: bool, axis_signal: bool, axis_top: int, min_dim: int, span: np.ndarray,
                   grid: np.ndarray, mean: np.ndarray, dist_scale: float, lo: np.ndarray, hi: np.ndarray,
                   inv_unit: np.ndarray, ood_limit: float, grid_idx: np.ndarray, inv_grid: np.ndarray, refine: float,
                   cell_offset: np.ndarray, far: float, near_distance: float, cell_counts: np.ndarray,
                   rare_ok: bool) -> tuple[np.ndarray, np.ndarray]:
    """A route's operands of ``score_rows`` but its arrays of other types and shapes (the scales,
    the whitening matrix, the coverage planes), packed once per baseline refresh into
    ``(route, settings)``: two arguments where they were twenty-one, each of which a call's
    dispatch typed and unboxed. The values are copied exactly (float64 into float64)."""
    vectors = (span, grid, mean, lo, hi, inv_unit, inv_grid, cell_offset)
    scalars = (dist_scale, ood_limit, refine, far, near_distance)
    route = np.zeros((ROUTE_SCALARS + 1, max(len(scalars), *(v.size for v in vectors))))
    for row, vector in enumerate(vectors):
        route[row, :vector.size] = vector
    route[ROUTE_SCALARS, :len(scalars)] = scalars
    head = [int(model_on), int(axis_signal), axis_top, min_dim, int(rare_ok), cell_counts.size]
    settings = np.concatenate((np.array(head + [v.size for v in vectors], dtype=np.int64),
                               grid_idx.astype(np.int64), cell_counts.astype(np.int64)))
    return route, settings


@_compiled
def score_rows(ring: np.ndarray, rows_n: int, rows: np.ndarray, inv_scale: np.ndarray, whiten: np.ndarray,
               cell_planes: np.ndarray, route: np.ndarray, settings: np.ndarray, kept: np.ndarray, kept_in: int,
               ewma: np.ndarray, words: np.ndarray, evidence: np.ndarray, window: np.ndarray, window_at: int,
               teach: int) -> tuple[int, int, int, int]:
    """A request's rows, measured (``measure_rows``) and turned into evidence and the client's
    running state, row by row in order: what ``Detector._rows`` does for each row but the reply
    margins, which stay in Python.

    The client's state goes in and comes back through ``ewma`` (duplicate, near-duplicate and
    off-model ratios), ``words`` (the 256-bit coverage sketch as four words, then the axis anchor
    and its moved coordinates) and ``kept`` (step profile, last step: float32 rows, valid per the
    ``kept_in`` bits on the way in; the returned bits say which rows this call wrote). ``rows`` are float64
    (the route model judges them so; the ring keeps them as float32). The route's operands are
    ``inv_scale``, ``whiten``, ``cell_planes`` and the rest packed by ``route_operands``: with
    ``model_on`` the route has a model (``evaluate_rows``'s operands; its coverage cells count
    when ``cell_counts``, the benign occupancy, is not empty). ``evidence`` receives ``(row, kind,
    value)`` per piece. The first ``teach`` clean rows -- those the route baseline may learn --
    are copied into its ``window`` (``FeatureBaseline.window``) from slot ``window_at`` on, wrapping
    around at its end. Returns the ring's input count, the evidence count, the clean-row count
    and the kept-step bits.

    The arithmetic is the Python's it replaces, operation for operation (no fastmath): the
    ratios and therefore the scores come out the same to the last bit.
    """
    # The route's model gives both its verdicts and the scales the structure tests measure with
    # (``measure_rows``'s ``warm``): one flag.
    model_on = warm = settings[SET_MODEL_ON] != 0
    axis_signal = settings[SET_AXIS_SIGNAL] != 0
    axis_top = settings[SET_AXIS_TOP]
    min_dim = settings[SET_MIN_DIM]
    rare_ok = settings[SET_RARE_OK] != 0
    lengths = settings[SET_LENGTHS:_SET_TAIL]
    span = route[ROUTE_SPAN, :lengths[ROUTE_SPAN]]
    grid = route[ROUTE_GRID, :lengths[ROUTE_GRID]]
    mean = route[ROUTE_MEAN, :lengths[ROUTE_MEAN]]
    lo = route[ROUTE_LO, :lengths[ROUTE_LO]]
    hi = route[ROUTE_HI, :lengths[ROUTE_HI]]
    inv_unit = route[ROUTE_INV_UNIT, :lengths[ROUTE_INV_UNIT]]
    inv_grid = route[ROUTE_INV_GRID, :lengths[ROUTE_INV_GRID]]
    cell_offset = route[ROUTE_CELL_OFFSET, :lengths[ROUTE_CELL_OFFSET]]
    scalars = route[ROUTE_SCALARS]
    dist_scale, ood_limit, refine, far, near_distance = scalars[0], scalars[1], scalars[2], scalars[3], scalars[4]
    grid_idx = settings[_SET_TAIL:_SET_TAIL + lengths[ROUTE_INV_GRID]]  # one index per grid scale
    cell_counts = settings[settings.size - settings[SET_CELL_COUNTS]:]
    size, dim = rows.shape
    distance = np.zeros(size)
    verdicts = np.zeros((3, size), dtype=np.bool_)
    cells = np.zeros(size, dtype=np.int64)
    if model_on:
        evaluate_rows(rows, mean, whiten, dist_scale, lo, hi, inv_unit, ood_limit, grid_idx, inv_grid, refine,
                      cell_planes, cell_offset, distance, verdicts[0], verdicts[1], verdicts[2], cells)
    # the rows as the ring keeps them, their tolerances and the steps measured: one allocation
    # (each costs ~0.03 us)
    float32_rows = np.zeros((4, size, dim), dtype=np.float32)
    rows32, tolerance, vectors = float32_rows[0], float32_rows[1], float32_rows[2:]
    for r in range(size):
        for j in range(dim):
            rows32[r, j] = rows[r, j]
            # a coordinate "changed" when it moved by more than float32 rounding of its value
            tolerance[r, j] = np.float32(1e-6) * (abs(rows32[r, j]) + np.float32(1.0))
    flags = np.empty((size, 6), dtype=np.int64)
    coords = np.empty(size, dtype=np.uint64)
    values = np.empty((size, 4))
    # (read before ``kept`` is written, below: no copies)
    step0 = kept[0] if kept_in & KEPT_STEP else kept[0, :0]
    line0 = kept[1] if kept_in & KEPT_LINE else kept[1, :0]
    n = measure_rows(ring, rows_n, rows32, tolerance, inv_scale, warm, axis_signal, axis_top, span, grid, whiten,
                     step0, line0, min_dim, flags, coords, values, vectors)
    dup_ratio, near_ratio, off_ratio = ewma[0], ewma[1], ewma[2]
    anchor_now, coords_now = words[4], words[5]
    has_cells = cell_counts.size > 0
    kept_out = 0
    found = 0
    n_clean = 0
    for i in range(size):
        duplicate = flags[i, 0] != 0
        if duplicate or flags[i, 1] != 0:
            # A retry carries no new information: it is neither evidence nor structure.
            dup_ratio += 0.05 * ((1.0 if duplicate else 0.0) - dup_ratio)
            if not duplicate:
                if flags[i, 2] >= 0:
                    # several coordinates stepped from the same anchor is finite differencing
                    anchor = np.uint64(flags[i, 3])
                    moved = coords[i]
                    if anchor == anchor_now and moved & ~coords_now:
                        evidence[found, 0], evidence[found, 1] = i, AXIS_CONFIRMED
                        evidence[found, 2] = _popcount(coords_now | moved)
                        found += 1
                        coords_now |= moved
                    elif anchor != anchor_now:
                        evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, AXIS_FIRST, 1.0
                        found += 1
                        anchor_now, coords_now = anchor, moved
                if warm:
                    near = values[i, 0]
                    if flags[i, 4] >= 4:
                        if flags[i, 5]:
                            evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, SIGN_STEP, values[i, 1]
                            found += 1
                        repeated = values[i, 2]
                        if repeated == repeated:  # not NaN
                            evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, REPEATED_STEP, repeated
                            found += 1
                        kept[0] = vectors[0, i]
                        kept_out |= KEPT_STEP
                    hit = near < near_distance
                    near_ratio += 0.1 * ((1.0 if hit else 0.0) - near_ratio)
                    if hit and near_ratio > 0.25:
                        evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, NEAR_DUPLICATE, near
                        found += 1
                    cos = values[i, 3]
                    if cos > 0.999:
                        evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, LINE_SEARCH, cos
                        found += 1
                    kept[1] = vectors[1, i]
                    kept_out |= KEPT_LINE
        off_model = False
        if model_on and not duplicate:
            beyond = distance[i] / far > 1.0
            if beyond:
                evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, OFF_MANIFOLD, distance[i]
                found += 1
            if verdicts[0, i]:
                evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, OUT_OF_DOMAIN, 1.0
                found += 1
            if verdicts[1, i]:
                evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, OFF_GRID, 1.0
                found += 1
            off_model = beyond or verdicts[0, i] or verdicts[1, i]
            off_ratio += 0.05 * ((1.0 if off_model else 0.0) - off_ratio)
            if has_cells:
                # entering a region of input space benign traffic never visits, once per cell
                cell = cells[i]
                bit = np.uint64(1) << np.uint64(cell & 63)
                new = not words[cell >> 6] & bit
                words[cell >> 6] |= bit
                if new and cell_counts[cell] == 0 and rare_ok:
                    covered = 0
                    for w in range(4):
                        covered += _popcount(words[w])
                    evidence[found, 0], evidence[found, 1], evidence[found, 2] = i, NEW_RARE_REGION, covered
                    found += 1
        if not off_model and not duplicate and not (model_on and verdicts[2, i]):
            if n_clean < teach:
                slot = (window_at + n_clean) % window.shape[0]
                for j in range(dim):
                    window[slot, j] = rows[i, j]
            n_clean += 1
    ewma[0], ewma[1], ewma[2] = dup_ratio, near_ratio, off_ratio
    words[4], words[5] = anchor_now, coords_now
    return n, found, n_clean, kept_out


#: Rows whose distances ``evaluate_rows`` sums side by side.
_ROW_BLOCK = 8


@_compiled
def _sums_of_squares(values: np.ndarray, out: np.ndarray) -> None:
    """``out[r]``: the sum of the squares of ``values[r]``, in order (the first term first).

    Eight rows side by side (the rest one by one), each summed in its own order -- the same
    operations, the same bits -- so that eight independent chains of additions overlap where
    one row at a time waited for each of its 64 additions."""
    n_rows, width = values.shape
    r = 0
    while r + 8 <= n_rows:
        t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
        for j in range(width):
            a0, a1, a2, a3 = values[r, j], values[r + 1, j], values[r + 2, j], values[r + 3, j]
            a4, a5, a6, a7 = values[r + 4, j], values[r + 5, j], values[r + 6, j], values[r + 7, j]
            t0 += a0 * a0
            t1 += a1 * a1
            t2 += a2 * a2
            t3 += a3 * a3
            t4 += a4 * a4
            t5 += a5 * a5
            t6 += a6 * a6
            t7 += a7 * a7
        out[r], out[r + 1], out[r + 2], out[r + 3] = t0, t1, t2, t3
        out[r + 4], out[r + 5], out[r + 6], out[r + 7] = t4, t5, t6, t7
        r += 8
    while r < n_rows:
        total = 0.0
        for j in range(width):
            total += values[r, j] * values[r, j]
        out[r] = total
        r += 1


@_compiled
def evaluate_rows(rows: np.ndarray, mean: np.ndarray, whiten: np.ndarray, dist_scale: float, lo: np.ndarray,
                  hi: np.ndarray, inv_unit: np.ndarray, ood_limit: float, grid_idx: np.ndarray,
                  inv_grid: np.ndarray, refine: float, cell_planes: np.ndarray, cell_offset: np.ndarray,
                  distance: np.ndarray, out_of_domain: np.ndarray,
                  off_grid: np.ndarray, finer: np.ndarray, cell: np.ndarray) -> None:
    """A route model's verdicts on each row (``FeatureModel.evaluate`` says what each means).

    ``distance``: the mean square of the row whitened (``whiten @ (row - mean)``, ``whiten`` the
    model's upper-triangular factor ``FeatureModel.upper_whiten``) times
    ``dist_scale``. ``out_of_domain``: the largest excursion beyond
    ``[lo, hi]`` in units of the feature's range (``inv_unit``) above ``ood_limit``. The grid
    tests scale the features ``grid_idx`` by ``inv_grid``: ``finer`` when a value is off that grid,
    ``off_grid`` when it is off the grid refined by ``refine`` (two decimals of slack); both by
    more than 1e-6 relative. ``cell``: the sign pattern of each row against the 8 coverage
    hyperplanes (``rows @ cell_planes > cell_offset``, first plane the most significant bit).
    """
    n_rows, dim = rows.shape
    n_planes = cell_planes.shape[1]
    # A block of rows whitened before their distances are summed, side by side (``_sums_of_squares``).
    whitened = np.empty((_ROW_BLOCK, whiten.shape[0]))
    centred = np.empty(dim)
    for r in range(n_rows):
        x = rows[r]
        block_row = r % _ROW_BLOCK
        for j in range(dim):
            centred[j] = x[j] - mean[j]
        _upper_product(centred, whiten, whitened[block_row])
        if block_row == _ROW_BLOCK - 1 or r == n_rows - 1:
            first = r - block_row
            _sums_of_squares(whitened[:block_row + 1], distance[first:r + 1])
            for k in range(first, r + 1):
                distance[k] = distance[k] * dist_scale
        # The largest excursion is above the limit when any one is (NaN excursions are neither):
        # an or of independent tests, where a running maximum waited for each comparison.
        outside = False
        for j in range(dim):
            beyond = max(lo[j] - x[j], x[j] - hi[j]) * inv_unit[j]
            outside |= beyond > ood_limit
        out_of_domain[r] = outside
        # Every feature tested, without branches: benign rows are on the grid, so stopping at the
        # first miss saved nothing there, and the branches kept the loop from vectorising.
        off = False
        off_slack = False
        for k in range(grid_idx.size):
            scaled = x[grid_idx[k]] * inv_grid[k]
            off |= abs(scaled - np.rint(scaled)) > 1e-6 * max(1.0, abs(scaled))
            refined = scaled * refine
            off_slack |= abs(refined - np.rint(refined)) > 1e-6 * max(1.0, abs(refined))
        finer[r] = off
        off_grid[r] = off_slack
        code = 0
        if n_planes == COVERAGE_PLANES:
            # The eight sums side by side, each over the row in order as below (the same
            # operations, the same bits): eight independent chains of additions where one sum at
            # a time waited for its previous addition -- 0.27 -> 0.1 us a row of 64 features.
            d0 = d1 = d2 = d3 = d4 = d5 = d6 = d7 = 0.0
            for j in range(dim):
                xj = x[j]
                w = cell_planes[j]
                d0 += xj * w[0]
                d1 += xj * w[1]
                d2 += xj * w[2]
                d3 += xj * w[3]
                d4 += xj * w[4]
                d5 += xj * w[5]
                d6 += xj * w[6]
                d7 += xj * w[7]
            for p, dot in enumerate((d0, d1, d2, d3, d4, d5, d6, d7)):
                code = (code << 1) | (1 if dot > cell_offset[p] else 0)
        else:
            for p in range(n_planes):
                dot = 0.0
                for j in range(dim):
                    dot += x[j] * cell_planes[j, p]
                code = (code << 1) | (1 if dot > cell_offset[p] else 0)
        cell[r] = code


@compiled(types.int64(types.float64[:, ::1], types.int64))
def axis_neighbour_pairs(sample: np.ndarray, axis_max: int) -> int:
    """Ordered pairs ``(i, j)``, ``i != j``, of ``sample``'s rows that differ in 1 to ``axis_max``
    coordinates, a coordinate differing when ``|x_i - x_j| > 1e-6 (|x_j| + 1)``: the numpy
    expression ``FeatureModel._learn_spacing`` used (a 256 x 256 x 64 boolean tensor, ~18 ms of a
    route model's ~22 ms refit, in the log phase of the request that triggers it), with the same
    comparisons in float64 -- the same count -- and each pair left as soon as it differs in more
    than ``axis_max`` coordinates (~1 ms)."""
    n, dim = sample.shape
    count = 0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            moved = 0
            for k in range(dim):
                other = sample[j, k]
                if abs(sample[i, k] - other) > 1e-6 * (abs(other) + 1.0):
                    moved += 1
                    if moved > axis_max:
                        break
            if 1 <= moved <= axis_max:
                count += 1
    return count


_warmed = False


def warm() -> None:
    """Compile (or load from the disk cache) every kernel a request calls, for the types the detector passes,
    once per process (``tests/extraction_guard`` checks that a request compiles nothing more).

    Called when a detector is made -- at the plugin instance's start, before its first request --
    so no request pays for compilation: ~9 s on the 2-core CI machine without a cache, well under
    a second from the disk cache.
    """
    global _warmed
    if _warmed:
        return
    dim, size = 4, 2
    rows = np.arange(size * dim, dtype=np.float32).reshape(size, dim)
    # measure_rows is compiled into score_rows: no request calls it on its own
    for model in (True, False):
        route, settings = route_operands(model, True, 1, 8, np.ones(dim), np.ones(dim), np.zeros(dim), 1.0,
                                         np.zeros(dim), np.ones(dim), np.ones(dim), 1.0, np.arange(dim, dtype=np.int64),
                                         np.ones(dim), 100.0, np.zeros(8), 1.0, 0.1, np.ones(256, dtype=np.int64),
                                         False)
        score_rows(np.zeros((3, dim), dtype=np.float32), 0, rows.astype(np.float64), np.ones(dim, dtype=np.float32),
                   np.eye(dim), np.ones((dim, 8)), route, settings, np.zeros((2, dim), dtype=np.float32), 0,
                   np.zeros(3), np.zeros(6, dtype=np.uint64), np.zeros((EVIDENCE_PER_ROW * size, 3)),
                   np.zeros((4, dim)), 3, size)
    model_rows = np.ones((size, dim))
    evaluate_rows(model_rows, np.zeros(dim), np.eye(dim), 1.0, np.zeros(dim), np.ones(dim), np.ones(dim), 1.0,
                  np.arange(dim, dtype=np.int64), np.ones(dim), 100.0, np.ones((dim, 8)), np.zeros(8), np.zeros(size),
                  np.zeros(size, dtype=np.bool_), np.zeros(size, dtype=np.bool_), np.zeros(size, dtype=np.bool_),
                  np.zeros(size, dtype=np.int64))
    _warmed = True
