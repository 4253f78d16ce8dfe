"""The ``crowdstat`` command line (``crowdstat fit ...``; also ``python -m crowdstat``)."""

from __future__ import annotations

import argparse
import math
import sys
import warnings

__all__ = ["main", "build_parser"]


def _prob(s: str) -> float:
    return float(s)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crowdstat", description="Calibrated crowd feedback on lines of code (cRLHF).")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser(
        "fit",
        help="fit an estimator to a vote table and write lines.csv, annotators.csv, rewards.jsonl, fit.json",
        description="Fit an estimator to a vote table (program,line,annotator,label) and write the results atomically to --out.",
    )
    f.add_argument("votes", help="vote table: .csv, .parquet or .jsonl with columns program,line,annotator,label")
    f.add_argument("--truth", help="honeypot truth table: program,line,truth")
    f.add_argument("--programs", help="program sizes: program,n_lines (for coverage)")
    f.add_argument("--method", required=True, choices=("majority", "sequential", "proximal", "em1", "em2", "bayes"))
    f.add_argument("--out", required=True, help="output directory (replaced atomically)")
    g = f.add_argument_group("common")
    g.add_argument("--prior", type=float, default=0.5, help="p0, prior probability that a line is correct (default 0.5)")
    g.add_argument("--tau", type=float, default=0.5, help="threshold on the posterior for the reward s = c/k (default 0.5)")
    g.add_argument("--delta", type=float, default=1e-6, help="probabilities are clipped to [delta, 1-delta] (default 1e-6)")
    g.add_argument("--x64", action="store_true", help="compute in float64 (default float32)")
    s = f.add_argument_group("sequential (eq. 8)")
    s.add_argument("--lam", type=float, default=1.0, help="step size lambda (default 1, the paper's)")
    s.add_argument("--nu", type=float, default=0.7, help="initial reliability; w0 = logit(nu) (default 0.7)")
    s.add_argument("--pbar-honeypot", type=float, default=0.99, help="pbar on honeypot lines, < 1 (default 0.99)")
    s.add_argument("--w-max", type=float, default=math.inf, help="clip |w| <= w_max after each task (default: no clipping)")
    x = f.add_argument_group("proximal (one-shot L1-logistic)")
    x.add_argument(
        "--gamma", default="1%",
        help="L1 weight: a number (absolute) or 'X%%' = X percent of gamma_max, e.g. '5%%' (default 1%%)",
    )
    x.add_argument("--ista", action="store_true", help="plain ISTA instead of FISTA")
    x.add_argument("--stepsize", type=float, default=None, help="ISTA/FISTA step eta (default 1/L); ISTA needs 0 < eta < 2/L")
    x.add_argument("--solver", choices=("auto", "newton", "fista"), default="auto",
                   help="proximal solver: auto = proximal Newton where it applies (CPU native kernel, or few annotators), else FISTA")
    x.add_argument("--tol", type=float, default=None, help="relative duality gap to stop at (default 1e-5 float32, 1e-10 float64)")
    x.add_argument("--maxiter", type=int, default=10000)
    x.add_argument("--intercept", action="store_true", help="fit an unpenalised intercept b (used as logit(p0))")
    x.add_argument("--latent", action="store_true", help="latent-truth variant (automatic without --truth)")
    b = f.add_argument_group("baselines (em1, em2: Dawid-Skene EM; bayes: NUTS)")
    b.add_argument("--em-maxiter", type=int, default=100, help="EM iterations cap (default 100)")
    b.add_argument("--em-tol", type=float, default=1e-6, help="EM stops when the log-likelihood gain is below this (default 1e-6)")
    b.add_argument("--num-warmup", type=int, default=500)
    b.add_argument("--num-samples", type=int, default=500)
    b.add_argument("--num-chains", type=int, default=2)
    b.add_argument("--beta-a", type=float, default=2.0, help="Beta(a, b) prior on reliabilities (default 2, 1)")
    b.add_argument("--beta-b", type=float, default=1.0)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--credible", type=float, default=0.9, help="credible interval mass (default 0.9)")
    _add_simulate(sub)
    _add_compare(sub)
    return parser


def _add_simulate(sub) -> None:
    s = sub.add_parser(
        "simulate",
        help="simulate a crowd voting on lines of code; write votes.csv, truth.csv, true_lines.csv, annotators.csv",
        description=(
            "Simulate annotators voting on programs of K lines (crowdstat.study.simulate; docs/study.md). "
            "SPEC is a comma-separated list of kind:count[@params][~decay] groups, kinds expert@p (0.95), "
            "novice@p (0.7), reliable@p (0.8), spammer (p = 1/2), adversary@p (0.3, < 1/2), twocoin@sens/spec (0.9/0.6: "
            "P(+1 | correct) / P(-1 | wrong)); ~decay = fatigue rate per vote cast, rates decay to 1/2 as exp(-decay n). "
            "Example: expert:3@0.95,novice:4@0.7,spammer:2,adversary:1@0.3,twocoin:2@0.9/0.6"
        ),
    )
    s.add_argument("--population", required=True, metavar="SPEC", help="annotator population, e.g. 'expert:3@0.95,spammer:2'")
    s.add_argument("--programs", type=int, default=50, help="number of programs (tasks) (default 50)")
    s.add_argument("--lines", type=int, default=6, help="lines per program (default 6)")
    s.add_argument("--honeypots", type=float, default=0.2, help="fraction of programs that are honeypots (default 0.2)")
    s.add_argument("--placement", choices=("first", "random"), default="first", help="honeypot programs first (Algorithm 1) or scattered")
    s.add_argument("--design", choices=("program", "line"), default="program", help="r annotators per program (all its lines) or per line")
    s.add_argument("--per-item", type=int, default=None, metavar="R", help="annotators per program/line (default: all)")
    s.add_argument("--p-buggy", type=float, default=0.5, help="P(program is buggy) (default 0.5)")
    s.add_argument("--p-wrong", type=float, default=0.4, help="P(line wrong | buggy program) (default 0.4)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="output directory (replaced atomically)")


def _add_compare(sub) -> None:
    c = sub.add_parser(
        "compare",
        help="run several methods on one data set and write a metrics table and figures",
        description=(
            "Fit several methods (crowdstat.fit) on one vote table and score them against the true lines "
            "(honeypot lines excluded) and, with --true-annotators, the true reliabilities. A method spec may carry "
            "parameters: 'sequential:lam=0.1:w_max=10', 'proximal:gamma=5%%'."
        ),
    )
    c.add_argument("votes", help="vote table (program,line,annotator,label)")
    c.add_argument("--truth", help="honeypot truth (program,line,truth)")
    c.add_argument("--true-lines", required=True, help="truth of every line (program,line,truth)")
    c.add_argument("--true-annotators", help="true reliabilities (annotator,p[,kind]), e.g. annotators.csv of crowdstat simulate")
    c.add_argument("--methods", default="majority,sequential,proximal", help="comma-separated method specs (default majority,sequential,proximal)")
    c.add_argument("--x64", action="store_true", help="compute in float64")
    c.add_argument("--out", required=True, help="output directory (replaced atomically)")


def _main_simulate(args) -> int:
    import json

    from crowdstat.api import save_dir_atomically
    from crowdstat.study.simulate import parse_population, simulate_arrays, to_frames

    try:
        pop = parse_population(args.population)
        arr = simulate_arrays(
            args.seed, pop, args.programs, args.lines, args.p_buggy, args.p_wrong, args.honeypots, args.per_item,
            args.design, args.placement,
        )
    except ValueError as e:
        print(f"crowdstat: error: {e}", file=sys.stderr)
        return 2
    sim = to_frames(arr, pop)

    def write(tmp):
        sim.votes.to_csv(tmp / "votes.csv", index=False)
        sim.truth.to_csv(tmp / "truth.csv", index=False)
        sim.true_lines.to_csv(tmp / "true_lines.csv", index=False)
        sim.reliability.to_csv(tmp / "annotators.csv", index=False, float_format="%.9g")
        settings = {k: getattr(args, k) for k in ("population", "programs", "lines", "honeypots", "placement", "design", "per_item", "p_buggy", "p_wrong", "seed")}
        (tmp / "simulation.json").write_text(json.dumps(settings, indent=2) + "\n")

    out = save_dir_atomically(args.out, write)
    print(
        f"crowdstat simulate: {len(sim.votes)} votes, {args.programs} programs x {args.lines} lines, {pop.m} annotators, "
        f"{sim.truth['program'].nunique() if len(sim.truth) else 0} honeypot programs (seed {args.seed}) -> {out}"
    )
    return 0


def _main_compare(args) -> int:
    from crowdstat.study.compare import MethodUnavailable, compare, write_outputs
    from crowdstat.io.rewards import RewardFileError
    from crowdstat.io.tables import VoteTableError

    methods = [m for m in args.methods.split(",") if m.strip()]
    try:
        cmp = compare(
            args.votes, truth=args.truth, true_lines=args.true_lines, true_annotators=args.true_annotators, methods=methods,
            common={"x64": args.x64}, progress=True,
        )
        meta = {k: getattr(args, k) for k in ("votes", "truth", "true_lines", "true_annotators", "methods", "x64")}
        out = write_outputs(cmp, args.out, meta)
    except MethodUnavailable as e:
        print(f"crowdstat: error: {e}. Drop it from --methods.", file=sys.stderr)
        return 2
    except (VoteTableError, RewardFileError, ValueError, TypeError, FileNotFoundError) as e:
        print(f"crowdstat: error: {e}", file=sys.stderr)
        return 2
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(cmp.metrics.drop(columns=["warnings"]).to_string(index=False))
    print(f"-> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from crowdstat._cache import enable_compilation_cache

    # A CLI process compiles its drivers and exits: keep compiled programs on disk between runs
    # (CROWDSTAT_NO_COMPILE_CACHE=1 turns this off; CROWDSTAT_CACHE_DIR moves it).
    enable_compilation_cache()
    if args.command == "simulate":
        return _main_simulate(args)
    if args.command == "compare":
        return _main_compare(args)
    if args.command != "fit":  # pragma: no cover - argparse enforces the choices
        return 2
    from crowdstat.api import fit
    from crowdstat.io.rewards import RewardFileError
    from crowdstat.io.tables import VoteTableError

    params = {"prior": args.prior, "tau": args.tau, "delta": args.delta, "x64": args.x64, "progress": sys.stderr.isatty()}
    if args.method == "sequential":
        params.update(lam=args.lam, nu=args.nu, pbar_honeypot=args.pbar_honeypot, w_max=args.w_max)
    elif args.method == "proximal":
        params.update(
            gamma=args.gamma, accelerated=not args.ista, solver="fista" if args.ista else args.solver, stepsize=args.stepsize, tol=args.tol, maxiter=args.maxiter,
            intercept=args.intercept, latent=True if args.latent else None, nu=args.nu,
        )
    elif args.method in ("em1", "em2"):
        params.update(maxiter=args.em_maxiter, tol=args.em_tol)
    elif args.method == "bayes":
        params.update(
            num_warmup=args.num_warmup, num_samples=args.num_samples, num_chains=args.num_chains, a=args.beta_a,
            b=args.beta_b, seed=args.seed, credible=args.credible,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda msg, *a, **k: print(f"crowdstat: warning: {msg}", file=sys.stderr)
            res = fit(args.votes, truth=args.truth, method=args.method, programs=args.programs, **params)
            out = res.save(args.out)
    except (VoteTableError, RewardFileError, ValueError, FileNotFoundError) as e:
        print(f"crowdstat: error: {e}", file=sys.stderr)
        return 2
    d = res.diagnostics
    t = res.table
    print(
        f"crowdstat fit --method {args.method}: {t.n_votes} votes, {t.n_lines} lines, {t.n_programs} programs, "
        f"{t.n_annotators} annotators, {t.n_honeypots} honeypot lines -> {out}"
    )
    if args.method == "proximal" and "gap" in d:
        print(
            f"  objective {d['objective']:.6g}, dual {d['dual_value']:.6g}, gap {d['gap']:.3g} "
            f"(relative {d['rel_gap']:.3g}), {d['iterations']} iterations, converged={d['converged']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
