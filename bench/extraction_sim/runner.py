"""The event loop: simulated time, every request through ``ExtractionGuard`` as the plugin runs it."""

from __future__ import annotations

import heapq
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta

from kong_plugins.extraction_guard.config import GuardConfig
from kong_plugins.extraction_guard.guard import ExtractionGuard, Identity, build_observation
from kong_plugins.extraction_guard.payloads import response_summary
from kong_plugins.storage import MemoryStorage

from . import clients as c
from .victims import LLMStub, TabularVictim, surrogate_fidelity

NUMERIC_ATTACKS = {
    "equation_solving_random": c.attack_equation_solving_random,
    "equation_solving_axis": c.attack_equation_solving_axis,
    "jacobian_augmentation": c.attack_jacobian,
    "random_perturbation": c.attack_random_perturbation,
    "off_distribution": c.attack_off_distribution,
}


@dataclass(frozen=True)
class Scale:
    victims: tuple[str, ...]
    benign_per_type: int
    chat: int
    eval_harness: int
    seed: int = 7
    horizon_s: float = 4 * 3600.0

    @classmethod
    def full(cls, seed: int = 7) -> Scale:
        return cls(("iris", "wine", "breast_cancer", "digits"), benign_per_type=13, chat=40, eval_harness=20,
                   seed=seed)

    @classmethod
    def small(cls, seed: int = 11) -> Scale:
        return cls(("iris", "breast_cancer"), benign_per_type=4, chat=8, eval_harness=4, seed=seed,
                   horizon_s=2 * 3600.0)


@dataclass
class SimClient:
    name: str
    family: str  # benign | attack
    kind: str
    victim: TabularVictim | None
    ident: Identity
    route: str
    gen: c.ClientGen
    attack_id: str = ""
    sent: int = 0
    answered: int = 0
    first_detect: int | None = None
    first_throttle: int | None = None
    first_block: int | None = None
    X: list[np.ndarray] = field(default_factory=list)
    P: list[np.ndarray] = field(default_factory=list)
    biased_seen: set[int] = field(default_factory=set)
    tokens: int = 0


@dataclass
class Report:
    attacks: list[dict[str, Any]]
    benign: list[dict[str, Any]]
    requests: int

    def format(self) -> str:
        lines = ["attack                         victim          d  detected  first-detect  first-block"
                 "  answered  fidelity"]
        for a in self.attacks:
            lines.append(f"{a['attack']:30} {a['victim']:14} {a['d']:>3}  {a['detected']!s:8}  "
                         f"{a['first_detect']!s:>12}  {a['first_block']!s:>11}  {a['answered']:>8}  "
                         f"{a['fidelity']:.3f}")
        lines.append("")
        lines.append("benign type          clients  requests  false-blocks  upper95  throttled  flagged")
        for b in self.benign:
            lines.append(f"{b['type']:20} {b['clients']:>7}  {b['requests']:>8}  {b['false_blocks']:>12}  "
                         f"{b['upper95']:.4f}  {b['throttled']:>9}  {b['flagged']:>7}")
        return "\n".join(lines)


def upper95(k: int, n: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound of a rate with k events in n trials."""
    return 1.0 if n == 0 else float(beta.ppf(0.95, k + 1, n - k)) if k < n else 1.0


def run_simulation(scale: Scale, cfg: GuardConfig | None = None) -> Report:
    rng = np.random.default_rng(scale.seed)
    cfg = cfg or GuardConfig()
    now = [0.0]
    storage = MemoryStorage(max_keys=200_000, clock=lambda: now[0])
    guard = ExtractionGuard(cfg, storage)
    victims = {name: TabularVictim.load(name) for name in scale.victims}
    llm = LLMStub()
    t0 = 1_700_000_000.0
    population: list[tuple[float, SimClient]] = []
    counter = [0]

    def ip(shared: str | None = None) -> str:
        counter[0] += 1
        return shared or f"10.{counter[0] // 65536 % 256}.{counter[0] // 256 % 256}.{counter[0] % 256}"

    def add(family: str, kind: str, victim: TabularVictim | None, gen: c.ClientGen, start: float,
            client_ip: str | None = None, attack_id: str = "") -> None:
        name = f"{family}-{kind}-{len(population)}"
        route = victim.route if victim else LLMStub.route
        ident = Identity(client=f"consumer:{name}", group=f"ip:{client_ip or ip()}", credential=f"cred:{name}")
        population.append((t0 + start, SimClient(name, family, kind, victim, ident, route, gen, attack_id)))

    nat_ips: list[str] = []
    for v in victims.values():
        for kind, factory in c.BENIGN_NUMERIC.items():
            for _ in range(scale.benign_per_type):
                shared = None
                # one in five benign clients sits behind a NAT shared with other benign clients
                if rng.random() < 0.2:
                    if not nat_ips or rng.random() < 0.3:
                        nat_ips.append(ip())
                    shared = str(rng.choice(nat_ips))
                add("benign", kind, v, factory(v, np.random.default_rng(rng.integers(2**32))),
                    float(rng.uniform(0, scale.horizon_s)), shared)
    for _ in range(scale.chat):
        add("benign", "chat", None, c.benign_chat(np.random.default_rng(rng.integers(2**32))),
            float(rng.uniform(0, scale.horizon_s)))
    for _ in range(scale.eval_harness):
        add("benign", "eval_harness", None, c.benign_eval_harness(np.random.default_rng(rng.integers(2**32))),
            float(rng.uniform(0, scale.horizon_s)))

    def attack_start() -> float:
        return float(rng.uniform(0.35 * scale.horizon_s, 0.9 * scale.horizon_s))

    for v in victims.values():
        for name, factory in NUMERIC_ATTACKS.items():
            add("attack", name, v, factory(v, np.random.default_rng(rng.integers(2**32))), attack_start(),
                attack_id=f"{name}/{v.name}")
        slow = c.attack_random_perturbation(v, np.random.default_rng(rng.integers(2**32)), pace=600.0)
        add("attack", "slow_and_low", v, slow, float(rng.uniform(0.05, 0.3) * scale.horizon_s),
            attack_id=f"slow_and_low/{v.name}")
        shared_ip = ip()
        seeds = rng.choice(len(v.X), size=20, replace=False)
        for part in np.array_split(seeds, 4):
            gen = c.attack_random_perturbation(v, np.random.default_rng(rng.integers(2**32)), budget=75,
                                               seeds=part)
            add("attack", "split_keys", v, gen, attack_start(), shared_ip, attack_id=f"split_keys/{v.name}")
    add("attack", "logit_bias_sweep", None, c.attack_logit_bias_sweep(np.random.default_rng(1)), attack_start(),
        attack_id="logit_bias_sweep/llm")
    add("attack", "mass_distillation", None, c.attack_mass_distillation(np.random.default_rng(2)),
        attack_start(), attack_id="mass_distillation/llm")

    heap: list[tuple[float, int, SimClient, dict[str, Any]]] = []
    for seq, (start, client) in enumerate(population):
        delay, body = next(client.gen)
        heapq.heappush(heap, (start + delay, seq, client, body))
    seq = len(population)
    requests = 0
    while heap:
        t, _, client, body = heapq.heappop(heap)
        now[0] = t
        requests += 1
        client.sent += 1
        raw = json.dumps(body).encode()
        outcome = guard.check_access(client.ident, t, raw)
        answer: dict[str, Any] | None = None
        if outcome.status is not None:
            status = outcome.status
            if status in (401, 403) and client.first_block is None:
                client.first_block = client.sent
            if status == 429 and client.first_throttle is None:
                client.first_throttle = client.sent
            if client.first_detect is None:
                client.first_detect = client.sent
        else:
            status = 200
            if outcome.action == "flag" and client.first_detect is None:
                client.first_detect = client.sent
            if client.victim is not None:
                answer = client.victim.predict(body["instances"])
                client.X.extend(np.asarray(body["instances"], dtype=np.float64))
                client.P.extend(np.asarray(answer["predictions"], dtype=np.float64))
            else:
                answer = llm.complete(body)
                client.biased_seen.update(int(k) for k in body.get("logit_bias", {}))
                client.tokens += int(answer["usage"]["completion_tokens"])
            client.answered += 1
            answer_raw = json.dumps(answer).encode()
            tap = response_summary(answer_raw, cfg.max_rows_per_request)
            obs = build_observation(cfg, t, client.route, raw, request_size=len(raw),
                                    response_size=len(answer_raw), tap=tap)
            if guard.learn(client.ident, obs) and client.first_detect is None:
                client.first_detect = client.sent
        try:
            delay, nxt = client.gen.send((status, answer))
        except StopIteration:
            continue
        seq += 1
        heapq.heappush(heap, (t + delay, seq, client, nxt))
    return _report(population, requests)


def _report(population: list[tuple[float, SimClient]], requests: int) -> Report:
    by_attack: dict[str, list[SimClient]] = defaultdict(list)
    by_type: dict[str, list[SimClient]] = defaultdict(list)
    for _, cl in population:
        (by_attack[cl.attack_id] if cl.family == "attack" else by_type[cl.kind]).append(cl)
    attacks = []
    for attack_id, members in by_attack.items():
        name, victim_name = attack_id.split("/")
        v = members[0].victim
        # queries counted over all keys of a split attack, in the order each key sent them
        blocks = [m.first_block for m in members if m.first_block is not None]
        detects = [m.first_detect for m in members if m.first_detect is not None]
        answered = sum(m.answered for m in members)
        if v is not None:
            X = np.asarray([x for m in members for x in m.X]).reshape(-1, v.dim)
            P = np.asarray([p for m in members for p in m.P]).reshape(len(X), -1)
            fidelity = surrogate_fidelity(v, X, P)
            d = v.dim
        elif name == "logit_bias_sweep":
            fidelity = len(set().union(*(m.biased_seen for m in members))) / 4096
            d = 0
        else:
            fidelity = sum(m.tokens for m in members) / (1500 * 400)
            d = 0
        attacks.append({
            "attack": name, "victim": victim_name, "d": d, "detected": bool(detects or blocks),
            "first_detect": min(detects) if detects else None,
            "first_block": min(blocks) if blocks else None,
            "blocked_keys": f"{len(blocks)}/{len(members)}", "answered": answered, "fidelity": fidelity,
        })
    benign = []
    for kind, members in sorted(by_type.items()):
        fb = sum(1 for m in members if m.first_block is not None)
        benign.append({
            "type": kind, "clients": len(members), "requests": sum(m.sent for m in members),
            "false_blocks": fb, "upper95": upper95(fb, len(members)),
            "throttled": sum(1 for m in members if m.first_throttle is not None),
            "flagged": sum(1 for m in members if m.first_detect is not None),
        })
    total = sum(b["clients"] for b in benign)
    fb_total = sum(b["false_blocks"] for b in benign)
    benign.append({"type": "ALL", "clients": total, "requests": sum(b["requests"] for b in benign),
                   "false_blocks": fb_total, "upper95": upper95(fb_total, total),
                   "throttled": sum(b["throttled"] for b in benign), "flagged": sum(b["flagged"] for b in benign)})
    return Report(attacks, benign, requests)
