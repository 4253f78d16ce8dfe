"""The estimator registry: method names, their parameters, and where each method is implemented.

Every method has one frozen configuration dataclass. Its fields are the single source of the
parameter defaults, of their help text and of their ``crowdstat fit`` flag (field ``metadata``);
``__post_init__`` validates the values. :func:`crowdstat.fit` builds its docstring, the CLI its
options, and ``crowdstat compare`` its spec parsing from these fields, so a default is written
once, here. :data:`REGISTRY` maps a method name to a :class:`Method` record; the implementation
(``fit(table, cfg, common, dtype) -> EstimatorFit``) is imported only when the method is run.

Standard library only: the ``rl`` package and the CLI's argument parser import this module, and
it must load neither JAX, NumPy nor pandas.

Field metadata keys:

- ``help``: what the parameter means (without its default);
- ``flag``: the ``crowdstat fit`` option, or absent (Python only);
- ``flag_help``: the option's own help where it differs from ``help`` (a switch such as ``--ista``
  that sets the field to a non-default value);
- ``switch``: for an option that takes no value, the parameters it sets when given;
- ``choices``: the allowed values (also the CLI choices);
- ``default_doc``: what a ``None`` or infinite default means (a sentinel needs words).
"""

import dataclasses
import importlib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "Config",
    "CommonConfig",
    "MajorityConfig",
    "SequentialConfig",
    "ProximalConfig",
    "EMConfig",
    "BayesConfig",
    "GLADConfig",
    "MACEConfig",
    "MACE_METHODS",
    "Method",
    "REGISTRY",
    "METHODS",
    "SOLVERS",
    "CALIBRATE",
    "TRAJECTORY_AUTO_LIMIT",
    "parse_gamma",
    "is_gamma_cv",
    "GAMMA_CV_GRID",
    "make_configs",
    "param_fields",
    "parse_param",
    "format_default",
    "default_text",
    "describe_params",
]

SOLVERS = ("auto", "newton", "fista")
CALIBRATE = ("none", "auto", "platt", "temperature", "affine", "isotonic")  # crowdstat.estimators.calibration, docs/calibration.md
INTERVAL_METHODS = ("laplace", "bootstrap")  # crowdstat.estimators.intervals
TRAJECTORY_AUTO_LIMIT = 20_000_000  # sequential keeps its (n_tasks x n_annotators) trajectory up to this many floats


def _param(default, help: str, flag: str | None = None, **meta) -> Any:
    """A config field: its default, help text, CLI flag and other metadata (module docstring)."""
    return field(default=default, metadata={"help": help, **({"flag": flag} if flag else {}), **meta})


# ---------------------------------------------------------------------------------------------
# validation (messages say what was expected and what came)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _prob(name: str, v, lo_open=True, hi_open=True, lo=0.0, hi=1.0) -> None:
    ok = _number(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        raise ValueError(f"{name}: expected a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {v!r}")


def _positive_or_none(name: str, v) -> None:
    if v is not None and not (_number(v) and v > 0):
        raise ValueError(f"{name}: expected a number > 0, got {v!r}")


def _is_integer(v) -> bool:
    """An int or a NumPy integer (anything with ``__index__``, bools excepted), without importing NumPy."""
    if isinstance(v, bool):
        return False
    try:
        return int(v.__index__()) == v
    except (AttributeError, TypeError):
        return False


#: the grid of ``gamma="cv"`` (percentages of gamma_max), searched by held-out honeypot log-likelihood
GAMMA_CV_GRID = ("0.1%", "0.3%", "1%", "3%", "10%", "30%")
#: the grid of the centred fit (``center="separable"``): also 100%, where w is the separable estimate itself
GAMMA_CV_GRID_CENTRED = (*GAMMA_CV_GRID, "100%")
#: proximal's centres: shrink the weights towards each annotator's own honeypot record, or towards 0 (the paper)
CENTRES = ("separable", "zero")


def is_gamma_cv(gamma) -> bool:
    """Whether ``gamma`` asks for cross-validation (``"cv"``, any case and spacing)."""
    return isinstance(gamma, str) and gamma.strip().lower() == "cv"


def parse_gamma(gamma) -> tuple[float, bool]:
    """``0.3`` -> (0.3, absolute); ``"5%"`` -> (0.05, fraction of gamma_max); ``"cv"`` or None (the
    default) -> (nan, True): a fraction of gamma_max chosen from the data when the method runs."""
    if gamma is None or is_gamma_cv(gamma):
        return math.nan, True
    if isinstance(gamma, str):
        s = gamma.strip()
        try:
            if s.endswith("%"):
                v = float(s[:-1]) / 100.0
                rel = True
            else:
                v = float(s)
                rel = False
        except ValueError:
            raise ValueError(f"gamma: expected a number (absolute), 'X%' (percent of gamma_max) or 'cv', got {gamma!r}") from None
    else:
        v, rel = float(gamma), False
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"gamma: expected a finite value >= 0, got {gamma!r}")
    return v, rel


# ---------------------------------------------------------------------------------------------
# the configurations


@dataclass(frozen=True)
class Config:
    """Base of every configuration: a frozen dataclass whose fields carry their help and CLI flag
    in ``metadata``; ``cli_group`` titles its group of ``crowdstat fit`` options."""

    cli_group: ClassVar[str] = ""


@dataclass(frozen=True)
class CommonConfig(Config):
    """Parameters every method takes."""

    cli_group: ClassVar[str] = "common"

    prior: float = _param(0.5, "p0, prior probability that a line is correct", "--prior")
    tau: float = _param(0.5, "threshold on the posterior for the reward s = c/k", "--tau")
    delta: float = _param(1e-6, "probabilities are clipped to [delta, 1-delta]", "--delta")
    x64: bool = _param(False, "compute in float64 instead of float32", "--x64", switch={"x64": True})
    progress: bool = _param(False, "a tqdm bar over tasks for long sequential runs (the CLI sets it on a terminal)")
    calibrate: str = _param(
        "none",
        "recalibrate the posteriors of the lines without truth by a map fitted on cross-fitted honeypot posteriors "
        "(5 refits; docs/calibration.md): auto = the map (none, temperature, platt, affine, isotonic with >= 20 lines of each "
        "class) of smallest held-out log-loss on the honeypots, none with under 5 lines of a class; method auto with >= 5 "
        "honeypot programs calibrates (auto) unless told otherwise, its held-out posteriors being already there",
        "--calibrate",
        choices=CALIBRATE,
    )
    interval: float | None = _param(
        None,
        "level of per-line and per-annotator intervals (e.g. 0.9) for em1, em2 and proximal (sequential refuses; "
        "bayes: its credible intervals; docs/math.md, Intervals)",
        "--interval",
        default_doc="off",
    )
    interval_method: str = _param(
        "laplace",
        "laplace: the Laplace approximation of the method's posterior (Beta(1,1) priors); bootstrap: the parametric "
        "bootstrap of n_boot vmapped refits, which under-covers for EM (docs/study.md, Interval coverage)",
        "--interval-method",
        choices=INTERVAL_METHODS,
    )
    n_boot: int = _param(200, "replicates of --interval-method bootstrap", "--n-boot")
    boot_seed: int = _param(0, "seed of --interval-method bootstrap", "--boot-seed")

    def __post_init__(self):
        _prob("delta", self.delta, hi=0.5)
        _prob("prior", self.prior)
        _prob("tau", self.tau, lo_open=False, hi_open=False)
        if self.interval is not None:
            _prob("interval", self.interval)
        if not _is_integer(self.n_boot) or self.n_boot < 20:
            raise ValueError(f"n_boot: expected an integer >= 20, got {self.n_boot!r}")
        if not _is_integer(self.boot_seed) or self.boot_seed < 0:
            raise ValueError(f"boot_seed: expected an integer >= 0, got {self.boot_seed!r}")
        if self.interval_method not in INTERVAL_METHODS:
            raise ValueError(f"interval_method: expected one of {INTERVAL_METHODS}, got {self.interval_method!r}")
        if self.interval_method != "bootstrap" and (self.n_boot, self.boot_seed) != (200, 0):
            raise ValueError("n_boot, boot_seed: used by interval_method='bootstrap' only (--interval-method bootstrap)")
        if self.calibrate not in CALIBRATE:
            raise ValueError(f"calibrate: expected one of {CALIBRATE}, got {self.calibrate!r}")


@dataclass(frozen=True)
class MajorityConfig(Config):
    """Majority vote has no parameters of its own."""

    cli_group: ClassVar[str] = ""


@dataclass(frozen=True)
class SequentialConfig(Config):
    """The sequential update, docs/math.md eq. (8)."""

    cli_group: ClassVar[str] = "sequential (eq. 8)"

    lam: float = _param(1.0, "step size lambda, the paper's is 1", "--lam")
    nu: float = _param(
        0.7,
        "initial reliability; w0 = logit(nu)",
        "--nu",
        flag_help="initial reliability; w0 = logit(nu) (sequential, and the start of proximal's latent EM)",
    )
    pbar_honeypot: float = _param(0.99, "pbar on honeypot lines, < 1", "--pbar-honeypot")
    w_max: float = _param(math.inf, "clip |w| <= w_max after each task", "--w-max", default_doc="no clipping")
    keep_trajectory: bool | None = _param(
        None,
        "keep the weights after every task (FitResult.trajectory, trajectory.csv)",
        default_doc=f"kept while n_tasks x n_annotators <= {TRAJECTORY_AUTO_LIMIT:.0e}".replace("e+0", "e"),
    )
    flip_check: bool = _param(
        True,
        "without honeypot truth, refuse (ValueError) a fit whose labels agree with majority vote on significantly fewer "
        "than half (binomial p <= 0.01) of the (>= 50) lines majority decides: the flipped solution (docs/math.md)",
    )

    def __post_init__(self):
        if not isinstance(self.flip_check, bool):
            raise ValueError(f"flip_check: expected True or False, got {self.flip_check!r}")
        _prob("nu", self.nu)
        _prob("pbar_honeypot", self.pbar_honeypot, lo=0.5, lo_open=False, hi_open=False)
        if not (_number(self.lam) and self.lam >= 0 and math.isfinite(self.lam)):
            raise ValueError(f"lam: expected a finite number >= 0, got {self.lam!r}")
        if not (_number(self.w_max) and self.w_max > 0):
            raise ValueError(f"w_max: expected a number > 0 (inf = no clipping), got {self.w_max!r}")


@dataclass(frozen=True)
class ProximalConfig(Config):
    """The one-shot L1-logistic estimate (docs/math.md)."""

    cli_group: ClassVar[str] = "proximal (one-shot L1-logistic)"

    gamma: float | str | None = _param(
        None,
        "L1 weight: a number (absolute), 'X%' = X percent of gamma_max (e.g. '5%'), or 'cv' = the percentage of "
        f"{', '.join(GAMMA_CV_GRID)} (and 100% for the centred fit) with the best 5-fold held-out honeypot "
        "log-likelihood (needs >= 5 honeypot programs; with latent=None and partial truth the supervised and latent "
        "variants are both on the grid)",
        "--gamma",
        default_doc="'cv' on the supervised fit's grid with >= 5 honeypot programs; else 100% centred, 1% with center='zero' or latent",
    )
    center: str | None = _param(
        None,
        "what the supervised fit's L1 penalty shrinks the weights towards: 'separable' = each annotator's own "
        "honeypot record, logit((agreements + 1) / (votes + 2)) (so gamma >= gamma_max gives that estimate), "
        "'zero' = the paper's L1-logistic (docs/math.md, 'Centred fit')",
        "--center",
        choices=CENTRES,
        default_doc="separable (supervised); the latent variant has no centre",
    )
    accelerated: bool = _param(
        True,
        "True = FISTA, False = ISTA, for the first-order solvers",
        "--ista",
        flag_help="plain ISTA instead of FISTA",
        switch={"accelerated": False, "solver": "fista"},
    )
    solver: str = _param(
        "auto",
        "proximal solver: auto = proximal Newton where it applies (CPU native kernel, or few annotators), else FISTA",
        "--solver",
        choices=SOLVERS,
    )
    tol: float | None = _param(None, "relative duality gap to stop at", "--tol", default_doc="1e-5 in float32, 1e-10 in float64")
    maxiter: int = _param(10000, "iteration cap (a warning when reached without convergence)", "--maxiter")
    intercept: bool = _param(False, "fit an unpenalised intercept b (used as logit(p0))", "--intercept", switch={"intercept": True})
    latent: bool | None = _param(
        None,
        "latent-truth variant (one-coin EM with an L1-penalised M-step, honeypot lines clamped: semi-supervised)",
        "--latent",
        switch={"latent": True},
        default_doc="supervised with honeypot truth, latent without; with gamma='cv' and partial truth, chosen with gamma",
    )
    stepsize: float | None = _param(None, "ISTA/FISTA step eta; ISTA needs 0 < eta < 2/L", "--stepsize", default_doc="1/L")
    nu: float = _param(0.7, "initial reliability of the latent EM; w0 = logit(nu)", "--nu")
    max_outer: int = _param(100, "EM iteration cap of the latent variant")

    def __post_init__(self):
        parse_gamma(self.gamma)
        if self.center is not None and self.center not in CENTRES:
            raise ValueError(f"center: expected one of {CENTRES}, got {self.center!r}")
        if self.center is not None and self.latent is True:
            raise ValueError(
                "center: the latent variant has no centre (its M-step is already separable per annotator); drop center or latent"
            )
        _prob("nu", self.nu)
        if self.tol is not None and not (_number(self.tol) and self.tol > 0):
            raise ValueError(f"tol: expected a number > 0, got {self.tol!r}")
        if not (isinstance(self.maxiter, int) and self.maxiter > 0):
            raise ValueError(f"maxiter: expected an integer > 0, got {self.maxiter!r}")
        _positive_or_none("stepsize", self.stepsize)
        if self.solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {SOLVERS}, got {self.solver!r}")
        if not (isinstance(self.max_outer, int) and self.max_outer > 0):
            raise ValueError(f"max_outer: expected an integer > 0, got {self.max_outer!r}")


@dataclass(frozen=True)
class EMConfig(Config):
    """Dawid-Skene EM (em1: one-coin, em2: two-coin; docs/baselines.md)."""

    cli_group: ClassVar[str] = "baselines (em1, em2: Dawid-Skene EM; bayes: NUTS)"

    maxiter: int = _param(100, "EM iterations cap", "--em-maxiter")
    tol: float = _param(
        1e-6,
        "EM stops when the log-likelihood gain is at most tol * max(1, |log-likelihood|); 0 = to the fixed point (EM, then Newton)",
        "--em-tol",
    )

    def __post_init__(self):
        if not _is_integer(self.maxiter) or self.maxiter < 1:
            raise ValueError(f"maxiter: expected an integer >= 1, got {self.maxiter!r}")
        if not (_number(self.tol) and math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"tol: expected a finite number >= 0, got {self.tol!r}")


@dataclass(frozen=True)
class BayesConfig(Config):
    """One-coin full Bayes by NUTS (docs/baselines.md)."""

    cli_group: ClassVar[str] = "baselines (em1, em2: Dawid-Skene EM; bayes: NUTS)"

    num_warmup: int = _param(500, "NUTS warmup draws per chain", "--num-warmup")
    num_samples: int = _param(500, "NUTS draws per chain after warmup", "--num-samples")
    num_chains: int = _param(2, "NUTS chains (run one after the other)", "--num-chains")
    a: float = _param(2.0, "a of the Beta(a, b) prior on reliabilities (a > b breaks label switching)", "--beta-a")
    b: float = _param(1.0, "b of the Beta(a, b) prior on reliabilities", "--beta-b")
    seed: int = _param(0, "random seed of the sampler", "--seed")
    credible: float = _param(0.9, "credible interval mass", "--credible")

    def __post_init__(self):
        for name, lo in (("num_warmup", 1), ("num_samples", 1), ("num_chains", 1), ("seed", 0)):
            v = getattr(self, name)
            if not _is_integer(v) or v < lo:
                raise ValueError(f"{name}: expected an integer >= {lo}, got {v!r}")
        for name in ("a", "b"):
            v = getattr(self, name)
            if not (_number(v) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a finite number > 0 (Beta prior of p), got {v!r}")
        if not (_number(self.credible) and 0 < self.credible < 1):
            raise ValueError(f"credible: expected a number in (0, 1), got {self.credible!r}")


def _check_ranges(cfg, ints: dict, floats: dict) -> None:
    """``name -> lower bound`` checks: integers >= bound, finite numbers > bound (>= for a bound of None: any)."""
    for name, lo in ints.items():
        v = getattr(cfg, name)
        if not _is_integer(v) or v < lo:
            raise ValueError(f"{name}: expected an integer >= {lo}, got {v!r}")
    for name, lo in floats.items():
        v = getattr(cfg, name)
        if not (_number(v) and math.isfinite(v) and (lo is None or v > lo)):
            raise ValueError(f"{name}: expected a finite number{'' if lo is None else f' > {lo}'}, got {v!r}")


@dataclass(frozen=True)
class GLADConfig(Config):
    """GLAD by EM (docs/baselines.md); defaults are crowd-kit 1.4.2's."""

    cli_group: ClassVar[str] = "glad (ability x difficulty, EM)"

    maxiter: int = _param(100, "EM iterations cap", "--glad-maxiter")
    tol: float = _param(1e-5, "EM stops when the objective per (vote, label) row gains less than tol", "--glad-tol")
    m_step_maxiter: int = _param(25, "L-BFGS iterations cap of each M-step", "--glad-m-maxiter")
    m_step_tol: float = _param(1e-2, "an M-step stops when max |gradient| < m_step_tol", "--glad-m-tol")
    alpha_mean: float = _param(1.0, "mean of the N(mean, 1) prior of the abilities alpha_i", "--glad-alpha-mean")
    beta_mean: float = _param(1.0, "mean of the N(mean, 1) prior of the log inverse difficulties beta_j", "--glad-beta-mean")

    def __post_init__(self):
        _check_ranges(self, {"maxiter": 1, "m_step_maxiter": 1}, {"m_step_tol": 0.0, "alpha_mean": None, "beta_mean": None})
        if not (_number(self.tol) and math.isfinite(self.tol)):
            raise ValueError(f"tol: expected a finite number, got {self.tol!r}")


MACE_METHODS = ("vb", "em")


@dataclass(frozen=True)
class MACEConfig(Config):
    """MACE (docs/baselines.md); defaults are crowd-kit 1.4.2's."""

    cli_group: ClassVar[str] = "mace (competence + spam strategy)"

    inference: str = _param(
        "vb", "vb = variational Bayes with the Beta / Dirichlet priors; em = EM", "--mace-inference", choices=MACE_METHODS
    )
    n_iter: int = _param(50, "iterations of every restart (no other stopping rule, as crowd-kit)", "--mace-iter")
    n_restarts: int = _param(10, "random starts; the one with the largest marginal likelihood is kept", "--mace-restarts")
    seed: int = _param(0, "random seed of the starts", "--seed")
    smoothing: float = _param(0.005, "em: added to every expected count (crowd-kit's 0.01 / n_labels)", "--mace-smoothing")
    alpha: float = _param(0.5, "vb: the Beta(alpha, beta) prior of theta_i = P(annotator knows the answer)", "--mace-alpha")
    beta: float = _param(0.5, "vb: beta of that Beta prior", "--mace-beta")
    strategy_prior: float = _param(10.0, "vb: the symmetric Dirichlet prior of the spam strategy xi_i", "--mace-strategy-prior")

    def __post_init__(self):
        if self.inference not in MACE_METHODS:
            raise ValueError(f"inference: expected one of {MACE_METHODS}, got {self.inference!r}")
        _check_ranges(self, {"n_iter": 1, "n_restarts": 1, "seed": 0}, {"alpha": 0.0, "beta": 0.0, "strategy_prior": 0.0})
        if not (_number(self.smoothing) and math.isfinite(self.smoothing) and self.smoothing >= 0):
            raise ValueError(f"smoothing: expected a finite number >= 0, got {self.smoothing!r}")


# ---------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Method:
    """One estimator: its name, a one-line summary, its config class and its implementation.

    The implementation ``module.function`` has the signature ``fit(table, cfg, common, dtype) ->
    crowdstat.estimators.result.EstimatorFit`` and is imported by :meth:`load`, not before.
    """

    name: str
    summary: str
    config: type[Config]
    module: str
    function: str = "fit"

    def load(self) -> Callable:
        """The implementation (imports its module: JAX and the rest)."""
        return getattr(importlib.import_module(self.module), self.function)

    def available(self) -> tuple[bool, str]:
        """(can this installation run it, why not)."""
        try:
            self.load()
        except (ImportError, AttributeError) as e:
            where = f"{self.module}.{self.function}: {type(e).__name__}: {e}"
            return False, f"method {self.name!r} is not available in this installation ({where})"
        return True, ""


_EST = "crowdstat.estimators."
REGISTRY: dict[str, Method] = {
    m.name: m
    for m in (
        Method("majority", "majority vote per line; reliability = agreement with the majority", MajorityConfig, _EST + "majority"),
        Method("sequential", "the paper's sequential reliability update, eq. (8)", SequentialConfig, _EST + "sequential"),
        Method(
            "proximal", "one-shot L1-logistic reliabilities on the honeypot lines (latent EM without)", ProximalConfig, _EST + "proximal"
        ),
        Method("em1", "one-coin Dawid-Skene by EM", EMConfig, _EST + "dawid_skene", "fit_one_coin"),
        Method("em2", "two-coin Dawid-Skene by EM (sensitivity / specificity)", EMConfig, _EST + "dawid_skene", "fit_two_coin"),
        Method("bayes", "one-coin full Bayes by NUTS (numpyro), with credible intervals", BayesConfig, _EST + "bayes"),
        Method("bayes2", "two-coin full Bayes by NUTS (numpyro), with credible intervals", BayesConfig, _EST + "bayes", "fit_two_coin"),
        Method("glad", "GLAD by EM: annotator ability x line difficulty (Whitehill et al. 2009)", GLADConfig, _EST + "glad"),
        Method("mace", "MACE: competence + spam strategy per annotator, VB or EM (Hovy et al. 2013)", MACEConfig, _EST + "mace"),
    )
}
METHODS: tuple[str, ...] = tuple(REGISTRY)


def _method(method: str) -> Method:
    if method not in REGISTRY:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    return REGISTRY[method]


def param_fields(method: str) -> dict[str, dataclasses.Field]:
    """Name -> dataclass field of every parameter ``fit(method=...)`` takes (common ones first)."""
    out = {f.name: f for f in dataclasses.fields(CommonConfig)}
    out.update({f.name: f for f in dataclasses.fields(_method(method).config)})
    return out


def make_configs(method: str, params: dict) -> tuple[CommonConfig, Any]:
    """``(CommonConfig, method config)`` from keyword parameters.

    Raises ValueError for an unknown method or a bad value (the message names the parameter) and
    TypeError for an unknown parameter (listing the allowed ones).
    """
    cls = _method(method).config
    common_names = {f.name for f in dataclasses.fields(CommonConfig)}
    allowed = set(param_fields(method))
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"fit(method={method!r}) got unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    common = CommonConfig(**{k: v for k, v in params.items() if k in common_names})
    return common, cls(**{k: v for k, v in params.items() if k not in common_names})


# ---------------------------------------------------------------------------------------------
# text <-> values (crowdstat compare specs, help texts)

_BOOL = {"true": True, "false": False}


def _types(f: dataclasses.Field) -> tuple:
    """The field's types, in the order they are tried on a string (from its annotation)."""
    ann = f.type  # a type object: this module does not postpone annotations
    if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union:
        return typing.get_args(ann)
    return (ann,)


def _parse_as(t, s: str):
    low = s.strip().lower()
    if t is type(None):
        if low in ("none", "null"):
            return None
    elif t is bool:
        if low in _BOOL:
            return _BOOL[low]
    elif t is int:
        return int(s.strip())
    elif t is float:
        return float(s.strip())
    elif t is str:
        return s.strip()
    raise ValueError(s)


def parse_param(method: str, name: str, text: str):
    """A parameter value from text (a ``crowdstat compare`` spec), coerced by the field's type.

    ``bool``: ``true``/``false``; ``None`` where allowed: ``none``; ``int``, ``float`` (``inf``
    included) and ``str`` as Python reads them; for a union the first type that reads the text wins.
    """
    fields = param_fields(method)
    if name not in fields:
        raise TypeError(f"fit(method={method!r}) got unknown parameter(s) {[name]}; allowed: {sorted(fields)}")
    kinds = _types(fields[name])
    for t in kinds:
        try:
            return _parse_as(t, text)
        except ValueError:
            continue
    names = " or ".join("none" if t is type(None) else "true/false" if t is bool else t.__name__ for t in kinds)
    raise ValueError(f"{name}: expected {names}, got {text!r}")


def format_default(v) -> str:
    """A default as help texts show it: ``1`` for 1.0, ``1e-6`` for 1e-06."""
    if isinstance(v, float):
        s = f"{v:g}"
        if "e" in s:
            mant, exp = s.split("e")
            s = f"{mant}e{int(exp)}"
        return s
    return str(v)


def default_text(f: dataclasses.Field, python: bool = False) -> str:
    """``0.5``, or ``inf (no clipping)`` where the default is a sentinel with ``default_doc``.

    ``python``: strings quoted (``'1%'``), as a Python caller writes them.
    """
    doc = f.metadata.get("default_doc")
    d = repr(f.default) if python and isinstance(f.default, str) else format_default(f.default)
    return f"{d} ({doc})" if doc else d


def describe_params() -> str:
    """The ``**params`` section of :func:`crowdstat.fit`'s docstring, from the config fields."""
    out = []
    blocks: list[tuple[str, type[Config]]] = [("common", CommonConfig)]
    seen: dict[type[Config], list[str]] = {}
    for name, m in REGISTRY.items():
        seen.setdefault(m.config, []).append(name)
    blocks += [(" / ".join(names), cls) for cls, names in seen.items()]
    for title, cls in blocks:
        fields = dataclasses.fields(cls)
        if not fields:
            out.append(f"{title} ({cls.__name__}): no parameters.")
            continue
        out.append(f"{title} ({cls.__name__}):")
        out += [f"    ``{f.name}`` = {default_text(f, python=True)}: {f.metadata['help']}" for f in fields]
    return "\n".join(out)
