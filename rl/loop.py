"""Algorithm 1 of cRLHF end to end, resumable (``rl loop --config FILE [--resume]``).

For each round r = 1..R:

1. **generate**: ``prompts_per_round`` training problems (drawn with a per-round seed) x
   ``samples`` completions from the current policy (:func:`rl.policy.rollouts.generate`);
   ``rounds/rNNN/rollouts.jsonl``.
2. **annotate**: every completion runs in the sandbox; each completion line gets a truth
   (:func:`rl.tasks.lines.line_truth`, the shared rule); a simulated population
   (:mod:`rl.crowd.population`, ``population`` spec) votes on every annotated line;
   a ``honeypot_fraction`` of the programs reveal their line truth (``truth.csv``).
   ``annotate = "pause"`` instead writes the programs and stops, with instructions; place
   ``votes.csv`` (and optionally ``truth.csv``) in the round directory and run again with
   ``--resume``.
3. **aggregate**: ``python -m crowdstat fit`` in a subprocess (JAX never enters this process)
   on the votes of all rounds so far (reliabilities keep learning), with the configured
   method (majority, sequential, proximal, em1, ...); its ``rewards.jsonl`` is read through
   :func:`rl.crowd.rewards.load_rewards`. Reward sources ``true_lines`` (line truth as posteriors)
   and ``execution`` (pass fraction in the sandbox) bypass the crowd and write the same
   reward file format with :mod:`crowdstat.io.rewards`.
4. **train**: one :meth:`rl.train.ppo.PPOTrainer.step` on the round's rollouts with
   :func:`rl.crowd.rewards.token_rewards` (``ppo.reward_mode``).
5. **evaluate**: pass@1 / pass@10 on held-out problems (own seed, so rounds are comparable),
   per template too.
6. **log + checkpoint**: ``metrics.jsonl``, TensorBoard (``tb/``), and an atomic checkpoint
   (adapter + value head + optimizer via ``PPOTrainer.save``, torch/python RNG states) followed
   by ``state.json`` (the round counter), written last: a crash at any point leaves the
   previous round's checkpoint intact and ``--resume`` redoes only the unfinished round.

The same crowd reward pipeline (:class:`CrowdRewarder`) backs the GRPO reward function of
:mod:`rl.train.grpo`.

Design notes (what is simulated and how)
----------------------------------------
Line truth: :func:`rl.tasks.lines.line_truth` on ``prompt + completion`` with the prompt as the
unannotated prefix (pass -> every annotated line correct; else an AST-unit diff against the
canonical program, renaming-aware, plus the line that raised). The crowd: :func:`rl.crowd.population.simulate`
with the ``population`` spec (default :data:`DEFAULT_POPULATION`), which has biased raters: a lazy
rater who accepts most lines unseen, an ``examples`` rater who approves every line of a program
whose shown examples pass, adversaries, a spammer. One line rule and one simulator serve
``rl annotate``, this loop and :mod:`rl.train.grpo`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LoopConfig",
    "CrowdRewarder",
    "DEFAULT_POPULATION",
    "run_rounds",
    "load_config",
    "evaluate_heldout",
    "add_arguments",
    "run",
]

CROWD_METHODS = ("majority", "sequential", "proximal", "em1", "em2", "bayes")
SOURCES = CROWD_METHODS + ("true_lines", "execution")


# ---------------------------------------------------------------------------------------------
# small utilities


def _write_text(path: Path, text: str) -> None:
    """Atomic write (:func:`crowdstat.io.rewards.atomic_write_text`), creating the directory."""
    from crowdstat.io.atomic import atomic_write_text

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def _write_csv(path: Path, header: list[str], rows) -> None:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    _write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------
# the simulated crowd (rl.crowd.population) and the line truth (rl.tasks.lines)

#: the biased crowd of the study (rl.crowd.population spec): 2 reliable raters, 2 noisy ones, one who
#: approves every line of a program whose shown examples pass, one lazy rater who accepts 80 % of
#: lines unseen, a spammer and 2 adversaries
DEFAULT_POPULATION = "expert:2@0.9,novice:2@0.65,examples:1@0.9,lazy:1@0.8,spammer:1,adversary:2@0.2"


def _population(spec):
    from rl.crowd.population import Population, parse_population

    return spec if isinstance(spec, Population) else parse_population(spec)


@dataclass
class Scored:
    """What the pipeline knows about one program (beyond its reward record)."""

    program: str
    task_id: str
    passed: bool
    pass_frac: float
    shown_pass: bool
    truths: list[tuple[int, bool]]


class CrowdRewarder:
    """Programs -> reward records (the reward-file schema), through the sandbox and the crowd.

    ``source``: a crowdstat method (votes are simulated by ``population`` and aggregated by
    ``python -m crowdstat fit`` in a subprocess), ``true_lines`` or ``execution``.
    Votes accumulate in ``workdir/crowd`` across calls (``cumulative=True``), so the sequential
    and proximal estimators see every earlier round; rewards are returned for this call's programs.
    """

    def __init__(self, source: str, workdir: str | Path, *, population=None, per_program: int | None = None,
                 honeypot_fraction: float = 0.1, crowd_args: list[str] | None = None, cumulative: bool = True,
                 sandbox=None, seed: int = 0, tau: float = 0.5):
        if source not in SOURCES:
            raise ValueError(f"reward source must be one of {SOURCES}, got {source!r}")
        if not 0.0 <= honeypot_fraction <= 1.0:
            raise ValueError(f"honeypot_fraction must be in [0, 1], got {honeypot_fraction}")
        self.source = source
        self.workdir = Path(workdir)
        self.population = _population(population if population is not None else DEFAULT_POPULATION)
        n = len(self.population)
        if per_program is not None and not 1 <= per_program <= n:
            raise ValueError(f"per_program must be between 1 and the population size {n}, got {per_program!r}")
        self.per_program = per_program
        self.honeypot_fraction = honeypot_fraction
        self.crowd_args = list(crowd_args or [])
        self.cumulative = cumulative
        self.sandbox = sandbox
        self.seed = seed
        self.tau = tau
        self.fit_seconds = 0.0

    # -- execution + truth
    def score(self, items: list[tuple[str, Any, str]]) -> list[Scored]:
        """``items``: ``(program id, Problem, completion)``. Runs every program in the sandbox."""
        from rl.tasks.lines import line_truth
        from rl.execution.sandbox import Job, Sandbox

        own = self.sandbox is None
        sb = Sandbox(workers=2) if own else self.sandbox
        try:
            res = sb.map([Job(p.program(c), tests=p.tests, setup=p.setup) for _, p, c in items])
        finally:
            if own:
                sb.close()
        out = []
        for (prog, p, c), r in zip(items, res):
            n = len(p.tests)
            if r.status == "passed":
                k = n
            elif r.status == "failed" and r.failing_test is not None:
                k = r.failing_test  # tests run in order; those before the failing one passed
            else:
                k = 0
            # the prompt (comment, examples, signature) is never annotated: pass it as the prefix
            truths = sorted((ln, v == 1) for ln, v in
                            line_truth(p.program(c), p.canonical_program, r, prompt=p.prompt).items())
            out.append(Scored(prog, p.task_id, r.status == "passed", k / n if n else 0.0, k >= 2, truths))
        return out

    # -- records
    @staticmethod
    def _record(program: str, n_lines: int, lines: list[int], post: list[float], method: str, tau: float) -> dict:
        k = len(lines)
        return {"program": program, "reward": (sum(p > tau for p in post) / k) if k else 0.0,
                "reward_soft": (sum(post) / k) if k else 0.0, "n_lines": n_lines, "n_annotated": k,
                "coverage": k / n_lines if n_lines else 0.0, "lines": lines, "posteriors": post, "tau": tau,
                "method": method}

    def rewards(self, items: list[tuple[str, Any, str]], tag: str, votes_file: Path | None = None,
                truth_file: Path | None = None) -> tuple[dict[str, dict], list[Scored], dict]:
        """Reward records for ``items``; writes ``workdir/tag/rewards.jsonl``. Returns (records, scored, info).

        ``votes_file``/``truth_file``: human votes for this batch (pause mode) instead of the simulation.
        """
        from crowdstat.io.rewards import read_rewards, write_rewards

        d = self.workdir / tag
        d.mkdir(parents=True, exist_ok=True)
        scored = self.score(items)
        n_lines = {prog: (p.program(c)).count("\n") + (0 if p.program(c).endswith("\n") else 1) for prog, p, c in items}
        recs: dict[str, dict] = {}
        info: dict = {"source": self.source}
        if self.source in ("true_lines", "execution"):
            for s in scored:
                lines = [ln for ln, _ in s.truths]
                if self.source == "true_lines":
                    post = [1.0 if t else 0.0 for _, t in s.truths]
                else:
                    post = [s.pass_frac] * len(lines)
                recs[s.program] = self._record(s.program, n_lines[s.program], lines, post, self.source, self.tau)
        else:
            if votes_file is None:
                import numpy as np

                from rl.crowd.population import simulate

                key = zlib.crc32(f"{self.seed}/{tag}".encode())
                votes, _ = simulate([(s.program, [ln for ln, _ in s.truths], [1 if t else -1 for _, t in s.truths],
                                      s.shown_pass) for s in scored],
                                    self.population, np.random.default_rng([self.seed, key]), self.per_program)
                rng = random.Random(f"{self.seed}/{tag}")
                truth = []
                hp = [s for s in scored if s.truths and rng.random() < self.honeypot_fraction]
                for s in hp:
                    truth.extend((s.program, ln, 1 if t else -1) for ln, t in s.truths)
                _write_csv(d / "votes.csv", ["program", "line", "annotator", "label"], votes)
                _write_csv(d / "truth.csv", ["program", "line", "truth"], truth)
                votes_file, truth_file = d / "votes.csv", d / "truth.csv"
            fit_votes, fit_truth = self._accumulate(votes_file, truth_file, tag)
            info.update(self._fit(fit_votes, fit_truth, d / "fit"))
            pre = f"{tag}:"
            by_prog = {r["program"][len(pre):]: {**r, "program": r["program"][len(pre):]}
                       for r in read_rewards(d / "fit" / "rewards.jsonl") if r["program"].startswith(pre)}
            for s in scored:
                r = by_prog.get(s.program)
                if r is None:  # nothing to vote on (empty completion): reward 0
                    recs[s.program] = self._record(s.program, n_lines[s.program], [], [], self.source, self.tau)
                else:
                    r = {k: v for k, v in r.items() if k != "schema_version"}
                    r["n_lines"] = n_lines[s.program]
                    r["coverage"] = r["n_annotated"] / r["n_lines"]
                    recs[s.program] = r
            # agreement of the crowd's line decisions with the truth (diagnostic only)
            agree = [(p > 0.5) == t for s in scored if s.program in by_prog
                     for (ln, t), p in zip(s.truths, by_prog[s.program]["posteriors"])]
            info["line_accuracy"] = sum(agree) / len(agree) if agree else float("nan")
        write_rewards(d / "rewards.jsonl", [recs[prog] for prog, _, _ in items])
        return recs, scored, info

    def _accumulate(self, votes_file: Path, truth_file: Path | None, tag: str) -> tuple[Path, Path | None]:
        crowd = self.workdir / ("crowd" if self.cumulative else f"crowd-{tag}")
        crowd.mkdir(parents=True, exist_ok=True)
        index = crowd / "batches.json"
        batches = json.loads(index.read_text()) if index.exists() and self.cumulative else []
        batches = [b for b in batches if b["tag"] != tag] + [
            {"tag": tag, "votes": str(votes_file), "truth": str(truth_file) if truth_file else None}]
        rows_v, rows_t = [], []
        for b in batches:  # program ids get the batch tag: the same task recurs in later rounds
            with open(b["votes"], newline="") as f:
                rows_v.extend([f"{b['tag']}:{r[0]}", *r[1:]] for r in list(csv.reader(f))[1:])
            if b["truth"] and Path(b["truth"]).exists():
                with open(b["truth"], newline="") as f:
                    rows_t.extend([f"{b['tag']}:{r[0]}", *r[1:]] for r in list(csv.reader(f))[1:])
        _write_csv(crowd / "votes_all.csv", ["program", "line", "annotator", "label"], rows_v)
        _write_csv(crowd / "truth_all.csv", ["program", "line", "truth"], rows_t)
        _write_text(index, json.dumps(batches, indent=1))
        return crowd / "votes_all.csv", (crowd / "truth_all.csv") if rows_t else None

    def _fit(self, votes: Path, truth: Path | None, out: Path) -> dict:
        cmd = [sys.executable, "-m", "crowdstat", "fit", str(votes), "--method", self.source, "--out", str(out),
               "--tau", str(self.tau), *self.crowd_args]
        if truth is not None:
            cmd += ["--truth", str(truth)]
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false "
                   "intra_op_parallelism_threads=1", PYTHONWARNINGS="ignore")
        t0 = time.time()
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        self.fit_seconds += time.time() - t0
        if p.returncode != 0:
            raise RuntimeError(f"crowdstat fit failed (exit {p.returncode}) on {votes}:\n{p.stderr.strip()[-2000:]}\n"
                               f"command: {' '.join(cmd)}")
        info = {"fit_seconds": time.time() - t0}
        ann = out / "annotators.csv"
        if ann.exists():
            with open(ann, newline="") as f:
                info["reliability"] = {r["annotator"]: float(r["reliability"]) for r in csv.DictReader(f)}
        return info


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate_pass(model, tokenizer, problems, *, n: int, temperature: float, max_new_tokens: int, seed: int,
                  sandbox, batch_size: int = 64, progress: bool = False, stop: list | None = None) -> dict:
    """Sample ``n`` completions per problem; unbiased pass@1 and pass@10 (if n >= 10), per template too."""
    from rl.execution.passk import pass_at_k_one as pass_at_k
    from rl.policy.rollouts import generate
    from rl.execution.sandbox import Job
    from rl.tasks.synthetic import template_of

    ro = generate(model, tokenizer, [(p.task_id, p.prompt) for p in problems], n=n, temperature=temperature,
                  max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size, progress=progress, stop=stop)
    by_task = {p.task_id: p for p in problems}
    res = sandbox.map([Job(by_task[r.prompt_id].program(r.completion), tests=by_task[r.prompt_id].tests)
                       for r in ro], progress=progress)
    correct: dict[str, int] = {p.task_id: 0 for p in problems}
    for r, x in zip(ro, res):
        correct[r.prompt_id] += x.status == "passed"
    out: dict[str, Any] = {"n": n, "n_problems": len(problems)}
    ks = [1] + ([10] if n >= 10 else [])
    per_t: dict[str, list] = {}
    for tid, c in correct.items():
        per_t.setdefault(template_of(tid), []).append(c)
    for k in ks:
        vals = [pass_at_k(n, c, k) for c in correct.values()]
        out[f"pass@{k}"] = sum(vals) / len(vals)
    out["per_template"] = {t: {f"pass@{k}": sum(pass_at_k(n, c, k) for c in cs) / len(cs) for k in ks}
                           for t, cs in sorted(per_t.items())}
    return out


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass
class LoopConfig:
    """``rl loop`` settings (a JSON or TOML file; unknown keys are an error).

    model: warm-started model directory. out: run directory. rounds: R.
    prompts_per_round, samples, temperature, max_new_tokens, stop: generation per round (``stop``:
        strings that end a completion, e.g. ``["\\ndef", "\\nclass", "\\nif __name__"]`` for a
        pretrained code LLM; also used by the evaluation).
    reward_source: a crowdstat method (majority, sequential, proximal, em1, em2, bayes),
        ``true_lines`` or ``execution``. crowd_args: extra ``crowdstat fit`` options.
    annotate: ``simulate`` or ``pause`` (human round trip). population (an :mod:`rl.crowd.population`
        spec: compact string or list of objects), per_program (annotators per program; None = all),
        honeypot_fraction: the simulated crowd.
    ppo: rl.train.ppo.PPOConfig fields. lora: rl.policy.models.LoraSpec fields.
    bench: rl.tasks.synthetic.make_benchmark arguments. eval: held-out evaluation (n samples at round 0
        and the last round, n_mid at the rounds between, temperature, per_template (first k
        held-out problems of each template; 0 = all), n_problems (random subset; 0 = all),
        every (rounds), max_new_tokens).
    seed: generation, crowd and LoRA-init seed. threads: torch CPU threads.
    """

    model: str = ""
    out: str = "runs/loop"
    rounds: int = 3
    prompts_per_round: int = 16
    samples: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 64
    stop: list = field(default_factory=list)
    reward_source: str = "sequential"
    crowd_args: list = field(default_factory=list)
    annotate: str = "simulate"
    population: Any = DEFAULT_POPULATION
    per_program: int | None = None
    honeypot_fraction: float = 0.1
    ppo: dict = field(default_factory=lambda: {"learning_rate": 1e-4, "ppo_epochs": 2, "minibatch_size": 32,
                                               "reward_mode": "lines"})
    lora: dict = field(default_factory=lambda: {"r": 8, "alpha": 16})
    bench: dict = field(default_factory=lambda: {"seed": 0, "n_train_per_template": 200})  # as rl.train.sft's default
    eval: dict = field(default_factory=lambda: {"n": 10, "temperature": 0.8, "n_problems": 0, "every": 1})
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("loop config: 'model' (the warm-started model directory) is required")
        if self.reward_source not in SOURCES:
            raise ValueError(f"loop config: reward_source must be one of {SOURCES}, got {self.reward_source!r}")
        if self.annotate not in ("simulate", "pause"):
            raise ValueError(f"loop config: annotate must be 'simulate' or 'pause', got {self.annotate!r}")
        if self.rounds < 1 or self.prompts_per_round < 1 or self.samples < 1:
            raise ValueError("loop config: rounds, prompts_per_round and samples must be >= 1")
        n = len(_population(self.population))  # validates the spec
        if self.per_program is not None and not 1 <= self.per_program <= n:
            raise ValueError(f"loop config: per_program must be between 1 and the population size {n}, "
                             f"got {self.per_program!r}")


def load_config(path: str | Path, **overrides) -> LoopConfig:
    """Read a JSON (``.json``) or TOML (``.toml``) loop config; ``overrides`` replace top-level keys."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            import tomllib

            d = tomllib.loads(text)
        else:
            d = json.loads(text)
    except (ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot parse the loop config: {e}") from e
    d.update({k: v for k, v in overrides.items() if v is not None})
    known = set(LoopConfig.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{path}: unknown loop config keys {unknown}; known: {sorted(known)}")
    if d.get("model") and not Path(d["model"]).is_absolute() and not Path(d["model"]).exists():
        cand = path.parent / d["model"]
        if cand.exists():
            d["model"] = str(cand)
    return LoopConfig(**d)


# ---------------------------------------------------------------------------------------------
# the loop


class PausedForAnnotation(Exception):
    """Raised (and turned into exit status 3 by the CLI) when a round waits for human votes."""


def _save_rng() -> dict:
    import torch

    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def _load_rng(st: dict) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])


def _crash_hook(where: str, rnd: int) -> None:
    """Test hook: ``RL_LOOP_CRASH=where:round`` raises here (e.g. ``after_train:2``)."""
    spec = os.environ.get("RL_LOOP_CRASH")
    if spec and spec == f"{where}:{rnd}":
        raise RuntimeError(f"RL_LOOP_CRASH: injected crash at {where} of round {rnd}")


def _heldout_problems(cfg: LoopConfig, bench) -> list:
    """The held-out problems the loop evaluates on (``eval.per_template``, ``eval.n_problems``)."""
    heldout = bench.heldout
    per_t = int(cfg.eval.get("per_template", 0) or 0)
    if per_t:  # the first k held-out problems of every template
        from rl.tasks.synthetic import template_of

        seen: dict[str, int] = {}
        kept = []
        for p in heldout:
            t = template_of(p.task_id)
            if seen.get(t, 0) < per_t:
                seen[t] = seen.get(t, 0) + 1
                kept.append(p)
        heldout = kept
    n_eval = int(cfg.eval.get("n_problems", 0) or 0)
    if n_eval and n_eval < len(heldout):
        heldout = random.Random(f"eval/{cfg.seed}").sample(heldout, n_eval)
    return heldout


def _eval_settings(cfg: LoopConfig) -> dict:
    return dict(n=int(cfg.eval.get("n", 10)), temperature=float(cfg.eval.get("temperature", 0.8)),
                max_new_tokens=int(cfg.eval.get("max_new_tokens", cfg.max_new_tokens)), seed=10_000 + cfg.seed,
                stop=list(cfg.stop) or None)


def evaluate_heldout(cfg: LoopConfig) -> dict:
    """The round-0 evaluation of ``run_rounds`` (the base model, the run's held-out set and eval seed);
    pass it as ``initial_eval`` to runs of the same model, seed and eval settings."""
    import torch

    from rl.policy.models import load_policy
    from rl.execution.sandbox import Sandbox
    from rl.tasks.synthetic import make_benchmark

    torch.set_num_threads(cfg.threads)
    model, tok = load_policy(cfg.model, None)
    with Sandbox(workers=2) as sb:
        return evaluate_pass(model, tok, _heldout_problems(cfg, make_benchmark(**cfg.bench)), sandbox=sb,
                             **_eval_settings(cfg))


def run_rounds(cfg: LoopConfig, resume: bool = False, progress: bool = True, initial_eval: dict | None = None) -> dict:
    """Run (or resume) the loop; returns the final state (``history`` = one metrics dict per round).

    ``initial_eval``: a round-0 evaluation to reuse (same base model, held-out set and eval seed;
    the LoRA adapter starts at B = 0, so the round-0 policy is the base model).
    """
    import torch
    from tqdm.auto import tqdm

    from rl.config import LoraSpec, PPOConfig
    from rl.policy.models import load_policy
    from rl.train.ppo import PPOTrainer
    from rl.crowd.rewards import load_rewards, token_rewards
    from rl.policy.rollouts import generate, read_rollouts, write_rollouts
    from rl.execution.sandbox import Sandbox
    from rl.tasks.synthetic import make_benchmark

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    state_file = out / "state.json"
    cfg_dict = {k: getattr(cfg, k) for k in LoopConfig.__dataclass_fields__}
    if state_file.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run (state.json); pass --resume to continue it or use a new out")
    out.mkdir(parents=True, exist_ok=True)
    if resume and state_file.exists():
        state = json.loads(state_file.read_text())
        now = json.loads(json.dumps(cfg_dict))
        defaults = {k: f.default for k, f in LoopConfig.__dataclass_fields__.items() if k not in state["config"]
                    and f.default is not dataclasses.MISSING}
        diff = sorted(k for k in now if now[k] != state["config"].get(k, defaults.get(k, object())))
        if diff:
            raise ValueError(f"{state_file}: the run was started with another config (differs in {diff}); "
                             "resume with the same config")
    else:
        state = {"round": 0, "history": [], "config": json.loads(json.dumps(cfg_dict)), "checkpoint": None}
        _write_text(out / "config.json", json.dumps(cfg_dict, indent=1))

    bench = make_benchmark(**cfg.bench)
    by_task = {p.task_id: p for p in bench.train + bench.heldout}
    heldout = _heldout_problems(cfg, bench)
    ppo_cfg = PPOConfig(**{"seed": cfg.seed, **cfg.ppo})
    if state["checkpoint"]:
        trainer = PPOTrainer.load(out / state["checkpoint"], cfg.model, config=ppo_cfg)
        _load_rng(torch.load(out / state["checkpoint"] / "rng.pt", weights_only=False))
    else:
        torch.manual_seed(cfg.seed)
        model, tok = load_policy(cfg.model, LoraSpec(**cfg.lora))
        trainer = PPOTrainer(model, tok, ppo_cfg)
    model, tok = trainer.model, trainer.tokenizer
    from torch.utils.tensorboard import SummaryWriter

    tb = SummaryWriter(str(out / "tb"))
    ev = _eval_settings(cfg)
    every = int(cfg.eval.get("every", 1))
    n_mid = int(cfg.eval.get("n_mid", ev["n"]))  # samples per problem at intermediate rounds
    t_start = time.time()

    def commit(st: dict) -> None:
        _write_text(state_file, json.dumps(st, indent=1))
        _write_text(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in st["history"]))

    def log(h: dict) -> None:
        for k in ("pass@1", "pass@10", "mean_reward", "true_line_frac", "exec_pass_rate", "line_accuracy"):
            if isinstance(h.get(k), (int, float)) and math.isfinite(h[k]):
                tb.add_scalar(k, h[k], h["round"])
        tb.flush()

    with Sandbox(workers=2) as sb:
        rewarder = CrowdRewarder(cfg.reward_source, out / "crowdwork", population=cfg.population,
                                 per_program=cfg.per_program, honeypot_fraction=cfg.honeypot_fraction,
                                 crowd_args=[str(a) for a in cfg.crowd_args], sandbox=sb, seed=cfg.seed)
        if state["round"] == 0 and not state["history"]:
            t0 = time.time()
            if initial_eval is not None:  # the same base model and eval seed were evaluated already
                e = initial_eval
            else:
                e = evaluate_pass(model, tok, heldout, sandbox=sb, **ev)
            h = {"round": 0, "ppo_steps": 0, **{k: e[k] for k in e if k.startswith("pass@")},
                 "per_template": e["per_template"], "seconds": time.time() - t0}
            state["history"].append(h)
            commit(state)
            log(h)
        bar = tqdm(range(state["round"] + 1, cfg.rounds + 1), desc=f"loop[{cfg.reward_source}]", disable=not progress,
                   initial=state["round"], total=cfg.rounds)
        for rnd in bar:
            t0 = time.time()
            rdir = out / "rounds" / f"r{rnd:03d}"
            rdir.mkdir(parents=True, exist_ok=True)
            # 1. generate (kept on disk: a resumed or paused round reuses the same rollouts)
            ro_file = rdir / "rollouts.jsonl"
            if ro_file.exists():
                rollouts = read_rollouts(ro_file)
            else:
                rng = random.Random(f"prompts/{cfg.seed}/{rnd}")
                probs = rng.sample(bench.train, cfg.prompts_per_round)
                rollouts = generate(model, tok, [(p.task_id, p.prompt) for p in probs], n=cfg.samples,
                                    temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens,
                                    seed=cfg.seed * 100_003 + rnd, task_ids=[p.task_id for p in probs],
                                    batch_size=64, stop=list(cfg.stop) or None)
                write_rollouts(ro_file, rollouts)
            _crash_hook("after_generate", rnd)
            # 2-3. annotate + aggregate
            items = [(r.program, by_task[r.task_id], r.completion) for r in rollouts]
            votes_file = truth_file = None
            if cfg.annotate == "pause" and cfg.reward_source in CROWD_METHODS:
                votes_file = rdir / "votes.csv"
                if not votes_file.exists():
                    instructions = (
                        f"Round {rnd} waits for human votes.\n"
                        f"  programs: {ro_file} (fields program, code, task_id; e.g. `rl export` it for Label Studio)\n"
                        f"  put the votes in {votes_file} (program,line,annotator,label; lines numbered in `code`)\n"
                        f"  optional honeypot truth: {rdir / 'truth.csv'} (program,line,truth)\n"
                        f"  then run: rl loop --config <the same config> --resume\n")
                    _write_text(rdir / "PAUSED.txt", instructions)
                    tb.close()
                    raise PausedForAnnotation(instructions)
                truth_file = rdir / "truth.csv" if (rdir / "truth.csv").exists() else None
            recs, scored, info = rewarder.rewards(items, f"r{rnd:03d}", votes_file, truth_file)
            shutil.copyfile(out / "crowdwork" / f"r{rnd:03d}" / "rewards.jsonl", rdir / "rewards.jsonl")
            records = load_rewards(rdir / "rewards.jsonl", rollouts)
            _crash_hook("after_aggregate", rnd)
            # 4. train
            tr = [token_rewards(r, records[r.program], ppo_cfg.reward_mode) for r in rollouts]
            torch.manual_seed(cfg.seed * 100_003 + rnd)  # minibatch order: independent of what ran before
            stats = trainer.step(rollouts, tr)
            _crash_hook("after_train", rnd)
            # 5. evaluate
            h: dict[str, Any] = {"round": rnd, "ppo_steps": trainer.n_steps}
            if rnd % every == 0 or rnd == cfg.rounds:
                e = evaluate_pass(model, tok, heldout, sandbox=sb, **{**ev, "n": ev["n"] if rnd == cfg.rounds else n_mid})
                h.update({k: e[k] for k in e if k.startswith("pass@")})
                h["per_template"] = e["per_template"]
            # 6. log + checkpoint
            tl = [t for s in scored for _, t in s.truths]
            h.update({
                "mean_reward": sum(r["reward"] for r in records.values()) / len(records),
                "true_line_frac": sum(tl) / len(tl) if tl else 0.0,
                "exec_pass_rate": sum(s.passed for s in scored) / len(scored),
                "line_accuracy": info.get("line_accuracy", float("nan")),
                "reliability": info.get("reliability"),
                "ppo": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
                "seconds": time.time() - t0,
            })
            ck = f"checkpoints/round_{rnd:03d}"
            trainer.save(out / ck)
            torch.save(_save_rng(), out / ck / ".rng.tmp")
            os.replace(out / ck / ".rng.tmp", out / ck / "rng.pt")
            _crash_hook("before_commit", rnd)
            old = state["checkpoint"]
            state = {**state, "round": rnd, "checkpoint": ck, "history": state["history"] + [h]}
            commit(state)  # the commit point of the round
            if old and old != ck:
                shutil.rmtree(out / old, ignore_errors=True)
            log(h)
            bar.set_postfix({k: f"{h[k]:.3f}" for k in ("mean_reward", "pass@1") if k in h})
    tb.close()
    state["seconds_this_call"] = time.time() - t_start
    return state


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="loop config (.json or .toml); see rl.loop.LoopConfig")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's out directory")
    p.add_argument("--out", default=None, help="override the config's out directory")
    p.add_argument("--reward-source", default=None, choices=SOURCES, help="override the config's reward_source")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, out=args.out, reward_source=args.reward_source)
    try:
        st = run_rounds(cfg, resume=args.resume, progress=not args.no_progress)
    except PausedForAnnotation as e:
        print(str(e), file=sys.stderr)
        return 3
    last = st["history"][-1]
    first = st["history"][0]
    print(f"loop done: {st['round']} rounds, pass@1 {first.get('pass@1', float('nan')):.3f} -> "
          f"{last.get('pass@1', float('nan')):.3f} ({cfg.out}/metrics.jsonl)")
    return 0
