"""The synthetic benchmark: deterministic, split without leakage, canonical solutions pass, bugs fail."""

from __future__ import annotations

import pytest

from rl.execution.sandbox import Sandbox
from rl.tasks.synthetic import HELDOUT_ONLY, TEMPLATES, make_benchmark, split_of, template_of


@pytest.fixture(scope="module")
def bench():
    return make_benchmark(seed=3, n_train_per_template=6, n_heldout_per_template=3)


def test_sizes_and_ids(bench):
    n_trained = len(TEMPLATES) - len(HELDOUT_ONLY)
    assert len(bench.train) == 6 * n_trained
    assert len(bench.heldout) == 3 * len(TEMPLATES)
    ids = [p.task_id for p in bench.train + bench.heldout]
    assert len(set(ids)) == len(ids)
    assert {split_of(i) for i in ids} == {"train", "heldout"}
    assert {template_of(p.task_id) for p in bench.train}.isdisjoint(HELDOUT_ONLY)
    assert set(HELDOUT_ONLY) <= {template_of(p.task_id) for p in bench.heldout}
    with pytest.raises(ValueError, match="not a synthetic task id"):
        template_of("HumanEval/0")


def test_deterministic_by_seed(bench):
    again = make_benchmark(seed=3, n_train_per_template=6, n_heldout_per_template=3)
    assert [(p.task_id, p.prompt, p.tests) for p in again.train + again.heldout] == [
        (p.task_id, p.prompt, p.tests) for p in bench.train + bench.heldout
    ]
    other = make_benchmark(seed=4, n_train_per_template=6, n_heldout_per_template=3)
    assert [p.prompt for p in other.train] != [p.prompt for p in bench.train]


def test_heldout_constants_never_in_training(bench):
    multi = {t.name for t in TEMPLATES if len(t.consts) > 1}
    assert {"mul_add", "replace_char", "sub_mul"} <= multi
    for p in bench.train:
        held = bench.heldout_combos[template_of(p.task_id)]
        assert bench.consts[p.task_id] not in held, p.task_id
    for p in bench.heldout:
        t = template_of(p.task_id)
        if t in multi or t in HELDOUT_ONLY:
            assert bench.consts[p.task_id] in bench.heldout_combos[t]
        else:
            assert bench.heldout_combos[t] == []
    train_tests = {p.tests for p in bench.train}
    assert not any(p.tests in train_tests for p in bench.heldout)
    strict = make_benchmark(seed=3, n_train_per_template=6, n_heldout_per_template=3, hold_single=True)
    for p in strict.train:
        assert strict.consts[p.task_id] not in strict.heldout_combos[template_of(p.task_id)]
    assert all(strict.consts[p.task_id] in strict.heldout_combos[template_of(p.task_id)] for p in strict.heldout)


def test_prompt_shape(bench):
    p = bench.train[0]
    lines = p.prompt.splitlines()
    assert lines[0].startswith("# ") and lines[1].startswith("# f(") and lines[2].startswith("# f(")
    assert lines[3].startswith("def f(") and p.prompt.endswith("):\n")
    # the two shown examples are the first two tests
    assert lines[1][2:] == p.tests[0][len("assert ") :]
    assert p.program(p.canonical_solution) == p.prompt + p.canonical_solution


def test_canonical_pass_and_bugs_fail_in_sandbox(bench):
    problems = bench.train + bench.heldout
    bug_jobs = [(p, b) for p in problems for b in bench.buggy_completions(p)]
    with Sandbox(workers=2) as sb:
        canon = sb.map([p.job(p.canonical_solution) for p in problems])
        bugs = sb.map([p.job(b) for p, b in bug_jobs])
    bad = [(p.task_id, r.status, r.message) for p, r in zip(problems, canon) if r.status != "passed"]
    assert bad == []
    # every bug changes exactly one line of the canonical body
    for p, b in bug_jobs:
        diff = [i for i, (x, y) in enumerate(zip(p.canonical_solution.splitlines(), b.splitlines())) if x != y]
        assert len(diff) == 1 and len(b.splitlines()) == len(p.canonical_solution.splitlines()), (p.task_id, b)
    fail_rate = sum(r.status != "passed" for r in bugs) / len(bugs)
    assert fail_rate >= 0.9, fail_rate


def test_sft_mix_follows_bug_rates():
    b = make_benchmark(seed=0, n_train_per_template=10, n_heldout_per_template=1)
    ex = b.sft_texts(4000, seed=1, eos="<e>")
    assert all(c.endswith("<e>") for _, c, _ in ex)
    wrong = sum(not ok for _, _, ok in ex) / len(ex)
    rates = [t.bug_rate for t in TEMPLATES if t.name not in HELDOUT_ONLY]
    assert abs(wrong - sum(rates) / len(rates)) < 0.03
