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

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .config import FeatureStats

MAX_ROUTES = 256
#: Rows kept per route for the covariance; bounded memory (1024 x d float64).
RESERVOIR = 1024
_EWMA = 0.01


@dataclass
class FeatureModel:
    """Mean, whitening matrix, ranges and the typical off-manifold distance of a route's inputs."""

    dim: int
    mean: np.ndarray
    whiten: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    span_floor: float
    m_ref: float
    std: np.ndarray
    #: Per-feature value grid (10**-k) every benign value sat on, NaN where none with k <= 6 did.
    grid: np.ndarray | None = None

    @classmethod
    def from_rows(cls, rows: np.ndarray) -> FeatureModel:
        mean = rows.mean(axis=0)
        cov = np.atleast_2d(np.cov(rows, rowvar=False))
        var = np.diag(cov).copy()
        # A feature that never varies in benign traffic would otherwise get infinite weight; the
        # floor keeps a single odd pixel from dominating while a real change across many still shows.
        floor = max(0.05 * float(np.median(var)), 1e-9)
        cov = cov + np.eye(rows.shape[1]) * floor
        vals, vecs = np.linalg.eigh(cov)
        vals = np.maximum(vals, floor)
        whiten = (vecs / np.sqrt(vals)).T
        z = (rows - mean) @ whiten.T
        m: np.ndarray = (z * z).mean(axis=1)
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        span_floor = 0.1 * float(np.median(hi - lo)) or 1e-6
        return cls(dim=rows.shape[1], mean=mean, whiten=whiten, lo=lo, hi=hi, span_floor=span_floor,
                   m_ref=max(float(np.quantile(m, 0.99)), 1e-6), std=np.sqrt(var + floor),
                   grid=_learn_grid(rows))

    @classmethod
    def from_stats(cls, stats: FeatureStats) -> FeatureModel:
        std = np.asarray(stats.std, dtype=np.float64)
        lo, hi = np.asarray(stats.minimum), np.asarray(stats.maximum)
        # Diagonal whitening: with independent standardised features m has mean 1; the 99th
        # percentile of a chi-square/d for d >= 4 stays below ~3.3.
        return cls(dim=len(std), mean=np.asarray(stats.mean), whiten=np.diag(1.0 / std), lo=lo, hi=hi,
                   span_floor=0.1 * float(np.median(hi - lo)) or 1e-6, m_ref=3.3, std=std)

    def distance(self, rows: np.ndarray) -> np.ndarray:
        """Mean squared whitened distance per row, in units of the route's 99th percentile."""
        z = (rows - self.mean) @ self.whiten.T
        result: np.ndarray = (z * z).mean(axis=1) / self.m_ref
        return result

    def out_of_domain(self, rows: np.ndarray) -> np.ndarray:
        span = self.span()
        outside = (rows < self.lo - 0.5 * span) | (rows > self.hi + 0.5 * span)
        return np.asarray(outside.any(axis=1))

    def span(self) -> np.ndarray:
        result: np.ndarray = np.maximum(self.hi - self.lo, self.span_floor)
        return result

    def off_grid(self, rows: np.ndarray) -> np.ndarray:
        """Rows with a value between the grid points benign traffic always used (e.g. 0.1 steps)."""
        if self.grid is None:
            return np.zeros(rows.shape[0], dtype=bool)
        scaled = rows / self.grid
        err = np.abs(scaled - np.round(scaled))
        result: np.ndarray = np.nan_to_num(err > 1e-6 * np.maximum(1.0, np.abs(scaled)), nan=0.0).any(axis=1)
        return result


def _learn_grid(rows: np.ndarray) -> np.ndarray | None:
    """The coarsest decimal grid (1, 0.1, ... 1e-6) holding every value of each feature.

    Real inputs are often quantised (pixel intensities, measurements to 0.1 cm, currency to cents);
    synthetic queries (random points, Gaussian perturbations, finite differences) almost never
    are. A feature with no such grid gets NaN and is ignored; a route with none returns None.
    """
    grid = np.full(rows.shape[1], np.nan)
    todo = np.ones(rows.shape[1], dtype=bool)
    for k in range(7):
        scaled = rows[:, todo] * 10.0**k
        fits = (np.abs(scaled - np.round(scaled)) <= 1e-6 * np.maximum(1.0, np.abs(scaled))).all(axis=0)
        idx = np.flatnonzero(todo)[fits]
        # two decimals of slack: a rare benign value one digit finer than the sample must not
        # count, while synthetic floats carry ~15 significant digits
        grid[idx] = 10.0 ** -(k + 2)
        todo[idx] = False
        if not todo.any():
            break
    return None if np.isnan(grid).all() else grid


class FeatureBaseline:
    """Learns a ``FeatureModel`` from a reservoir of benign rows, refreshed every 256 new rows."""

    def __init__(self, dim: int, min_samples: int, stats: FeatureStats | None) -> None:
        self.dim = dim
        self.min_samples = min_samples
        self.configured = FeatureModel.from_stats(stats) if stats and len(stats.mean) == dim else None
        self.model: FeatureModel | None = self.configured
        self._rows = np.zeros((RESERVOIR, dim))
        self._n = 0
        self._since_refresh = 0

    @property
    def learned_rows(self) -> int:
        return self._n

    def learn(self, rows: np.ndarray) -> None:
        for row in rows:
            self._rows[self._n % RESERVOIR] = row
            self._n += 1
            self._since_refresh += 1
        ready = self._n >= self.min_samples
        if ready and (self.model is self.configured or self._since_refresh >= 256):
            self.model = FeatureModel.from_rows(self._rows[: min(self._n, RESERVOIR)])
            self._since_refresh = 0


@dataclass
class _Ewm:
    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def add(self, x: float) -> None:
        self.n += 1
        a = max(_EWMA, 1.0 / self.n)
        d = x - self.mean
        self.mean += a * d
        self.var = (1 - a) * (self.var + a * d * d)

    @property
    def std(self) -> float:
        return math.sqrt(self.var)


class RouteBaseline:
    """Request-level norms of one route: per-client rate, payload size, low margins, output volume."""

    def __init__(self, min_samples: int, stats: FeatureStats | None) -> None:
        self.min_samples = min_samples
        self.stats = stats
        self.rate = _Ewm()
        self.log_size = _Ewm()
        self.low_margin = _Ewm()
        self.features: dict[int, FeatureBaseline] = {}

    @property
    def ready(self) -> bool:
        return self.rate.n >= self.min_samples

    def feature_baseline(self, dim: int) -> FeatureBaseline:
        fb = self.features.get(dim)
        if fb is None:
            if len(self.features) >= 4:
                self.features.pop(next(iter(self.features)))
            fb = self.features[dim] = FeatureBaseline(dim, self.min_samples, self.stats)
        return fb


class Baselines:
    """Route id -> ``RouteBaseline``, least recently used evicted beyond ``MAX_ROUTES``."""

    def __init__(self, min_samples: int, stats: FeatureStats | None, max_routes: int = MAX_ROUTES) -> None:
        self.min_samples = min_samples
        self.stats = stats
        self.max_routes = max_routes
        self._routes: OrderedDict[str, RouteBaseline] = OrderedDict()

    def get(self, route: str) -> RouteBaseline:
        rb = self._routes.get(route)
        if rb is None:
            rb = self._routes[route] = RouteBaseline(self.min_samples, self.stats)
            while len(self._routes) > self.max_routes:
                self._routes.popitem(last=False)
        else:
            self._routes.move_to_end(route)
        return rb
