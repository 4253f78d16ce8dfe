"""crowdstat.spec: one population grammar, one meaning of sensitivity / specificity in both simulators."""

import numpy as np
import pytest

SPEC = "twocoin:2@0.9/0.6,lazy:1@0.8,spammer:1@0.7,expert:1@0.95"


def _rates(votes, truth):
    """Per annotator (in first-vote order of ``votes``): (n_correct, P(+1 | correct), n_wrong, P(-1 | wrong))."""
    out = {}
    for prog, line, ann, lab in votes:
        t = truth[(prog, line)]
        s = out.setdefault(ann, [0, 0, 0, 0])  # correct lines, +1 on them, wrong lines, -1 on them
        if t == 1:
            s[0] += 1
            s[1] += lab == 1
        else:
            s[2] += 1
            s[3] += lab == -1
    return [(c, pc / c, w, nw / w) for c, pc, w, nw in out.values()]


@pytest.mark.parametrize("spec", [SPEC, "twocoin:2@0.9/0.6,expert:1@0.95"])
def test_same_spec_same_crowd_in_both_simulators(spec):
    """The defect: a spec copied from ``crowdstat simulate`` to ``rl annotate`` must simulate the same crowd.

    Both simulators vote on the same true lines; per annotator (spec order), the empirical
    P(vote +1 | line correct) and P(vote -1 | line wrong) agree within sampling error.
    """
    from crowdstat.study import simulate as cs
    from rl.crowd import population as rp

    sim = cs.simulate(0, spec, n_programs=2000, lines_per_program=10)
    tl = sim.true_lines
    truth = {(p, int(ln)): int(t) for p, ln, t in zip(tl["program"], tl["line"], tl["truth"])}
    cs_votes = list(zip(sim.votes["program"], sim.votes["line"].astype(int), sim.votes["annotator"], sim.votes["label"].astype(int)))
    progs = [(p, g["line"].astype(int).tolist(), g["truth"].astype(int).tolist()) for p, g in tl.groupby("program", sort=False)]
    rl_votes, _ = rp.simulate(progs, rp.parse_population(spec), np.random.default_rng(1))
    a, b = _rates(cs_votes, truth), _rates(rl_votes, truth)
    assert len(a) == len(b) == (5 if spec == SPEC else 3)
    for i, ((nc, sa, nw, ta), (_, sb, _, tb)) in enumerate(zip(a, b)):
        for x, y, n, what in ((sa, sb, nc, "P(+1 | correct)"), (ta, tb, nw, "P(-1 | wrong)")):
            m = (x + y) / 2
            sd = np.sqrt(2 * max(m * (1 - m), 1e-4) / n)
            assert abs(x - y) <= 5 * sd, f"annotator {i} of {spec!r}: {what} is {x:.3f} in crowdstat, {y:.3f} in rl"


# --------------------------------------------------------------------------- the grammar

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from crowdstat import spec as S  # noqa: E402


def test_kinds_defaults_and_the_one_meaning():
    p = S.parse(
        "expert, novice, reliable, onecoin@0.6, spammer, spammer@0.7, adversary, twocoin, twocoin@0.8/0.3, lazy, lazy@0.8, examples"
    )
    got = [(a.kind, a.sensitivity, a.specificity, a.p, a.decay) for a in p.annotators]
    assert got == [
        ("expert", 0.95, 0.95, 0.95, 0.0),
        ("novice", 0.7, 0.7, 0.7, 0.0),
        ("reliable", 0.8, 0.8, 0.8, 0.0),
        ("onecoin", 0.6, 0.6, 0.6, 0.0),
        ("spammer", 0.5, 0.5, 0.5, 0.0),
        ("spammer", 0.7, 0.3, None, 0.0),
        ("adversary", 0.3, 0.3, 0.3, 0.0),
        ("twocoin", 0.9, 0.6, None, 0.0),
        ("twocoin", 0.8, 0.3, None, 0.0),
        ("lazy", 1.0, 0.5, None, 0.0),
        ("lazy", 1.0, 0.2, None, 0.0),
        ("examples", 0.9, 0.9, None, 0.0),
    ]
    assert p.text == (
        "expert:1@0.95,novice:1@0.7,reliable:1@0.8,onecoin:1@0.6,spammer:1@0.5,spammer:1@0.7,adversary:1@0.3,"
        "twocoin:1@0.9/0.6,twocoin:1@0.8/0.3,lazy:1@0.5,lazy:1@0.8,examples:1@0.9"
    )
    q = S.parse("expert:3@0.95~0.01,TWOCOIN:2@0.9/0.6")
    assert q.text == "expert:3@0.95~0.01,twocoin:2@0.9/0.6" and len(q.annotators) == 5
    assert q.annotators[0] == S.Annotator("expert", 0.95, 0.95, 0.95, 0.01) and q.annotators[1] is q.annotators[0]
    j = S.parse(
        '[{"kind": "expert", "count": 3, "p": 0.95, "decay": 0.01}, {"kind": "twocoin", "count": 2, '
        '"sensitivity": 0.9, "specificity": 0.6}]'
    )
    assert j == q


def test_simulators_reject_what_they_cannot_simulate():
    from crowdstat.study.simulate import parse_population as cs_parse
    from rl.crowd.population import parse_population as rl_parse

    with pytest.raises(
        ValueError,
        match=r"^population spec entry 2 \('examples:1'\): kind 'examples' is not supported by "
        r"crowdstat simulate \(its votes depend on the programs; use rl annotate\)$",
    ):
        cs_parse("expert:2,examples:1")
    with pytest.raises(
        ValueError,
        match=r"^population spec entry 1 \('novice:2~0.01'\): fatigue \(~decay\) is not supported "
        r"by the rl simulator; only crowdstat simulate models it$",
    ):
        rl_parse("novice:2~0.01")
    assert len(rl_parse("novice:2~0")) == 2  # a zero decay is no fatigue


_PARAMS = {"p": st.floats(0.5, 1), "q": st.floats(0, 1), "a": st.floats(0, 1)}
_FMT = st.sampled_from(["{!r}", "{:.2f}", "{:g}", "{:.3e}", " {:.4f} "])


@st.composite
def entries(draw):
    """(compact text, JSON object) of one valid entry."""
    kind = draw(st.sampled_from(list(S.KINDS)))
    form, default = S.KINDS[kind]
    fmt = draw(_FMT)
    count = draw(st.none() | st.integers(1, 4))
    obj = {"kind": kind} if count is None else {"kind": kind, "count": count}
    text = kind.upper() if draw(st.booleans()) else kind
    text += "" if count is None else f" : {count}"
    if default is None or draw(st.booleans()):
        if form == "sens/spec":
            s, t = draw(st.floats(0, 1)), draw(st.floats(0, 1))
            text += "@" + fmt.format(s) + "/" + fmt.format(t)
            obj.update(sensitivity=float(fmt.format(s)), specificity=float(fmt.format(t)))
        else:
            v = draw(st.floats(0, 0.45) if kind == "adversary" else _PARAMS.get(form, st.floats(0, 1)))
            text += "@" + fmt.format(v)
            obj[form] = float(fmt.format(v))
    if draw(st.booleans()):
        d = draw(st.floats(0, 5))
        text += "~" + fmt.format(d)
        obj["decay"] = float(fmt.format(d))
    return text, obj


@settings(max_examples=200, deadline=None)
@given(st.lists(entries(), min_size=1, max_size=6))
def test_canonical_text_round_trips(items):
    text = ",".join(t for t, _ in items)
    p = S.parse(text)
    assert S.parse(p.text) == p  # records and canonical text
    assert S.parse([o for _, o in items]) == p  # the JSON form means the same
    assert len(p.annotators) == sum(o.get("count", 1) for _, o in items)
    for a in p.annotators:
        assert 0 <= a.sensitivity <= 1 and 0 <= a.specificity <= 1 and a.decay >= 0


_BAD = [
    ("wizard:2", "unknown annotator kind 'wizard'"),
    ("expert:0", "count must be a positive integer, got 0"),
    ("novice:2@1.5", r"p must be in \[0, 1\], got '1.5'"),
    ("novice:2@x", r"p must be a number in \[0, 1\], got 'x'"),
    ("adversary@0.7", r"an adversary has p < 0.5, got 0.7"),
    ("twocoin@0.9", "twocoin params are sensitivity/specificity"),
    ("spammer@0.2/0.3", "spammer takes one number q"),
    ("onecoin:3", "onecoin needs p"),
    ("lazy~-0.5", "decay must be a finite number >= 0, got '-0.5'"),
    ("expert~inf", "decay must be a finite number >= 0, got 'inf'"),
    ("expert@", "'@' without parameters"),
    ("expert:3:4", r"cannot parse; expected kind\[:count\]\[@params\]\[~decay\]"),
    ("", "cannot parse"),
]


@settings(max_examples=100, deadline=None)
@given(st.lists(entries(), min_size=1, max_size=4), st.sampled_from(_BAD), st.data())
def test_bad_entry_gives_one_line_error_naming_it(items, bad, data):
    i = data.draw(st.integers(0, len(items)))
    texts = [t for t, _ in items]
    texts.insert(i, bad[0])
    with pytest.raises(ValueError) as e:
        S.parse(",".join(texts))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"population spec entry {i + 1} ({bad[0].strip()!r}): "), msg
    assert e.match(bad[1])


@pytest.mark.parametrize(
    "spec,match",
    [
        ("  ", r"^empty population spec '  '; expected a SPEC like"),
        ('[{"kind": "expert", "q": 0.3}]', r"^population JSON: entry 0: expert takes p, not q$"),
        ('[{"kind": "twocoin", "p": 0.3}]', r"^population JSON: entry 0: twocoin takes sens/spec, not p$"),
        ('[{"kind": "expert", "count": true}]', r"^population JSON: entry 0: count must be a positive integer, got True$"),
        ("[]", r"^population JSON: a JSON population is a non-empty list of objects$"),
    ],
)
def test_other_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        S.parse(spec)


# --------------------------------------------------------------------------- Dawid-Skene reads the same meaning


def test_two_coin_em_recovers_sensitivity_as_p_plus_given_correct():
    """em2's ``sensitivity`` column estimates P(vote +1 | correct) of a simulated two-coin crowd, not P(-1 | wrong)."""
    import crowdstat
    from crowdstat.study import simulate as cs

    spec = "twocoin:4@0.95/0.55,twocoin:4@0.6/0.9,expert:2@0.9"
    sim = cs.simulate(4, spec, n_programs=600, lines_per_program=6, p_buggy_program=0.8, p_wrong_line_if_buggy=0.5, honeypot_fraction=0.0)
    res = crowdstat.fit(sim.votes, method="em2", x64=True)
    ann = res.annotators.set_index("annotator").loc[list(sim.reliability["annotator"])]
    rel = sim.reliability.set_index("annotator")
    sens, spec_ = ann["sensitivity"].to_numpy(), ann["specificity"].to_numpy()
    assert np.abs(sens - rel["sens"].to_numpy()).max() < 0.05, (sens, rel["sens"].to_numpy())
    assert np.abs(spec_ - rel["spec"].to_numpy()).max() < 0.05, (spec_, rel["spec"].to_numpy())
    # the swapped reading would be off by 0.3-0.4 on the two-coin annotators
    assert np.abs(sens - rel["spec"].to_numpy())[:8].min() > 0.2
