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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "fit":  # pragma: no cover - argparse enforces the choices
        return 2
    from crowdstat.api import fit
    from crowdstat.rewards_io import RewardFileError
    from crowdstat.tables import VoteTableError

    params = {"prior": args.prior, "tau": args.tau, "delta": args.delta, "x64": args.x64, "progress": sys.stderr.isatty()}
    if args.method == "sequential":
        params.update(lam=args.lam, nu=args.nu, pbar_honeypot=args.pbar_honeypot, w_max=args.w_max)
    elif args.method == "proximal":
        params.update(
            gamma=args.gamma, accelerated=not args.ista, stepsize=args.stepsize, tol=args.tol, maxiter=args.maxiter,
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
