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
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import kernels
from ._jit import direct
from .baseline import Baselines, FeatureModel, RouteBaseline, axis_max
from .config import LEVELS, GuardConfig
from .payloads import LLMRequest
from .sketches import within_bits
from .state import MAX_BIASED_IDS, PROMPT_RING, ClientState

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


def member_hash(client: str) -> int:
    """How a group's state remembers a member client (its last ``GROUP_MEMBERS``)."""
    return zlib.crc32(client.encode())


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


@dataclass(frozen=True, slots=True)
class Observation:
    """One proxied request as the log phase sees it (built positionally on the request path:
    ``guard.build_observation``)."""

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


#: Evidence kinds of ``kernels.score_rows``: signal and weight (``off_manifold`` is graded in ``_rows``).
_ROW_EVIDENCE: dict[int, tuple[str, float]] = {
    kernels.AXIS_FIRST: ("axis_probe", W_AXIS_FIRST),
    kernels.AXIS_CONFIRMED: ("axis_probe", W_AXIS_CONFIRMED),
    kernels.SIGN_STEP: ("sign_step", W_SIGN_STEP),
    kernels.REPEATED_STEP: ("repeated_step", W_SIGN_STEP),
    kernels.NEAR_DUPLICATE: ("near_duplicate", W_NEAR_DUPLICATE),
    kernels.LINE_SEARCH: ("line_search", W_LINE_SEARCH),
    kernels.OUT_OF_DOMAIN: ("out_of_domain", W_OUT_OF_DOMAIN),
    kernels.OFF_GRID: ("off_grid", W_OFF_GRID),
    kernels.NEW_RARE_REGION: ("new_rare_region", W_RARE_REGION),
}

#: Stand-ins for the kernels' optional arrays (the kernels take typed arrays, never None).
_NO_SCALE = np.zeros(0, dtype=np.float32)
_NO_GRID = np.zeros(0, dtype=np.float64)
_NO_MATRIX = np.zeros((0, 0), dtype=np.float64)
_NO_CELLS = np.zeros(0, dtype=np.int64)
#: The rows' type ``kernels.score_rows`` takes (C-contiguous besides).
_F64 = np.dtype(np.float64)
#: ``FeatureModel.kernel_operands`` of a route without a model (not read: the kernel is told so).
_NO_MODEL = (_NO_GRID, 1.0, _NO_GRID, _NO_GRID, _NO_GRID, 1.0, _NO_CELLS, _NO_GRID, 1.0, _NO_MATRIX, _NO_GRID)


class _Shape:
    """What the structure signals need to know about a route's inputs, derived once per baseline
    refresh: ``kernels.score_rows``'s route operands (they follow the rows in the call) -- the
    scales, the whitening matrix, the coverage planes and the rest, packed."""

    __slots__ = ("kernel_args",)

    def __init__(self, dim: int, model: FeatureModel | None, cfg: GuardConfig) -> None:
        if model is None:
            # Cold start: on wide inputs two natural rows differing in one coordinate are rare
            # enough; on narrow ones (iris) wait for the route's measured rate.
            axis_signal = dim >= AXIS_MIN_DIM
            inv_scale, whiten, span, grid = _NO_SCALE, _NO_MATRIX, _NO_GRID, _NO_GRID
            near_distance = float(cfg.near_duplicate_distance)
            far = 1.0
            cell_counts = _NO_CELLS
            rare_ok = False
            operands = _NO_MODEL
        else:
            axis_signal = model.axis_rate <= AXIS_RATE_MAX
            # contiguous, as the kernel was compiled for them (NaN grid: a feature without one)
            inv_scale = np.ascontiguousarray(model.inv_std32, dtype=np.float32)
            whiten = model.upper_whiten
            span = np.ascontiguousarray(model.span(), dtype=np.float64)
            grid = _NO_GRID if model.grid is None else np.ascontiguousarray(model.grid, dtype=np.float64)
            # Half the spacing of the closest distinct benign inputs (1st percentile), never below
            # the configured distance: closer than real inputs ever are to each other is jitter.
            near_distance = float(max(cfg.near_duplicate_distance, 0.5 * model.nn_spacing))
            far = float(model.far)
            # Input-space coverage counts only where benign traffic rarely strays (Good-Turing
            # estimate of the unseen-cell mass below RARE_REGION_MAX_UNSEEN; see Detector._rows).
            cell_counts = _NO_CELLS if model.cells is None else np.ascontiguousarray(model.cells, dtype=np.int64)
            rare_ok = bool(model.unseen_cell_rate < RARE_REGION_MAX_UNSEEN)
            operands = model.kernel_operands()
        (mean, dist_scale, lo, hi, inv_unit, ood_limit, grid_idx, inv_grid, refine, cell_planes,
         cell_offset) = operands
        route, settings = kernels.route_operands(
            model is not None, axis_signal, axis_max(dim), AXIS_MIN_DIM, span, grid, mean, dist_scale, lo, hi,
            inv_unit, ood_limit, grid_idx, inv_grid, refine, cell_offset, far, near_distance, cell_counts, rare_ok)
        self.kernel_args = (inv_scale, whiten, cell_planes, route, settings)


class Detector:
    """Turns observations into assessments; holds only the per-route baselines (in memory)."""

    def __init__(self, cfg: GuardConfig, baselines: Baselines | None = None) -> None:
        self.cfg = cfg
        self.baselines = baselines or Baselines(cfg.baseline_min_samples, cfg.feature_stats,
                                                ring=cfg.recent_inputs)
        #: ``_Shape`` of each input width while a route has no model yet (see ``_new_shape``).
        self._cold_shapes: dict[object, object] = {}
        #: How long a verdict of each level lasts (allow: none).
        self._ttl = (0.0, cfg.flag_ttl_s, cfg.throttle_ttl_s, cfg.block_ttl_s, cfg.revoke_ttl_s)
        th = cfg.thresholds
        #: The thresholds of the levels above allow each score can reach, ascending (see ``_decide``).
        self._extraction_levels = (th.flag, th.throttle, th.block)
        self._abuse_levels = (th.abuse_flag, th.abuse_throttle)
        #: ``kernels.score_rows``'s evidence of a request of up to ``max_rows_per_request`` rows,
        #: reused rather than allocated per request: a numpy call fewer on the log phase. One per
        #: detector is enough: a detector call never yields (no I/O inside ``observe``), so the
        #: requests of the process's greenlets never share it at once, and ``_rows`` reads what
        #: the kernel wrote before it returns.
        self._found = np.empty((kernels.EVIDENCE_PER_ROW * cfg.max_rows_per_request, 3))
        kernels.warm()  # compiled now, at the instance's start, not on its first request
        #: ``kernels.score_rows``, called without its dispatcher (``_jit.direct``): ``_rows`` passes
        #: the types ``warm`` compiled it for -- float32 ring and steps, float64 rows, the route's
        #: arrays as ``_Shape`` built them.
        self._score_rows = direct(kernels.score_rows)

    def observe(self, state: ClientState | None, obs: Observation, *, is_group: bool = False,
                learn: bool = True, member: str | None = None) -> tuple[ClientState, Assessment]:
        """Score one request for a client (or, ``is_group``, for its group with ``member`` the client).

        A group exists to see an attack split across several clients. While it has only ever seen
        one client, everything it could notice the client's own state already did: the guard does
        not observe such a group at all (``ExtractionGuard.learn`` keeps a small record of its one
        member and, when a second shows up, starts the group from the first one's state).
        """
        t = obs.t
        st = state or ClientState.new(t)
        dt = t - st.t_last
        # Time passed (a request at the same instant or out of order forgets nothing): the scores
        # fade with score_half_life_s, the counters decay exponentially with their time constants.
        if dt > 0.0:
            # (Zero fades to zero: the factors are computed only for something to fade -- most
            # clients' scores and totals are zero, a predict client's output tokens always are.)
            if st.extraction or st.abuse or st.contrib:
                forget = 0.5 ** (dt / self.cfg.score_half_life_s)
                st.extraction *= forget
                st.abuse *= forget
                if forget < 1.0 and st.contrib:
                    st.contrib = {k: v * forget for k, v in st.contrib.items() if v * forget > 0.01}
            st.rate_short = st.rate_short * math.exp(-dt / RATE_TAU_S) + 1.0
            st.rate_long = st.rate_long * math.exp(-dt / LONG_TAU_S) + 1.0
            out_tokens = st.out_tokens
            st.out_tokens = ((out_tokens * math.exp(-dt / TOKENS_TAU_S) if out_tokens else 0.0)
                             + (obs.output_tokens or 0.0))
            st.t_last = t
        else:
            st.rate_short += 1.0
            st.rate_long += 1.0
            st.out_tokens += obs.output_tokens or 0.0
        st.n += 1

        route = self.baselines.get(obs.route)
        acc = _Acc()
        # The route's norms and feature baseline learn only from clients below the flag threshold
        # (and a group's requests not again): an attacker cannot drag them towards its own queries.
        teach = learn and st.extraction < self.cfg.thresholds.flag
        if not is_group:
            self._volume(st, obs, route, acc, teach)
        elif member is not None:
            h = member_hash(member)
            if h not in st.members:
                st.members = (*st.members, h)[-GROUP_MEMBERS:]
        rows = obs.rows
        if rows is not None and rows.shape[0]:
            self._rows(st, rows, obs.margins, route, acc, teach)
        if obs.llm is not None:
            self._llm(st, obs.llm, acc)
        if obs.margins and rows is None:
            self._margins(st, obs.margins, route, acc, teach)

        # A score that found no evidence in this request drifts down (a sum of exactly 0.0 is none).
        st.extraction = max(0.0, st.extraction + (acc.extraction or DRIFT))
        st.abuse = max(0.0, st.abuse + (acc.abuse or DRIFT))
        if acc.evidence:
            # A new dict, never a change of the one the state holds: earlier assessments share it
            # as their totals (see _decide), and most requests, without evidence, copy nothing.
            contrib = dict(st.contrib)
            for e in acc.evidence:
                if e.weight > 0:
                    contrib[e.signal] = contrib.get(e.signal, 0.0) + e.weight
            st.contrib = contrib
        if len(st.contrib) > 16:
            st.contrib = dict(sorted(st.contrib.items(), key=lambda kv: -kv[1])[:16])
        return st, self._decide(st, t, acc, is_group)

    # -- signals ---------------------------------------------------------------------------------

    def _volume(self, st: ClientState, obs: Observation, route: RouteBaseline, acc: _Acc, teach: bool) -> None:
        cfg = self.cfg
        rate = route.rate
        ready = rate.n >= route.min_samples  # the route's norms are learned (its spreads: sqrt(var) below)
        rate_short = st.rate_short
        floor = cfg.burst_min_requests
        # Above max(floor, the route's mean + 4 sd) once the norms are learned: the floor is tested
        # first, as most clients' rates stay below it, and the spread (a sqrt, a max) only past it.
        if rate_short > floor and (not ready or rate_short > max(floor, rate.mean + 4.0 * math.sqrt(rate.var))):
            acc.add("rate_vs_route", rate_short, W_RATE, "abuse")
        elif obs.t - st.t_first > LONG_TAU_S and rate_short > floor / 2 and (
                rate_short > cfg.burst_factor * st.rate_long * RATE_TAU_S / LONG_TAU_S):
            acc.add("burst_vs_history", rate_short, W_BURST, "abuse")
        size = obs.size
        if size > 0:
            ls = math.log(size)
            log_size = route.log_size
            # The spread is floored at ln 2: on a route where every body has the same size the
            # measured spread is ~0 and any larger body (a batch of 8, a longer chat) would count.
            # With payload_z = 4 the floor means at least 16x the route's typical size.
            if ready and size > 1024 and (ls - log_size.mean) / max(
                    math.sqrt(log_size.var), PAYLOAD_LOG_SPREAD_FLOOR) > cfg.payload_z and (
                    st.n <= 1 or ls - st.size_mu > math.log(cfg.burst_factor)):
                # ...and well above the client's own typical size: a client whose requests are all
                # large (a batch job) is not having a payload anomaly on each of them.
                acc.add("payload_size", float(size), W_PAYLOAD, "abuse")
            st.size_mu += 0.05 * (ls - st.size_mu) if st.n > 1 else ls - st.size_mu
            if teach:
                log_size.add(ls)
        if st.out_tokens > cfg.output_tokens_per_hour:
            acc.add("output_volume", st.out_tokens, W_OUTPUT_VOLUME, "abuse")
        if teach:
            rate.add(rate_short)

    def _new_shape(self, dim: int, model: FeatureModel | None) -> _Shape:
        """The route's ``_Shape`` where ``_rows`` found none: derived once per baseline refresh and
        kept on the model itself (per input width while the route has no model)."""
        shape = _Shape(dim, model, self.cfg)
        if model is not None:
            model.memo[self] = shape
        else:
            self._cold_shapes[dim] = shape
        return shape

    def _rows(self, st: ClientState, rows: np.ndarray, margins: Sequence[float] | None, route: RouteBaseline,
              acc: _Acc, teach_route: bool) -> None:
        """A numeric request's rows (and the reply margins, when a response tap read them): each
        against the route's model and the client's recent inputs.

        ``kernels.score_rows`` does the per-row work in one compiled call and returns the evidence
        found (``_ROW_EVIDENCE``), in row order; here it is added, with the reply margins' own
        evidence, row by row -- no row's evidence may exceed ``W_ROW_MAX`` -- and the rows the
        route baseline may learn are taught. The signals, per row:

        - *Model* (the route's ``FeatureModel``): off-manifold, graded -- just past the furthest
          benign row is weak evidence, twice as far is strong; out of domain; off the value grid.
        - *Coverage*: the client's 256-bit sketch of the cells (sign patterns against fixed random
          hyperplanes through the route's mean) its inputs landed in. Entering a cell none of the
          route's learned benign rows occupies is evidence, once per cell: an attacker covering
          input space for a surrogate keeps entering new empty cells, a benign client stays where
          the data is. Used only where benign traffic rarely strays (``_Shape.rare_ok``).
        - *Structure* (systematic perturbations of recent inputs): one coordinate away from an
          earlier input happens by chance on coarse data; several different coordinates stepped
          from the *same* anchor is finite differencing (``axis_probe``). A step whose moves are
          mostly equal is a sign step (FGSM-style). The same step again -- an input moved from its
          nearest recent input by the very amounts the previous one was -- is augmentation or a
          line search reusing one step vector (``lambda`` per feature in Jacobian augmentation),
          while natural neighbours differ by new amounts every time; steps of at least 4
          coordinates only, and on fewer than 8 coordinates of coarse data only a step finer than
          the data's own precision (iris: 0.2% of benign rows repeat a small step by chance). A
          step collinear with the previous one (either sign) is a line search. Inputs closer than
          benign inputs ever are to each other, often, are jitter (``near_duplicate``).

        A retry carries no new information: it is neither evidence nor structure, and it is not
        learned (it was judged, and learned or not, the first time; a re-sent off-model row must
        not slip into the baseline as a "duplicate").
        """
        size, d = rows.shape
        # (each call a request is a microsecond or two once the CPU has slept between requests:
        # the common lookups here are written out, their methods only make what is missing)
        fb = route.features.get(d) or route.feature_baseline(d)
        model = fb.model
        ring = st.rows
        capacity = self.cfg.recent_inputs
        slots, width = ring.shape if ring is not None else (0, d)  # (read once: each .shape builds a tuple)
        if ring is not None and (width != d or slots > capacity or (slots < capacity and st.rows_n > slots)):
            # Another route (or model) of the same client: structure is only compared within one.
            # (Or recent_inputs was reconfigured: the ring starts again at its new size.) A new
            # ring: the client's kept steps go with the old one.
            ring = st.rows = st.kept = None
            st.rows_n = st.kept_bits = slots = 0
        needed = min(st.rows_n + size, capacity)
        if ring is None or slots < needed:
            # The ring grows with the client's inputs, doubling up to recent_inputs: most clients
            # send a few requests, and a 64-feature ring at full size (4 KB) for one row was most
            # of the memory a kept state took. It has not wrapped yet: its rows keep their slots.
            grown = np.zeros((min(capacity, max(needed, 2 * slots)), d), dtype=np.float32)
            if ring is not None:
                grown[:st.rows_n] = ring[:st.rows_n]
            st.rows = grown
        kept = st.kept
        if kept is None or kept.shape[1] != d:  # (none yet, or a group seeded with its first client's ring)
            # kept by the state only once the kernel keeps a step in it: a client's first input
            # has nothing to step from, and a one-off client holds no step vectors
            kept = np.zeros((2, d), dtype=np.float32)
            st.kept, st.kept_bits = None, 0
        shape = model.memo.get(self) if model is not None else self._cold_shapes.get(d)
        if not isinstance(shape, _Shape):
            shape = self._new_shape(d, model)
        found = self._found
        if size > self.cfg.max_rows_per_request:  # more rows than a body may carry (a caller's own): more room
            found = np.empty((kernels.EVIDENCE_PER_ROW * size, 3))
        if rows.dtype != _F64 or not rows.flags.c_contiguous:  # the body scanner's rows already are
            rows = np.ascontiguousarray(rows, dtype=np.float64)
        # A row written with the route's own precision (see FeatureModel.finer_than_grid), on the
        # model and not a repeat is a fine example of benign input: structure (a step, a jitter)
        # is about the sequence, not the row. The kernel copies up to ``teach`` of them into the
        # route baseline's window.
        teach = max(0, BASELINE_ROWS_PER_CLIENT - st.taught) if teach_route else 0
        # The client's running state goes in and comes back changed in place: its ratios, its
        # coverage and axis words, its kept steps (the bits say which are valid). (The route's
        # operands unpacked first: ``*`` in the middle of the call built the argument list item by item.)
        inv_scale, whiten, cell_planes, packed_route, settings = shape.kernel_args
        st.rows_n, n_found, n_clean, kept_out = self._score_rows(
            st.rows, st.rows_n, rows, inv_scale, whiten, cell_planes, packed_route, settings, kept, st.kept_bits,
            st.ratios, st.words, found, fb.window, fb.next_slot, teach)
        if kept_out:
            st.kept = kept
            st.kept_bits |= kept_out
        if n_found or margins is not None:
            evidence = found[:n_found].tolist()
            k = 0
            # the rows with evidence (all of them when replies carry margins), in order
            last = size if margins is not None else int(evidence[-1][0]) + 1
            for i in range(last):
                before = len(acc.evidence)
                while k < n_found and evidence[k][0] == i:
                    _, kind, value = evidence[k]
                    k += 1
                    if kind == kernels.OFF_MANIFOLD:
                        assert model is not None
                        weight = min(W_OFF_MANIFOLD_STRONG, 2.0 * math.log2(value / model.far))
                        if weight >= 0.25:
                            acc.add("off_manifold", value, round(weight, 3))
                    else:
                        signal, weight = _ROW_EVIDENCE[int(kind)]
                        acc.add(signal, value, weight)
                if margins is not None and i < len(margins):
                    self._margin_evidence(st, float(margins[i]), route, acc, teach_route)
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
        if teach and n_clean:
            count = min(n_clean, teach)
            fb.count_learned(count)
            st.taught += count

    def _margin_evidence(self, st: ClientState, margin: float, route: RouteBaseline, acc: _Acc,
                         teach: bool) -> None:
        low = margin < self.cfg.low_margin
        st.low_margin_ewma += 0.05 * ((1.0 if low else 0.0) - st.low_margin_ewma)
        # A route whose model is often unsure gives low margins to everyone: only probing well
        # above the route's own rate is evidence.
        if low and route.low_margin.n >= self.cfg.baseline_min_samples and route.low_margin.mean < 0.3 and (
                st.low_margin_ewma > 2.0 * route.low_margin.mean + 0.1):
            acc.add("boundary_probe", margin, W_BOUNDARY)
        if teach:
            route.low_margin.add(1.0 if low else 0.0)

    def _margins(self, st: ClientState, margins: Sequence[float], route: RouteBaseline, acc: _Acc,
                 teach: bool) -> None:
        for m in margins:
            self._margin_evidence(st, float(m), route, acc, teach)

    def _llm(self, st: ClientState, req: LLMRequest, acc: _Acc) -> None:
        cfg = self.cfg
        repeated = req.prompt_hash in st.prompts
        new_ids: list[int] = []
        if req.biased_ids:
            known = set(st.biased_ids)
            new_ids = [i for i in req.biased_ids if i not in known]
            room = MAX_BIASED_IDS - len(st.biased_ids)
            if room > 0:
                st.biased_ids = (*st.biased_ids, *new_ids[:room])
            distinct = len(known) + len(new_ids)
            if req.logprobs and new_ids and distinct > cfg.allowed_biased_tokens:
                acc.add("logit_bias_sweep", float(distinct),
                        min(W_BIAS_SWEEP_MAX, W_BIAS_SWEEP_PER_ID * len(new_ids)))
        # One prompt held fixed while the bias moves to tokens not biased before is the sweep's
        # shape (Carlini et al. 2024) -- with logprobs, or max_tokens=1 to read the winning token.
        # The same prompt re-sent with the same parameters is a retry or an evaluation re-run.
        if repeated and new_ids and (req.logprobs or (req.max_tokens is not None and req.max_tokens <= 1)):
            acc.add("repeated_prompt_probe", float(len(new_ids)), W_REPEAT_PROBE)
        # a near-duplicate of a recent prompt: SimHash within template_hamming bits
        template = (not repeated and req.prompt_simhash != 0
                    and within_bits(req.prompt_simhash, st.simhashes, cfg.template_hamming))
        st.template_ewma += 0.05 * ((1.0 if template else 0.0) - st.template_ewma)
        # (the duplicate ratio lives in the array the rows kernel updates: read and written once,
        # not through the property's two calls a read and one a write)
        ratios = st.ratios
        dup = ratios.item(0)
        ratios[0] = dup + 0.05 * ((1.0 if repeated else 0.0) - dup)
        if template and st.out_tokens > 0.5 * cfg.output_tokens_per_hour:
            acc.add("template_distillation", st.template_ewma, W_TEMPLATE_VOLUME)
        if not repeated:
            st.prompts = (*st.prompts, req.prompt_hash)[-PROMPT_RING:]
            st.simhashes = (*st.simhashes, req.prompt_simhash)[-PROMPT_RING:]

    # -- decision --------------------------------------------------------------------------------

    def _decide(self, st: ClientState, now: float, acc: _Acc, is_group: bool) -> Assessment:
        ex = st.extraction
        # The level is how many of a score's ascending thresholds it reached (the config refuses
        # any other order): flag, throttle, block for extraction; flag, throttle for abuse. A group
        # (shared IP, tenant) mixes many clients: more inputs to compare means more coincidences,
        # so its bar is higher. It exists for attacks split across keys.
        compared = ex / GROUP_THRESHOLD_FACTOR if is_group else ex
        abuse = st.abuse
        levels, abuse_levels = self._extraction_levels, self._abuse_levels
        # (below both first thresholds -- most requests -- each count is 0: no bisect, no max)
        level = ALLOW if compared < levels[0] and abuse < abuse_levels[0] else max(
            bisect_right(levels, compared), bisect_right(abuse_levels, abuse))
        if level == BLOCK and self.cfg.revoke_enabled and not is_group and (
                ex >= self.cfg.thresholds.revoke or st.blocks >= REPEAT_OFFENDER_BLOCKS):
            level = REVOKE
        current = st.level if st.level_until > now else ALLOW
        # A verdict is published when the level rises, and renewed when the level holds past half its TTL.
        publish = level > current or (
            level == current and level > ALLOW and st.level_until - now < self._ttl[level] / 2)
        if publish:
            if level >= BLOCK and level > current:
                st.blocks += 1
            st.level, st.level_until = level, now + self._ttl[level]
        # level, previous_level, extraction, abuse, evidence, totals, publish, until, profile (the
        # totals are the state's own dict: the detector replaces it, never changes it -- observe)
        return Assessment(level, current, ex, abuse, tuple(acc.evidence), st.contrib, publish, st.level_until,
                          _profile(st) if level > ALLOW else {})
