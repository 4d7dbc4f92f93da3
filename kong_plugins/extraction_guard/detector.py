"""The decision core: per-request evidence, per-client CUSUM risk scores, levels and explanations.

Pure code: time comes from the observation (Kong's request start time), storage is the caller's.

Scoring. Every signal turns one request (or one numeric row) into a log-likelihood-ratio-like
weight: positive when the request looks like extraction or abuse, a small negative drift when it
looks like nothing. A client's score is the CUSUM ``S = max(0, S + w)`` of those weights (Page
1954), so benign clients hover at zero, an attacker climbs linearly in *queries* whatever its
pacing (slow-and-low gains nothing), and one odd request is forgotten after a few normal ones. The
score also decays with ``score_half_life_s`` so an idle client is forgiven eventually.

Two scores are kept apart on purpose: ``extraction`` (content evidence: off-manifold inputs,
structured perturbations, boundary probing, logit-bias sweeps, distillation) can reach flag,
throttle, block and revoke; ``abuse`` (rate, burstiness, payload size, output volume) can reach at
most throttle, because a traffic spike alone is not proof of theft and a tighter limit is the
proportionate answer to it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import kernels
from .baseline import Baselines, FeatureBaseline, FeatureModel, RouteBaseline, axis_max
from .config import LEVELS, GuardConfig
from .payloads import LLMRequest
from .sketches import hamming
from .state import MAX_BIASED_IDS, PROMPT_RING, ClientState, decay

ALLOW, FLAG, THROTTLE, BLOCK, REVOKE = range(5)
RATE_TAU_S = 10.0
LONG_TAU_S = 900.0
TOKENS_TAU_S = 3600.0
DRIFT = -0.25
#: A client blocked this many times is revoked (if it has a credential) on the next block.
REPEAT_OFFENDER_BLOCKS = 3
GROUP_THRESHOLD_FACTOR = 1.5
#: Distinct clients a group remembers (hashes): enough to know it has more than one.
GROUP_MEMBERS = 4

# Evidence weights. Blocking needs ``thresholds.block`` (8 by default): three strongly
# off-manifold rows, one anchor stepped along three axes, or ~6 sweep requests past the allowance.
W_OFF_MANIFOLD_STRONG = 3.0
W_OUT_OF_DOMAIN = 2.0
W_AXIS_FIRST = 1.0
W_AXIS_CONFIRMED = 3.0
W_OFF_GRID = 3.0
W_ROW_MAX = 5.0
W_SIGN_STEP = 3.0
W_LINE_SEARCH = 2.0
W_NEAR_DUPLICATE = 1.0
W_BOUNDARY = 0.5
W_BIAS_SWEEP_PER_ID = 0.6
W_BIAS_SWEEP_MAX = 3.0
W_REPEAT_PROBE = 1.0
W_TEMPLATE_VOLUME = 0.5
W_RATE = 1.0
W_BURST = 0.5
W_PAYLOAD = 1.5
W_OUTPUT_VOLUME = 1.0


#: Rows one client may contribute to a route's feature baseline (a window of 1024): a heavy or
#: concentrated client -- a batch job, an attacker re-querying a few seeds while still below the flag
#: threshold -- would otherwise fill the window with its own inputs and skew the route's norms.
BASELINE_ROWS_PER_CLIENT = 32
#: The ln-size spread of a route is floored at ln 2 (see ``_volume``).
PAYLOAD_LOG_SPREAD_FLOOR = math.log(2.0)
W_RARE_REGION = 1.0
RARE_REGION_MAX_UNSEEN = 0.01
#: Finite-difference steps count only where a benign input has a one-coordinate neighbour among a
#: client's recent inputs at most this often (measured per route; iris ~2.7%, wine/breast cancer/
#: digits 0%). With fewer than ``AXIS_MIN_DIM`` features and no measurement yet, they wait.
AXIS_RATE_MAX = 0.01
AXIS_MIN_DIM = 8


@dataclass(frozen=True)
class Observation:
    """One proxied request as the log phase sees it."""

    t: float
    route: str
    size: int = 0
    rows: np.ndarray | None = None
    margins: Sequence[float] | None = None
    llm: LLMRequest | None = None
    output_tokens: float | None = None


@dataclass(frozen=True)
class Evidence:
    signal: str
    value: float
    weight: float
    score: str  # "extraction" or "abuse"


@dataclass(slots=True)
class Assessment:
    """The outcome of one observation for one client (or group), with its explanation.

    Not frozen: one is made per observed state (two per request), and a frozen dataclass's
    initialiser costs three times as much; nothing changes one after it is returned."""

    level: int
    previous_level: int
    extraction: float
    abuse: float
    evidence: tuple[Evidence, ...]
    totals: dict[str, float]
    publish: bool
    until: float
    #: The client's behaviour profile (ratios and sketches) at this request: context for an analyst.
    profile: dict[str, float] = field(default_factory=dict)

    @property
    def level_name(self) -> str:
        return LEVELS[self.level]

    @property
    def escalated(self) -> bool:
        return self.level > self.previous_level

    def explanation(self) -> dict[str, Any]:
        """Which signals, which values: the record logged and sent with alerts."""
        return {
            "level": LEVELS[self.level],
            "previous_level": LEVELS[self.previous_level],
            "scores": {"extraction": round(self.extraction, 3), "abuse": round(self.abuse, 3)},
            "signals": [{"signal": e.signal, "value": round(e.value, 4), "weight": e.weight, "score": e.score}
                        for e in self.evidence],
            "totals": {k: round(v, 3) for k, v in sorted(self.totals.items(), key=lambda kv: -kv[1])[:6]},
            "profile": self.profile,
        }


class _Acc:
    """The evidence of one observation and its sum per score."""

    __slots__ = ("abuse", "evidence", "extraction")

    def __init__(self) -> None:
        self.extraction = 0.0
        self.abuse = 0.0
        self.evidence: list[Evidence] = []

    def add(self, signal: str, value: float, weight: float, score: str = "extraction") -> None:
        self.evidence.append(Evidence(signal, value, weight, score))
        if score == "extraction":
            self.extraction += weight
        else:
            self.abuse += weight


def _profile(st: ClientState) -> dict[str, float]:
    """The duplicate/near-duplicate/off-model/boundary/template ratios (EWMAs over ~20 requests),
    the coverage sketch's count, distinct biased tokens and volumes: no input or prompt content."""
    return {
        "requests": float(st.n), "rate_10s": round(st.rate_short, 2),
        "duplicate_ratio": round(st.dup_ewma, 3), "near_duplicate_ratio": round(st.near_ewma, 3),
        "off_model_ratio": round(st.ood_ewma, 3), "low_margin_ratio": round(st.low_margin_ewma, 3),
        "template_ratio": round(st.template_ewma, 3), "regions_covered": float(st.coverage.bit_count()),
        "biased_tokens": float(len(st.biased_ids)), "output_tokens_1h": round(st.out_tokens, 1),
    }


class _Block:
    """A request's rows against the client's recent inputs, measured by one compiled kernel.

    Row ``r`` is compared with the client's recent inputs *as they are when its turn comes*: the
    ring at the start of the request with the request's earlier rows pushed into it one by one
    (``kernels.measure_rows`` pushes them into the client's ring as it goes; a repeat is not
    pushed). For each row that is not a repeat it finds the axis neighbour (an input at most a
    few coordinates away: its moved coordinates and CRC-32), the nearest input (distance and
    step) and the step from the previous input, then tests those steps (equal moves, a repeated
    step, collinear steps). ``Detector._structure`` reads the results row by row, in order, where
    the evidence and the client's running state are updated.
    """

    __slots__ = ("anchor", "axis", "coords", "duplicate", "line_cos", "n_near", "near", "repeat", "sign_value",
                 "signed", "structure", "vectors")

    def __init__(self, st: ClientState, facts: _RowFacts, shape: _Shape, capacity: int) -> None:
        rows32 = facts.rows32
        size, dim = rows32.shape
        if st.rows is None:  # a new ring: the client's kept steps go with the old one
            st.rows = np.zeros((capacity, dim), dtype=np.float32)
            st.rows_n = 0
            st.last_diff = st.step_profile = None
        step0, line0 = st.step_profile, st.last_diff
        warm = shape.inv_scale is not None and shape.whiten is not None and shape.span is not None
        flags = np.empty((size, 6), dtype=np.int64)
        coords = np.empty(size, dtype=np.uint64)
        values = np.empty((size, 4))
        #: per row: the step from its nearest input and the whitened step from the previous input
        #: (float32: a moved row's first becomes the client's step profile, the last row's second its
        #: last step)
        self.vectors = np.zeros((2, size, dim), dtype=np.float32)
        st.rows_n = kernels.measure_rows(
            st.rows, st.rows_n, rows32, facts.tolerance, shape.inv_scale if warm else _NO_SCALE, warm,
            shape.axis_signal, shape.axis_max, shape.span if warm else _NO_GRID, shape.grid,
            shape.whiten if warm else _NO_MATRIX, _kept(step0, dim), _kept(line0, dim), AXIS_MIN_DIM, flags, coords,
            values, self.vectors)
        self.duplicate, self.structure, self.axis, self.anchor, self.n_near, self.signed = flags.T.tolist()
        #: per row: the coordinates moved from the axis neighbour (bit ``c % 64``)
        self.coords: list[int] = coords.tolist()
        #: per row: the distance to the nearest input, the sign step's mean move, the repeated step's
        #: median move (NaN: none), |cos| of the line search (-1: none)
        self.near, self.sign_value, self.repeat, self.line_cos = values.T.tolist()


#: Stand-ins for the kernels' optional arrays (the kernels take typed arrays, never None).
_NO_SCALE = np.zeros(0, dtype=np.float32)
_NO_STEP = np.zeros(0, dtype=np.float32)
_NO_GRID = np.zeros(0, dtype=np.float64)
_NO_MATRIX = np.zeros((0, 0), dtype=np.float64)


def _kept(vector: np.ndarray | None, dim: int) -> np.ndarray:
    """A step vector the client's state kept, as the kernels take it: writable float32 (a decoded
    state's vectors are read-only views of the stored bytes, another type to a compiled kernel)."""
    if vector is None or vector.shape != (dim,):
        return _NO_STEP
    return np.array(vector, dtype=np.float32)


class _RowFacts:
    """One request's rows as float32 (the ring's type), change tolerances and the model's verdicts
    (as Python lists: each row reads them one value at a time)."""

    __slots__ = ("cells", "dist", "finer", "grid", "model", "ood", "rows32", "tolerance")

    def __init__(self, rows: np.ndarray, model: FeatureModel | None) -> None:
        self.model = model
        self.rows32 = rows.astype(np.float32)
        # a coordinate "changed" when it moved by more than float32 rounding of its value
        self.tolerance = 1e-6 * (np.abs(self.rows32) + 1.0)
        self.cells: list[int] | None = None
        self.finer: list[bool] | None = None
        self.dist: list[float] = []
        self.ood: list[bool] = []
        self.grid: list[bool] = []
        if model is not None:
            dist, ood, grid, finer, cells = model.evaluate(rows)
            self.dist, self.ood, self.grid, self.finer = dist.tolist(), ood.tolist(), grid.tolist(), finer.tolist()
            if cells is not None:
                self.cells = cells.tolist()



class _Shape:
    """What the structure signals need to know about a route's inputs, computed once per request."""

    __slots__ = ("axis_max", "axis_signal", "grid", "inv_scale", "model", "near_distance", "span", "whiten")

    def __init__(self, dim: int, model: FeatureModel | None, cfg: GuardConfig) -> None:
        self.model = model
        self.axis_max = axis_max(dim)
        if model is None:
            # Cold start: on wide inputs two natural rows differing in one coordinate are rare
            # enough; on narrow ones (iris) wait for the route's measured rate.
            self.axis_signal = dim >= AXIS_MIN_DIM
            self.inv_scale: np.ndarray | None = None
            self.span: np.ndarray | None = None
            self.whiten: np.ndarray | None = None
            self.grid = _NO_GRID
            self.near_distance = cfg.near_duplicate_distance
        else:
            self.axis_signal = model.axis_rate <= AXIS_RATE_MAX
            # contiguous, as the kernel was compiled for them (NaN grid: a feature without one)
            self.inv_scale = np.ascontiguousarray(model.inv_std32, dtype=np.float32)
            self.whiten = np.ascontiguousarray(model.whiten, dtype=np.float64)
            self.span = np.ascontiguousarray(model.span(), dtype=np.float64)
            self.grid = _NO_GRID if model.grid is None else np.ascontiguousarray(model.grid, dtype=np.float64)
            # Half the spacing of the closest distinct benign inputs (1st percentile), never below
            # the configured distance: closer than real inputs ever are to each other is jitter.
            self.near_distance = max(cfg.near_duplicate_distance, 0.5 * model.nn_spacing)


class Detector:
    """Turns observations into assessments; holds only the per-route baselines (in memory)."""

    def __init__(self, cfg: GuardConfig, baselines: Baselines | None = None) -> None:
        self.cfg = cfg
        self.baselines = baselines or Baselines(cfg.baseline_min_samples, cfg.feature_stats,
                                                ring=cfg.recent_inputs)
        self._memo: tuple[Observation, _RowFacts] | None = None
        #: ``_Shape`` of each input width while a route has no model yet (see ``_shape``).
        self._cold_shapes: dict[object, object] = {}
        #: How long a verdict of each level lasts (allow: none).
        self._ttl = (0.0, cfg.flag_ttl_s, cfg.throttle_ttl_s, cfg.block_ttl_s, cfg.revoke_ttl_s)
        kernels.warm()  # compiled now, at the instance's start, not on its first request

    def observe(self, state: ClientState | None, obs: Observation, *, is_group: bool = False,
                learn: bool = True, member: str | None = None) -> tuple[ClientState, Assessment]:
        """Score one request for a client (or, ``is_group``, for its group with ``member`` the client).

        A group exists to see an attack split across several clients. While it has only ever seen
        one client, everything it could notice the client's own state already did: the group only
        counts the request (no content signals, half the work of a typical request).
        """
        cfg = self.cfg
        st = state or ClientState.new(obs.t)
        dt = max(0.0, obs.t - st.t_last)
        forget = 0.5 ** (dt / cfg.score_half_life_s)
        st.extraction *= forget
        st.abuse *= forget
        if forget < 1.0:
            st.contrib = {k: v * forget for k, v in st.contrib.items() if v * forget > 0.01}
        st.rate_short = decay(st.rate_short, dt, RATE_TAU_S) + 1.0
        st.rate_long = decay(st.rate_long, dt, LONG_TAU_S) + 1.0
        st.out_tokens = decay(st.out_tokens, dt, TOKENS_TAU_S) + (obs.output_tokens or 0.0)
        st.t_last = max(st.t_last, obs.t)
        st.n += 1

        route = self.baselines.get(obs.route)
        acc = _Acc()
        solo = False
        if is_group and member is not None:
            h = zlib.crc32(member.encode())
            if h not in st.members:
                st.members = [*st.members, h][-GROUP_MEMBERS:]
            solo = len(st.members) <= 1
        if not is_group:
            self._volume(st, obs, route, acc, learn)
        if solo:
            self._remember(st, obs)
        else:
            if obs.rows is not None and obs.rows.shape[0]:
                self._rows(st, obs, route, acc, learn)
            if obs.llm is not None:
                self._llm(st, obs.llm, acc)
            if obs.margins and obs.rows is None:
                self._margins(st, obs.margins, route, acc, learn)

        if acc.extraction == 0.0:
            acc.extraction = DRIFT
        if acc.abuse == 0.0:
            acc.abuse = DRIFT
        st.extraction = max(0.0, st.extraction + acc.extraction)
        st.abuse = max(0.0, st.abuse + acc.abuse)
        for e in acc.evidence:
            if e.weight > 0:
                st.contrib[e.signal] = st.contrib.get(e.signal, 0.0) + e.weight
        if len(st.contrib) > 16:
            st.contrib = dict(sorted(st.contrib.items(), key=lambda kv: -kv[1])[:16])
        return st, self._decide(st, obs.t, acc, is_group)

    def _remember(self, st: ClientState, obs: Observation) -> None:
        """A solo group keeps the inputs it would compare later (no scoring): when a second client
        shows up behind the same address, its queries meet the first one's."""
        if obs.rows is not None and obs.rows.shape[0]:
            if st.rows is not None and st.rows.shape[1] != obs.rows.shape[1]:
                st.rows, st.rows_n, st.last_diff, st.step_profile = None, 0, None, None
            memo = self._memo
            rows32 = memo[1].rows32 if memo is not None and memo[0] is obs else obs.rows.astype(np.float32)
            for row in rows32:
                st.push_row(row, self.cfg.recent_inputs)
        req = obs.llm
        if req is not None:
            if req.prompt_hash not in st.prompts:
                st.prompts = [*st.prompts, req.prompt_hash][-PROMPT_RING:]
                st.simhashes = [*st.simhashes, req.prompt_simhash][-PROMPT_RING:]
            known = set(st.biased_ids)
            fresh = [i for i in req.biased_ids if i not in known]
            st.biased_ids.extend(fresh[: max(0, MAX_BIASED_IDS - len(st.biased_ids))])

    # -- signals ---------------------------------------------------------------------------------

    def _volume(self, st: ClientState, obs: Observation, route: RouteBaseline, acc: _Acc, learn: bool) -> None:
        cfg = self.cfg
        limit = cfg.burst_min_requests
        if route.ready:
            limit = max(limit, route.rate.mean + 4.0 * route.rate.std)
        if st.rate_short > limit:
            acc.add("rate_vs_route", st.rate_short, W_RATE, "abuse")
        elif obs.t - st.t_first > LONG_TAU_S and st.rate_short > cfg.burst_min_requests / 2 and (
                st.rate_short > cfg.burst_factor * st.rate_long * RATE_TAU_S / LONG_TAU_S):
            acc.add("burst_vs_history", st.rate_short, W_BURST, "abuse")
        if obs.size > 0:
            ls = math.log(obs.size)
            # The spread is floored at ln 2: on a route where every body has the same size the
            # measured spread is ~0 and any larger body (a batch of 8, a longer chat) would count.
            # With payload_z = 4 the floor means at least 16x the route's typical size.
            spread = max(route.log_size.std, PAYLOAD_LOG_SPREAD_FLOOR)
            if route.ready and obs.size > 1024 and (ls - route.log_size.mean) / spread > cfg.payload_z and (
                    st.n <= 1 or ls - st.size_mu > math.log(cfg.burst_factor)):
                # ...and well above the client's own typical size: a client whose requests are all
                # large (a batch job) is not having a payload anomaly on each of them.
                acc.add("payload_size", float(obs.size), W_PAYLOAD, "abuse")
            st.size_mu += 0.05 * (ls - st.size_mu) if st.n > 1 else ls - st.size_mu
            if learn and st.extraction < cfg.thresholds.flag:
                route.log_size.add(ls)
        if st.out_tokens > cfg.output_tokens_per_hour:
            acc.add("output_volume", st.out_tokens, W_OUTPUT_VOLUME, "abuse")
        if learn and st.extraction < cfg.thresholds.flag:
            route.rate.add(st.rate_short)

    def _row_facts(self, obs: Observation, fb: FeatureBaseline) -> _RowFacts:
        """What the route's model says about each row, computed once per request.

        A request is observed for its client and again for the client's group; the model's view of
        its rows is the same both times, so the second observation reuses it (identity check on
        the immutable observation: correct under concurrent requests, merely recomputed).
        """
        memo = self._memo
        if memo is not None and memo[0] is obs and memo[1].model is fb.model:
            return memo[1]
        rows = obs.rows
        assert rows is not None
        facts = _RowFacts(rows, fb.model)
        self._memo = (obs, facts)
        return facts

    def _shape(self, dim: int, model: FeatureModel | None) -> _Shape:
        """The route's ``_Shape``, derived once per baseline refresh (kept on the model itself)."""
        memo = model.memo if model is not None else self._cold_shapes
        key = self if model is not None else dim
        shape = memo.get(key)
        if not isinstance(shape, _Shape):
            shape = memo[key] = _Shape(dim, model, self.cfg)
        return shape

    def _rows(self, st: ClientState, obs: Observation, route: RouteBaseline, acc: _Acc, learn: bool) -> None:
        cfg = self.cfg
        rows = obs.rows
        assert rows is not None
        d = rows.shape[1]
        fb = route.feature_baseline(d)
        facts = self._row_facts(obs, fb)
        model = facts.model
        margins = obs.margins
        if st.rows is not None and st.rows.shape != (cfg.recent_inputs, d):
            # Another route (or model) of the same client: structure is only compared within one.
            # (Or recent_inputs was reconfigured: the ring starts again at its new size.)
            st.rows, st.rows_n, st.last_diff, st.step_profile = None, 0, None, None
        shape = self._shape(d, model)
        clean: list[int] = []
        # pushes the request's rows into the client's ring (the repeats excepted)
        block = _Block(st, facts, shape, cfg.recent_inputs)
        for i in range(len(block.structure)):
            before = len(acc.evidence)
            duplicate = block.duplicate[i]
            if duplicate or block.structure[i]:
                # A retry carries no new information: it is neither evidence nor structure.
                st.dup_ewma += 0.05 * ((1.0 if duplicate else 0.0) - st.dup_ewma)
                if not duplicate:
                    self._structure(st, block, i, shape, acc)
            off_model = False
            if model is not None and not duplicate:
                r = facts.dist[i]
                # Graded: just past the furthest benign row is weak evidence, twice as far is strong.
                far = r / model.far
                w = min(W_OFF_MANIFOLD_STRONG, 2.0 * math.log2(far)) if far > 1.0 else 0.0
                if w >= 0.25:
                    acc.add("off_manifold", r, round(w, 3))
                ood, grid = facts.ood[i], facts.grid[i]
                if ood:
                    acc.add("out_of_domain", 1.0, W_OUT_OF_DOMAIN)
                if grid:
                    acc.add("off_grid", 1.0, W_OFF_GRID)
                off_model = far > 1.0 or ood or grid
                st.ood_ewma += 0.05 * ((1.0 if off_model else 0.0) - st.ood_ewma)
                if facts.cells is not None:
                    self._coverage(st, facts.cells[i], model, acc)
            if margins is not None and i < len(margins):
                self._margin_evidence(st, float(margins[i]), route, acc, learn)
            if not off_model and not duplicate and not (facts.finer is not None and facts.finer[i]):
                # Structure (a step, a jitter) is about the sequence, not the row: the row itself is a
                # fine example of benign input and the route baseline may learn it -- if written with
                # the route's own precision (see FeatureModel.finer_than_grid). A repeat is not
                # learned: it was judged (and learned or not) the first time -- and a re-sent
                # off-model row must not slip into the baseline as a "duplicate".
                clean.append(i)
            if len(acc.evidence) > before:
                row_weight = sum(e.weight for e in acc.evidence[before:] if e.score == "extraction")
                if row_weight > W_ROW_MAX:
                    # One input, however odd, is at most a throttle: a client's single malformed
                    # request must not cost it a block; repeated ones do.
                    acc.extraction -= row_weight - W_ROW_MAX
        if acc.extraction > W_ROW_MAX:
            # ...nor is one request (the only extraction evidence so far is its rows'): a batch of
            # rare-but-real inputs (the tail of a skewed feature, sorted by label) must not add up
            # to a block in one go. One row per query -- what the attacks send -- is unaffected.
            acc.extraction = W_ROW_MAX
        room = BASELINE_ROWS_PER_CLIENT - st.taught
        if learn and clean and room > 0 and st.extraction < cfg.thresholds.flag:
            taught = clean[:room]
            fb.learn(rows[taught])
            st.taught += len(taught)

    def _coverage(self, st: ClientState, cell: int, model: FeatureModel, acc: _Acc) -> None:
        """Input-space coverage: entering a region of input space benign traffic never visits.

        The client's coverage is a 256-bit sketch of the cells (sign patterns against fixed random
        hyperplanes through the route's mean) its inputs landed in. Entering a cell that none of
        the route's learned benign rows occupies is evidence, counted once per cell: an attacker
        covering input space for a surrogate keeps entering new empty cells, a benign client
        stays where the data is. Used only where benign traffic rarely strays (Good-Turing
        estimate of the unseen-cell mass below ``RARE_REGION_MAX_UNSEEN``).
        """
        bit = 1 << cell
        new = not st.coverage & bit
        st.coverage |= bit
        assert model.cells is not None
        if new and model.cells[cell] == 0 and model.unseen_cell_rate < RARE_REGION_MAX_UNSEEN:
            acc.add("new_rare_region", float(st.coverage.bit_count()), W_RARE_REGION)

    def _structure(self, st: ClientState, block: _Block, r: int, shape: _Shape, acc: _Acc) -> None:
        """Systematic perturbations of recent inputs: axis steps, sign steps, line searches, jitter.

        Row ``r`` of ``block`` (not a repeat), which has measured it against the recent inputs;
        here the evidence is added and the client's running state updated, in row order.
        """
        axis = block.axis[r]
        if axis >= 0:
            # One coordinate away from an earlier input happens by chance on coarse data; several
            # different coordinates stepped from the *same* anchor is finite differencing.
            anchor, coords = block.anchor[r], block.coords[r]
            if anchor == st.axis_anchor and coords & ~st.axis_coords:
                acc.add("axis_probe", float(bin(st.axis_coords | coords).count("1")), W_AXIS_CONFIRMED)
                st.axis_coords |= coords
            elif anchor != st.axis_anchor:
                acc.add("axis_probe", 1.0, W_AXIS_FIRST)
                st.axis_anchor, st.axis_coords = anchor, coords
        if shape.inv_scale is None or shape.whiten is None or shape.span is None:
            return  # cold start: steps and distances need the route's scales
        near = block.near[r]
        if block.n_near[r] >= 4:
            if block.signed[r]:
                acc.add("sign_step", block.sign_value[r], W_SIGN_STEP)
            # The same step again: an input moved from its nearest recent input by the very amounts
            # (coordinate by coordinate) the previous one was. Augmentation and line searches reuse
            # one step vector -- ``lambda`` per feature in Jacobian augmentation, whatever ranges or
            # scales the attacker derived it from -- so their steps repeat exactly, while natural
            # neighbours differ by new amounts every time. Steps of at least 4 coordinates only
            # (smaller ones are the axis signal's business); on fewer than 8 coordinates of coarse
            # data small steps recur by chance (iris: 0.2% of benign rows), so there only a step
            # finer than the data's own precision -- which no two real inputs can differ by --
            # counts. (A sign step is its own evidence, and no step repeats an input re-sent.)
            repeated = block.repeat[r]
            if repeated == repeated:  # not NaN
                acc.add("repeated_step", repeated, W_SIGN_STEP)
            # a copy: the state keeps it, and must not keep the block's arrays alive
            st.step_profile = block.vectors[0, r].copy()
        hit = near < shape.near_distance
        st.near_ewma += 0.1 * ((1.0 if hit else 0.0) - st.near_ewma)
        if hit and st.near_ewma > 0.25:
            acc.add("near_duplicate", near, W_NEAR_DUPLICATE)
        # A step collinear with the previous one (the sign of the step does not matter).
        cos = block.line_cos[r]
        if cos > 0.999:
            acc.add("line_search", cos, W_LINE_SEARCH)
        st.last_diff = block.vectors[1, r].copy()

    def _margin_evidence(self, st: ClientState, margin: float, route: RouteBaseline, acc: _Acc,
                         learn: bool) -> None:
        low = margin < self.cfg.low_margin
        st.low_margin_ewma += 0.05 * ((1.0 if low else 0.0) - st.low_margin_ewma)
        # A route whose model is often unsure gives low margins to everyone: only probing well
        # above the route's own rate is evidence.
        if low and route.low_margin.n >= self.cfg.baseline_min_samples and route.low_margin.mean < 0.3 and (
                st.low_margin_ewma > 2.0 * route.low_margin.mean + 0.1):
            acc.add("boundary_probe", margin, W_BOUNDARY)
        if learn and st.extraction < self.cfg.thresholds.flag:
            route.low_margin.add(1.0 if low else 0.0)

    def _margins(self, st: ClientState, margins: Sequence[float], route: RouteBaseline, acc: _Acc,
                 learn: bool) -> None:
        for m in margins:
            self._margin_evidence(st, float(m), route, acc, learn)

    def _llm(self, st: ClientState, req: LLMRequest, acc: _Acc) -> None:
        cfg = self.cfg
        repeated = req.prompt_hash in st.prompts
        new_ids: list[int] = []
        if req.biased_ids:
            known = set(st.biased_ids)
            new_ids = [i for i in req.biased_ids if i not in known]
            room = MAX_BIASED_IDS - len(st.biased_ids)
            if room > 0:
                st.biased_ids.extend(new_ids[:room])
            distinct = len(known) + len(new_ids)
            if req.logprobs and new_ids and distinct > cfg.allowed_biased_tokens:
                acc.add("logit_bias_sweep", float(distinct),
                        min(W_BIAS_SWEEP_MAX, W_BIAS_SWEEP_PER_ID * len(new_ids)))
        # One prompt held fixed while the bias moves to tokens not biased before is the sweep's
        # shape (Carlini et al. 2024) -- with logprobs, or max_tokens=1 to read the winning token.
        # The same prompt re-sent with the same parameters is a retry or an evaluation re-run.
        if repeated and new_ids and (req.logprobs or (req.max_tokens is not None and req.max_tokens <= 1)):
            acc.add("repeated_prompt_probe", float(len(new_ids)), W_REPEAT_PROBE)
        template = (not repeated and req.prompt_simhash != 0 and any(
            hamming(req.prompt_simhash, s) <= cfg.template_hamming for s in st.simhashes))
        st.template_ewma += 0.05 * ((1.0 if template else 0.0) - st.template_ewma)
        st.dup_ewma += 0.05 * ((1.0 if repeated else 0.0) - st.dup_ewma)
        if template and st.out_tokens > 0.5 * cfg.output_tokens_per_hour:
            acc.add("template_distillation", st.template_ewma, W_TEMPLATE_VOLUME)
        if not repeated:
            st.prompts = ([*st.prompts, req.prompt_hash])[-PROMPT_RING:]
            st.simhashes = ([*st.simhashes, req.prompt_simhash])[-PROMPT_RING:]

    # -- decision --------------------------------------------------------------------------------

    def _decide(self, st: ClientState, now: float, acc: _Acc, is_group: bool) -> Assessment:
        cfg = self.cfg
        th = cfg.thresholds
        ex = st.extraction
        # A group (shared IP, tenant) mixes many clients: more inputs to compare means more
        # coincidences, so its bar is higher. It exists for attacks split across keys.
        bar = ex / GROUP_THRESHOLD_FACTOR if is_group else ex
        level = ALLOW
        if bar >= th.block:
            level = BLOCK
        elif bar >= th.throttle:
            level = THROTTLE
        elif bar >= th.flag:
            level = FLAG
        if st.abuse >= th.abuse_throttle:
            level = max(level, THROTTLE)
        elif st.abuse >= th.abuse_flag:
            level = max(level, FLAG)
        if level == BLOCK and cfg.revoke_enabled and not is_group and (
                ex >= th.revoke or st.blocks >= REPEAT_OFFENDER_BLOCKS):
            level = REVOKE
        current = st.level if st.level_until > now else ALLOW
        ttl = self._ttl[level]
        publish = False
        until = st.level_until
        if level > current or (level == current and level > ALLOW and st.level_until - now < ttl / 2):
            publish = True
            until = now + ttl
            if level >= BLOCK and level > current:
                st.blocks += 1
            st.level, st.level_until = level, until
        return Assessment(level=level, previous_level=current, extraction=ex, abuse=st.abuse,
                          evidence=tuple(acc.evidence), totals=dict(st.contrib), publish=publish, until=until,
                          profile=_profile(st) if level > ALLOW else {})
