"""The detector as pure code: each signal, CUSUM scoring, explanations, bounded state, replay."""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kong_plugins.extraction_guard.baseline import FeatureModel
from kong_plugins.extraction_guard.config import FeatureStats, GuardConfig
from kong_plugins.extraction_guard.detector import BASELINE_ROWS_PER_CLIENT, BLOCK, FLAG, REVOKE, Detector, Observation
from kong_plugins.extraction_guard.payloads import (
    MAX_FEATURES,
    body_predict_rows,
    llm_request,
    parse_json,
    predict_rows,
    response_margins,
)
from kong_plugins.extraction_guard.sketches import (
    MAX_PROMPT_CHARS,
    _simhash_python,
    hamming,
    hash64,
    prompt_hash,
    prompt_sketches,
    simhash64,
    within_bits,
)
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


@pytest.mark.parametrize("fading", ["extraction", "abuse", "contrib", "out_tokens", "all", "none"])
def test_scores_totals_and_output_tokens_fade_with_time_each_on_its_own(fading: str) -> None:
    """Each of a client's scores, signal totals and output tokens fades with time even when all
    the others are zero (and what is zero stays zero)."""
    cfg = GuardConfig()
    det = Detector(cfg)
    st_ = ClientState.new(T0)
    every = fading == "all"
    if every or fading == "extraction":
        st_.extraction = 4.0
    if every or fading == "abuse":
        st_.abuse = 2.0
    if every or fading == "contrib":
        st_.contrib = {"axis_probe": 4.0}
    if every or fading == "out_tokens":
        st_.out_tokens = 100.0
    idle = cfg.score_half_life_s
    st_, a = det.observe(st_, Observation(T0 + idle, ROUTE))  # no evidence: the scores drift as well
    assert a.evidence == ()
    assert st_.extraction == (4.0 * 0.5 - 0.25 if every or fading == "extraction" else 0.0)
    assert st_.abuse == (2.0 * 0.5 - 0.25 if every or fading == "abuse" else 0.0)
    assert st_.contrib == ({"axis_probe": 2.0} if every or fading == "contrib" else {})
    assert st_.out_tokens == pytest.approx(100.0 * np.exp(-idle / 3600.0) if every or fading == "out_tokens" else 0.0,
                                           rel=1e-12, abs=0.0)


def test_a_request_rate_is_abuse_past_the_floor_and_past_the_routes_own_norm() -> None:
    """``rate_vs_route``: a client's 10 s rate above ``burst_min_requests`` and, once the route's
    norms are learned, above the route's mean rate by 4 deviations."""
    cfg = GuardConfig(burst_min_requests=5.0, baseline_min_samples=20)
    det = Detector(cfg)

    def signals_at_rate(rate: float, t: float) -> list[str]:
        st_ = ClientState.new(t)
        st_.rate_short = rate - 1.0  # this request, at the same instant, makes it ``rate``
        _, a = det.observe(st_, Observation(t, "busy", 100))
        return [e.signal for e in a.evidence]

    # the route's norms not learned yet: the floor alone
    assert signals_at_rate(4.0, T0) == []
    assert signals_at_rate(10.0, T0) == ["rate_vs_route"]
    # a route whose clients all call at 30 requests in 10 s (abuse while its norms are learned,
    # then its norm): 10 is within it, 100 past it
    seen = [signals_at_rate(30.0, T0 + 1 + i) for i in range(30)]
    assert seen[0] == ["rate_vs_route"] and seen[-1] == []
    assert signals_at_rate(10.0, T0 + 100) == []
    assert signals_at_rate(4.0, T0 + 101) == []
    assert signals_at_rate(100.0, T0 + 102) == ["rate_vs_route"]


@pytest.mark.parametrize(("extraction", "abuse", "is_group", "level"), [
    (0.0, 0.0, False, "allow"), (2.99, 3.99, False, "allow"), (3.0, 0.0, False, "flag"),
    (0.0, 4.0, False, "flag"), (5.0, 0.0, False, "throttle"), (0.0, 8.0, False, "throttle"),
    (8.0, 0.0, False, "block"), (2.0, 20.0, False, "throttle"), (4.4, 0.0, True, "allow"),
    (4.5, 0.0, True, "flag"), (4.4, 4.0, True, "flag"), (12.0, 0.0, True, "block"),
])
def test_a_level_is_the_thresholds_a_score_reached_with_a_groups_bar_higher(extraction: float, abuse: float,
                                                                            is_group: bool, level: str) -> None:
    """Default thresholds: extraction flag 3, throttle 5, block 8 (a group's 1.5x as high), abuse
    flag 4, throttle 8 (abuse reaches at most throttle)."""
    det = Detector(GuardConfig())
    st_ = ClientState.new(T0)
    # (no evidence in the request: each score drifts down by 0.25 at the same instant, no fading)
    st_.extraction, st_.abuse = extraction + 0.25, abuse + 0.25
    _, a = det.observe(st_, Observation(T0, ROUTE), is_group=is_group, learn=not is_group)
    assert a.level_name == level and a.publish == (level != "allow")


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
    # the guard's check of a client's recent prompts: any one within the limit, signed values masked
    limit = GuardConfig().template_hamming
    assert within_bits(a, (c, b), limit) and not within_bits(a, (c,), limit) and not within_bits(a, (), limit)
    assert within_bits(-1, (-1 ^ 0b111,), 3) and not within_bits(-1, (-1 ^ 0b1111,), 3)


def _general_rows(body: bytes, max_rows: int = 8) -> np.ndarray | None:
    doc = parse_json(body)
    return predict_rows(doc, max_rows) if doc is not None else None


def _same_rows(fast: np.ndarray, general: np.ndarray | None) -> bool:
    return (general is not None and fast.shape == general.shape and fast.dtype == general.dtype
            and np.array_equal(fast, general) and np.array_equal(np.signbit(fast), np.signbit(general)))


def test_a_plain_instances_body_is_read_from_its_bytes_as_the_parser_reads_it() -> None:
    body = b' {"instances" :\n[[0.0, 16, -3.25, 1e2, 2.5E-3, -0, -0.0, -0e1],[1,2,3,4,5,6,7,8], [0,0,0,0,0,0,0,0]]} '
    fast = body_predict_rows(body, 8)
    assert fast is not None and _same_rows(fast, _general_rows(body))
    assert fast[0, 5] == 0.0 and not np.signbit(fast[0, 5])  # the integer -0 is 0
    assert np.signbit(fast[0, 6]) and np.signbit(fast[0, 7])  # the float -0.0 keeps its sign
    first_two = body_predict_rows(body, 2)
    assert first_two is not None and _same_rows(first_two, _general_rows(body, 2))
    wide = json.dumps({"instances": [[float(i) for i in range(3 * MAX_FEATURES)]]}).encode()
    narrowed = body_predict_rows(wide, 8)
    assert narrowed is not None and narrowed.shape == (1, MAX_FEATURES) and _same_rows(narrowed, _general_rows(wide))


@pytest.mark.parametrize("body", [
    b'{"instances": [[1, 2], [3]]}',  # ragged
    b'{"instances": [[1, 2]], "signature_name": "x"}',  # another key
    b'{"instances": [[[1, 2]]]}',  # nested
    b'{"instances": [[1, "2"]]}', b'{"instances": [[1, null]]}', b'{"instances": [[1, true]]}',
    b'{"instances": [[01]]}', b'{"instances": [[1.]]}', b'{"instances": [[.5]]}', b'{"instances": [[+1]]}',
    b'{"instances": [[NaN]]}', b'{"instances": [[1e400]]}', b'{"instances": [[9007199254740993]]}',
    b'{"instances": [[0.30000000000000004441]]}', b'{"instances": [[1e23]]}', b'{"instances": [[1]]} x',
    b'{"instances": [[1]]', b'{"instances": []}', b'{"instances": [[]]}', b'{"instances": [{"x": [1]}]}',
    b'{"instances": [1, 2]}', b'{"instances": [[1,\xc2\xa02]]}', b'{"instances": [[1]],}',
])
def test_any_other_body_is_left_to_the_general_parser(body: bytes) -> None:
    assert body_predict_rows(body, 8) is None


_DECIMALS = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
    st.tuples(st.integers(0, 10**17), st.integers(0, 10**17), st.integers(-30, 30), st.booleans()).map(
        lambda t: f"{'-' if t[3] else ''}{t[0]}.{t[1]}e{t[2]}"),
    st.sampled_from(["0", "-0", "0.0", "-0.0", "1e22", "1e-22", "9007199254740992", "123456789012345678"]),
)
_GAP = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_DECIMALS, min_size=1, max_size=6), min_size=1, max_size=10), _GAP,
       st.integers(1, 8))
def test_body_rows_equal_the_parsed_rows_whenever_read(rows: list[list[str]], gap: str, max_rows: int) -> None:
    width = len(rows[0])
    rows = [(r * width)[:width] for r in rows]  # one width, as predict bodies have
    body = f'{{{gap}"instances":{gap}[{gap}{f",{gap}".join("[" + f",{gap}".join(r) + "]" for r in rows)}]}}'.encode()
    fast = body_predict_rows(body, max_rows)
    if fast is not None:
        assert _same_rows(fast, _general_rows(body, max_rows))


def test_simhash_of_one_bigram_is_its_two_crcs() -> None:
    # One shingle: every bit is its own majority, so the SimHash is the 64-bit hash itself.
    expected = zlib.crc32(b"hello world") | zlib.crc32(b"hello world", 0x5BD1E995) << 32
    assert simhash64("  Hello,   WORLD! ") == expected - (1 << 64 if expected >= 1 << 63 else 0)
    assert simhash64("Hello") == simhash64("hello") != 0  # one word is its own shingle
    assert simhash64("") == simhash64("?! --") == 0


_WORDS = st.sampled_from(["the", "Report", "DATA", "x_1", "42", "a", "K", "__", "z9"])
_GAPS = st.sampled_from([" ", ",", "  ", "\t", "\n", "\x1f", "-", "", "_", "'", "\x00", "\x7f"])
_ASCII_PROMPTS = (st.text(st.characters(max_codepoint=127), max_size=200)
                  | st.lists(st.tuples(_WORDS, _GAPS).map("".join), max_size=40).map("".join))


@settings(max_examples=300, deadline=None)
@given(_ASCII_PROMPTS)
def test_compiled_simhash_of_ascii_text_is_the_reference_simhash(text: str) -> None:
    assert simhash64(text) == _simhash_python(text)


@pytest.mark.parametrize("shingles", [254, 255, 256, 510, 511, 700])
def test_compiled_simhash_counts_bits_beyond_a_byte_of_shingles(shingles: int) -> None:
    # The kernel counts each bit in byte lanes emptied every 255 shingles: around and past that,
    # distinct random words keep every bit's count near the majority line, where a lost count shows.
    rng = random.Random(shingles)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(1, 6)))
             for _ in range(shingles + 1)]
    text = " ".join(words)[:MAX_PROMPT_CHARS]
    assert simhash64(text) == _simhash_python(text)


_SPACES = st.sampled_from([" ", "  ", "\t", "\n", "\x0b", "\x0c", "\r", "\x1c", "\x1d", "\x1e", "\x1f", ""])


@settings(max_examples=300, deadline=None)
@given(_ASCII_PROMPTS | st.lists(st.tuples(_SPACES, _WORDS, _GAPS).map("".join), max_size=40).map("".join))
def test_one_pass_sketches_of_ascii_text_are_the_exact_hash_and_the_simhash(text: str) -> None:
    # The compiled pass writes the whitespace-collapsed, lower-cased text the exact hash is taken
    # of: it must split where str.split() does (the ASCII separators 28-31 included).
    assert prompt_sketches(text) == (prompt_hash(text), simhash64(text))


_M64 = (1 << 64) - 1


def _hash64_reference(data: bytes) -> int:
    """The exact prompt hash as written down: MurmurHash3 x64's body (one lane) over the 8-byte
    little-endian words, the last zero-padded, then the length and its finaliser; signed."""
    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (64 - r))) & _M64

    h = 0
    for at in range(0, len(data), 8):
        k = rotl(int.from_bytes(data[at:at + 8], "little") * 0x87C37B91114253D5 & _M64, 31)
        h = rotl(h ^ (k * 0x4CF5AD432745937F & _M64), 27)
        h = (h * 5 + 0x52DCE729) & _M64
    h ^= len(data)
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h = (h ^ (h >> 33)) * multiplier & _M64
    h ^= h >> 33
    return h - (1 << 64) if h >> 63 else h


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_the_exact_prompt_hash_is_its_definition(data: bytes) -> None:
    assert hash64(data) == _hash64_reference(data)


def test_the_exact_prompt_hash_tells_near_identical_prompts_apart() -> None:
    # a client's repeated prompt is its exact hash seen again: prompts one character apart, of
    # every length around the 8-byte words, must not collide
    base = [f"summarise ticket {i} for customer {i % 97}" for i in range(2000)]
    variants = {text[:cut] + "x" + text[cut:] for text in base[:50] for cut in range(len(text))}
    texts = sorted(set(base) | variants)
    assert len({prompt_hash(t) for t in texts}) == len(texts)
    assert prompt_hash("Summarise  TICKET 7") == prompt_hash("summarise ticket 7")


def test_one_pass_sketches_read_the_first_characters_only() -> None:
    long_ascii = "Alpha beta\tgamma  delta " * (MAX_PROMPT_CHARS // 10)
    assert prompt_sketches(long_ascii) == prompt_sketches(long_ascii[:MAX_PROMPT_CHARS] + " omega")
    assert prompt_sketches(long_ascii) == (prompt_hash(long_ascii), simhash64(long_ascii))
    assert prompt_sketches("\u212a Report  data") == (prompt_hash("\u212a Report  data"),
                                                       simhash64("k report data"))
    assert prompt_sketches("Same  prompt") == prompt_sketches(" same prompt\n")


def test_simhash_reads_the_first_characters_only_whatever_the_path() -> None:
    long_ascii = "alpha beta gamma delta " * (MAX_PROMPT_CHARS // 10)
    assert simhash64(long_ascii) == _simhash_python(long_ascii[:MAX_PROMPT_CHARS])
    assert simhash64(long_ascii) == simhash64(long_ascii[:MAX_PROMPT_CHARS] + " omega")
    # Not ASCII (a Kelvin sign lower-cases to "k"): the reference path, the same words.
    assert simhash64("\u212a report data") == simhash64("k report data")


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


# -- calibration against benign data: what keeps benign clients at zero -----------------------------

def _warm_rows(det: Detector, rows: np.ndarray, route: str = ROUTE, t0: float = T0) -> None:
    for i, r in enumerate(rows):
        det.observe(None, Observation(t0 + i, route, 100, rows=r[None, :]))


def test_heavy_tailed_benign_rows_do_not_accumulate_but_random_points_do() -> None:
    """A client sending only the tail of a skewed distribution is not an attacker (breast-cancer-like)."""
    rng = np.random.default_rng(21)
    data = np.round(np.exp(rng.normal(0, 1, size=(3000, 12)) @ rng.normal(0, 0.4, size=(12, 12))), 2)
    det = Detector(GuardConfig())
    _warm_rows(det, data[:1500])
    norm = np.abs(np.log(data[1500:])).sum(axis=1)
    tail = data[1500:][np.argsort(norm)[-120:]]  # the most extreme 8% of fresh benign rows
    st_, levels = _run(det, tail, t0=T0 + 5000)
    assert max(levels) < BLOCK, st_.contrib
    pts = np.round(rng.uniform(data.min(axis=0), data.max(axis=0), size=(4, 12)), 2)  # on the grid
    _, levels = _run(det, pts, t0=T0 + 9000)
    assert max(levels) >= BLOCK


def test_one_coordinate_neighbours_on_coarse_narrow_data_are_not_finite_differencing() -> None:
    """Iris-like data (4 features on a 0.1 grid): natural rows often differ in one coordinate."""
    rng = np.random.default_rng(5)
    base = np.round(rng.normal([5.0, 3.4, 1.5, 0.2], [0.3, 0.3, 0.2, 0.1], size=(60, 4)), 1)
    det = Detector(GuardConfig())
    _warm_rows(det, base[rng.integers(len(base), size=1300)])
    model = det.baselines.get(ROUTE).feature_baseline(4).model
    assert model is not None and model.axis_rate > 0.01  # measured: the signal stands down here
    sorted_rows = base[np.lexsort(base.T[::-1])]  # a label/value-sorted batch job
    st_, levels = _run(det, np.vstack([sorted_rows, sorted_rows]), t0=T0 + 5000)
    assert max(levels) == 0 and "axis_probe" not in st_.contrib and "line_search" not in st_.contrib


def test_jitter_below_the_spacing_of_real_inputs_is_near_duplicate_probing() -> None:
    det = Detector(GuardConfig(near_duplicate_distance=0.001))
    _warm(det)
    model = det.baselines.get(ROUTE).feature_baseline(TRAIN.shape[1]).model
    assert model is not None and model.nn_spacing > 0.05
    rng = np.random.default_rng(12)
    # jitter of 5% of a standard deviation, rounded onto the data grid's finer decimals: only the
    # learned spacing (not the configured 0.001) can call these near-duplicates
    rows = np.round(TRAIN[3] + rng.normal(0, 0.05, size=(30, TRAIN.shape[1])) * TRAIN.std(axis=0), 2)
    st_, levels = _run(det, rows, t0=T0 + 5000)
    assert st_.contrib.get("near_duplicate", 0) > 0 and max(levels) >= FLAG


def test_entering_input_regions_no_benign_row_visits_is_coverage_evidence_once_per_region() -> None:
    rng = np.random.default_rng(32)
    # correlated features (two latent factors): benign rows occupy a few cells of input space
    latent = rng.normal(size=(2000, 2)) @ (3.0 * rng.normal(size=(2, 8)))
    data = np.round(5.0 + latent + rng.normal(0, 0.05, (2000, 8)), 1)
    det = Detector(GuardConfig())
    _warm_rows(det, data[:1500])
    model = det.baselines.get(ROUTE).feature_baseline(8).model
    assert model is not None and model.cells is not None and model.unseen_cell_rate < 0.01
    cand = np.round(rng.uniform(data.min(axis=0), data.max(axis=0), size=(4000, 8)), 1)
    cells = model.cell(cand)
    empty = model.cells[cells] == 0
    _, first = np.unique(np.where(empty, cells, -1), return_index=True)
    probes = cand[[i for i in np.sort(first) if empty[i]][:4]]
    st_, _ = _run(det, probes, t0=T0 + 5000)
    assert st_.contrib.get("new_rare_region", 0) == pytest.approx(4, rel=0.01)
    st_, _ = _run(det, probes[:2], t0=T0 + 5010, state=st_)  # the same regions again: counted once
    assert st_.contrib.get("new_rare_region", 0) == pytest.approx(4, rel=0.01)
    benign_st, levels = _run(det, data[1500:1800], t0=T0 + 9000)
    # the Good-Turing estimate said <1%: one benign row in 300 may enter an empty cell, once
    assert max(levels) == 0 and benign_st.contrib.get("new_rare_region", 0) <= 1.0
    assert "line_search" not in benign_st.contrib  # steps are compared whitened


def test_payload_anomaly_is_many_times_the_route_and_the_clients_own_size() -> None:
    det = Detector(GuardConfig(baseline_min_samples=50))
    for i in range(300):
        det.observe(None, Observation(T0 + i, "chat", 2000 + (i % 7) * 10))
    batch_st: ClientState | None = None
    for i in range(30):  # a client whose every request is 8x the route's size: a batch job
        batch_st, a = det.observe(batch_st, Observation(T0 + 1000 + i, "chat", 16000))
    assert batch_st is not None and batch_st.abuse == 0.0
    st_: ClientState | None = None
    for i in range(10):
        st_, a = det.observe(st_, Observation(T0 + 2000 + i, "chat", 2000))
    st_, a = det.observe(st_, Observation(T0 + 2011, "chat", 200_000))  # 100x: stuffing
    assert [e.signal for e in a.evidence] == ["payload_size"] and a.evidence[0].score == "abuse"


def test_an_evaluation_re_run_with_the_same_small_bias_is_not_a_sweep() -> None:
    det = Detector(GuardConfig())
    st_: ClientState | None = None
    prompts = [f"Question {i} about topic {i * 7}: A, B, C or D?" for i in range(12)]
    for k, p in enumerate(prompts * 5):  # the same 12 questions, five passes, max_tokens=1
        st_, a = det.observe(st_, replace(_llm(p, {"32": 5, "33": 5, "34": 5, "35": 5}), t=T0 + k))
        assert a.level == 0 and not a.evidence


def test_sign_steps_count_relative_to_unequal_ranges_on_narrow_inputs() -> None:
    stats = FeatureStats(mean=(5.8, 3.0, 3.8, 1.2), std=(0.8, 0.4, 1.8, 0.8), minimum=(4.3, 2.0, 1.0, 0.1),
                         maximum=(7.9, 4.4, 6.9, 2.5))
    det = Detector(GuardConfig(feature_stats=stats))
    x0 = np.array([5.1, 3.5, 1.4, 0.2])
    span = np.asarray(stats.maximum) - np.asarray(stats.minimum)
    steps = [x0, x0 + 0.1 * span, x0 + 0.1 * span * np.array([1, -1, 1, -1]), x0 - 0.1 * span]
    st_, _ = _run(det, np.asarray(steps))
    assert st_.contrib.get("sign_step", 0) >= 6
    det2 = Detector(GuardConfig(feature_stats=stats))
    st2, _ = _run(det2, np.asarray([x0, x0 + 0.1, x0 - 0.1, x0 + 0.2]))  # equal absolute moves: natural
    assert "sign_step" not in st2.contrib


def test_inputs_wider_than_the_cap_are_profiled_on_a_fixed_subset_and_state_stays_bounded() -> None:
    wide = {"instances": [[float(i % 17) for i in range(30_000)]]}
    rows = predict_rows(wide, 8)
    assert rows is not None and rows.shape == (1, MAX_FEATURES)
    det = Detector(GuardConfig())
    rng = np.random.default_rng(0)
    st_: ClientState | None = None
    for i in range(40):
        doc = {"instances": rng.integers(0, 16, size=(8, 30_000)).tolist()}
        r = predict_rows(doc, 8)
        st_, _ = det.observe(st_, Observation(T0 + i, "wide", 100, rows=r))
    assert st_ is not None and len(st_.to_bytes()) < GuardConfig().recent_inputs * MAX_FEATURES * 4 + 2048


def test_a_few_rows_that_slip_into_the_baseline_do_not_erase_the_value_grid() -> None:
    rng = np.random.default_rng(40)
    rows = np.round(5.0 + rng.normal(size=(1024, 8)), 1)
    rows[:2] += rng.uniform(0, 0.05, size=(2, 8))  # two synthetic rows in the window
    model = FeatureModel.from_rows(rows)
    assert model.grid is not None and not np.isnan(model.grid).any()
    assert model.off_grid(rng.uniform(3, 7, size=(50, 8))).all()


def test_an_off_model_row_sent_twice_in_a_batch_is_learned_neither_time() -> None:
    det = Detector(GuardConfig())
    _warm(det)
    fb = det.baselines.get(ROUTE).feature_baseline(TRAIN.shape[1])
    before = fb.learned_rows
    odd = np.round(TRAIN[0] + 0.0123, 4)
    det.observe(None, Observation(T0 + 5000, ROUTE, 100, rows=np.vstack([odd, odd, TRAIN[1]])))
    assert fb.learned_rows == before + 1  # only the real row


def test_no_client_teaches_a_route_baseline_more_than_its_share() -> None:
    det = Detector(GuardConfig())
    fb = det.baselines.get(ROUTE).feature_baseline(TRAIN.shape[1])
    heavy: ClientState | None = None
    for i in range(500):  # one heavy client alone: never enough for a baseline
        heavy, _ = det.observe(heavy, Observation(T0 + i, ROUTE, 100, rows=TRAIN[i % len(TRAIN)][None, :]))
    assert heavy is not None and heavy.taught == fb.learned_rows == BASELINE_ROWS_PER_CLIENT
    assert fb.model is None  # the signals relying on it still abstain (cold start)


def test_inputs_one_decimal_finer_than_the_data_are_tolerated_but_never_learned() -> None:
    """No ratchet: x + 0.1 * range on 0.1-grid data is within the slack, and must not refine the grid."""
    det = Detector(GuardConfig())
    _warm(det, n=600)
    fb = det.baselines.get(ROUTE).feature_baseline(TRAIN.shape[1])
    rng = np.random.default_rng(50)
    for i in range(600):  # many clients, each a couple of two-decimal rows (below the flag threshold)
        rows = np.round(TRAIN[rng.integers(len(TRAIN), size=2)] + rng.choice([-0.03, 0.07], size=(2, 8)), 2)
        det.observe(None, Observation(T0 + 3000 + i, ROUTE, 100, rows=rows))
    for i in range(300):  # and enough real rows to refresh the model
        det.observe(None, Observation(T0 + 4000 + i, ROUTE, 100, rows=TRAIN[i % len(TRAIN)][None, :]))
    model = fb.model
    assert model is not None and model.grid is not None and np.allclose(model.grid, 0.1)
    pts = rng.uniform(TRAIN.min(axis=0), TRAIN.max(axis=0), size=(20, 8))
    assert model.off_grid(pts).all()


def test_one_step_vector_reused_from_several_seeds_is_augmentation() -> None:
    """Jacobian augmentation with a step the attacker sized its own way (neither equal nor per range)."""
    det = Detector(GuardConfig())
    _warm(det)
    rng = np.random.default_rng(60)
    lam = np.round(rng.uniform(0.05, 0.9, size=TRAIN.shape[1]), 2)
    seeds = TRAIN[rng.choice(len(TRAIN), size=6, replace=False)]
    augmented = [s + lam * rng.choice([-1, 1], size=TRAIN.shape[1]) for s in seeds]
    st_, levels = _run(det, np.vstack([seeds, augmented]), t0=T0 + 5000)
    assert st_.contrib.get("repeated_step", 0) >= 3 * 4 and max(levels) >= BLOCK
    benign_st, levels = _run(det, TRAIN[rng.integers(len(TRAIN), size=200)], t0=T0 + 9000)
    assert "repeated_step" not in benign_st.contrib and max(levels) == 0
