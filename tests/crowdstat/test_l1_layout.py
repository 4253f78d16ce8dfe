"""The one-shot L1 package (crowdstat/estimators/l1) and the "proximal" method module.

- ``latent.latent_em`` and ``latent.latent_gamma_max`` against a dict-loop transcription of the
  L1-penalised one-coin EM of docs/math.md built on tests/reference/oracles.py;
- ``crowdstat.estimators.proximal.fit`` gives what ``crowdstat.fit(method="proximal")`` reports;
- the layout: no import cycle between the l1 modules, no l1 import hidden inside a function, and
  Newton does not pull in the solver dispatch (``solve``).
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crowdstat as cs
from crowdstat.estimators import proximal
from crowdstat.estimators.l1 import latent
from crowdstat.io.tables import read_votes
from tests.reference import oracles as O
from tests.strategies import random_tables

ROOT = Path(__file__).resolve().parents[2]
L1_DIR = ROOT / "crowdstat" / "estimators" / "l1"
L1_PKG = "crowdstat.estimators.l1"
DELTA = 1e-6
CAP = math.log1p(-DELTA) - math.log(DELTA)


# ================================================================ latent EM against a dict-loop oracle


def _expected_agreements(votes, truth: dict, w: dict, prior_logit: float):
    """E-step (eq. 7, honeypot lines clamped to their truth), then a_i and n_i by loops over the votes."""
    post = O.posteriors(votes, w, prior_logit=prior_logit)
    q = {k: (1 + truth[k]) / 2 if k in truth else p for k, p in post.items()}
    a, n = defaultdict(float), defaultdict(float)
    for p, line, ann, e in votes:
        a[ann] += q[(p, line)] if e > 0 else 1.0 - q[(p, line)]
        n[ann] += 1.0
    return a, n


def _latent_em_oracle(votes, truth: dict, w0: dict, gamma: float, prior_logit: float, rounds: int) -> dict:
    w = dict(w0)
    for _ in range(rounds):
        a, n = _expected_agreements(votes, truth, w, prior_logit)
        w = {ann: float(np.clip(O.single_annotator_l1(a[ann], n[ann] - a[ann], gamma), -CAP, CAP)) for ann in w}
    return w


def _latent_problem(seed: int, with_truth: bool):
    votes_df, truth_df = random_tables(seed, n_programs=6, max_lines=6, n_annotators=6, p_vote=0.7)
    truth_df = truth_df if with_truth else None
    table = read_votes(votes_df, truth=truth_df)
    votes, truth = O.frame_to_votes(votes_df), O.frame_to_truth(truth_df)
    annotators = [str(a) for a in table.annotators]
    assert annotators == O.annotators_in_order(votes)
    return table, votes, truth, annotators


@pytest.mark.parametrize("seed, with_truth, prior", [(3, False, 0.5), (4, True, 0.3)])
def test_latent_em_matches_loop_oracle(seed, with_truth, prior):
    table, votes, truth, annotators = _latent_problem(seed, with_truth)
    prior_logit = math.log(prior) - math.log1p(-prior)
    w0 = {a: math.log(0.7) - math.log1p(-0.7) for a in annotators}
    a, n = _expected_agreements(votes, truth, w0, prior_logit)
    gmax_want = max(abs(a[x] - (n[x] - a[x])) / 2 for x in annotators)
    gamma = 0.1 * gmax_want
    rounds = 25
    want = _latent_em_oracle(votes, truth, w0, gamma, prior_logit, rounds)
    with jax.enable_x64(True):
        arrays = jax.tree.map(jnp.asarray, table.arrays)
        w0_arr = jnp.asarray([w0[x] for x in annotators], jnp.float64)
        gmax = float(latent.latent_gamma_max(arrays, w0_arr, prior_logit))
        f64 = lambda v: jnp.asarray(v, jnp.float64)  # noqa: E731
        # tol 0: exactly max_outer rounds, as the oracle
        w, q, it, _ = latent.latent_em(arrays, w0_arr, f64(gamma), f64(prior_logit), f64(CAP), f64(0.0), max_outer=rounds)
    assert gmax == pytest.approx(gmax_want, rel=1e-12)
    assert int(it) == rounds
    np.testing.assert_allclose(np.asarray(w), [want[x] for x in annotators], rtol=1e-9, atol=1e-9)
    post = O.posteriors(votes, dict(zip(annotators, np.asarray(w).tolist())), prior_logit=prior_logit)
    q_want = [(1 + truth[k]) / 2 if k in truth else post[k] for k in O.lines_in_order(votes)]
    np.testing.assert_allclose(np.asarray(q), q_want, rtol=1e-9, atol=1e-12)


def test_latent_em_gamma_at_gamma_max_zeroes_everyone():
    table, _, _, annotators = _latent_problem(5, with_truth=False)
    with jax.enable_x64(True):
        arrays = jax.tree.map(jnp.asarray, table.arrays)
        w0 = jnp.full(len(annotators), 0.5, jnp.float64)
        gmax = latent.latent_gamma_max(arrays, w0, 0.0)
        w, _, it, _ = latent.latent_em(arrays, w0, gmax, jnp.float64(0.0), jnp.float64(CAP), jnp.float64(1e-8), max_outer=1)
    assert int(it) == 1
    assert not np.any(np.asarray(w))


# ================================================================ proximal.fit == crowdstat.fit(method="proximal")

_PARAMS = dict(
    gamma="5%",
    accelerated=True,
    solver="auto",
    tol=1e-12,
    maxiter=10000,
    intercept=False,
    latent=None,
    center=None,
    stepsize=None,
    nu=0.7,
    max_outer=100,
)
_COMMON = dict(prior=0.5, tau=0.5, delta=DELTA, x64=True, progress=False)


@pytest.mark.parametrize(
    "case, with_truth, overrides",
    [
        ("supervised", True, dict(intercept=True)),
        ("latent", False, dict(gamma="10%", prior=0.4)),
    ],
)
def test_method_module_matches_crowdstat_fit(case, with_truth, overrides):
    votes_df, truth_df = random_tables(11, n_programs=8, max_lines=6, n_annotators=7, p_vote=0.7, p_honeypot=0.5)
    truth_df = truth_df if with_truth else None
    params, common = {**_PARAMS}, {**_COMMON}
    for k, v in overrides.items():
        (params if k in params else common)[k] = v
    ref = cs.fit(votes_df, truth=truth_df, method="proximal", **params, **common)
    with jax.enable_x64(True):
        got = proximal.fit(read_votes(votes_df, truth=truth_df), SimpleNamespace(**params), SimpleNamespace(**common), jnp.float64)
    np.testing.assert_array_equal(got.weight, ref.annotators["weight"].to_numpy())
    np.testing.assert_array_equal(got.reliability, ref.annotators["reliability"].to_numpy())
    np.testing.assert_array_equal(got.posterior, ref.lines["posterior"].to_numpy())
    keep = {
        k: v for k, v in ref.diagnostics.items() if not k.startswith("seconds") and k not in ("dtype", "agreement")
    }  # api adds the last two
    assert got.diagnostics == keep
    assert got.diagnostics["variant"].startswith(case)
    if case == "supervised":
        assert got.prior_logit == got.diagnostics["intercept"] != 0.0
    else:
        assert got.prior_logit == pytest.approx(math.log(0.4) - math.log1p(-0.4), rel=1e-15)
    assert got.trajectory is None and dict(got.annotator_columns) == {} and dict(got.line_columns) == {}


# ================================================================ layout: no cycles, Newton without solve


def _l1_imports(path: Path) -> tuple[set[str], list[str]]:
    """(l1 modules imported anywhere in the file, l1 imports made inside a function)."""
    found, nested = set(), []
    tree = ast.parse(path.read_text())
    for fn in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                nested.extend(_targets(node) & _L1_MODULES)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found |= _targets(node) & _L1_MODULES
    return found, nested


_L1_MODULES = {f"{L1_PKG}.{p.stem}" for p in L1_DIR.glob("*.py") if p.stem != "__init__"}


def _targets(node) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    base = node.module or ""
    return {base} | {f"{base}.{a.name}" for a in node.names}


def test_l1_modules_form_no_import_cycle_and_import_at_top_level():
    assert {"problem", "dual", "fista", "newton", "solve", "latent"} <= {m.rsplit(".", 1)[1] for m in _L1_MODULES}
    graph = {}
    for mod in _L1_MODULES:
        deps, nested = _l1_imports(L1_DIR / f"{mod.rsplit('.', 1)[1]}.py")
        assert nested == [], f"{mod} imports {nested} inside a function"
        graph[mod] = deps - {mod}
    done: set[str] = set()

    def visit(mod, stack):
        assert mod not in stack, f"import cycle: {' -> '.join([*stack, mod])}"
        if mod in done:
            return
        for dep in graph[mod]:
            visit(dep, [*stack, mod])
        done.add(mod)

    for mod in graph:
        visit(mod, [])
    assert graph[f"{L1_PKG}.problem"] == set()
    assert graph[f"{L1_PKG}.newton"] <= {f"{L1_PKG}.problem", f"{L1_PKG}.dual"}


def test_newton_does_not_import_solve():
    code = (
        "import sys, crowdstat.estimators.l1.newton\n"
        "bad = sorted(m for m in sys.modules if m in ('crowdstat.estimators.l1.solve', 'crowdstat.estimators.l1.fista'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_old_names_are_gone():
    from crowdstat.estimators.l1 import problem, solve

    assert not hasattr(latent, "em_one_coin") and not hasattr(solve, "em_one_coin")
    assert not hasattr(problem, "_b_at_zero") and callable(problem.b_at_zero)
    for name in ("training_data", "gamma_max", "lipschitz", "matvec"):
        assert not hasattr(solve, name), f"solve.{name} should live in problem only"
