"""crowdstat.study.simulate: moments within binomial intervals, two-coin rates, drift, determinism, replicates."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crowdstat.io.tables import read_votes
from crowdstat.study import simulate as S

SPEC = "expert:2@0.9,spammer:1,adversary:1@0.3,twocoin:1@0.95/0.6,novice:1@0.8~0.01"
P, K = 200, 5  # one shape for most tests: the core compiles once


def z_ok(successes, n, p, z=4.0):
    """|rate - p| within z binomial standard errors (z = 4: a false alarm ~ 6e-5 per check)."""
    return abs(successes / n - p) <= z * np.sqrt(p * (1 - p) / n) + 1e-12


@pytest.fixture(scope="module")
def pop():
    return S.parse_population(SPEC)


@pytest.fixture(scope="module")
def sim(pop):
    return S.simulate_arrays(jax.random.key(3), pop, P, K, 0.5, 0.4, 0.2)


def test_parse_population(pop):
    assert pop.m == 6
    np.testing.assert_allclose(np.asarray(pop.sens), [0.9, 0.9, 0.5, 0.3, 0.95, 0.8], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pop.spec), [0.9, 0.9, 0.5, 0.3, 0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(pop.decay), [0, 0, 0, 0, 0, 0.01], rtol=1e-6)
    assert [S.KINDS[k] for k in np.asarray(pop.kind)] == ["expert", "expert", "spammer", "adversary", "twocoin", "novice"]
    d = S.parse_population("expert:1,novice:1,adversary:1,twocoin:1")  # defaults
    np.testing.assert_allclose(np.asarray(d.sens), [0.95, 0.7, 0.3, 0.9], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d.spec), [0.95, 0.7, 0.3, 0.6], rtol=1e-6)
    # the kinds of the one grammar (crowdstat.spec): spammer q -> (q, 1 - q), lazy a -> (1, 1 - a), onecoin p -> (p, p)
    u = S.parse_population("spammer@0.8,lazy:2@0.7~0.01,onecoin@0.6,reliable")
    np.testing.assert_allclose(np.asarray(u.sens), [0.8, 1.0, 1.0, 0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(u.spec), [0.2, 0.3, 0.3, 0.6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(u.decay), [0, 0.01, 0.01, 0, 0], rtol=1e-6)
    assert [S.KINDS[k] for k in np.asarray(u.kind)] == ["spammer", "lazy", "lazy", "onecoin", "reliable"]
    # the ids rl annotate gives the same SPEC: kind + count per kind (crowdstat.spec.annotator_ids; issue 20)
    assert list(u.names()) == ["spammer01", "lazy01", "lazy02", "onecoin01", "reliable01"]


@pytest.mark.parametrize(
    "bad, match",
    [
        ("", "SPEC"),
        ("wizard:2", r"entry 1 \('wizard:2'\): unknown annotator kind 'wizard'"),
        ("expert:0", "count"),
        ("expert:1,adversary:1@0.6", r"entry 2 .*p < 0.5"),
        ("examples:1@0.9", r"entry 1 .*kind 'examples' is not supported by crowdstat simulate"),
        ("expert:1@1.5", r"\[0, 1\]"),
        ("twocoin:1@0.9", "sensitivity/specificity"),
        ("expert:2@0.9~-1", r"decay must be a finite number >= 0, got '-1'"),
        ("expert 2", "cannot parse"),
    ],
)
def test_parse_population_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        S.parse_population(bad)


def test_agreement_rates_within_binomial_intervals(sim, pop):
    lab = np.asarray(sim.label)
    t = np.asarray(sim.truth)[..., None]
    voted = lab != 0
    assert voted.all()  # everyone labels everything by default
    agree = (lab == t) & voted
    for i, p in enumerate([0.9, 0.9, 0.5, 0.3]):  # one-coin annotators
        assert z_ok(agree[..., i].sum(), voted[..., i].sum(), p), (i, agree[..., i].mean(), p)
    # two-coin: P(+1 | correct) = 0.95, P(-1 | wrong) = 0.6
    c, w = (t[..., 0] > 0), (t[..., 0] < 0)
    assert w.sum() > 100
    assert z_ok((lab[..., 4][c] == 1).sum(), c.sum(), 0.95)
    assert z_ok((lab[..., 4][w] == -1).sum(), w.sum(), 0.6)
    np.testing.assert_allclose(np.asarray(sim.p_effective)[:4], [0.9, 0.9, 0.5, 0.3], rtol=1e-5)


def test_bugs_cluster_in_buggy_programs(sim):
    t = np.asarray(sim.truth)
    wrong_programs = (t < 0).any(axis=1)
    # P(buggy) = 0.5, P(wrong | buggy) = 0.4: P(program has a wrong line) = 0.5 (1 - 0.6^5)
    assert z_ok(wrong_programs.sum(), P, 0.5 * (1 - 0.6**K))
    # among programs with a wrong line, the rate of wrong lines is ~0.4 / (1 - 0.6^5), far above the marginal 0.2
    assert (t[wrong_programs] < 0).mean() > 0.35


def test_drift_decays_towards_one_half(sim):
    lab = np.asarray(sim.label)[..., 5].reshape(-1)  # in task order, then line order = vote order
    t = np.asarray(sim.truth).reshape(-1)
    n = np.arange(lab.shape[0])
    p_n = 0.5 + 0.3 * np.exp(-0.01 * n)
    np.testing.assert_allclose(np.asarray(sim.p_vote)[..., 5].reshape(-1), p_n, rtol=1e-5)
    np.testing.assert_allclose(float(sim.p_effective[5]), p_n.mean(), rtol=1e-5)
    first, last = slice(0, 150), slice(600, 1000)
    assert z_ok((lab[first] == t[first]).sum(), 150, p_n[first].mean())
    assert z_ok((lab[last] == t[last]).sum(), 400, p_n[last].mean())
    assert p_n[first].mean() - p_n[last].mean() > 0.15


def test_deterministic_given_key_and_int_seed(pop):
    a = S.simulate_arrays(7, pop, P, K)
    b = S.simulate_arrays(jax.random.key(7), pop, P, K)
    c = S.simulate_arrays(8, pop, P, K)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a.label), np.asarray(c.label))


def test_replicates_are_split_and_vmapped(pop):
    key = jax.random.key(11)
    reps = S.simulate_replicates(key, 3, pop, P, K)
    assert reps.label.shape == (3, P, K, 6) and reps.honeypot.shape == (3, P)
    keys = jax.random.split(key, 3)
    for i in range(3):
        one = S.simulate_arrays(keys[i], pop, P, K)
        for x, y in zip(S.replicate(reps, i), one):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(reps.label[0]), np.asarray(reps.label[1]))
    # traced once for all replicates: a jaxpr of simulate_replicates' vmapped core has no per-replicate loop
    jaxpr = jax.make_jaxpr(
        lambda k: jax.vmap(
            lambda kk: S._simulate_arrays(
                kk, pop, 0.5, 0.4, 0.2, 6, n_programs=4, lines_per_program=2, design="program", honeypot_placement="first"
            )
        )(k)
    )(jax.random.split(key, 5))
    assert "while" not in str(jaxpr)


def test_designs_and_honeypot_placement(pop):
    # the module's shape (P, K, 6): design "program" + placement "first" reuses the compiled core
    prog = S.simulate_arrays(0, pop, P, K, annotators_per_item=2, design="program", honeypot_fraction=0.25)
    lab = np.asarray(prog.label) != 0
    assert (lab.sum(-1) == 2).all()
    assert (lab == lab[:, :1, :]).all()  # the same two annotators on every line of a program
    np.testing.assert_array_equal(np.asarray(prog.honeypot), np.arange(P) < 50)
    line = S.simulate_arrays(0, pop, P, K, annotators_per_item=2, design="line", honeypot_fraction=0.25, honeypot_placement="random")
    lab = np.asarray(line.label) != 0
    assert (lab.sum(-1) == 2).all()
    assert not (lab == lab[:, :1, :]).all()
    hp = np.asarray(line.honeypot)
    assert hp.sum() == 50 and not hp[:50].all()
    with pytest.raises(ValueError, match="annotators_per_item"):
        S.simulate_arrays(0, pop, P, K, annotators_per_item=7)
    with pytest.raises(ValueError, match="design"):
        S.simulate_arrays(0, pop, P, K, design="task")


def test_frames_follow_formats_and_load(sim, pop):
    s = S.to_frames(sim, pop)
    assert list(s.votes.columns) == ["program", "line", "annotator", "label"]
    assert list(s.truth.columns) == ["program", "line", "truth"] and len(s.truth) == 40 * K
    assert len(s.true_lines) == P * K and set(s.votes["label"]) <= {-1, 1}
    assert {"annotator", "kind", "p", "sens", "spec", "decay", "n_votes"} <= set(s.reliability.columns)
    table = read_votes(s.votes, truth=s.truth)
    assert table.n_votes == P * K * 6 and table.n_honeypots == 40 * K
    assert list(table.programs[:2]) == ["prog0000", "prog0001"]  # task order kept: honeypots first


def test_simulate_votes_compatible():
    sim = S.simulate_votes(0, [0.9, 0.5, 0.3], n_programs=12, lines_per_program=4, honeypot_fraction=0.25, annotators_per_program=2)
    assert isinstance(sim, S.Simulation)
    assert len(sim.votes) == 12 * 4 * 2 and sim.truth["program"].nunique() == 3
    np.testing.assert_allclose(sim.reliability["p"], [0.9, 0.5, 0.3])
    assert list(sim.reliability["annotator"]) == ["reliable01", "spammer01", "adversary01"]  # one_coin's kinds by p


def test_float64_population_keeps_dtype():
    with jax.enable_x64(True):
        pop = S.parse_population("novice:2@0.7", dtype=jnp.float64)
        s = S.simulate_arrays(0, pop, 5, 2)
        assert s.p_vote.dtype == jnp.float64


def test_runtime_settings_do_not_retrace(pop, sim):
    # probabilities, honeypot fraction and r are runtime arguments: one compiled program per shape/design
    S.simulate_arrays(3, pop, P, K, 0.5, 0.4, 0.2)
    n0 = S._simulate_arrays._cache_size()
    S.simulate_arrays(4, pop, P, K, 0.3, 0.7, 0.05, annotators_per_item=3)
    S.simulate_arrays(5, pop, P, K, 0.9, 0.1, 0.5, annotators_per_item=2)
    assert S._simulate_arrays._cache_size() == n0
