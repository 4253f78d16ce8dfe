"""Adaptive vote allocation in the RL crowd pipeline (``allocation = "adaptive"``: rounds of ``crowdstat next``)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rl.crowd.pipeline import CrowdRewarder, Scored
from rl.crowd.population import parse_population, simulate_reviews

POP = "expert:2@0.9,novice:3@0.7,spammer:1,adversary:1@0.2"


def test_simulate_reviews_votes_at_the_annotators_rates():
    pop = parse_population(POP)
    truth = np.where(np.random.default_rng(0).random(4000) < 0.6, 1, -1)
    progs = {"p": (list(range(1, 4001)), truth.tolist())}
    rows = simulate_reviews(progs, [("p", "expert01"), ("p", "adversary01")], pop, np.random.default_rng(1))
    assert len(rows) == 8000
    got = np.array([r[3] for r in rows]).reshape(2, -1)
    agree = (got == truth[None, :]).mean(axis=1)
    assert agree[0] == pytest.approx(0.9, abs=0.02) and agree[1] == pytest.approx(0.2, abs=0.02)
    with pytest.raises(ValueError, match="unknown annotator 'nobody'"):
        simulate_reviews(progs, [("p", "nobody")], pop, np.random.default_rng(1))
    with pytest.raises(ValueError, match="unknown program 'q'"):
        simulate_reviews(progs, [("q", "expert01")], pop, np.random.default_rng(1))


def _scored(n=16, k=5, seed=3):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        buggy = rng.random() < 0.5
        truths = [(ln, not (buggy and rng.random() < 0.4)) for ln in range(1, k + 1)]
        out.append(Scored(f"prog{i:02d}", f"synth/train/{i}", not buggy, 0.0, False, truths))
    return out


def _in_process(rw, monkeypatch):
    """``crowdstat next`` through its main() in this process (the pipeline runs it in a subprocess, which
    the slow test below keeps): no interpreter start and one compilation per round shape."""
    from crowdstat.cli import main

    def run(args, votes):
        assert main(args) == 0, args

    monkeypatch.setattr(rw, "_crowdstat", run)


@pytest.mark.parametrize("subprocess", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_adaptive_rounds_spend_the_budget_where_undecided(tmp_path, monkeypatch, subprocess):
    scored = _scored()
    rw = CrowdRewarder("em1", tmp_path, population=POP, allocation="adaptive", vote_budget=3, honeypot_fraction=0.2, seed=5)
    if not subprocess:
        _in_process(rw, monkeypatch)
    d = tmp_path / "t0"
    d.mkdir()
    info: dict = {}
    votes_file, truth_file = rw._simulate_adaptive(scored, "t0", d, info)
    with open(votes_file, newline="") as f:
        rows = list(csv.DictReader(f))
    reviews = {(r["program"], r["annotator"]) for r in rows}
    a = info["allocation"]
    assert a["reviews"] == len(reviews) <= a["budget"] == 3 * len(scored) and a["rounds"] >= 1
    per_program = np.bincount([int(p[4:]) for p, _ in reviews], minlength=len(scored))
    assert per_program.min() >= 1 and per_program.max() > per_program.min()  # not uniform
    # every review covers all lines of its program, once
    assert len(rows) == 5 * len(reviews)
    assert (d / "next" / "round00" / "next.csv").exists()


def test_bad_allocation_settings(tmp_path):
    with pytest.raises(ValueError, match="allocation must be one of"):
        CrowdRewarder("em1", tmp_path, population=POP, allocation="greedy")
    with pytest.raises(ValueError, match="vote_budget"):
        CrowdRewarder("em1", tmp_path, population=POP, allocation="adaptive", vote_budget=0.5)
    from rl.config import LoopConfig

    with pytest.raises(ValueError, match="needs annotate 'simulate'"):
        LoopConfig(allocation="adaptive", annotate="pause")
    with pytest.raises(ValueError, match="vote_budget must be between 1 and the population size"):
        LoopConfig(allocation="adaptive", vote_budget=99)
