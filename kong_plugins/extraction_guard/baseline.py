"""Per-route baselines learned online: what normal traffic looks like on this route.

Kept in the plugin server's memory (one per route, at most ``MAX_ROUTES``, least recently used
evicted): each node learns from the traffic it proxies, which for a load-balanced fleet is the
same distribution. Only requests of clients whose extraction score is below the flag threshold
feed a baseline, and off-manifold rows never do, so an attacker cannot drag the baseline towards
its own queries. Until a baseline has seen ``baseline_min_samples`` rows it reports "not ready"
and the signals that depend on it abstain (safe cold start) unless the operator gave
``feature_stats`` in config.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import kernels
from .config import FeatureStats

MAX_ROUTES = 256
#: Rows kept per route for the covariance; bounded memory (1024 x d float64).
RESERVOIR = 1024
STEADY_REFRESH = 4096
#: Share of a window's rows a feature's value grid may leave out (see ``_learn_grid``).
GRID_EXCEPTIONS = 0.005
#: Two decimals of slack on the learned precision (see ``FeatureModel.off_grid``); synthetic floats
#: carry ~15 significant digits, so they are off the grid either way.
GRID_SLACK = 0.01


def axis_max(dim: int) -> int:
    """Coordinates a finite-difference step may change: one, or a few on wide inputs (d // 16)."""
    return max(1, dim // 16)
_EWMA = 0.01
#: The count from which ``_Ewm`` weighs a new value by ``_EWMA`` (1 / n before; 1 / 100 is 0.01 itself).
_EWMA_AFTER = 100


#: Coverage cells: the sign pattern of a standardised input against 8 fixed random hyperplanes.
CELLS = 256
#: Distinct rows compared pairwise at a refresh (nearest-neighbour spacing, axis-neighbour rate).
_PAIR_SAMPLE = 256


@dataclass
class FeatureModel:
    """What benign inputs of one route look like, with every threshold calibrated on held-out rows.

    ``distance`` is the Mahalanobis-type distance in units of its held-out 99th percentile and
    ``far`` the distance beyond which a row is off-manifold: 1.5x the furthest held-out benign row
    (real data has heavy tails -- breast-cancer rows reach 4x the 99th percentile), at least 2;
    ``ood_limit`` the largest excursion beyond the learned per-feature range a benign held-out row
    made (x2, at least a whole range: a window of 1024 rows misses the far tail of a skewed
    feature, so only values no benign row could plausibly take count); ``nn_spacing`` the 1st
    percentile of the distance between a benign row and its nearest *distinct* benign neighbour;
    ``axis_rate`` the chance that a benign row differs from one of ``ring`` other benign rows in
    only a few coordinates (what a coarse, low-dimensional dataset does naturally and what finite
    differencing does on purpose); ``cells`` the benign occupancy of the coverage cells and
    ``unseen_cell_rate`` the Good-Turing estimate of how often a benign row lands in a cell no
    learned row occupied.
    """

    dim: int
    mean: np.ndarray
    whiten: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    unit: np.ndarray
    m_ref: float
    std: np.ndarray
    #: Per-feature precision benign values are written with (10**-k), NaN where none with k <= 6
    #: held them; ``off_grid`` tests against it with two decimals of slack.
    grid: np.ndarray | None = None
    far: float = 2.0
    ood_limit: float = 0.5
    nn_spacing: float = 0.0
    axis_rate: float = 1.0
    cells: np.ndarray | None = None
    unseen_cell_rate: float = 1.0

    def __post_init__(self) -> None:
        self.prepare()

    def prepare(self) -> None:
        """Precompute what each request's evaluation needs (call again after changing a field).

        Everything a request's rows are compared with is derived here, once per baseline refresh,
        so that :meth:`evaluate` is a handful of array operations whatever the route.
        """
        #: What a detector derives from this model (its ``_Shape``), dropped with the model.
        self.memo: dict[object, object] = {}
        #: 1/std in the ring's float32, for the per-row near-duplicate distance.
        self.inv_std32 = (1.0 / self.std).astype(np.float32)
        self._inv_unit = 1.0 / self.unit
        self._dist_scale = 1.0 / (self.dim * self.m_ref)
        self._mean = np.ascontiguousarray(self.mean, dtype=np.float64)
        # The kernels whiten with an upper-triangular U such that U^T U = whiten^T whiten (the R of
        # whiten's QR decomposition): |U v| = |whiten v| and (U a).(U b) = (whiten a).(whiten b) for
        # all vectors -- a row's distance and the angle between two steps, all that whitened
        # vectors are used for -- at half the multiplications and half the matrix read per product
        # (two products a row). QR rather than a Cholesky factor of the precision: it never forms
        # whiten^T whiten, whose conditioning is the square of whiten's, and it cannot fail.
        #: ``whiten``'s upper-triangular equivalent (``kernels._upper_product``'s operand).
        self.upper_whiten = np.ascontiguousarray(np.linalg.qr(self.whiten, mode="r"), dtype=np.float64)
        cut = planes(self.dim) / self.std[:, None]
        self._cell_planes, self._cell_offset = np.ascontiguousarray(cut), np.ascontiguousarray(self.mean @ cut)
        # the features with a grid (none without one) and their inverse precision
        idx = np.flatnonzero(~np.isnan(self.grid)) if self.grid is not None else np.zeros(0, dtype=np.int64)
        self._grid_idx = idx.astype(np.int64)
        self._inv_grid = np.ascontiguousarray(1.0 / self.grid[idx]) if self.grid is not None else np.zeros(0)
        # the kernel's float64 operands, contiguous (the types it was compiled for)
        self._lo, self._hi = np.ascontiguousarray(self.lo, dtype=np.float64), np.ascontiguousarray(self.hi, np.float64)
        self._inv_unit = np.ascontiguousarray(self._inv_unit, dtype=np.float64)

    @classmethod
    def from_rows(cls, rows: np.ndarray, axis_max: int = 1, ring: int = 16,
                  spacing: tuple[float, float] | None = None) -> FeatureModel:
        """Fit and calibrate on ``rows``; ``spacing`` reuses an earlier (nn_spacing, axis_rate)."""
        mean, whiten, std = _fit(rows)
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        unit = _unit(lo, hi)
        # Two-fold cross-fit: thresholds are set on rows the fitted half never saw, so a small or
        # high-dimensional sample (200 rows of 64 pixels) yields a conservative model rather than
        # an overfitted one whose own rows look typical and every new benign row looks odd.
        half_a, half_b = rows[0::2], rows[1::2]
        held_m: list[np.ndarray] = []
        held_ood: list[np.ndarray] = []
        for fit_rows, test_rows in ((half_a, half_b), (half_b, half_a)):
            if len(fit_rows) < 2 or len(test_rows) < 1:
                continue
            m_fit, w_fit, _ = _fit(fit_rows)
            z = (test_rows - m_fit) @ w_fit.T
            held_m.append((z * z).mean(axis=1))
            f_lo, f_hi = fit_rows.min(axis=0), fit_rows.max(axis=0)
            held_ood.append(_excursion(test_rows, f_lo, f_hi, _unit(f_lo, f_hi)))
        m_held = np.concatenate(held_m) if held_m else np.ones(1)
        m_ref = max(float(np.quantile(m_held, 0.99)), 1e-6)
        ood_held = float(np.concatenate(held_ood).max()) if held_ood else 0.0
        model = cls(dim=rows.shape[1], mean=mean, whiten=whiten, lo=lo, hi=hi, unit=unit,
                    m_ref=m_ref, std=std, grid=_learn_grid(rows),
                    far=max(2.0, 1.5 * float(m_held.max()) / m_ref), ood_limit=max(1.0, 2.0 * ood_held))
        if spacing is None:
            model._learn_spacing(rows, axis_max, ring)
        else:
            model.nn_spacing, model.axis_rate = spacing
        model._learn_cells(rows)
        return model

    @classmethod
    def from_stats(cls, stats: FeatureStats) -> FeatureModel:
        std = np.asarray(stats.std, dtype=np.float64)
        lo, hi = np.asarray(stats.minimum), np.asarray(stats.maximum)
        # Diagonal whitening: with independent standardised features m has mean 1; the 99th
        # percentile of a chi-square/d for d >= 4 stays below ~3.3. The operator's min/max are the
        # true domain, so half a range beyond it is already out of domain. Without benign rows the
        # spacing, axis-neighbour rate and cell occupancy are unknown: those signals wait for
        # learned rows (axis_rate 0 keeps the finite-difference signal on -- it needs no data).
        return cls(dim=len(std), mean=np.asarray(stats.mean), whiten=np.diag(1.0 / std), lo=lo, hi=hi,
                   unit=_unit(lo, hi), m_ref=3.3, std=std, axis_rate=0.0)

    def _learn_spacing(self, rows: np.ndarray, axis_max: int, ring: int) -> None:
        distinct = np.unique(rows, axis=0)
        if len(distinct) < 8:
            return
        sample = distinct[np.linspace(0, len(distinct) - 1, min(len(distinct), _PAIR_SAMPLE)).astype(int)]
        z = sample / self.std
        sq = (z * z).sum(axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0) / self.dim
        np.fill_diagonal(d2, np.inf)
        self.nn_spacing = float(np.quantile(np.sqrt(d2.min(axis=1)), 0.01))
        pairs = len(sample) * (len(sample) - 1)
        near = kernels.axis_neighbour_pairs(np.ascontiguousarray(sample, dtype=np.float64), axis_max)
        p_pair = float(near) / pairs
        self.axis_rate = 1.0 - (1.0 - p_pair) ** ring

    def _learn_cells(self, rows: np.ndarray) -> None:
        counts = np.bincount(self.cell(rows), minlength=CELLS)
        self.cells = counts
        # Good-Turing: the mass of cells not yet seen is about the share of cells seen exactly once.
        self.unseen_cell_rate = float((counts == 1).sum()) / max(1, len(rows))

    def span(self) -> np.ndarray:
        return self.unit

    def grid_checks(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(off_grid, finer_than_grid)`` per row.

        ``off_grid``: a value between the grid points benign traffic always used (e.g. 0.1 steps),
        with two decimals of slack -- a rare benign value written with one more digit than the
        sample showed must not be evidence. ``finer_than_grid``: a value more precise than benign
        traffic's own precision, slack or not. Such rows are never learned: learning them would
        make the next window's precision finer, and an attacker's slightly-off queries (x + 0.1 *
        range is one decimal finer than iris data) would ratchet the grid away.
        """
        _, (_, off, finer), _ = self.verdicts(rows)
        return off, finer

    def evaluate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(distance, out_of_domain, off_grid, finer_than_grid, cell)`` of each row; ``cell`` is
        ``None`` until the route's benign cell occupancy is learned."""
        dist, (ood, off, finer), cells = self.verdicts(rows)
        return dist, ood, off, finer, None if self.cells is None else cells

    def cell(self, rows: np.ndarray) -> np.ndarray:
        """Coverage cell of each row: sign pattern of the standardised row against fixed random
        hyperplanes through the route's mean (identical on every node)."""
        return self.verdicts(np.atleast_2d(rows))[2]

    def kernel_operands(self) -> tuple[Any, ...]:
        """What ``kernels.evaluate_rows`` takes of this model (after the rows and the whitening
        matrix), in its order and types."""
        return (self._mean, float(self._dist_scale), self._lo, self._hi, self._inv_unit, float(self.ood_limit),
                self._grid_idx, self._inv_grid, 1.0 / GRID_SLACK, self._cell_planes, self._cell_offset)

    def verdicts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every per-row verdict in one compiled pass (``kernels.evaluate_rows``), as the kernels take
        them: distances, a (3, rows) array of out-of-domain / off-grid / finer-than-grid flags, cells."""
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        n = rows.shape[0]
        dist = np.empty(n)
        flags = np.empty((3, n), dtype=np.bool_)
        ood, off, finer = flags
        cells = np.empty(n, dtype=np.int64)
        kernels.evaluate_rows(rows, self._mean, self.upper_whiten, self._dist_scale, self._lo, self._hi,
                              self._inv_unit, self.ood_limit, self._grid_idx, self._inv_grid, 1.0 / GRID_SLACK,
                              self._cell_planes, self._cell_offset, dist, ood, off, finer, cells)
        return dist, flags, cells

    def off_grid(self, rows: np.ndarray) -> np.ndarray:
        return self.grid_checks(rows)[0]

    def finer_than_grid(self, rows: np.ndarray) -> np.ndarray:
        return self.grid_checks(rows)[1]


_PLANES_CACHE: dict[int, np.ndarray] = {}


def planes(dim: int) -> np.ndarray:
    """Fixed random hyperplanes (seeded: identical on every node and across restarts)."""
    found = _PLANES_CACHE.get(dim)
    if found is None:
        found = _PLANES_CACHE[dim] = np.random.default_rng(0x5EED + dim).standard_normal((dim, kernels.COVERAGE_PLANES))
    return found


def _fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, whitening matrix and regularised per-feature scale of a set of rows."""
    mean = rows.mean(axis=0)
    cov = np.atleast_2d(np.cov(rows, rowvar=False)) if len(rows) > 1 else np.zeros((rows.shape[1],) * 2)
    var = np.diag(cov).copy()
    # A feature that never varies in benign traffic would otherwise get infinite weight; the
    # floor keeps a single odd pixel from dominating while a real change across many still shows.
    floor = max(0.05 * float(np.median(var)), 1e-9)
    cov = cov + np.eye(rows.shape[1]) * floor
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, floor)
    whiten = (vecs / np.sqrt(vals)).T
    return mean, whiten, np.sqrt(var + floor)


def _unit(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per-feature range, floored at a tenth of the median range (a constant feature has none)."""
    span = hi - lo
    result: np.ndarray = np.maximum(span, 0.1 * float(np.median(span)) or 1e-6)
    return result


def _excursion(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """How far each row reaches beyond [lo, hi], in ranges of the feature reaching furthest."""
    beyond = np.maximum(lo - rows, rows - hi)
    result: np.ndarray = np.maximum(beyond / unit, 0.0).max(axis=1)
    return result


def _learn_grid(rows: np.ndarray) -> np.ndarray | None:
    """The coarsest decimal precision (1, 0.1, ... 1e-6) holding the values of each feature.

    Real inputs are often quantised (pixel intensities, measurements to 0.1 cm, currency to cents);
    synthetic queries (random points, Gaussian perturbations, finite differences) almost never
    are. A feature with no such grid gets NaN and is ignored; a route with none returns None.
    A grid may leave out ``GRID_EXCEPTIONS`` of the rows (five in a full window): a few rows that
    slipped into the baseline (an attacker's queries learned before the route had a model, one
    odd benign value) must not erase the grid of a feature for everyone -- else every later
    off-grid row would be learned too and the grid would never come back.
    """
    allowed = int(GRID_EXCEPTIONS * len(rows))
    grid = np.full(rows.shape[1], np.nan)
    todo = np.ones(rows.shape[1], dtype=bool)
    for k in range(7):
        scaled = rows[:, todo] * 10.0**k
        off = (np.abs(scaled - np.round(scaled)) > 1e-6 * np.maximum(1.0, np.abs(scaled))).sum(axis=0)
        idx = np.flatnonzero(todo)[off <= allowed]
        grid[idx] = 10.0**-k
        todo[idx] = False
        if not todo.any():
            break
    return None if np.isnan(grid).all() else grid


class FeatureBaseline:
    """Learns a ``FeatureModel`` from the last ``RESERVOIR`` benign rows.

    Refreshed every 256 new rows until the window is full, then every ``STEADY_REFRESH`` rows: a
    refresh costs a few milliseconds (three eigendecompositions, one pairwise pass), which spread
    over that many rows is about a microsecond each.
    """

    def __init__(self, dim: int, min_samples: int, stats: FeatureStats | None, ring: int = 16) -> None:
        self.dim = dim
        self.min_samples = min_samples
        self.ring = ring
        self.configured = FeatureModel.from_stats(stats) if stats and len(stats.mean) == dim else None
        self.model: FeatureModel | None = self.configured
        #: The learned rows, ``RESERVOIR`` of them, a request's written from ``next_slot`` on and
        #: wrapping around at the end: ``kernels.score_rows`` copies a request's clean rows in (no
        #: numpy call on the log phase for them), ``count_learned`` counts them.
        self.window = np.zeros((RESERVOIR, dim))
        #: Where the next learned row goes in ``window`` (an attribute, read once a request).
        self.next_slot = 0
        self._n = 0
        self._since_refresh = 0
        self._refreshes = 0

    @property
    def learned_rows(self) -> int:
        return self._n

    def count_learned(self, count: int) -> None:
        """Count ``count`` rows just written into ``window`` from ``next_slot`` on; refresh the model when due."""
        self._n += count
        self.next_slot = self._n % RESERVOIR
        self._since_refresh += count
        ready = self._n >= self.min_samples
        every = 256 if self._n < RESERVOIR + 256 else STEADY_REFRESH
        if ready and (self.model is self.configured or self._since_refresh >= every):
            # The pairwise pass (spacing, axis-neighbour rate) is the costly part of a refresh and
            # a property of the data, not of the moment: measured while the baseline forms, then
            # on every 8th refresh.
            self._refreshes += 1
            old = self.model if self.model is not self.configured else None
            reuse = old is not None and self._n > 4 * RESERVOIR and self._refreshes % 8
            learned = FeatureModel.from_rows(self.window[: min(self._n, RESERVOIR)],
                                             axis_max=axis_max(self.dim), ring=self.ring,
                                             spacing=(old.nn_spacing, old.axis_rate) if reuse and old else None)
            if self.configured is not None:
                # The operator's ranges are the true domain; learned rows refine the rest.
                learned.lo, learned.hi, learned.unit = self.configured.lo, self.configured.hi, self.configured.unit
                learned.ood_limit = self.configured.ood_limit
                learned.prepare()
            self.model = learned
            self._since_refresh = 0


@dataclass(slots=True)
class _Ewm:
    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def add(self, x: float) -> None:
        # A new value weighs 1 / n (the plain mean while few were seen), _EWMA from _EWMA_AFTER on.
        # (Two or three a request: one expression, where max()'s call was a fifth of the cost.)
        n = self.n = self.n + 1
        a = 1.0 / n if n < _EWMA_AFTER else _EWMA
        d = x - self.mean
        self.mean += a * d
        self.var = (1 - a) * (self.var + a * d * d)


class RouteBaseline:
    """Request-level norms of one route: per-client rate, payload size, low margins, output volume."""

    def __init__(self, min_samples: int, stats: FeatureStats | None, ring: int = 16) -> None:
        self.min_samples = min_samples
        self.stats = stats
        self.ring = ring
        self.rate = _Ewm()
        self.log_size = _Ewm()
        self.low_margin = _Ewm()
        self.features: dict[int, FeatureBaseline] = {}

    def feature_baseline(self, dim: int) -> FeatureBaseline:
        fb = self.features.get(dim)
        if fb is None:
            if len(self.features) >= 4:
                self.features.pop(next(iter(self.features)))
            fb = self.features[dim] = FeatureBaseline(dim, self.min_samples, self.stats, self.ring)
        return fb


class Baselines:
    """Route id -> ``RouteBaseline``, least recently used evicted beyond ``MAX_ROUTES``."""

    def __init__(self, min_samples: int, stats: FeatureStats | None, max_routes: int = MAX_ROUTES,
                 ring: int = 16) -> None:
        self.min_samples = min_samples
        self.stats = stats
        self.max_routes = max_routes
        self.ring = ring
        self._routes: OrderedDict[str, RouteBaseline] = OrderedDict()

    def get(self, route: str) -> RouteBaseline:
        rb = self._routes.get(route)
        if rb is None:
            rb = self._routes[route] = RouteBaseline(self.min_samples, self.stats, self.ring)
            while len(self._routes) > self.max_routes:
                self._routes.popitem(last=False)
        else:
            self._routes.move_to_end(route)
        return rb
