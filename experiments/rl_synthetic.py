"""The decisive RL study: which reward makes PPO/GRPO better on the synthetic code benchmark. Resumable.

    python experiments/rl_synthetic.py [--part crowd|trainers] [--quick] [--out DIR]

1. Warm start once (``rl.train.sft``; cached in ``--cache``, reused when its settings match).
2. For each *arm* of the config x seed, one run from the warm start:

   * ``ppo`` arms: the Algorithm-1 loop (``rl.loop.run_rounds``: generate -> sandbox -> simulated
     crowd (the arm's ``crowd``) -> ``crowdstat fit`` (the arm's ``source`` and ``crowd_args``) ->
     PPO with LoRA (the arm's ``advantage``: ``lines`` or ``gae``; ``reward_mode``: ``lines`` or
     ``program``) -> held-out pass@1 / pass@10 every ``eval.every`` rounds);
   * ``grpo`` arms: TRL's GRPOTrainer (``rl.train.grpo``; the arm's ``advantage``: ``scalar`` or
     ``lines``) on the same number of completions, then the same held-out evaluation.

   Every run of a seed starts from the same warm start, evaluated once with that seed's evaluation
   seed ("before"), so differences between arms are paired per seed. Finished runs are read back when
   the study is restarted; an interrupted PPO run resumes from its last round (an interrupted GRPO
   run starts again).
3. ``<out>/rl_synthetic.json`` (every run's history), and from it (``experiments/rl_study_report.py``)
   the page ``<out>/rl_study.md`` with paired per-seed differences and bootstrap intervals, the
   study's targets, per-template tables and the figures.

``--out`` defaults to the committed places (``experiments/results``, ``docs``, ``docs/figures``) for
a full run of every part, and to ``experiments/cache/rl_synthetic/quick`` with ``--quick``: a quick
run never overwrites the committed results. A part (``--part``) is a named subset of the arms, so the
full study can be run in pieces of under 90 minutes each; the results file accumulates the parts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from crowdstat.io.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from rl.config import ConfigError, LoopConfig, from_dict, read_config_file, to_dict  # noqa: E402
from rl.crowd.pipeline import SOURCES  # noqa: E402
from rl.train.grpo import GRPOSettings  # noqa: E402
from rl.train.sft import SFTConfig  # noqa: E402

TRAINERS = ("ppo", "grpo")
ADVANTAGES = {"ppo": ("lines", "gae"), "grpo": ("scalar", "lines")}
REWARD_MODES = ("lines", "program")
#: the loop settings an arm may override (how the crowd's votes are asked for)
ARM_LOOP_KEYS = {"per_program", "allocation", "vote_budget", "allocation_confidence"}


@dataclass
class Arm:
    """One way of training: a reward source seen through a crowd, a trainer and its advantage estimator.

    name: unique label. source: one of ``rl.crowd.pipeline.SOURCES``. crowd: a key of the study's
    ``crowds`` (used by crowd sources only). crowd_args: extra ``crowdstat fit`` options (e.g.
    ``["--latent"]``). trainer: ``ppo`` or ``grpo``. advantage: ``lines`` or ``gae`` (ppo), ``scalar``
    or ``lines`` (grpo). reward_mode: ppo's ``lines`` (one reward per line) or ``program`` (one reward
    per completion: the same truth as one number). loop: overrides of the crowd's allocation for
    this arm's loop (``per_program``, ``allocation``, ``vote_budget``, ``allocation_confidence``;
    e.g. ``{"allocation": "adaptive", "vote_budget": 3}`` against ``{"per_program": 3}``: the
    same number of reviews per program, asked adaptively or at random).
    """

    name: str
    source: str
    crowd: str = "biased"
    crowd_args: list[str] = field(default_factory=list)
    trainer: str = "ppo"
    advantage: str = "lines"
    reward_mode: str = "lines"
    loop: dict = field(default_factory=dict)


@dataclass
class Comparison:
    """A paired comparison of two arms over the seeds they share.

    kind: ``diff`` (mean of after_a - after_b) or ``ratio`` (mean gain of a / mean gain of b, gains
    after - before). target: the study's stated target (``> 0`` for ``diff``: the interval's lower
    end above 0; a number for ``ratio``: the point estimate at least that), or empty (reported only).
    """

    a: str
    b: str
    kind: str = "diff"
    target: str = ""
    label: str = ""


@dataclass
class StudyConfig:
    """The study's config file (``experiments/configs/rl_synthetic.json``); see the module docstring.

    arms, crowds (name -> ``crowdstat.spec`` population), parts (name -> arm names), comparisons,
    seeds, workers (parallel runs, each a process of ``threads`` torch threads), sft (the warm start),
    loop (every PPO run's settings; the arm sets source, crowd and advantage), grpo (every GRPO run's
    settings; the arm sets advantage, the study sets seed, source, LoRA and threads), quick (overrides
    of ``--quick``), length_tolerance (the length target: last-round mean completion length within this
    relative distance of the first round's).
    """

    arms: list[Arm] = field(default_factory=list)
    crowds: dict = field(default_factory=dict)
    parts: dict = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    workers: int = 2
    threads: int = 1
    length_tolerance: float = 0.2
    sft: SFTConfig = field(default_factory=SFTConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    quick: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [a.name for a in self.arms]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"arms: names must be unique and not empty, got {names}")
        for a in self.arms:
            if a.source not in SOURCES:
                raise ValueError(f"arms: {a.name}: source {a.source!r} is not a reward source; choose from {SOURCES}")
            if a.trainer not in TRAINERS or a.advantage not in ADVANTAGES[a.trainer]:
                raise ValueError(f"arms: {a.name}: trainer/advantage {a.trainer}/{a.advantage} not one of {ADVANTAGES}")
            if a.reward_mode not in REWARD_MODES or (a.trainer == "grpo" and a.reward_mode != "lines"):
                raise ValueError(f"arms: {a.name}: reward_mode {a.reward_mode!r} (grpo arms: 'lines' only)")
            if a.crowd not in self.crowds:
                raise ValueError(f"arms: {a.name}: crowd {a.crowd!r} is not one of the crowds {sorted(self.crowds)}")
            if set(a.loop) - ARM_LOOP_KEYS:
                raise ValueError(f"arms: {a.name}: loop keys {sorted(set(a.loop) - ARM_LOOP_KEYS)} are not among {sorted(ARM_LOOP_KEYS)}")
            if a.loop and a.trainer != "ppo":
                raise ValueError(f"arms: {a.name}: loop overrides apply to ppo arms only")
        for p, arms in self.parts.items():
            if not isinstance(arms, list) or set(arms) - set(names):
                raise ValueError(f"parts: {p}: {arms} must be a list of arm names ({names})")
        for c in self.comparisons:
            if c.a not in names or c.b not in names or c.kind not in ("diff", "ratio"):
                raise ValueError(f"comparisons: {c.a} vs {c.b} ({c.kind}): arms must be named arms, kind diff or ratio")
        if not self.seeds or self.workers < 1 or self.threads < 1:
            raise ValueError("seeds must not be empty; workers and threads must be >= 1")


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_study_config(path: Path, quick: bool) -> StudyConfig:
    """The study config; with ``quick``, its ``quick`` overrides applied (they are checked either way)."""
    raw = read_config_file(path)
    try:
        full = from_dict(StudyConfig, raw, where=str(path))
        q = raw.get("quick", {})
        if "quick" in q:
            raise ConfigError(f"{path}: unknown key 'quick.quick'")
        merged = from_dict(
            StudyConfig, _deep_merge({k: v for k, v in raw.items() if k != "quick"}, q), where=f"{path} (with its 'quick' overrides)"
        )
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{path}: {e}") from None
    return merged if quick else full


# ---------------------------------------------------------------------------------------------
# jobs (each runs in a worker process)


def warm_start_cached(cache: Path, cfg: SFTConfig, name: str = "warmstart") -> tuple[Path, dict]:
    from rl.train.sft import warm_start

    out = cache / name
    meta = out / "warmstart.json"
    if meta.exists():
        saved = json.loads(meta.read_text())
        if saved["config"] == json.loads(json.dumps(dataclasses.asdict(cfg))):
            print(f"warm start: cached {out} ({saved['seconds']:.0f} s when built)", flush=True)
            return out, saved
        print(f"warm start: {out} was built with other settings; rebuilding", flush=True)
    s = warm_start(out, cfg)
    return out, {**s, "_built": True}


def arm_loop_config(arm: Arm, scfg: StudyConfig, model: str, out: str, seed: int) -> LoopConfig:
    """The loop settings of a ppo arm's run."""
    ppo = dataclasses.replace(scfg.loop.ppo, advantage=arm.advantage, reward_mode=arm.reward_mode)
    return dataclasses.replace(
        scfg.loop,
        model=model,
        out=out,
        seed=seed,
        reward_source=arm.source,
        crowd_args=list(arm.crowd_args),
        population=scfg.crowds[arm.crowd],
        ppo=ppo,
        **arm.loop,
    )


def _eval_job(job: dict) -> dict:
    """Round-0 (before RL) evaluation of the warm-started model with a seed's evaluation seed."""
    import torch

    from rl.evaluate import evaluate_heldout

    torch.set_num_threads(job["threads"])
    out = Path(job["file"])
    if out.exists():
        return json.loads(out.read_text())
    t0 = time.time()
    e = evaluate_heldout(dataclasses.replace(job["loop"], model=job["model"], out="-", seed=job["seed"]))
    e["seconds"] = time.time() - t0
    atomic_write_json(out, e, parents=True)
    return e


def _wait_for(path: Path) -> dict:
    while not path.exists():  # the seed's round-0 evaluation runs in the other worker
        time.sleep(2)
    return json.loads(path.read_text())


def _ppo_job(job: dict) -> dict:
    """One ppo arm x seed: the loop; resumes an interrupted run, reads back a finished one."""
    import torch

    from rl.loop import run_rounds

    torch.set_num_threads(job["threads"])
    before = _wait_for(Path(job["eval_file"]))
    cfg: LoopConfig = job["cfg"]
    rd = Path(cfg.out)
    t0 = time.time()
    st = run_rounds(cfg, resume=(rd / "state.json").exists(), progress=False, initial_eval=before)
    h0, hl = st["history"][0], st["history"][-1]
    print(f"[{job['arm']} seed {cfg.seed}] pass@1 {h0['pass@1']:.3f} -> {hl['pass@1']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    return {"arm": job["arm"], "seed": cfg.seed, "trainer": "ppo", "history": st["history"], "seconds_this_call": time.time() - t0}


def _grpo_job(job: dict) -> dict:
    """One grpo arm x seed: TRL GRPO from the warm start, then the loop's held-out evaluation."""
    import torch
    from peft import PeftModel

    from rl.evaluate import heldout_pass, heldout_problems
    from rl.execution.sandbox import Sandbox
    from rl.policy.models import load_policy
    from rl.tasks.synthetic import make_benchmark
    from rl.train.grpo import train_grpo

    torch.set_num_threads(job["threads"])
    before = _wait_for(Path(job["eval_file"]))
    rd = Path(job["out"])
    done = rd / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.time()
    s: GRPOSettings = job["grpo"]
    g = train_grpo(job["model"], rd, s)
    cfg: LoopConfig = dataclasses.replace(job["loop"], model=job["model"], out=str(rd), seed=s.seed)
    base, tok = load_policy(job["model"], None)
    model = PeftModel.from_pretrained(base, str(rd / "adapter"))
    model.eval()
    with Sandbox(workers=2) as sb:
        e = heldout_pass(model, tok, heldout_problems(cfg, make_benchmark(**dataclasses.asdict(cfg.bench))), cfg, sandbox=sb)
    after = {k: e[k] for k in e if k.startswith("pass@")} | {"per_template": e["per_template"], "round": 1, "ppo_steps": s.steps}
    first = {k: before[k] for k in before if k.startswith("pass@")} | {"per_template": before["per_template"], "round": 0, "ppo_steps": 0}
    r = {
        "arm": job["arm"],
        "seed": s.seed,
        "trainer": "grpo",
        "history": [first, after],
        "grpo": {k: g[k] for k in ("seconds", "reward_per_step")} | {"log": g.get("log", [])},
        "seconds_this_call": time.time() - t0,
    }
    atomic_write_json(done, r)
    print(f"[{job['arm']} seed {s.seed}] pass@1 {first['pass@1']:.3f} -> {after['pass@1']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    return r


def make_jobs(scfg: StudyConfig, arms: list[Arm], seeds: list[int], model: str, runs: Path) -> list[tuple[str, dict]]:
    """Each seed's round-0 evaluation first (the second seed's too, to keep a second worker busy), then
    its runs; a run waits for its seed's evaluation."""
    ev = {s: runs / f"before-s{s}.json" for s in seeds}
    base = {"model": model, "threads": scfg.threads}
    jobs: list[tuple[str, dict]] = []
    queued: set[int] = set()
    for i, seed in enumerate(seeds):
        for s in seeds[i : i + 2]:
            if s not in queued:
                queued.add(s)
                jobs.append(("eval", {**base, "loop": scfg.loop, "seed": s, "file": str(ev[s])}))
        for a in arms:
            rd = runs / f"{a.name}-s{seed}"
            job = {**base, "arm": a.name, "eval_file": str(ev[seed])}
            if a.trainer == "ppo":
                jobs.append(("ppo", {**job, "cfg": arm_loop_config(a, scfg, model, str(rd), seed)}))
            else:
                s = dataclasses.replace(
                    scfg.grpo,
                    seed=seed,
                    reward_source=a.source,
                    crowd_args=list(a.crowd_args),
                    advantages=a.advantage,
                    lora=scfg.loop.lora,
                    threads=scfg.threads,
                    honeypot_fraction=scfg.loop.honeypot_fraction,
                )
                jobs.append(("grpo", {**job, "out": str(rd), "grpo": s, "loop": scfg.loop}))
    return jobs


_RUNNERS = {"eval": _eval_job, "ppo": _ppo_job, "grpo": _grpo_job}


# ---------------------------------------------------------------------------------------------
# driver


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "experiments/configs/rl_synthetic.json"))
    ap.add_argument("--quick", action="store_true", help="fewer seeds and rounds (the config's 'quick' overrides)")
    ap.add_argument("--part", default=None, help="run only this part's arms (the config's 'parts'); default every arm")
    ap.add_argument("--arms", nargs="*", default=None, help="run only these arms")
    ap.add_argument("--seeds", nargs="*", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="parallel runs (default: the config's)")
    ap.add_argument("--cache", default=str(ROOT / "experiments/cache/rl_synthetic"), help="warm start and run directories")
    ap.add_argument(
        "--out",
        default=None,
        help="where the results JSON, the page and the figures go (default: the committed places for a full run, "
        "<cache>/quick with --quick)",
    )
    ap.add_argument("--report-only", action="store_true", help="rewrite the page and figures from the results JSON (no training)")
    return ap


def _outputs(args, quick: bool) -> dict[str, Path]:
    if args.out is None and not quick:
        return {
            "results": ROOT / "experiments/results/rl_synthetic.json",
            "doc": ROOT / "docs/rl_study.md",
            "figures": ROOT / "docs/figures",
        }
    out = Path(args.out) if args.out else Path(args.cache) / "quick"
    return {"results": out / "rl_synthetic.json", "doc": out / "rl_study.md", "figures": out / "figures"}


def _selected(scfg: StudyConfig, args) -> list[Arm]:
    names = [a.name for a in scfg.arms]
    if args.part is not None:
        if args.part not in scfg.parts:
            raise ConfigError(f"--part {args.part!r}: not one of the config's parts {sorted(scfg.parts)}")
        names = scfg.parts[args.part]
    if args.arms:
        bad = sorted(set(args.arms) - {a.name for a in scfg.arms})
        if bad:
            raise ConfigError(f"--arms: {bad} are not arms of the config")
        names = [n for n in names if n in args.arms]
    return [a for a in scfg.arms if a.name in names]


def _command(args) -> str:
    cmd = "python experiments/rl_synthetic.py" + (" --quick" if args.quick else "")
    for opt in ("part", "out"):
        if getattr(args, opt):
            cmd += f" --{opt} {getattr(args, opt)}"
    for opt in ("arms", "seeds"):
        if getattr(args, opt):
            cmd += f" --{opt} " + " ".join(map(str, getattr(args, opt)))
    return cmd


def _results_base(path: Path, scfg: StudyConfig, quick: bool) -> dict:
    """The results file so far (the parts run before), or a new one; settings must match."""
    settings = json.loads(json.dumps(to_dict(scfg)))
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("settings") == settings:
            return old
        if _extends(old.get("settings") or {}, settings):
            print(f"{path}: the config adds arms, parts or comparisons; keeping the runs of the earlier arms", flush=True)
            old["settings"] = settings
            return old
        print(f"{path}: written with other settings; starting a new results file", flush=True)
    return {"label": "QUICK (reduced settings)" if quick else "full", "settings": settings, "runs": {}, "calls": []}


def _extends(old: dict, new: dict) -> bool:
    """Whether settings ``new`` only add to ``old``: the same study (every setting but arms, parts
    and comparisons equal), every old arm unchanged, parts and comparisons only added."""
    grow = ("arms", "parts", "comparisons")
    # a setting added to the code since the old runs: equal at its default, or at the value that does
    # what the code did before it existed (sft.eval_n: the warm start ran no held-out evaluation)
    default = json.loads(
        json.dumps({"loop": to_dict(LoopConfig()), "sft": {**to_dict(SFTConfig()), "eval_n": 0}, "grpo": to_dict(GRPOSettings())})
    )

    def same(o, n, d) -> bool:
        if isinstance(o, dict) and isinstance(n, dict):
            d = d if isinstance(d, dict) else {}
            return all(k in n and same(o[k], n[k], d.get(k)) for k in o) and all(k in d and n[k] == d[k] for k in set(n) - set(o))
        return o == n

    if not same({k: v for k, v in old.items() if k not in grow}, {k: v for k, v in new.items() if k not in grow}, default):
        return False
    arms = {a["name"]: a for a in new.get("arms", [])}
    # an old arm (written before the arm's ``loop`` field existed) equals its new self without overrides
    if any(arms.get(a["name"], {}) != {"loop": {}, **a} for a in old.get("arms", [])):
        return False
    parts = new.get("parts", {})
    if any(not set(v) <= set(parts.get(k, [])) for k, v in old.get("parts", {}).items()):
        return False
    return all(c in new.get("comparisons", []) for c in old.get("comparisons", []))


def main(argv=None) -> int:
    from rl_study_report import write_report

    args = _parser().parse_args(argv)
    try:
        scfg = load_study_config(Path(args.config), args.quick)
        arms = _selected(scfg, args)
    except ConfigError as e:
        print(f"rl_synthetic: error: {e}", file=sys.stderr)
        return 2
    outs = _outputs(args, args.quick)
    if args.report_only:
        write_report(json.loads(outs["results"].read_text()), outs["doc"], outs["figures"])
        print(f"rewrote {outs['doc']} and {outs['figures']} from {outs['results']}")
        return 0
    import multiprocessing as mp

    t_start = time.time()
    seeds = list(args.seeds if args.seeds is not None else scfg.seeds)
    cache = Path(args.cache)
    runs = cache / ("runs-quick" if args.quick else "runs")
    results = _results_base(outs["results"], scfg, args.quick)
    call = {"command": _command(args), "arms": [a.name for a in arms], "seeds": seeds, "loadavg_start": os.getloadavg()[0]}
    call["workers"] = int(args.workers or scfg.workers)
    model, ws = warm_start_cached(cache, scfg.sft, "warmstart-quick" if args.quick else "warmstart")
    call["warm_start_built"] = bool(ws.pop("_built", False))
    call["seconds_warm_start"] = time.time() - t_start
    results["warm_start"] = {k: ws.get(k) for k in ("seconds", "n_parameters", "loss_last10", "heldout")}
    results["calls"].append(call)
    jobs = make_jobs(scfg, arms, seeds, str(model), runs)
    runs.mkdir(parents=True, exist_ok=True)
    n_runs = sum(kind != "eval" for kind, _ in jobs)
    with mp.get_context("spawn").Pool(call["workers"], maxtasksperchild=1) as pool:
        pending = [(kind, job, pool.apply_async(_RUNNERS[kind], (job,))) for kind, job in jobs]
        done = 0
        for kind, job, res in pending:
            r = res.get()
            if kind == "eval":
                results.setdefault("before", {})[str(job["seed"])] = {k: r[k] for k in r if k != "per_template"}
                continue
            done += 1
            results["runs"][f"{r['arm']}-s{r['seed']}"] = r
            call["seconds"] = time.time() - t_start
            print(f"  {done}/{n_runs} runs, {call['seconds'] / 60:.1f} min", flush=True)
            atomic_write_text(outs["results"], json.dumps(results, indent=1), parents=True)
    call["seconds"] = time.time() - t_start
    call["loadavg_end"] = os.getloadavg()[0]
    atomic_write_text(outs["results"], json.dumps(results, indent=1), parents=True)
    write_report(results, outs["doc"], outs["figures"])
    print(f"done in {call['seconds'] / 60:.1f} min -> {outs['results']}, {outs['doc']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
