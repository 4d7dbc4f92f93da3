"""The quality simulation (bench/extraction_sim) in its reduced form: the issue's goals at this scale.

The full run (``cd bench && python3 -m extraction_sim``, 2,100 benign clients) is what bounds the
false-block rate below 1%; here 104 benign clients of every type and one run of every attack on
two victims go through the plugin's own decision code in ~15 s, and every goal that does not need
the full population's statistics is asserted: every attack blocked, equation-solving before d+1
answers, the logit-bias sweep within 50 requests, not one benign client blocked.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from extraction_sim import Report, Scale, run_simulation
from extraction_sim.clients import BENIGN_NUMERIC
from extraction_sim.runner import NUMERIC_ATTACKS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ISSUE_ATTACKS = {*NUMERIC_ATTACKS, "slow_and_low", "split_keys", "logit_bias_sweep", "mass_distillation"}
ISSUE_BENIGN = {*BENIGN_NUMERIC, "chat", "eval_harness"}


@pytest.fixture(scope="module")
def report() -> Report:
    return run_simulation(Scale.small())


def test_every_listed_attack_and_benign_type_is_simulated(report: Report) -> None:
    assert {a["attack"] for a in report.attacks} == ISSUE_ATTACKS
    assert {b["type"] for b in report.benign} == {*ISSUE_BENIGN, "ALL"}
    assert all(b["clients"] >= 8 for b in report.benign)


def test_every_attack_run_is_blocked(report: Report) -> None:
    missed = [(a["attack"], a["victim"]) for a in report.attacks if a["blocked"] != a["runs"]]
    assert not missed, report.format()


def test_equation_solving_is_blocked_before_d_plus_1_answers(report: Report) -> None:
    for a in report.attacks:
        if a["attack"].startswith("equation_solving"):
            assert a["answered_max"] < a["d"] + 1, report.format()


def test_logit_bias_sweep_is_blocked_within_50_requests(report: Report) -> None:
    sweep = next(a for a in report.attacks if a["attack"] == "logit_bias_sweep")
    assert sweep["first_block_max"] is not None and sweep["first_block_max"] <= 50, report.format()


def test_no_benign_client_is_blocked(report: Report) -> None:
    total = next(b for b in report.benign if b["type"] == "ALL")
    assert total["false_blocks"] == 0, report.format()
    # the statistic the full run reports: zero false blocks over n clients bounds the rate at ~3/n
    assert total["upper95"] == pytest.approx(1 - 0.05 ** (1 / total["clients"]), rel=1e-6)


def test_the_report_names_what_each_attacker_obtained(report: Report) -> None:
    text = report.format()
    for column in ("first-block", "answered", "fidelity", "false-blocks", "upper95"):
        assert column in text
    eq = next(a for a in report.attacks if a["attack"] == "equation_solving_random" and a["victim"] == "breast_cancer")
    # fewer than d+1 answers: the equation-solving surrogate is no better than guessing a class
    assert eq["fidelity_max"] < 0.8
