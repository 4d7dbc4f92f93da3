"""Victims: scikit-learn models on bundled datasets served TF-Serving style, and an OpenAI-style LLM stub."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

LOADERS = {"iris": load_iris, "breast_cancer": load_breast_cancer, "digits": load_digits, "wine": load_wine}


@dataclass
class TabularVictim:
    """A logistic-regression model behind ``POST /v1/models/<name>:predict``."""

    name: str
    X: np.ndarray
    y: np.ndarray
    model: Any

    @classmethod
    def load(cls, name: str) -> TabularVictim:
        X, y = LOADERS[name](return_X_y=True)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(X, y)
        return cls(name, X.astype(np.float64), y, model)

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])

    @property
    def route(self) -> str:
        return f"/v1/models/{self.name}:predict"

    def proba(self, X: np.ndarray) -> np.ndarray:
        """``predict_proba`` of the fitted pipeline, computed directly from its parameters.

        The same arithmetic as scikit-learn (standardise, linear scores, logistic or softmax) without
        its per-call validation, which costs ~0.5 ms and would dominate a 200k-request simulation.
        """
        scaler, lr = self.model[0], self.model[-1]
        z = ((np.atleast_2d(X) - scaler.mean_) / scaler.scale_) @ lr.coef_.T + lr.intercept_
        if z.shape[1] == 1:  # binary: sklearn's predict_proba is [1 - sigmoid(z), sigmoid(z)]
            p1 = 1.0 / (1.0 + np.exp(-z))
            return np.hstack([1.0 - p1, p1])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        result: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return result

    def predict(self, rows: list[list[float]]) -> dict[str, Any]:
        proba = self.proba(np.asarray(rows, dtype=np.float64))
        return {"predictions": [[round(float(p), 6) for p in row] for row in proba]}

    def labels(self, rows: np.ndarray) -> np.ndarray:
        classes: np.ndarray = self.model.classes_
        return np.asarray(classes[self.proba(rows).argmax(axis=1)])


VOCAB = 4096


class LLMStub:
    """Deterministic OpenAI-style chat completions: logits from a hash of the prompt, bias applied."""

    route = "/v1/chat/completions"

    def logits(self, prompt: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=8).digest(), "little")
        return np.random.default_rng(seed).standard_normal(VOCAB) * 3.0

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = "\n".join(m.get("content", "") for m in body.get("messages", []))
        logits = self.logits(prompt)
        for k, v in (body.get("logit_bias") or {}).items():
            logits[int(k)] += float(v)
        max_tokens = int(body.get("max_tokens") or 256)
        seed = int.from_bytes(hashlib.blake2b(prompt.encode(), digest_size=4).digest(), "little")
        n_out = min(max_tokens, 20 + seed % 400)
        out: dict[str, Any] = {
            "id": "cmpl", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "lorem " * n_out}}],
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": n_out},
        }
        if body.get("logprobs"):
            lse = float(np.log(np.exp(logits - logits.max()).sum()) + logits.max())
            top_n = int(body.get("top_logprobs") or 0)
            top = np.argsort(logits)[::-1][:max(1, top_n)]
            out["choices"][0]["logprobs"] = {"content": [{
                "token": str(int(top[0])), "logprob": float(logits[top[0]] - lse),
                "top_logprobs": [{"token": str(int(i)), "logprob": float(logits[i] - lse)} for i in top],
            }]}
        return out


def surrogate_fidelity(victim: TabularVictim, X: np.ndarray, P: np.ndarray) -> float:
    """Agreement with the victim of the best linear surrogate an attacker can solve from (X, P).

    For a softmax-linear victim, ``log(p_k / p_0)`` is linear in x: the equation-solving attack.
    ``lstsq`` gives the minimum-norm solution with fewer than d+1 answers, the exact one with d+1.
    """
    if len(X) == 0:
        majority = np.bincount(victim.y).argmax()
        return float((victim.labels(victim.X) == majority).mean())
    P = np.clip(P, 1e-9, 1.0)
    A = np.hstack([X, np.ones((len(X), 1))])
    target = np.log(P[:, 1:2] / P[:, 0:1]) if P.shape[1] == 2 else np.log(P[:, 1:] / P[:, 0:1])
    W, *_ = np.linalg.lstsq(A, target, rcond=None)
    scores = np.hstack([np.zeros((len(victim.X), 1)), np.hstack([victim.X, np.ones((len(victim.X), 1))]) @ W])
    pred = scores.argmax(axis=1)
    classes = np.unique(victim.y)
    return float((classes[pred] == victim.labels(victim.X)).mean())


def nan_safe(x: float) -> float:
    return 0.0 if math.isnan(x) else x
