"""rl.crowd.population: the spec syntax, vote rates, assignment, determinism."""

import json

import numpy as np
import pytest

from rl.crowd import population as pop

SPEC = "expert:3@0.95,novice:4@0.7,spammer:2,adversary:1@0.3,twocoin:2@0.9/0.6,lazy:1@0.8"


def test_parse_compact_spec():
    p = pop.parse_population(SPEC)
    assert len(p) == 13
    ids = [a.id for a in p.annotators]
    assert ids[:3] == ["expert01", "expert02", "expert03"] and ids[-1] == "lazy01"
    assert len(set(ids)) == 13
    by = {a.id: a for a in p.annotators}
    assert (by["novice04"].sensitivity, by["novice04"].specificity, by["novice04"].p) == (0.7, 0.7, 0.7)
    assert (by["spammer02"].sensitivity, by["spammer02"].specificity) == (0.5, 0.5)
    assert (by["adversary01"].sensitivity, by["adversary01"].p) == (0.3, 0.3)
    assert (by["twocoin01"].sensitivity, by["twocoin01"].specificity, by["twocoin01"].p) == (0.9, 0.6, None)
    # sensitivity = P(vote +1 | correct), specificity = P(vote -1 | wrong): lazy a -> (1, 1 - a)
    assert (by["lazy01"].sensitivity, by["lazy01"].specificity) == (1.0, 0.2)
    # defaults and count 1
    d = pop.parse_population("expert, novice:2, adversary, lazy, spammer@0.8")
    assert [(a.id, a.sensitivity, a.specificity) for a in d.annotators] == [
        ("expert01", 0.95, 0.95),
        ("novice01", 0.7, 0.7),
        ("novice02", 0.7, 0.7),
        ("adversary01", 0.3, 0.3),
        ("lazy01", 1.0, 0.5),
        ("spammer01", 0.8, 0.2),
    ]
    assert p.spec == "expert:3@0.95,novice:4@0.7,spammer:2@0.5,adversary:1@0.3,twocoin:2@0.9/0.6,lazy:1@0.8"


def test_parse_json_string_and_file(tmp_path):
    items = [{"kind": "onecoin", "count": 2, "p": 0.8}, {"kind": "twocoin", "sensitivity": 0.7, "specificity": 0.9}]
    a = pop.parse_population(json.dumps(items))
    f = tmp_path / "crowd.json"
    f.write_text(json.dumps(items))
    b = pop.parse_population(str(f))
    c = pop.parse_population("onecoin:2@0.8,twocoin@0.7/0.9")
    assert a.annotators == b.annotators == c.annotators
    assert a.spec == b.spec == c.spec == "onecoin:2@0.8,twocoin:1@0.7/0.9"
    d = pop.parse_population("twocoin")  # the default of the one grammar
    assert (d.annotators[0].sensitivity, d.annotators[0].specificity) == (0.9, 0.6)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("wizard:2@0.9", r"entry 1 \('wizard:2@0.9'\): unknown annotator kind 'wizard'"),
        ("expert:3@0.95,adversary:1@0.6", r"entry 2 .*an adversary has p < 0.5, got 0.6"),
        ("twocoin:2@0.9", r"entry 1 .*twocoin params are sensitivity/specificity"),
        ("twocoin:2@0.9/", r"sensitivity must be a number in \[0, 1\], got ''|specificity must be a number in \[0, 1\], got ''"),
        ('[{"kind": "twocoin", "sensitivity": 0.9}]', r"twocoin needs both sensitivity and specificity"),
        ("expert:2,novice:1@0.7~0.01", r"entry 2 \('novice:1@0.7~0.01'\): fatigue \(~decay\) is not supported by the rl simulator"),
        ("onecoin:2", r"onecoin needs p"),
        ("novice:2@1.3", r"p must be in \[0, 1\], got '1.3'"),
        ("novice:0@0.7", r"count must be a positive integer, got 0"),
        ("novice:2@abc", r"p must be a number in \[0, 1\]"),
        ("expert:3:4", r"expected kind\[:count\]\[@params\]"),
        ("", r"empty population spec"),
        ('[{"kind": "expert", "count": 2, "reliability": 0.9}]', r"population JSON: entry 0: unknown field\(s\) \['reliability'\]"),
        ("[1, 2", r"population JSON does not parse"),
        ("nowhere/crowd.json", r"population file nowhere/crowd.json not found"),
    ],
)
def test_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        pop.parse_population(spec)


def test_vote_rates_match_sensitivity_and_specificity():
    p = pop.parse_population("expert@0.9,adversary@0.2,spammer,twocoin@0.8/0.6,lazy@0.7")
    rng = np.random.default_rng(3)
    n = 4000
    truth = np.where(rng.random(n) < 0.3, -1, 1)
    progs = [(f"p{i}", list(range(1, 11)), truth[i * 10 : (i + 1) * 10].tolist()) for i in range(n // 10)]
    rows, seen = pop.simulate(progs, p, np.random.default_rng(11))
    assert len(rows) == n * len(p)
    t = {(r[0], r[1]): tv for (pid, lines, tr) in progs for r, tv in zip([(pid, ln) for ln in lines], tr)}
    stats = {}
    for pid, ln, a, lab in rows:
        tv = t[(pid, ln)]
        s = stats.setdefault((a, tv), [0, 0])
        s[0] += lab == tv
        s[1] += 1
    n_w, n_c = int((truth == -1).sum()), int((truth == 1).sum())
    for a in p.annotators:
        assert seen[a.id] == (n_w, n_c)
        for tv, want in ((1, a.sensitivity), (-1, a.specificity)):  # P(+1 | correct), P(-1 | wrong)
            k, m = stats[(a.id, tv)]
            sd = np.sqrt(want * (1 - want) / m) if 0 < want < 1 else 0.0
            assert abs(k / m - want) <= 4 * sd + 1e-12, (a.id, tv, k / m, want)
    # a lazy rater never calls a correct line wrong
    assert stats[("lazy01", 1)][0] == stats[("lazy01", 1)][1]


def test_assignment_and_determinism():
    p = pop.parse_population("expert:3@0.95,novice:4@0.7")
    progs = [(f"p{i}", [2, 5, 9], [1, -1, 1]) for i in range(50)]
    r1, seen = pop.simulate(progs, p, np.random.default_rng(0), per_program=3)
    r2, _ = pop.simulate(progs, p, np.random.default_rng(0), per_program=3)
    r3, _ = pop.simulate(progs, p, np.random.default_rng(1), per_program=3)
    assert r1 == r2 and r1 != r3
    by_prog = {}
    for pid, ln, a, _ in r1:
        by_prog.setdefault(pid, {}).setdefault(ln, []).append(a)
    for per_line in by_prog.values():
        assert sorted(per_line) == [2, 5, 9]
        sets = {tuple(v) for v in per_line.values()}
        assert len(sets) == 1 and len(next(iter(sets))) == 3  # the same 3 annotators label every line
    assert sum(sum(v) for v in seen.values()) == 50 * 3 * 3
    # every annotator gets work over 50 programs
    assert all(sum(v) > 0 for v in seen.values())
    with pytest.raises(ValueError, match="per_program must be between 1 and the population size 7, got 8"):
        pop.simulate(progs, p, np.random.default_rng(0), per_program=8)
    with pytest.raises(ValueError, match=r"program 'q': truth must be \+1/-1, got \[0, 1\]"):
        pop.simulate([("q", [1, 2], [1, 0])], p, np.random.default_rng(0))


def test_realised_reliability():
    p = pop.parse_population("novice@0.7,twocoin@0.9/0.6,lazy@0.5")
    nov, two, lazy = p.annotators
    assert pop.realised_reliability(nov, 3, 7) == 0.7
    # 2 wrong lines (specificity 0.6), 8 correct ones (sensitivity 0.9)
    assert pop.realised_reliability(two, 2, 8) == pytest.approx((8 * 0.9 + 2 * 0.6) / 10, abs=0, rel=1e-15)
    assert pop.realised_reliability(lazy, 0, 0) == 0.75


def test_examples_rater_accepts_programs_whose_shown_examples_pass():
    p = pop.parse_population("examples:1@0.9,expert:1@0.9")
    ex, expert = p.annotators
    assert (ex.kind, ex.sensitivity, ex.specificity, ex.p) == ("examples", 0.9, 0.9, None)
    assert pop.parse_population("examples").annotators[0].sensitivity == 0.9  # default p
    truth = [-1, 1] * 1000
    lines = list(range(1, 2001))
    shown, _ = pop.simulate([("a", lines, truth, True)], p, np.random.default_rng(5))
    hidden, _ = pop.simulate([("a", lines, truth, False)], p, np.random.default_rng(5))
    three, _ = pop.simulate([("a", lines, truth)], p, np.random.default_rng(5))
    assert hidden == three  # shown_pass defaults to False
    ex_shown = [lab for _, _, a, lab in shown if a == "examples01"]
    assert ex_shown == [1] * 2000  # approves every line, the wrong ones too
    acc = np.mean([lab == t for (_, ln, a, lab) in hidden if a == "examples01" for t in [truth[ln - 1]]])
    assert abs(acc - 0.9) < 0.03  # one-coin 0.9 when the shown examples fail
    # the other annotators' votes do not depend on shown_pass (same draws)
    assert [r for r in shown if r[2] == "expert01"] == [r for r in hidden if r[2] == "expert01"]
    with pytest.raises(ValueError, match="2 lines but 3 truth labels"):
        pop.simulate([("b", [1, 2], [1, 1, -1])], p, np.random.default_rng(0))
