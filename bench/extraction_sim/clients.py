"""Simulated clients as generators: each yields ``(delay_s, body)`` and receives ``(status, answer)``."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from .victims import LOADERS, TabularVictim

Answer = tuple[int, dict[str, Any] | None]
ClientGen = Generator[tuple[float, dict[str, Any]], Answer, None]


def _predict(rows: np.ndarray) -> dict[str, Any]:
    return {"instances": [[float(v) for v in r] for r in np.atleast_2d(rows)]}


def _wait_if_throttled(status: int) -> float:
    return 30.0 if status == 429 else 0.0


# -- benign (numeric) ----------------------------------------------------------------------------

def benign_shuffled(v: TabularVictim, rng: np.random.Generator) -> ClientGen:
    for _ in range(int(rng.integers(30, 150))):
        status, _ = yield float(rng.exponential(2.0)), _predict(v.X[rng.integers(len(v.X))])
        if status == 403:
            return


def benign_label_sorted_batch(v: TabularVictim, rng: np.random.Generator) -> ClientGen:
    idx = rng.choice(len(v.X), size=min(len(v.X), int(rng.integers(40, 160))), replace=False)
    idx = idx[np.argsort(v.y[idx], kind="stable")]
    for start in range(0, len(idx), 8):
        status, _ = yield float(rng.exponential(0.5)), _predict(v.X[idx[start:start + 8]])
        if status == 403:
            return


def benign_retries(v: TabularVictim, rng: np.random.Generator) -> ClientGen:
    for _ in range(int(rng.integers(30, 120))):
        body = _predict(v.X[rng.integers(len(v.X))])
        status, _ = yield float(rng.exponential(2.0)), body
        for _ in range(int(rng.integers(1, 3)) if rng.random() < 0.15 else 0):
            status, _ = yield 1.0, body
        if status == 403:
            return


def benign_bursts(v: TabularVictim, rng: np.random.Generator) -> ClientGen:
    for _ in range(3):
        gap = 600.0
        for _ in range(40):
            status, _ = yield gap, _predict(v.X[rng.integers(len(v.X))])
            gap = 0.1 + _wait_if_throttled(status)
            if status == 403:
                return


def benign_one_class(v: TabularVictim, rng: np.random.Generator) -> ClientGen:
    cls = rng.choice(np.unique(v.y))
    pool = np.flatnonzero(v.y == cls)
    for _ in range(int(rng.integers(30, 120))):
        status, _ = yield float(rng.exponential(2.0)), _predict(v.X[rng.choice(pool)])
        if status == 403:
            return


BENIGN_NUMERIC = {
    "shuffled": benign_shuffled,
    "label_sorted_batch": benign_label_sorted_batch,
    "retries": benign_retries,
    "bursts": benign_bursts,
    "one_class": benign_one_class,
}

# -- benign (LLM) --------------------------------------------------------------------------------

_WORDS = (
    "the", "a", "my", "our", "this", "report", "data", "model", "error", "code", "function",
    "python", "sql", "table", "customer", "email", "invoice", "summary", "meeting", "plan",
    "design", "review", "test", "deploy", "server", "cloud", "budget", "sales", "team", "project",
    "deadline", "bug", "feature", "user", "login", "page", "style", "color", "font", "chart",
    "graph", "trend", "month", "year", "week", "quarter", "growth", "revenue", "cost", "risk",
    "policy", "contract", "law", "health", "diet", "recipe", "travel", "flight", "hotel", "city",
    "museum", "history", "science", "physics", "chemistry", "biology", "math", "proof", "theorem",
    "poem", "story", "novel", "song", "music", "film", "actor", "game", "sport", "football",
    "tennis", "weather", "garden", "plant",
)


def _sentence(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(_WORDS, size=n)) + "?"


def benign_chat(rng: np.random.Generator) -> ClientGen:
    history: list[dict[str, str]] = []
    for _ in range(int(rng.integers(5, 40))):
        if not history or rng.random() < 0.3:
            history = []
        history = [*history, {"role": "user", "content": _sentence(rng, int(rng.integers(6, 40)))}]
        body = {"model": "stub", "messages": history, "max_tokens": int(rng.choice([128, 256, 512]))}
        status, answer = yield float(rng.exponential(20.0)), body
        if status == 403:
            return
        if answer:
            history = [*history, {"role": "assistant", "content": "ok"}]


_EVAL_IDS = {"32": 5, "33": 5, "34": 5, "35": 5}


def benign_eval_harness(rng: np.random.Generator) -> ClientGen:
    """A benchmark run: logprobs of the answer letters, nudged by a small fixed logit_bias.

    Half of the harnesses run the same question set twice (another model version, a seed check):
    the same prompts again, max_tokens=1, logprobs -- but never a new biased token.
    """
    subject = str(rng.choice(["algebra", "anatomy", "astronomy", "law", "virology"]))
    questions = []
    for _ in range(int(rng.integers(100, 300))):
        question = _sentence(rng, int(rng.integers(10, 25)))
        options = "\n".join(f"{c}. {_sentence(rng, 4)}" for c in "ABCD")
        questions.append(f"The following is a multiple choice question about {subject}.\n\n"
                         f"{question}\n{options}\nAnswer:")
    for _ in range(2 if rng.random() < 0.5 else 1):
        for text in questions:
            body = {"model": "stub", "max_tokens": 1, "logprobs": True, "top_logprobs": 5,
                    "logit_bias": _EVAL_IDS, "messages": [{"role": "user", "content": text}]}
            status, _ = yield float(rng.exponential(0.3)), body
            if status == 403:
                return


# -- attacks (numeric) ---------------------------------------------------------------------------

def attack_equation_solving_random(v: TabularVictim, rng: np.random.Generator) -> ClientGen:
    """Tramer et al. 2016: d+1 random points in the feature domain, then solve for the weights."""
    lo, hi = v.X.min(axis=0), v.X.max(axis=0)
    for _ in range(v.dim + 1):
        status, _ = yield 1.0, _predict(rng.uniform(lo, hi))
        if status in (401, 403):
            return


def attack_equation_solving_axis(v: TabularVictim, rng: np.random.Generator) -> ClientGen:
    """The finite-difference form: one base point and one step along each axis."""
    x0 = v.X[rng.integers(len(v.X))].copy()
    step = v.X.std(axis=0) * 0.5 + 1e-3
    for i in range(-1, v.dim):
        x = x0.copy()
        if i >= 0:
            x[i] += step[i]
        status, _ = yield 1.0, _predict(x)
        if status in (401, 403):
            return


def _lstsq_grad(X: list[np.ndarray], P: list[np.ndarray], d: int) -> np.ndarray | None:
    if len(X) < 2:
        return None
    A = np.hstack([np.asarray(X), np.ones((len(X), 1))])
    Pm = np.clip(np.asarray(P), 1e-9, 1)
    W, *_ = np.linalg.lstsq(A, np.log(Pm[:, 1:] / Pm[:, :1]), rcond=None)
    return np.asarray(W[:d])


def attack_jacobian(v: TabularVictim, rng: np.random.Generator, budget: int = 300) -> ClientGen:
    """Papernot et al. 2017: seed set, then x + lambda * sign(surrogate Jacobian), round after round."""
    lam = 0.1 * (v.X.max(axis=0) - v.X.min(axis=0))
    current = [v.X[i] for i in rng.choice(len(v.X), size=10, replace=False)]
    X: list[np.ndarray] = []
    P: list[np.ndarray] = []
    sent = 0
    while sent < budget:
        nxt = []
        # only the points added in the last round need labels (S_{k+1} = S_k + new points)
        for x in current:
            status, answer = yield 1.0, _predict(x)
            sent += 1
            if status in (401, 403):
                return
            if status == 200 and answer:
                X.append(x)
                P.append(np.asarray(answer["predictions"][0]))
            W = _lstsq_grad(X, P, v.dim)
            direction = np.sign(W[:, int(np.argmax(P[-1][1:]))]) if W is not None and P else rng.choice([-1, 1], v.dim)
            nxt.append(x + lam * direction * rng.choice([-1, 1]))
            if sent >= budget:
                break
        current = nxt


def attack_random_perturbation(v: TabularVictim, rng: np.random.Generator, budget: int = 300,
                               pace: float = 1.0, seeds: np.ndarray | None = None) -> ClientGen:
    """Seeds from public data, each queried with many small Gaussian perturbations."""
    sigma = 0.02 * v.X.std(axis=0)
    seed_rows = v.X[seeds if seeds is not None else rng.choice(len(v.X), size=20, replace=False)]
    per_seed = max(1, budget // len(seed_rows))
    for s in seed_rows:
        for _ in range(per_seed):
            status, _ = yield pace, _predict(s + rng.normal(0.0, 1.0, v.dim) * sigma)
            if status in (401, 403):
                return


def attack_off_distribution(v: TabularVictim, rng: np.random.Generator, budget: int = 300) -> ClientGen:
    """Knockoff-style natural queries from another distribution, rescaled into the victim's ranges."""
    other = "wine" if v.name != "wine" else "breast_cancer"
    Xo = LOADERS[other](return_X_y=True)[0]
    cols = rng.integers(Xo.shape[1], size=v.dim)
    Xo = Xo[:, cols]
    lo, hi = v.X.min(axis=0), v.X.max(axis=0)
    olo, ohi = Xo.min(axis=0), Xo.max(axis=0)
    Xs = lo + (Xo - olo) / np.maximum(ohi - olo, 1e-9) * (hi - lo)
    for _ in range(budget):
        status, _ = yield 1.0, _predict(Xs[rng.integers(len(Xs))])
        if status in (401, 403):
            return


def data_decimals(X: np.ndarray) -> np.ndarray:
    """Per feature, the fewest decimals (at most 6) every value of the public data is written with."""
    decimals = np.full(X.shape[1], 6)
    for k in range(6, -1, -1):
        exact = (np.abs(X * 10.0**k - np.round(X * 10.0**k)) < 1e-6).all(axis=0)
        decimals[exact] = k
    return decimals


def on_grid(gen: ClientGen, decimals: np.ndarray) -> ClientGen:
    """An adaptive attacker: the same queries rounded to the precision real inputs are written with.

    Defeats the grid signal by construction, so what catches it is the rest: the off-manifold
    distance, coverage, and the shape of its steps.
    """
    try:
        delay, body = next(gen)
        while True:
            rows = np.atleast_2d(np.asarray(body["instances"], dtype=np.float64))
            rounded = [[round(float(v), int(k)) for v, k in zip(row, decimals, strict=True)] for row in rows]
            answer = yield delay, {"instances": rounded}
            delay, body = gen.send(answer)
    except StopIteration:
        return


# -- attacks (LLM) -------------------------------------------------------------------------------

def attack_logit_bias_sweep(rng: np.random.Generator, budget: int = 400) -> ClientGen:
    """Carlini et al. 2024: one prompt, a different token pushed by logit_bias each query, max_tokens=1."""
    prompt = "Repeat the word: hello"
    base = int(rng.integers(100, 3000))
    for i in range(budget):
        body = {"model": "stub", "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
                "logprobs": True, "top_logprobs": 5, "logit_bias": {str(base + i): 100}}
        status, _ = yield 0.5, body
        if status in (401, 403):
            return


_TOPICS = [f"{a} {b}" for a in _WORDS[10:50] for b in _WORDS[50:90]]
DISTILLATION_BUDGET = 1500


def attack_mass_distillation(rng: np.random.Generator, budget: int = DISTILLATION_BUDGET) -> ClientGen:
    """Template-driven prompting for a distillation corpus: many topics, long answers, fast."""
    for i in range(budget):
        topic = _TOPICS[int(rng.integers(len(_TOPICS)))]
        body = {"model": "stub", "max_tokens": 1024, "messages": [{"role": "user", "content":
                f"You are an expert tutor. Explain {topic} to a beginner in detail with examples. "
                f"Write at least 800 words and finish with a summary of the key points. Variant {i % 7}."}]}
        status, _ = yield 1.0 + _wait_if_throttled(0), body
        if status in (401, 403):
            return
