"""The page and figures of the RL study (``experiments/rl_synthetic.py``) from its results JSON.

Every interval is a bootstrap interval over seeds (``scipy.stats.bootstrap``, BCa, 10,000 resamples,
95 %): of one arm's mean, and of the paired per-seed differences between two arms (the runs of a seed
start from the same warm start and are evaluated on the same held-out problems with the same
evaluation seed). With 8 seeds these intervals are approximate; the per-seed numbers are in the JSON.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["bootstrap_interval", "summarize", "comparisons", "length_targets", "write_report"]


def bootstrap_interval(stat, *samples, paired: bool = True) -> dict:
    """``{"mean", "lo", "hi", "n"}``: ``stat(*samples)`` and its 95 % BCa bootstrap interval over the
    sample index (resampled jointly when ``paired``); no interval (``lo = hi = nan``) below 3 samples or
    when every resample gives the same value."""
    from scipy.stats import bootstrap

    xs = [np.asarray(s, dtype=float) for s in samples]
    n = len(xs[0])
    point = float(stat(*xs)) if n else float("nan")
    if n < 3:
        return {"mean": point, "lo": float("nan"), "hi": float("nan"), "n": n}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(
            tuple(xs),
            lambda *a, axis=-1: stat(*a, axis=axis),
            paired=paired,
            vectorized=True,
            n_resamples=10_000,
            confidence_level=0.95,
            method="BCa",
            rng=np.random.default_rng(0),
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"mean": point, "lo": lo, "hi": hi, "n": n}


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _diff(a, b, axis=-1):
    return np.mean(a - b, axis=axis)


def _ratio(ga, gb, axis=-1):
    return np.mean(ga, axis=axis) / np.mean(gb, axis=axis)


def _runs_of(results: dict, arm: str) -> dict[int, dict]:
    return {r["seed"]: r for k, r in results["runs"].items() if r["arm"] == arm}


def _nanmean(xs) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def _series(run: dict, key: str, rounds: int = 6) -> list[float]:
    """A per-round statistic of a run: ``len`` (mean completion tokens) or ``kl`` (k1 per token)."""
    if run["trainer"] == "ppo":
        k = {"len": "tokens/mean_len", "kl": "kl/k1_mean"}[key]
        return [h.get("ppo", {}).get(k, float("nan")) for h in run["history"][1:]]
    k = {"len": "completions/mean_length", "kl": "kl"}[key]
    steps = [h[k] for h in run.get("grpo", {}).get("log", []) if k in h]
    size = max(1, len(steps) // rounds)  # GRPO steps grouped into as many "rounds" as a PPO run has
    return [sum(steps[i : i + size]) / len(steps[i : i + size]) for i in range(0, size * rounds, size) if steps[i : i + size]]


def summarize(results: dict) -> dict:
    """Per arm: pass@1 / pass@10 before, after and the gain (mean over seeds with intervals), curves,
    lengths and KL per round, per-template pass@1 before -> after."""
    out = {}
    for arm in [a["name"] for a in results["settings"]["arms"]]:
        runs = _runs_of(results, arm)
        if not runs:
            continue
        seeds = sorted(runs)
        d: dict = {"seeds": seeds, "trainer": runs[seeds[0]]["trainer"]}
        for k in ("pass@1", "pass@10"):
            if all(k in runs[s]["history"][0] and k in runs[s]["history"][-1] for s in seeds):
                b = [runs[s]["history"][0][k] for s in seeds]
                a = [runs[s]["history"][-1][k] for s in seeds]
                d[f"{k}_after"] = bootstrap_interval(_mean, a)
                d[f"{k}_gain"] = bootstrap_interval(_mean, np.subtract(a, b))
                d[f"{k}_before"] = float(np.mean(b))
        n_r = min(len(runs[s]["history"]) for s in seeds)
        d["curve"] = [
            {"round": runs[seeds[0]]["history"][i]["round"], "mean": float(np.mean([runs[s]["history"][i]["pass@1"] for s in seeds]))}
            for i in range(n_r)
            if all("pass@1" in runs[s]["history"][i] for s in seeds)
        ]
        for key in ("len", "kl"):
            ser = [_series(runs[s], key, results["settings"]["loop"]["rounds"]) for s in seeds]
            m = min(map(len, ser))
            d[key] = [_nanmean([x[i] for x in ser]) for i in range(m)]
        temps = sorted(runs[seeds[0]]["history"][0]["per_template"])
        d["per_template"] = {
            t: {
                "before": float(np.mean([runs[s]["history"][0]["per_template"][t]["pass@1"] for s in seeds])),
                "after": float(np.mean([runs[s]["history"][-1]["per_template"][t]["pass@1"] for s in seeds])),
            }
            for t in temps
        }
        revs = [
            h["allocation"]["reviews"] / h["allocation"]["programs"]
            for s in seeds
            for h in runs[s]["history"][1:]
            if (h.get("allocation") or {}).get("programs")
        ]
        d["reviews_per_program"] = float(np.mean(revs)) if revs else None
        d["line_accuracy"] = [_nanmean([runs[s]["history"][i].get("line_accuracy", float("nan")) for s in seeds]) for i in range(1, n_r)]
        out[arm] = d
    return out


def _target_met(kind: str, target: str, iv: dict) -> str:
    if not target:
        return ""
    if any(math.isnan(iv[k]) for k in ("lo", "hi")):
        return "undecided (too few seeds)"
    if kind == "diff":
        return "met" if iv["lo"] > 0 else "missed"
    return "met" if iv["mean"] >= float(target) else "missed"


def comparisons(results: dict) -> list[dict]:
    """The config's paired comparisons over the seeds both arms ran (pass@1 after RL)."""
    rows = []
    for c in results["settings"]["comparisons"]:
        ra, rb = _runs_of(results, c["a"]), _runs_of(results, c["b"])
        seeds = sorted(set(ra) & set(rb))
        if not seeds:
            continue
        after = {arm: np.array([r[s]["history"][-1]["pass@1"] for s in seeds]) for arm, r in ((c["a"], ra), (c["b"], rb))}
        before = {arm: np.array([r[s]["history"][0]["pass@1"] for s in seeds]) for arm, r in ((c["a"], ra), (c["b"], rb))}
        if c["kind"] == "diff":
            iv = bootstrap_interval(_diff, after[c["a"]], after[c["b"]])
        else:
            iv = bootstrap_interval(_ratio, after[c["a"]] - before[c["a"]], after[c["b"]] - before[c["b"]])
        rows.append({**c, **iv, "seeds": seeds, "verdict": _target_met(c["kind"], c.get("target", ""), iv)})
    return rows


def length_targets(results: dict, tolerance: float) -> dict[str, dict]:
    """Per arm: the last round's (ppo) or step's (grpo) mean completion length over the first one's (whose
    rollouts come from the warm start)."""
    out = {}
    for arm in [a["name"] for a in results["settings"]["arms"]]:
        runs = list(_runs_of(results, arm).values())
        rounds = results["settings"]["loop"]["rounds"]
        ratios = [ser[-1] / ser[0] for ser in (_series(r, "len", rounds) for r in runs) if len(ser) >= 2 and ser[0] > 0]
        if ratios:
            iv = bootstrap_interval(_mean, ratios)
            ok = abs(iv["mean"] - 1) <= tolerance
            out[arm] = {**iv, "verdict": "met" if ok else "missed"}
        elif runs:
            out[arm] = {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0, "verdict": "not measured"}
    return out


def plot(results: dict, summ: dict, rows: list[dict], figs: Path) -> list[str]:
    """pass@1, completion length and KL per round (every arm; GRPO steps grouped into rounds), and the
    paired comparisons with their intervals (differences and gain ratios on separate axes). The
    project's figure style (crowdstat.study.plotting): distinct colour/line/marker per arm, legends outside."""
    from crowdstat.study.plotting import NEUTRAL, figure_legend, new_figure, save_figure, series_style, style_axes

    names = []
    fig, axes = new_figure(1, 3, figsize=(15, 4.4))
    ax0, ax1, ax2 = axes[0]
    for i, (arm, d) in enumerate(summ.items()):
        st = series_style(i)
        ax0.plot([c["round"] for c in d["curve"]], [c["mean"] for c in d["curve"]], label=arm, **st)
        ax1.plot(range(1, len(d["len"]) + 1), d["len"], **st)
        if any(not math.isnan(x) for x in d["kl"]):
            ax2.plot(range(1, len(d["kl"]) + 1), d["kl"], **st)
    style_axes(ax0, "round (GRPO: after its last step)", "held-out pass@1", "pass@1, mean over seeds", integer_x=True)
    style_axes(ax1, "round (GRPO: 8 steps of 16 completions)", "tokens", "mean completion length", integer_x=True)
    style_axes(ax2, "round", "nats per token", "KL to the reference (k1; PPO arms)", integer_x=True)
    figure_legend(fig, ax0, where="right")
    save_figure(fig, figs / "rl_study_rounds.png")
    names.append("rl_study_rounds.png")
    if rows:
        kinds = [k for k in ("diff", "ratio") if any(r["kind"] == k for r in rows)]
        fig, axes = new_figure(
            1, len(kinds), figsize=(6.5 * len(kinds), 0.42 * max(sum(r["kind"] == k for r in rows) for k in kinds) + 1.6)
        )
        for ax, kind in zip(axes[0], kinds):
            sub = [r for r in rows if r["kind"] == kind]
            ys = np.arange(len(sub))[::-1]
            for y, r in zip(ys, sub):
                lo, hi = (r["lo"], r["hi"]) if not math.isnan(r["lo"]) else (r["mean"], r["mean"])
                colour = series_style(0 if r.get("target") else 1)["color"]
                ax.plot([lo, hi], [y, y], color=colour, lw=2)
                ax.plot([r["mean"]], [y], "o", color=colour)
            ax.axvline(0.0 if kind == "diff" else 1.0, color=NEUTRAL, lw=0.8)
            if kind == "ratio":
                ax.axvline(0.8, color=NEUTRAL, lw=0.8, ls=":")
            sep = "-" if kind == "diff" else "/"
            ax.set_yticks(ys, [f"{r['a']} {sep} {r['b']}" for r in sub], fontsize=7)
            style_axes(
                ax,
                "pass@1 after RL, paired difference" if kind == "diff" else "gain ratio (dotted: the 0.8 target)",
                None,
                "95 % bootstrap interval over seeds (blue: a stated target; orange: reported only)",
            )
        save_figure(fig, figs / "rl_study_comparisons.png")
        names.append("rl_study_comparisons.png")
    return names


def _iv(d: dict, nd: int = 3, sign: bool = True) -> str:
    sg = "+" if sign else ""
    if math.isnan(d["lo"]):
        return f"{d['mean']:.{nd}f} (n={d['n']}, no interval)"
    return f"{d['mean']:{sg}.{nd}f} [{d['lo']:{sg}.{nd}f}, {d['hi']:{sg}.{nd}f}]"


def _setup_lines(results: dict) -> list[str]:
    s = results["settings"]
    L, G = s["loop"], s["grpo"]
    ws = results.get("warm_start", {})
    lines = [
        "# RL from crowd rewards on the synthetic benchmark: the decisive study" + (" (QUICK run)" if "QUICK" in results["label"] else ""),
        "",
        "Generated by `experiments/rl_synthetic.py` (page: `experiments/rl_study_report.py`). Calls that produced the results:",
        "",
    ]
    for c in results.get("calls", []):
        lines.append(
            f"- `{c['command']}`: {c.get('seconds', 0) / 60:.1f} min wall, warm start "
            f"{'built' if c.get('warm_start_built') else 'cached'} ({c.get('seconds_warm_start', 0):.0f} s), "
            f"{c.get('workers')} workers, load average {c.get('loadavg_start', math.nan):.1f} -> {c.get('loadavg_end', math.nan):.1f}, "
            f"{len(c['arms'])} arms x seeds {c['seeds']}"
        )
    planned = {(a, sd) for c in results.get("calls", []) for a in c["arms"] for sd in c["seeds"]}
    done = {(r["arm"], r["seed"]) for r in results["runs"].values()}
    if planned - done:
        lines += [
            "",
            f"**Incomplete: {len(done & planned)} of the {len(planned)} runs planned by these calls have finished** "
            "(the study is resumable: rerun the same command). Every number below is over the finished runs only.",
        ]
    lines += [
        "",
        "## Setup",
        "",
        f"- Model: tiny Qwen2-config model ({ws.get('n_parameters')} parameters), character tokenizer, warm start "
        f"`rl.train.sft` ({s['sft']['steps']} steps x {s['sft']['batch_size']}) on solutions with systematic one-line bugs.",
        f"- PPO arms: `rl.loop`, {L['rounds']} rounds x {L['prompts_per_round']} prompts x {L['samples']} samples, "
        f"LoRA r={L['lora']['r']}, "
        f"lr {L['ppo']['learning_rate']}, {L['ppo'].get('ppo_epochs')} epochs, minibatch {L['ppo'].get('minibatch_size')}, "
        f"kl_coef {L['ppo'].get('kl_coef')}; the arm sets the advantage estimator (`lines`: each token of a line gets "
        "its line's reward minus the mean over the group of the same prompt, scaled by its standard deviation; `gae`: value head) "
        "and the reward mode (`lines`: 2P - 1 per line; `program`: one reward per completion, 1 if every line is right).",
        f"- GRPO arms: TRL 1.16 GRPOTrainer (`rl.train.grpo`), {G['steps']} steps x {G['batch_size']} completions "
        f"({G['num_generations']} per prompt; the same {G['steps'] * G['batch_size']} completions as a PPO run), lr {G['lr']}, "
        "beta 0; `scalar`: one advantage per completion; `lines`: per-line advantages (`rl.train.grpo_lines`).",
        f"- Crowds (`rl.crowd.population`, every annotator votes on every completion line unless the arm asks for fewer "
        f"reviews per program; honeypot fraction {L['honeypot_fraction']}): "
        + "; ".join(f"**{k}** `{v}`" for k, v in s["crowds"].items())
        + ". The biased crowd's `examples` rater approves every line of a program whose shown examples pass; its `lazy` "
        "rater accepts 80 % of lines unseen; its adversaries answer right 20 % of the time.",
        f"- Evaluation: {L['eval'].get('per_template')} held-out problems per template, n={L['eval']['n']} samples at "
        f"T={L['eval']['temperature']} before and after (n={L['eval'].get('n_mid')} in between), unbiased pass@k.",
        "- Arms: "
        + "; ".join(
            f"`{a['name']}` = {a['trainer']}/{a['advantage']}, {a['source']}"
            + (f" {' '.join(a['crowd_args'])}" if a["crowd_args"] else "")
            + (f", {a['crowd']} crowd" if a["source"] not in ("true_lines", "execution") else "")
            + (", program reward" if a["reward_mode"] == "program" else "")
            + _allocation_words(a.get("loop") or {})
            for a in s["arms"]
        )
        + ".",
        "",
    ]
    return lines


def _allocation_words(loop: dict) -> str:
    """How an arm asks for votes, when it overrides the default (every annotator on every program)."""
    if loop.get("allocation") == "adaptive":
        budget, conf = loop.get("vote_budget", 3.0), loop.get("allocation_confidence", 0.95)
        return f", {budget:g} reviews per program asked adaptively (`crowdstat next`, stop at {conf:g})"
    if loop.get("per_program"):
        return f", {loop['per_program']} random annotators per program"
    return ""


def _arm_table(summ: dict, lt: dict) -> list[str]:
    lines = [
        "## Every arm (held-out pass@1; mean over seeds, 95 % bootstrap interval of the gain)",
        "",
        "| arm | seeds | pass@1 before | pass@1 after | gain | pass@10 before -> after | length last/first round "
        "| crowd line accuracy (last round) | reviews per program |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, d in summ.items():
        p10 = f"{d['pass@10_before']:.3f} -> {d['pass@10_after']['mean']:.3f}" if "pass@10_after" in d else "-"
        rv = d.get("reviews_per_program")
        la = d["line_accuracy"][-1] if d["line_accuracy"] and not math.isnan(d["line_accuracy"][-1]) else None
        lines.append(
            f"| {arm} | {len(d['seeds'])} | {d['pass@1_before']:.3f} | {d['pass@1_after']['mean']:.3f} | {_iv(d['pass@1_gain'])} | {p10} | "
            f"{_iv(lt[arm], 2, sign=False) if arm in lt else '-'} | {'-' if la is None else f'{la:.3f}'} | "
            f"{'-' if rv is None else f'{rv:.2f}'} |"
        )
    return lines + [""]


def write_report(results: dict, doc: Path, figs: Path) -> None:
    """Write the page ``doc`` and the figures in ``figs`` (atomically) from ``results``."""
    from crowdstat.io.atomic import atomic_write_text

    tol = results["settings"].get("length_tolerance", 0.2)
    summ = summarize(results)
    rows = comparisons(results)
    lt = length_targets(results, tol)
    names = plot(results, summ, rows, figs)
    rel = os.path.relpath(figs, doc.parent)
    lines = _setup_lines(results)
    lines += [
        "## The study's targets (stated before the run; paired over seeds)",
        "",
        "| comparison | arms | seeds | estimate [95 % CI] | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | `{r['a']}` {'-' if r['kind'] == 'diff' else '/'} `{r['b']}` | {len(r['seeds'])} | {_iv(r)} | "
            f"{(r['target'] if r['kind'] == 'diff' else '>= ' + r['target']) if r['target'] else '-'} | {r['verdict'] or '-'} |"
        )
    lines += [
        "",
        f"Length target: the last round's mean completion length within {tol:.0%} of the first round's "
        "(whose rollouts come from the warm start), per arm: "
        + ", ".join(f"`{a}` {v['mean']:.2f} ({v['verdict']})" for a, v in lt.items())
        + ".",
        "",
    ]
    lines += _arm_table(summ, lt)
    lines += [f"![{n}]({rel}/{n})" for n in names] + [""]
    lines += [
        "## Per template (pass@1 before -> after, mean over seeds)",
        "",
        "| template | " + " | ".join(summ) + " |",
        "|---|" + "---|" * len(summ),
    ]
    temps = sorted(next(iter(summ.values()))["per_template"]) if summ else []
    for t in temps:
        lines.append(
            f"| {t} | "
            + " | ".join(f"{d['per_template'][t]['before']:.2f} -> {d['per_template'][t]['after']:.2f}" for d in summ.values())
            + " |"
        )
    reading = ROOT / "experiments/results/rl_synthetic_reading.md"
    if "QUICK" not in results["label"] and reading.exists():
        lines += ["", reading.read_text().rstrip()]
    lines += ["", "Raw numbers: the results JSON next to this run (`experiments/results/rl_synthetic.json` for the committed run).", ""]
    lines += [COMMANDS.rstrip(), ""]
    atomic_write_text(doc, "\n".join(lines), parents=True)


COMMANDS = """## Commands

<!-- not-run: the study itself (hours of CPU in all); --quick is its smoke run, tests/rl/test_rl_study.py tests this page -->

    nice -n 10 python experiments/rl_synthetic.py --part crowd      # 10 PPO arms x 8 seeds (+ the warm start)
    nice -n 10 python experiments/rl_synthetic.py --part trainers   # GAE and the two GRPO arms x 8 seeds
    nice -n 10 python experiments/rl_synthetic.py --part allocation # 3 reviews per program: random vs adaptive x 8 seeds
    python experiments/rl_synthetic.py --quick                      # smoke run: every arm, 1 seed (experiments/cache/rl_synthetic/quick)
    python experiments/rl_synthetic.py --report-only                # this page and its figures from the results JSON

The study is resumable: the warm start is cached in `experiments/cache/rl_synthetic/warmstart` (reused
when its settings match), each seed's evaluation before RL in `runs/before-s<seed>.json`, a finished
run is read back, and an interrupted PPO run resumes from its last checkpointed round (an interrupted
GRPO run starts again). Parts run one after the other add to the same results file. The arms,
crowds, comparisons and targets are in `experiments/configs/rl_synthetic.json`; they were fixed
before the first full run.

## Caveats (read before quoting a number)

- Held-out problems: multi-constant templates use constant combinations never seen in training;
  one-constant templates use new instances with training constants; `sub_mul` and `keep_less`
  are never trained (nothing correct to reinforce). Evaluation: the first few held-out problems of
  each of the 23 templates, the same problems and evaluation seed for every arm of a seed.
- Line truth: `rl.tasks.lines.line_truth` (the rule `rl annotate` uses) on prompt + completion, the
  prompt unannotated. `execution` gives every line the share of tests passed; `true_program` gives
  the completion one reward (all lines right or not) through PPO's program reward mode, with the same
  group baseline as the line estimator.
- Intervals: bootstrap over 8 seeds (BCa); each seed's number is itself a noisy estimate (a few
  problems x 10 samples per template), so seed-level spread includes evaluation noise.
- Timings: a 2-core machine shared with other jobs; the load average of each call is listed at the top.
"""
