"""The detector as pure code: each signal, CUSUM scoring, explanations, bounded state, replay."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kong_plugins.extraction_guard.config import FeatureStats, GuardConfig
from kong_plugins.extraction_guard.detector import BLOCK, FLAG, REVOKE, Detector, Observation
from kong_plugins.extraction_guard.payloads import llm_request, parse_json, predict_rows, response_margins
from kong_plugins.extraction_guard.sketches import hamming, simhash64
from kong_plugins.extraction_guard.state import ClientState

from .guard_helpers import FEATURE_STATS, TRAIN

T0 = 1_700_000_000.0
ROUTE = "predict"


def _warm(det: Detector, n: int = 400, seed: int = 0) -> None:
    """Route baseline learned from benign traffic of many clients."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        det.observe(None, Observation(T0 + i, ROUTE, 100, rows=TRAIN[rng.integers(len(TRAIN))][None, :]))


def _run(det: Detector, rows: np.ndarray, t0: float = T0 + 1000, dt: float = 1.0,
         state: ClientState | None = None) -> tuple[ClientState, list[int]]:
    levels = []
    st_ = state
    for i, row in enumerate(rows):
        st_, a = det.observe(st_, Observation(t0 + i * dt, ROUTE, 100, rows=np.atleast_2d(row)))
        levels.append(a.level)
    assert st_ is not None
    return st_, levels


def test_benign_rows_from_the_training_distribution_stay_allowed() -> None:
    det = Detector(GuardConfig())
    _warm(det)
    rng = np.random.default_rng(9)
    _, levels = _run(det, TRAIN[rng.integers(len(TRAIN), size=300)])
    assert max(levels) == 0


def test_random_points_in_the_feature_box_are_off_grid_and_blocked_within_three() -> None:
    det = Detector(GuardConfig())
    _warm(det)
    rng = np.random.default_rng(3)
    pts = rng.uniform(TRAIN.min(axis=0), TRAIN.max(axis=0), size=(3, TRAIN.shape[1]))
    st_, levels = _run(det, pts)
    assert levels[-1] >= BLOCK
    assert st_.contrib["off_grid"] >= 6


def test_one_anchor_stepped_along_several_axes_is_finite_differencing() -> None:
    det = Detector(GuardConfig(feature_stats=FeatureStats(*(tuple(FEATURE_STATS[k]) for k in
                                                            ("mean", "std", "min", "max")))))
    x0 = TRAIN[0]
    steps = [x0] + [x0 + np.eye(len(x0))[i] * 0.3 for i in range(4)]
    st_, levels = _run(det, np.asarray(steps))
    assert levels[-1] >= BLOCK
    assert st_.contrib["axis_probe"] == pytest.approx(1 + 3 * 3, rel=1e-3)  # minus time decay


def test_retries_are_not_evidence() -> None:
    det = Detector(GuardConfig())
    _warm(det)
    st_, levels = _run(det, np.asarray([TRAIN[7]] * 50))
    assert max(levels) == 0 and st_.extraction == 0.0 and st_.dup_ewma > 0.9


def test_small_gaussian_jitter_of_one_seed_is_near_duplicate_probing() -> None:
    det = Detector(GuardConfig())
    _warm(det)
    rng = np.random.default_rng(2)
    # jitter on the data grid, so only the near-duplicate signal can see it
    rows = np.round(TRAIN[11] + rng.normal(0, 0.01, size=(20, TRAIN.shape[1])), 1)
    rows[:, 0] = TRAIN[11][0] + np.arange(20) * 0.1  # one feature walks, so rows are never identical
    st_, levels = _run(det, rows)
    assert "near_duplicate" in st_.contrib or "line_search" in st_.contrib or "axis_probe" in st_.contrib
    assert max(levels) >= FLAG


def test_cusum_forgets_one_outlier_after_normal_traffic() -> None:
    det = Detector(GuardConfig())
    _warm(det)
    outlier = TRAIN[0] * 3.0 + 0.123456
    st_, levels = _run(det, np.asarray([outlier]))
    # off-grid, off-manifold and out of domain at once, yet one input is at most a throttle
    assert 0 < st_.extraction <= GuardConfig().thresholds.throttle and max(levels) < BLOCK
    rng = np.random.default_rng(4)
    st_, levels = _run(det, TRAIN[rng.integers(len(TRAIN), size=40)], t0=T0 + 2000, state=st_)
    assert st_.extraction == 0.0


def _llm(prompt: str, bias: dict[str, int] | None = None, max_tokens: int = 1, logprobs: bool = True) -> Observation:
    doc = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "logprobs": logprobs,
           "top_logprobs": 5, "logit_bias": bias or {}}
    req = llm_request(doc)
    assert req is not None
    return Observation(T0, "chat", 200, llm=req, output_tokens=1)


def test_logit_bias_sweep_over_a_repeated_prompt_is_blocked_and_explained() -> None:
    det = Detector(GuardConfig())
    st_: ClientState | None = None
    for i in range(50):
        st_, a = det.observe(st_, replace(_llm("Say hello", {str(500 + i): 100}), t=T0 + i))
        if a.level >= BLOCK:
            break
    assert a.level >= BLOCK and i < 30
    signals = {e["signal"] for e in a.explanation()["signals"]}
    assert signals <= {"logit_bias_sweep", "repeated_prompt_probe"} and signals
    json.dumps(a.explanation())  # the record is JSON-serialisable as logged


def test_fixed_small_logit_bias_with_logprobs_over_distinct_prompts_is_not_a_sweep() -> None:
    det = Detector(GuardConfig())
    st_: ClientState | None = None
    for i in range(300):
        st_, a = det.observe(st_, replace(_llm(f"Question {i} about topic {i * 7}: A, B, C or D?",
                                               {"32": 5, "33": 5, "34": 5, "35": 5}), t=T0 + i))
        assert a.level == 0


def test_revoke_follows_repeated_blocks() -> None:
    det = Detector(GuardConfig())
    _warm(det)
    rng = np.random.default_rng(8)
    st_: ClientState | None = None
    levels = []
    for k in range(12):
        pts = rng.uniform(TRAIN.min(axis=0), TRAIN.max(axis=0), size=(1, TRAIN.shape[1]))
        st_, a = det.observe(st_, Observation(T0 + 1000 + k * 4000, ROUTE, 100, rows=pts))
        levels.append(a.level)
    assert REVOKE in levels


def test_decisions_replay_identically_from_request_times() -> None:
    def play() -> list[tuple[int, float]]:
        det = Detector(GuardConfig())
        _warm(det)
        rng = np.random.default_rng(1)
        rows = np.vstack([TRAIN[:20], rng.uniform(3, 7, size=(5, TRAIN.shape[1]))])
        st_ = None
        out = []
        for i, r in enumerate(rows):
            st_, a = det.observe(st_, Observation(T0 + 500 + i * 3.7, ROUTE, 100, rows=r[None, :]))
            out.append((a.level, round(a.extraction, 9)))
        return out

    assert play() == play()


def test_state_is_bounded_and_round_trips() -> None:
    det = Detector(GuardConfig())
    _warm(det)
    rng = np.random.default_rng(6)
    st_, _ = _run(det, TRAIN[rng.integers(len(TRAIN), size=500)])
    for i in range(400):
        st_, _ = det.observe(st_, replace(_llm(f"prompt {i} " * 5, {str(i): 1}), t=T0 + 5000 + i))
    blob = st_.to_bytes()
    assert len(blob) < 4096
    back = ClientState.from_bytes(blob)
    assert back is not None and back.to_bytes() == blob
    assert ClientState.from_bytes(b"garbage") is None


def test_payload_parsers_read_tf_serving_and_openai_bodies() -> None:
    rows = predict_rows(parse_json(b'{"instances": [{"x": [[1, 2], [3, 4]]}, {"x": [[5, 6], [7, 8]]}]}'), 8)
    assert rows is not None and rows.shape == (2, 4)
    assert predict_rows(parse_json(b'{"instances": [[1, "a"]]}'), 8) is None
    assert predict_rows(parse_json(b"not json"), 8) is None
    req = llm_request({"prompt": "hi there", "logprobs": 3, "logit_bias": {"5": 1, "x": 2}})
    assert req is not None and req.biased_ids == (5,) and req.top_logprobs == 3 and req.logprobs
    assert response_margins({"predictions": [[0.5, 0.3, 0.2], [2.0, -1.0]]}, 8) is None  # ragged
    margins = response_margins({"predictions": [[0.5, 0.3, 0.2]]}, 8)
    assert margins == [pytest.approx(0.2)]


def test_simhash_puts_template_variants_close_and_unrelated_prompts_far() -> None:
    a = simhash64("You are an expert tutor. Explain photosynthesis to a beginner in detail with examples.")
    b = simhash64("You are an expert tutor. Explain black holes to a beginner in detail with examples.")
    c = simhash64("What is the weather in Paris tomorrow and should I bring an umbrella")
    assert hamming(a, b) <= GuardConfig().template_hamming < hamming(a, c)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=20))
def test_parsers_never_raise_on_arbitrary_json(doc: object) -> None:
    predict_rows(doc, 8)
    llm_request(doc)
    response_margins(doc, 8)
    predict_rows({"instances": doc}, 8)
    llm_request({"messages": doc, "logit_bias": doc, "max_tokens": doc})
