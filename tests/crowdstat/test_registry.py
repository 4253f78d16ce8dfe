"""The estimator registry (crowdstat.estimators.registry): one list of methods, one set of defaults.

The config dataclasses are the single source of every parameter's default; these tests check that
crowdstat.fit records exactly those defaults, that `crowdstat fit --help` shows every flag with its
default, that the CLI maps its options back onto the same fields, that every validated field
rejects a bad value with a ValueError naming it, and that the registry loads no JAX, NumPy or
pandas.
"""

import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import crowdstat as cs
from crowdstat import cli
from crowdstat.estimators import registry as R
from crowdstat.estimators.result import EstimatorFit
from crowdstat.study.simulate import simulate_votes

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = [R.CommonConfig, *dict.fromkeys(m.config for m in R.REGISTRY.values())]


def _fields(cls):
    return dataclasses.fields(cls)


def _defaults(method):
    cls = R.REGISTRY[method].config
    return {**{f.name: f.default for f in _fields(R.CommonConfig)}, **{f.name: f.default for f in _fields(cls)}}


def _fake_bayes(table, cfg, common, dtype):
    """Stands in for NUTS (minutes of compilation) where only the parameter plumbing is tested."""
    assert isinstance(cfg, R.BayesConfig) and isinstance(common, R.CommonConfig)
    n, m = table.n_lines, table.n_annotators
    return EstimatorFit(np.full(n, 0.5), np.zeros(m), np.full(m, 0.5), {"stub": True})


@pytest.fixture
def no_nuts(monkeypatch):
    stub = dataclasses.replace(R.REGISTRY["bayes"], module=__name__, function="_fake_bayes")
    monkeypatch.setitem(R.REGISTRY, "bayes", stub)


@pytest.fixture(scope="module")
def sim():
    return simulate_votes(0, [0.9, 0.85, 0.7, 0.6, 0.3], n_programs=12, lines_per_program=3, honeypot_fraction=0.25)


def test_methods_in_order_and_each_implementation_loads():
    assert R.METHODS == ("majority", "sequential", "proximal", "em1", "em2", "bayes", "bayes2", "glad", "mace") == tuple(R.REGISTRY)
    assert cs.METHODS is R.METHODS and cs.parse_gamma is R.parse_gamma
    for name, m in R.REGISTRY.items():
        assert m.name == name and m.summary and "\n" not in m.summary
        assert dataclasses.is_dataclass(m.config) and m.config.__dataclass_params__.frozen
        assert callable(m.load()), name
        assert m.available() == (True, "")
    missing = dataclasses.replace(R.REGISTRY["em1"], module="crowdstat.estimators.not_there")
    ok, why = missing.available()
    assert not ok and "not available" in why and "not_there" in why


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("method", R.METHODS)
def test_fit_records_the_registry_defaults(method, sim, no_nuts, tmp_path):
    res = cs.fit(sim.votes, sim.truth, method=method)
    want = _defaults(method)
    assert list(res.params) == list(want)  # same names, same order (fit.json keeps it)
    assert res.params == want
    # the CLI's defaults are the same (progress: off when stderr is not a terminal, as under pytest)
    sim.votes.to_csv(tmp_path / "votes.csv", index=False)
    sim.truth.to_csv(tmp_path / "truth.csv", index=False)
    argv = ["fit", str(tmp_path / "votes.csv"), "--truth", str(tmp_path / "truth.csv"), "--method", method, "--out", str(tmp_path / "o")]
    assert cli.main(argv) == 0
    recorded = json.loads((tmp_path / "o" / "fit.json").read_text())["params"]
    assert recorded == {k: ("inf" if v == math.inf else v) for k, v in want.items()}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("method", [m for m in R.METHODS if m != "bayes"])
def test_every_implementation_keeps_the_result_contract(method, sim):
    import jax.numpy as jnp

    table = cs.read_votes(sim.votes, truth=sim.truth)
    common, cfg = R.make_configs(method, {"x64": True})
    est = R.REGISTRY[method].load()(table, cfg, common, jnp.float64)
    assert isinstance(est, EstimatorFit)
    assert np.shape(est.posterior) == (table.n_lines,)
    assert np.shape(est.weight) == np.shape(est.reliability) == (table.n_annotators,)
    assert np.all((0 <= est.posterior) & (est.posterior <= 1))
    assert isinstance(est.diagnostics, dict) and isinstance(est.prior_logit, float)
    if est.trajectory is not None:
        assert est.trajectory.shape == (table.n_programs, table.n_annotators)
    json.dumps(est.diagnostics)  # JSON-serialisable


def _help_entries(text: str) -> dict[str, str]:
    """--flag -> its help text (continuation lines joined, whitespace collapsed)."""
    entries, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (--[a-z0-9-]+)", line)
        if m:
            cur = m.group(1)
            entries[cur] = line
        elif cur and line.startswith("    "):
            entries[cur] += " " + line
        else:
            cur = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def test_fit_help_shows_every_flag_with_its_default():
    r = subprocess.run([sys.executable, "-m", "crowdstat", "fit", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    entries = _help_entries(r.stdout)
    assert "{auto," + ",".join(R.METHODS) + "}" in entries["--method"] and "auto (default)" in entries["--method"]
    n = 0
    for cls in CONFIGS:
        for f in _fields(cls):
            flag = f.metadata.get("flag")
            if flag is None:
                continue
            n += 1
            assert flag in entries, flag
            doc = f.metadata.get("default_doc")
            if doc:
                want = f"(default: {doc})"
            elif "switch" in f.metadata:
                want = "(default off)"
            else:
                want = f"(default {R.format_default(f.default)})"
            assert want in entries[flag], (flag, entries[flag])
    assert n == 46  # the 45 flags of crowdstat fit, --nu counted for both sequential and proximal
    assert "%%" not in r.stdout and "else 100% centred" in entries["--gamma"]
    r = subprocess.run([sys.executable, "-m", "crowdstat", "compare", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and "gamma=5%'" in r.stdout and "%%" not in r.stdout


def test_format_default():
    assert [R.format_default(v) for v in (0.5, 1.0, 1e-6, 1e-10, 10000, math.inf, "1%", True)] == [
        "0.5",
        "1",
        "1e-6",
        "1e-10",
        "10000",
        "inf",
        "1%",
        "True",
    ]


def test_field_metadata_is_consistent():
    flags: dict[str, dataclasses.Field] = {}
    for cls in CONFIGS:
        names = {f.name for f in _fields(cls)}
        for f in _fields(cls):
            md = f.metadata
            assert md.get("help"), (cls.__name__, f.name)
            if "default_doc" in md:  # words only where the default is a sentinel
                assert f.default is None or f.default == math.inf, f.name
            if "switch" in md:
                assert md.get("flag") and f.type in (bool, bool | None), f.name
                assert set(md["switch"]) <= names, f.name  # a switch sets fields of its own config
                assert f.name in md["switch"]
            if "choices" in md:
                assert f.default in md["choices"] or (f.default is None and "default_doc" in md), f.name
            if md.get("flag"):
                prev = flags.setdefault(md["flag"], f)
                assert prev.default == f.default and prev.type == f.type, md["flag"]  # --nu: one option, one default
    assert set(flags) == {
        "--prior",
        "--tau",
        "--delta",
        "--x64",
        "--calibrate",
        "--interval",
        "--interval-method",
        "--n-boot",
        "--boot-seed",
        "--lam",
        "--nu",
        "--pbar-honeypot",
        "--w-max",
        "--gamma",
        "--center",
        "--ista",
        "--stepsize",
        "--solver",
        "--tol",
        "--maxiter",
        "--intercept",
        "--latent",
        "--em-maxiter",
        "--em-tol",
        "--num-warmup",
        "--num-samples",
        "--num-chains",
        "--beta-a",
        "--beta-b",
        "--seed",
        "--credible",
        *("--glad-maxiter", "--glad-tol", "--glad-m-maxiter", "--glad-m-tol", "--glad-alpha-mean", "--glad-beta-mean"),
        *("--mace-inference", "--mace-iter", "--mace-restarts", "--mace-smoothing", "--mace-alpha", "--mace-beta", "--mace-strategy-prior"),
    }


@pytest.mark.parametrize(
    "argv,method,want",
    [
        ([], "proximal", {}),
        (["--ista"], "proximal", {"accelerated": False, "solver": "fista"}),
        (["--ista", "--solver", "newton"], "proximal", {"accelerated": False, "solver": "fista"}),  # --ista wins, as before
        (
            ["--latent", "--intercept", "--gamma", "5%", "--tol", "1e-8", "--maxiter", "7"],
            "proximal",
            {"latent": True, "intercept": True, "gamma": "5%", "tol": 1e-8, "maxiter": 7},
        ),
        (["--nu", "0.6", "--w-max", "4", "--lam", "0.1", "--x64"], "sequential", {"nu": 0.6, "w_max": 4.0, "lam": 0.1, "x64": True}),
        (["--em-maxiter", "5", "--em-tol", "0.001", "--maxiter", "9"], "em2", {"maxiter": 5, "tol": 1e-3}),
        (["--beta-a", "3", "--beta-b", "2", "--seed", "4", "--num-chains", "1"], "bayes", {"a": 3.0, "b": 2.0, "seed": 4, "num_chains": 1}),
    ],
)
def test_cli_options_map_onto_the_config_fields(argv, method, want):
    args = cli.build_parser().parse_args(["fit", "v.csv", "--method", method, "--out", "o", *argv])
    params = cli._fit_params(method, args)
    common, cfg = R.make_configs(method, params)
    got = {**dataclasses.asdict(common), **dataclasses.asdict(cfg)}
    assert got == {**_defaults(method), **want}
    assert all(type(got[k]) is type(v) for k, v in want.items())


def test_fit_docstring_is_generated_from_the_fields():
    doc = cs.fit.__doc__
    for cls in CONFIGS:
        for f in _fields(cls):
            assert f"``{f.name}`` = {R.default_text(f, python=True)}: {f.metadata['help']}" in doc
    for m in R.REGISTRY.values():
        assert f"``{m.name}``: {m.summary}" in doc


# A bad value for every validated field; the fields left out take any value (switches, flags).
BAD = {
    R.CommonConfig: {
        "prior": [0.0, 1.0, "0.5"],
        "tau": [-0.1, 1.5],
        "delta": [0.0, 0.5, None],
        "calibrate": ["sigmoid", None],
        "interval": [0.0, 1.0, "0.9"],
        "n_boot": [5, 2.5, True],
        "boot_seed": [-1, 1.5],
        "interval_method": ["wald", None],
    },
    R.SequentialConfig: {
        "lam": [-1.0, math.inf, "1"],
        "nu": [0.0, 1.0],
        "pbar_honeypot": [0.4, 1.01],
        "w_max": [0.0, -1.0],
        "flip_check": ["yes", 1],
    },
    R.ProximalConfig: {
        "gamma": ["x%", -1.0, math.nan],
        "center": ["median", "", 0],
        "solver": ["ista"],
        "tol": [0.0, -1e-3],
        "maxiter": [0, 2.5],
        "stepsize": [0.0],
        "nu": [1.0],
        "max_outer": [0],
    },
    R.EMConfig: {"maxiter": [0, 2.5, True], "tol": [-1.0, math.nan]},
    R.BayesConfig: {
        "num_warmup": [0],
        "num_samples": [1.5],
        "num_chains": [0],
        "a": [0.0, math.inf],
        "b": [-1.0],
        "seed": [-1],
        "credible": [0.0, 1.0],
    },
    R.GLADConfig: {
        "maxiter": [0, 2.5],
        "tol": [math.nan, "1e-5"],
        "m_step_maxiter": [0],
        "m_step_tol": [0.0, math.inf],
        "alpha_mean": [math.inf],
        "beta_mean": [math.nan],
    },
    R.MACEConfig: {
        "inference": ["gibbs"],
        "n_iter": [0, 1.5],
        "n_restarts": [0],
        "seed": [-1],
        "smoothing": [-0.1, math.inf],
        "alpha": [0.0, math.inf],
        "beta": [-1.0],
        "strategy_prior": [0.0],
    },
}
UNVALIDATED = {"x64", "progress", "keep_trajectory", "accelerated", "intercept", "latent"}


def test_every_validated_field_has_a_bad_value_case():
    for cls in CONFIGS:
        assert {f.name for f in _fields(cls)} - UNVALIDATED == set(BAD.get(cls, {})), cls.__name__


@pytest.mark.parametrize("cls,name,value", [(c, n, v) for c, d in BAD.items() for n, vs in d.items() for v in vs])
def test_bad_value_raises_value_error_naming_the_field(cls, name, value):
    with pytest.raises(ValueError, match=rf"^{name}: expected"):
        cls(**{name: value})
    method = next((m.name for m in R.REGISTRY.values() if m.config is cls), "majority")
    # through crowdstat.fit: rejected before the (missing) vote file is read
    with pytest.raises(ValueError, match=rf"^{name}: expected"):
        cs.fit("/nonexistent/votes.csv", method=method, **{name: value})


def test_unknown_parameter_and_method():
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['gamma'\]; allowed: .*'lam'"):
        cs.fit("/nonexistent/votes.csv", method="sequential", gamma="5%")
    with pytest.raises(ValueError, match=r"method: expected one of"):
        cs.fit("/nonexistent/votes.csv", method="em3")


def test_parse_gamma():
    assert R.parse_gamma("5%") == (0.05, True) and R.parse_gamma(0.3) == (0.3, False) and R.parse_gamma(" 2 ") == (2.0, False)
    with pytest.raises(ValueError, match="gamma"):
        R.parse_gamma("5 percent")


def test_parse_param_coerces_by_field_type():
    assert R.parse_param("sequential", "w_max", "10") == 10.0 and isinstance(R.parse_param("sequential", "w_max", "10"), float)
    assert R.parse_param("sequential", "keep_trajectory", "none") is None
    assert R.parse_param("proximal", "latent", "TRUE") is True
    assert R.parse_param("em1", "maxiter", "12") == 12 and isinstance(R.parse_param("em1", "maxiter", "12"), int)
    assert R.parse_param("majority", "x64", "true") is True  # common parameters for every method
    with pytest.raises(ValueError, match="num_chains"):
        R.parse_param("bayes", "num_chains", "two")
    with pytest.raises(TypeError, match="allowed"):
        R.parse_param("majority", "lam", "1")


def test_registry_imports_the_standard_library_only():
    code = (
        "import sys\n"
        "import crowdstat.estimators, crowdstat.estimators.registry\n"
        "from crowdstat.estimators import REGISTRY, METHODS, make_configs\n"
        "make_configs('proximal', {'gamma': '5%'})\n"
        "import crowdstat.cli; crowdstat.cli.build_parser()\n"
        "print(sorted(m for m in ('jax', 'numpy', 'pandas', 'scipy', 'torch') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_docs_cli_table_matches_the_registry():
    """docs/cli.md's option table: one row per flag, with the field's name and default."""
    rows = {}
    for line in (ROOT / "docs" / "cli.md").read_text().splitlines():
        m = re.match(r"^\| `(--[a-z0-9-]+)` \| `([a-z_0-9]+)[^`]*` \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3).strip().strip("`"))
    seen = set()
    for cls in CONFIGS:
        for f in _fields(cls):
            flag = f.metadata.get("flag")
            if flag is None or flag in seen:
                continue
            seen.add(flag)
            assert flag in rows, flag
            name, default = rows[flag]
            assert name == f.name, flag
            if f.default is None:
                continue  # described in words (1/L, auto, by dtype)
            assert default == ("off" if "switch" in f.metadata else R.format_default(f.default)), flag
    assert set(rows) == seen
