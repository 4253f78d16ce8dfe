"""Streaming (issue 18): the per-batch update of :class:`crowdstat.online.OnlineFit` against a full refit.

For each history size H (votes already in the state), a batch of new votes arrives (new programs,
as in one round of the RL loop) and the fit of all H + B votes is wanted. Measured in one process:

- ``update``: ``OnlineFit.update(batch)`` (read and validate the batch, merge it, warm-started
  fit, FitResult tables of every line); ``update (state)``: the same with ``result=False`` (the
  tables are not built);
- ``refit``: ``crowdstat.fit`` on the table of all H + B votes (a DataFrame: read, validate and id
  encoding included), steady state (compiled: the same shape run before); ``refit (first)``: the
  first call at that shape, compile included, which a loop whose table grows pays every round.

The state reserves room for the whole run first (``OnlineFit.reserve``), so that no timed update
crosses a doubling of the padded arrays (one that does compiles again, as a refit of a new size
does every time).

The ratios update / refit are computed on the same data in the same run. Each timing is the
median over ``repeat`` batches (each batch new votes: the state grows by B per timed update).

    python -m benchmarks.stream [--smoke] [--methods em2,proximal,sequential]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from benchmarks.data import synth

SIZES = (10**4, 10**5, 10**6)
SMOKE_SIZES = (10**4,)
# EM to convergence (the default tol 1e-6 / maxiter 100 stops both runs near the fixed point, apart).
METHODS = {"em2": {"tol": 1e-10, "maxiter": 1000}, "proximal": {"latent": False, "gamma": "1%"}, "sequential": {}}
BATCH = 1000  # votes a batch (one round): 20 programs of 10 lines x 5 votes
# An identifiable crowd (each annotator has >= 100 votes at 10^4): with 1000 annotators at 10^4 votes
# (10 votes each) EM has several optima and the L1 problem several minimisers (1000 weights, 200
# honeypot lines), and a warm start can end elsewhere than the refit (docs/streaming.md).
ANNOTATORS = 100


def _frames(history: int, batch: int, n_batches: int, seed: int = 0):
    """The history and ``n_batches`` batches of new programs (string ids, as a user's table), with their truth."""
    s = synth(history + batch * n_batches, n_annotators=ANNOTATORS, seed=seed)
    votes, truth = s.frame(), s.truth_frame()
    prog = votes["program"].to_numpy()
    cuts = [history + k * batch for k in range(n_batches + 1)]
    # cut at program boundaries (a batch brings whole programs)
    starts = np.flatnonzero(np.r_[True, prog[1:] != prog[:-1]])
    cuts = [int(starts[np.searchsorted(starts, c)]) if c < len(prog) else len(prog) for c in cuts]
    parts = [votes.iloc[: cuts[0]]] + [votes.iloc[a:b] for a, b in zip(cuts[:-1], cuts[1:])]

    def truth_of(part):
        return truth[truth["program"].isin(set(part["program"]))]

    return votes.iloc[: cuts[-1]], truth, [(p, truth_of(p)) for p in parts]


def _time(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_one(method: str, history: int, batch: int = BATCH, repeat: int = 3) -> dict:
    """Timings for one method at one history size (docstring of the module)."""
    import crowdstat as cs
    from crowdstat.online import OnlineFit

    kw = {**METHODS[method], "x64": True}
    n_batches = 2 * repeat + 1  # one untimed (compiles the warm-start path), then timed with and without tables
    all_votes, truth, parts = _frames(history, batch, n_batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        of = OnlineFit(method, **kw)
        n_lines = all_votes[["program", "line"]].drop_duplicates().shape[0]
        of.reserve(votes=len(all_votes), lines=n_lines, programs=all_votes["program"].nunique(), annotators=ANNOTATORS)
        t_hist, _ = _time(lambda: of.update(*parts[0]))
        of.update(*parts[1])
        upd, upd_state, iters = [], [], []
        for k in range(repeat):
            t, res = _time(lambda k=k: of.update(*parts[2 + 2 * k]))
            upd.append(t)
            iters.append(res.diagnostics.get("iterations"))
            t, _ = _time(lambda k=k: of.update(*parts[3 + 2 * k], result=False))
            upd_state.append(t)
        final = of.result
        first, ref = _time(lambda: cs.fit(all_votes, truth=truth[truth["program"].isin(set(all_votes["program"]))], method=method, **kw))
        again = [
            _time(lambda: cs.fit(all_votes, truth=truth[truth["program"].isin(set(all_votes["program"]))], method=method, **kw))[0]
            for _ in range(2)
        ]
    d = float(np.max(np.abs(final.lines["posterior"].to_numpy() - ref.lines["posterior"].to_numpy())))
    refit = float(np.median(again))
    update = float(np.median(upd))
    state = float(np.median(upd_state))
    return {
        "method": method,
        "history_votes": history,
        "batch_votes": int(len(parts[2][0])),
        "update_s": update,
        "update_state_s": state,
        "refit_s": refit,
        "refit_first_s": first,
        "update_over_refit": update / refit,
        "state_over_refit": state / refit,
        "update_over_refit_first": update / first,
        "cold_history_load_s": t_hist,
        "update_iterations": iters,
        "refit_iterations": ref.diagnostics.get("iterations"),
        "max_abs_dposterior_vs_refit": d,
    }


def run(sizes=SIZES, methods=tuple(METHODS), batch: int = BATCH, repeat: int = 3) -> dict:
    rows = []
    for method in methods:
        for h in sizes:
            r = run_one(method, h, batch, repeat)
            rows.append(r)
            print(
                f"  {method:<10} history {h:.0e}: update {r['update_s'] * 1e3:8.1f} ms (state only {r['update_state_s'] * 1e3:8.1f} ms), "
                f"refit {r['refit_s'] * 1e3:8.1f} ms (first {r['refit_first_s'] * 1e3:8.1f} ms) -> ratio {r['update_over_refit']:.3f}; "
                f"max|dP| {r['max_abs_dposterior_vs_refit']:.1e}",
                flush=True,
            )
    return {"batch_votes": batch, "repeat": repeat, "rows": rows}


def print_table(res: dict) -> None:
    rows = (res or {}).get("rows") or []
    if not rows:
        return
    print(f"\nStreaming: per-batch update vs full refit (batch of ~{res['batch_votes']} new votes; median of {res['repeat']}; float64)")
    wd = (10, 9, 11, 12, 10, 12, 9, 9, 9)
    head = ("method", "history", "update", "state only", "refit", "refit first", "upd/ref", "st/ref", "max|dP|")
    print("  ".join(str(c).rjust(w) for c, w in zip(head, wd)))
    for r in rows:
        cols = (
            r["method"],
            f"{r['history_votes']:.0e}",
            f"{r['update_s'] * 1e3:.1f} ms",
            f"{r['update_state_s'] * 1e3:.1f} ms",
            f"{r['refit_s'] * 1e3:.0f} ms",
            f"{r['refit_first_s'] * 1e3:.0f} ms",
            f"{r['update_over_refit']:.3f}",
            f"{r['state_over_refit']:.3f}",
            f"{r['max_abs_dposterior_vs_refit']:.0e}",
        )
        print("  ".join(str(c).rjust(w) for c, w in zip(cols, wd)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help=f"history {SMOKE_SIZES[0]:.0e} only")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--sizes", default=None, help="comma-separated history sizes (default 1e4,1e5,1e6)")
    ap.add_argument("--out", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    sizes = SMOKE_SIZES if args.smoke else tuple(int(float(s)) for s in args.sizes.split(",")) if args.sizes else SIZES
    res = run(sizes, tuple(args.methods.split(",")), repeat=3)
    print_table(res)
    if args.out:
        import json
        import os

        res["machine"] = {"loadavg_end": os.getloadavg(), "cpu_count": os.cpu_count()}
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
