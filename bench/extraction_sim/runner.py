"""The event loop: simulated time, every request through ``ExtractionGuard`` as the plugin runs it.

Each client is a generator on its own simulated clock; a heap interleaves all of them, so route
baselines learn from the benign crowd while attacks run, and one attack split across keys shares
its IP group with nobody but itself. Each request is decided by ``check_access`` (the access
phase) and, when answered, learned by ``learn`` from ``build_observation`` and the response tap's
``response_summary`` (the log phase) -- the plugin's own code on a memory storage whose clock is
the simulated request time.
"""

from __future__ import annotations

import heapq
import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import beta

from kong_plugins.extraction_guard.config import GuardConfig
from kong_plugins.extraction_guard.guard import ExtractionGuard, Identity, build_observation
from kong_plugins.extraction_guard.payloads import response_summary
from kong_plugins.storage import MemoryStorage

from . import clients as c
from .victims import VOCAB, LLMStub, TabularVictim, surrogate_fidelity

NUMERIC_ATTACKS: dict[str, Callable[[TabularVictim, np.random.Generator], c.ClientGen]] = {
    "equation_solving_random": c.attack_equation_solving_random,
    "equation_solving_axis": c.attack_equation_solving_axis,
    "jacobian_augmentation": c.attack_jacobian,
    "random_perturbation": c.attack_random_perturbation,
    "off_distribution": c.attack_off_distribution,
}
EQUATION_SOLVING = ("equation_solving_random", "equation_solving_axis")
#: The issue's goals: the logit-bias sweep refused within this many requests; false blocks bound.
SWEEP_GOAL_REQUESTS = 50
FALSE_BLOCK_BOUND = 0.01


@dataclass(frozen=True)
class Scale:
    """How big a run is. ``benign_per_type`` numeric clients of each type are spread over the victims."""

    victims: tuple[str, ...]
    benign_per_type: int
    chat: int
    eval_harness: int
    attack_repeats: int
    seed: int = 7
    horizon_s: float = 4 * 3600.0
    #: Also run each numeric attack rounded to the data's precision (beyond the issue's list).
    adaptive: bool = True

    @classmethod
    def full(cls, seed: int = 7) -> Scale:
        # 300 clients of every benign type: zero false blocks then bounds each type's rate below 1%.
        return cls(("iris", "wine", "breast_cancer", "digits"), benign_per_type=300, chat=300, eval_harness=300,
                   attack_repeats=5, seed=seed)

    @classmethod
    def small(cls, seed: int = 11) -> Scale:
        return cls(("iris", "breast_cancer"), benign_per_type=16, chat=16, eval_harness=8, attack_repeats=1,
                   seed=seed, horizon_s=2 * 3600.0, adaptive=False)


@dataclass
class AttackRun:
    """One instance of an attack; a split attack has several keys (clients) sharing one run."""

    name: str
    victim: TabularVictim | None
    budget: int = 0
    adaptive: bool = False
    sent: int = 0
    answered: int = 0
    first_detect: int | None = None
    first_block: int | None = None
    X: list[np.ndarray] = field(default_factory=list)
    P: list[np.ndarray] = field(default_factory=list)
    biased_seen: set[int] = field(default_factory=set)


@dataclass
class SimClient:
    name: str
    kind: str
    victim: TabularVictim | None
    ident: Identity
    route: str
    gen: c.ClientGen
    run: AttackRun | None = None
    sent: int = 0
    blocked: bool = False
    throttled: bool = False
    flagged: bool = False


@dataclass
class Report:
    attacks: list[dict[str, Any]]
    benign: list[dict[str, Any]]
    requests: int

    def goals(self) -> dict[str, bool]:
        """The issue's quality goals, each True when met by this run."""
        listed = [a for a in self.attacks if not a["adaptive"]]
        eq = [a for a in listed if a["attack"] in EQUATION_SOLVING]
        sweep = [a for a in listed if a["attack"] == "logit_bias_sweep"]
        total = next(b for b in self.benign if b["type"] == "ALL")
        per_type = [b for b in self.benign if b["type"] != "ALL"]
        return {
            "every attack run blocked": all(a["blocked"] == a["runs"] for a in listed),
            "equation-solving blocked before d+1 answers": bool(eq) and all(
                a["answered_max"] is not None and a["answered_max"] < a["d"] + 1 for a in eq),
            f"logit-bias sweep blocked within {SWEEP_GOAL_REQUESTS} requests": bool(sweep) and all(
                a["first_block_max"] is not None and a["first_block_max"] <= SWEEP_GOAL_REQUESTS for a in sweep),
            "zero false blocks": total["false_blocks"] == 0,
            "all benign clients: upper95 <= 1%": total["upper95"] <= FALSE_BLOCK_BOUND,
            "every benign type: upper95 <= 1%": all(b["upper95"] <= FALSE_BLOCK_BOUND for b in per_type),
        }

    def format(self) -> str:
        lines = ["attack                       victim          d runs blocked  first-block   answered     fidelity"
                 "       yield-meaning",
                 "                                                           med   max   med   max    med    max"]
        header = False
        for a in sorted(self.attacks, key=lambda a: a["adaptive"]):
            if a["adaptive"] and not header:
                header = True
                lines.append("adaptive attackers (beyond the issue's list): the same queries rounded to the data's "
                             "own precision")
            lines.append(
                f"{a['attack']:28} {a['victim']:14} {a['d']:>3} {a['runs']:>4} {a['blocked']:>3}/{a['runs']:<3} "
                f"{_n(a['first_block_med']):>5} {_n(a['first_block_max']):>5} {_n(a['answered_med']):>5} "
                f"{_n(a['answered_max']):>5}  {a['fidelity_med']:.3f}  {a['fidelity_max']:.3f}  {a['meaning']}")
        lines += ["", "benign type          clients  requests  false-blocks  upper95  throttled  flagged"]
        for b in self.benign:
            lines.append(f"{b['type']:20} {b['clients']:>7}  {b['requests']:>8}  {b['false_blocks']:>12}  "
                         f"{b['upper95']:.4f}  {b['throttled']:>9}  {b['flagged']:>7}")
        lines += ["", "goals"]
        lines += [f"  {'met' if ok else 'MISSED':6} {goal}" for goal, ok in self.goals().items()]
        return "\n".join(lines)


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def upper95(k: int, n: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound of a rate with k events in n trials."""
    if n == 0:
        return 1.0
    return float(beta.ppf(0.95, k + 1, n - k)) if k < n else 1.0


def run_simulation(scale: Scale, cfg: GuardConfig | None = None) -> Report:
    rng = np.random.default_rng(scale.seed)
    cfg = cfg or GuardConfig()
    now = [0.0]
    storage = MemoryStorage(max_keys=1_000_000, clock=lambda: now[0])
    guard = ExtractionGuard(cfg, storage)
    victims = {name: TabularVictim.load(name) for name in scale.victims}
    llm = LLMStub()
    t0 = 1_700_000_000.0
    population: list[tuple[float, SimClient]] = []
    runs: list[AttackRun] = []
    counter = [0]

    def new_ip() -> str:
        counter[0] += 1
        return f"10.{counter[0] // 65536 % 256}.{counter[0] // 256 % 256}.{counter[0] % 256}"

    def seeded() -> np.random.Generator:
        return np.random.default_rng(rng.integers(2**32))

    def add(kind: str, victim: TabularVictim | None, gen: c.ClientGen, start: float,
            client_ip: str | None = None, run: AttackRun | None = None) -> None:
        name = f"{'attack' if run else 'benign'}-{kind}-{len(population)}"
        route = victim.route if victim else LLMStub.route
        ident = Identity(client=f"consumer:{name}", group=f"ip:{client_ip or new_ip()}", credential=f"cred:{name}")
        population.append((t0 + start, SimClient(name, kind, victim, ident, route, gen, run)))

    def benign_start() -> float:
        return float(rng.uniform(0, scale.horizon_s))

    nat_ips: list[str] = []
    vlist = list(victims.values())
    for kind, factory in c.BENIGN_NUMERIC.items():
        for i in range(scale.benign_per_type):
            v = vlist[i % len(vlist)]
            shared = None
            # one in five benign clients sits behind a NAT shared with other benign clients
            if rng.random() < 0.2:
                if not nat_ips or rng.random() < 0.3:
                    nat_ips.append(new_ip())
                shared = str(rng.choice(nat_ips))
            add(kind, v, factory(v, seeded()), benign_start(), shared)
    for _ in range(scale.chat):
        add("chat", None, c.benign_chat(seeded()), benign_start())
    for _ in range(scale.eval_harness):
        add("eval_harness", None, c.benign_eval_harness(seeded()), benign_start())

    def attack_start() -> float:
        return float(rng.uniform(0.35 * scale.horizon_s, 0.9 * scale.horizon_s))

    def new_run(name: str, victim: TabularVictim | None, budget: int = 0, adaptive: bool = False) -> AttackRun:
        run = AttackRun(name, victim, budget, adaptive)
        runs.append(run)
        return run

    for _ in range(scale.attack_repeats):
        for v in victims.values():
            for name, factory in NUMERIC_ATTACKS.items():
                add(name, v, factory(v, seeded()), attack_start(), run=new_run(name, v))
                if scale.adaptive:
                    gen = c.on_grid(factory(v, seeded()), c.data_decimals(v.X))
                    add(name, v, gen, attack_start(), run=new_run(f"{name}+grid", v, adaptive=True))
            # slow-and-low: the perturbation attack at one query per 10 minutes, for two days
            add("slow_and_low", v, c.attack_random_perturbation(v, seeded(), pace=600.0),
                float(rng.uniform(0.05, 0.3) * scale.horizon_s), run=new_run("slow_and_low", v))
            # one attack split across four keys from one IP, each key with a quarter of the seeds
            shared_ip = new_ip()
            seeds = rng.choice(len(v.X), size=20, replace=False)
            run = new_run("split_keys", v)
            start = attack_start()
            for part in np.array_split(seeds, 4):
                add("split_keys", v, c.attack_random_perturbation(v, seeded(), budget=75, seeds=part),
                    start + float(rng.uniform(0, 60)), shared_ip, run=run)
        add("logit_bias_sweep", None, c.attack_logit_bias_sweep(seeded()), attack_start(),
            run=new_run("logit_bias_sweep", None, budget=VOCAB))
        add("mass_distillation", None, c.attack_mass_distillation(seeded(), budget=c.DISTILLATION_BUDGET),
            attack_start(), run=new_run("mass_distillation", None, budget=c.DISTILLATION_BUDGET))

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
        run = client.run
        if run is not None:
            run.sent += 1  # queries of a split attack counted over all its keys, in time order
        raw = json.dumps(body).encode()
        outcome = guard.check_access(client.ident, t, raw)
        answer: dict[str, Any] | None = None
        status = outcome.status or 200
        if outcome.status is not None:
            if status in (401, 403):
                client.blocked = True
                if run is not None and run.first_block is None:
                    run.first_block = run.sent
            if status == 429:
                client.throttled = True
        if outcome.action in ("flag", "throttle", "block", "revoke"):
            client.flagged = True
            if run is not None and run.first_detect is None:
                run.first_detect = run.sent
        if outcome.status is None:
            if client.victim is not None:
                answer = client.victim.predict(body["instances"])
                if run is not None:
                    run.X.extend(np.asarray(body["instances"], dtype=np.float64))
                    run.P.extend(np.asarray(answer["predictions"], dtype=np.float64))
            else:
                answer = llm.complete(body)
                if run is not None:
                    run.biased_seen.update(int(k) for k in body.get("logit_bias", {}))
            if run is not None:
                run.answered += 1
            answer_raw = json.dumps(answer).encode()
            tap = response_summary(answer_raw, cfg.max_rows_per_request)
            obs = build_observation(cfg, t, client.route, raw, request_size=len(raw),
                                    response_size=len(answer_raw), tap=tap)
            if guard.learn(client.ident, obs):
                client.flagged = True
                if run is not None and run.first_detect is None:
                    run.first_detect = run.sent
        elif status == 429:
            # the plugin's log phase learns a throttled request too (the access phase handed it over)
            obs = build_observation(cfg, t, client.route, raw, request_size=len(raw))
            guard.learn(client.ident, obs)
        try:
            delay, nxt = client.gen.send((status, answer))
        except StopIteration:
            continue
        seq += 1
        heapq.heappush(heap, (t + delay, seq, client, nxt))
    return _report(population, runs, requests)


def _fidelity(run: AttackRun) -> tuple[float, str]:
    """How much of the victim the attacker obtained before it was blocked (and what that means)."""
    v = run.victim
    if v is not None:
        X = np.asarray(run.X).reshape(-1, v.dim)
        P = np.asarray(run.P).reshape(len(X), -1)
        return surrogate_fidelity(v, X, P), "surrogate label agreement"
    if run.name == "logit_bias_sweep":
        return len(run.biased_seen) / VOCAB, "vocabulary logits recovered"
    return run.answered / max(1, run.budget), "planned corpus answered"


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def _report(population: list[tuple[float, SimClient]], runs: list[AttackRun], requests: int) -> Report:
    groups: dict[tuple[str, str], list[AttackRun]] = defaultdict(list)
    for run in runs:
        groups[(run.name, run.victim.name if run.victim else "llm")].append(run)
    attacks = []
    for (name, victim_name), members in groups.items():
        blocks = [r.first_block for r in members if r.first_block is not None]
        answered = [r.answered for r in members]
        fid = [_fidelity(r) for r in members]
        v = members[0].victim
        attacks.append({
            "attack": name, "victim": victim_name, "d": v.dim if v else 0, "runs": len(members),
            "adaptive": members[0].adaptive,
            "detected": sum(1 for r in members if r.first_detect is not None or r.first_block is not None),
            "blocked": len(blocks),
            "first_detect_med": _median([r.first_detect for r in members if r.first_detect is not None]),
            "first_block_med": _median(blocks), "first_block_max": max(blocks) if len(blocks) == len(members) else None,
            "answered_med": _median(answered), "answered_max": max(answered),
            "fidelity_med": statistics.median(f for f, _ in fid), "fidelity_max": max(f for f, _ in fid),
            "meaning": fid[0][1],
        })
    by_type: dict[str, list[SimClient]] = defaultdict(list)
    for _, cl in population:
        if cl.run is None:
            by_type[cl.kind].append(cl)
    benign = []
    for kind, members in sorted(by_type.items()):
        fb = sum(1 for m in members if m.blocked)
        benign.append({
            "type": kind, "clients": len(members), "requests": sum(m.sent for m in members),
            "false_blocks": fb, "upper95": upper95(fb, len(members)),
            "throttled": sum(1 for m in members if m.throttled),
            "flagged": sum(1 for m in members if m.flagged),
        })
    total = sum(b["clients"] for b in benign)
    fb_total = sum(b["false_blocks"] for b in benign)
    benign.append({"type": "ALL", "clients": total, "requests": sum(b["requests"] for b in benign),
                   "false_blocks": fb_total, "upper95": upper95(fb_total, total),
                   "throttled": sum(b["throttled"] for b in benign), "flagged": sum(b["flagged"] for b in benign)})
    return Report(attacks, benign, requests)


__all__ = ["Report", "Scale", "run_simulation", "upper95"]
