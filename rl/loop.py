"""Algorithm 1 of cRLHF end to end, resumable (``rl loop --config FILE [--resume]``).

For each round r = 1..R (one function per stage):

1. **generate** (:func:`_generate`): ``prompts_per_round`` training problems (drawn with a per-round
   seed) x ``samples`` completions from the current policy (:func:`rl.policy.rollouts.generate`
   with the config's ``sampling``); ``rounds/rNNN/rollouts.jsonl``.
2. **annotate + aggregate** (:func:`_reward`): the crowd reward pipeline
   (:class:`rl.crowd.pipeline.CrowdRewarder`): sandbox, line truth, a simulated population voting on
   every annotated line with a ``honeypot_fraction`` of programs revealing their truth, and
   ``python -m crowdstat fit`` in a subprocess on the votes of all rounds so far; or the reward
   sources ``true_lines`` / ``execution``. ``annotate = "pause"`` instead writes the programs and
   stops with instructions; place ``votes.csv`` (and optionally ``truth.csv``) in the round
   directory and run again with ``--resume``. ``annotate = "labelstudio"`` pushes the programs to a
   Label Studio server, waits for the annotations (or stops the same way) and pulls them
   (:mod:`rl.crowd.ls_backend`, docs/annotation.md).
3. **train** (:func:`_train`): one :meth:`rl.train.ppo.PPOTrainer.step` on the round's rollouts with
   :func:`rl.crowd.rewards.token_rewards` (``ppo.reward_mode``, ``ppo.line_reward``, ``ppo.line_credit``,
   ``ppo.missing_eos_penalty``).
4. **evaluate** (:func:`_evaluate`): pass@1 / pass@10 on held-out problems, per template too
   (:func:`rl.evaluate.heldout_pass`: its own seed, so rounds are comparable; the same sampler as
   ``rl evaluate``).
5. **log + checkpoint** (:func:`_checkpoint`): ``metrics.jsonl``, TensorBoard (``tb/``), and an
   atomic checkpoint (adapter + value head + optimizer via ``PPOTrainer.save``, torch/python RNG
   states) followed by ``state.json`` (the round counter), written last: a crash at any point leaves
   the previous round's checkpoint intact and ``--resume`` redoes only the unfinished round.

The config is :class:`rl.config.LoopConfig` (a typed tree; :func:`rl.config.load_config`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crowdstat.io.atomic import atomic_write_json, atomic_write_text
from rl.config import ConfigError, LoopConfig, from_dict, load_config
from rl.config.paths import PathError, check_model, check_output, utf8_error
from rl.crowd.pipeline import CROWD_METHODS, SOURCES, CrowdRewarder

__all__ = ["PausedForAnnotation", "RunDirError", "check_out", "run_rounds", "add_arguments", "run"]


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


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            out += _config_diff(x, y, f"{prefix}{k}.")
        elif x != y:
            out.append(f"{prefix}{k}")
    return out


def _dotted(d: dict, key: str):
    for part in key.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


class RunDirError(ValueError):
    """The out directory cannot hold this run (a file, below a file, not writable, a damaged or other run's state)."""


def _read_state(state_file: Path) -> dict:
    """The saved ``state.json``; a damaged one is a :class:`RunDirError` naming it."""
    try:
        state = json.loads(state_file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RunDirError(utf8_error(state_file, e)) from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{state_file}:{e.lineno}: damaged run state ({e.msg}); start a new --out") from None
    except OSError as e:
        raise RunDirError(f"{state_file}: cannot read the run state: {(e.strerror or str(e)).lower()}") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or not isinstance(state.get("round"), int):
        raise RunDirError(f"{state_file}: damaged run state (expected an object with 'round' and 'config'); start a new --out")
    return state


def check_out(cfg: LoopConfig, out: Path, resume: bool) -> dict | None:
    """Check the run directory before anything runs; return the saved state when resuming one.

    Raises :class:`FileExistsError` for a directory that holds a run without ``resume``, and
    :class:`RunDirError` for an out that cannot be a directory, a damaged ``state.json``, or a saved
    run whose config differs from ``cfg`` (the message names the changed keys and their values).
    """
    state_file = out / "state.json"
    try:
        check_output(out)
    except PathError as e:
        raise RunDirError(str(e).replace("--out ", "out ", 1)) from None
    if state_file.exists() and not resume:
        raise FileExistsError(f"{out} already holds a run (state.json); pass --resume to continue it, or choose a new --out")
    if not (resume and state_file.exists()):
        return None
    state = _read_state(state_file)
    try:  # configs saved by earlier versions (flat keys, partial sections) read the same way
        saved = from_dict(LoopConfig, state["config"], where=str(state_file)).to_dict()
    except ConfigError as e:
        raise RunDirError(f"{state_file}: the saved config cannot be read by this version ({e})") from None
    now = cfg.to_dict()
    diff = _config_diff(now, saved)
    if diff:
        changes = ", ".join(f"{k} ({_dotted(saved, k)!r} -> {_dotted(now, k)!r})" for k in diff)
        raise RunDirError(
            f"{state_file}: the run was started with another config (differs in {diff}: {changes}); "
            f"resume with the same config, or start a new --out"
        )
    return state


def _open_state(cfg: LoopConfig, out: Path, resume: bool) -> dict:
    """The run's state: a new one (and ``config.json``), or the saved one when resuming with the same config."""
    state = check_out(cfg, out, resume)
    if state is not None:
        return state
    out.mkdir(parents=True, exist_ok=True)
    now = cfg.to_dict()
    atomic_write_json(out / "config.json", now)
    return {"round": 0, "history": [], "config": now, "checkpoint": None}


#: PPO step statistics the loop logs to TensorBoard (as ``ppo/<key>``)
TB_PPO_KEYS = (
    "policy/approx_kl",
    "policy/clipfrac",
    "policy/entropy",
    "policy/epochs_run",
    "value/explained_variance",
    "loss/value",
    "loss/policy",
    "kl/k1_mean",
    "tokens/mean_len",
    "reward/score_mean",
    "lr",
)


@dataclass
class _Run:
    """What every stage of a round needs."""

    cfg: LoopConfig
    out: Path
    bench: Any
    by_task: dict
    heldout: list
    trainer: Any
    sandbox: Any
    rewarder: CrowdRewarder
    tb: Any
    warned: set = dataclasses.field(default_factory=set)  # the kinds of crowdstat warnings already shown (say_fit_warnings)

    def commit(self, state: dict) -> None:
        atomic_write_json(self.out / "state.json", state)
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in state["history"]))

    def log(self, h: dict) -> None:
        """The round's scalars: evaluation and reward metrics, ``reward/<reward_source>`` (the mean reward
        under the run's source), and the PPO step's statistics ``ppo/<name>`` (:data:`TB_PPO_KEYS`)."""
        ppo = h.get("ppo") or {}
        scalars = {k: h.get(k) for k in ("pass@1", "pass@10", "mean_reward", "true_line_frac", "exec_pass_rate", "line_accuracy")}
        scalars[f"reward/{self.cfg.reward_source}"] = h.get("mean_reward")
        scalars.update({f"ppo/{k}": ppo.get(k) for k in TB_PPO_KEYS})
        for k, v in scalars.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.tb.add_scalar(k, v, h["round"])
        self.tb.flush()


def _make_trainer(cfg: LoopConfig, out: Path, state: dict):
    """The PPO trainer: restored from the last checkpoint (with the RNG states), or a fresh LoRA policy."""
    import torch

    from rl.policy.models import load_policy
    from rl.train.ppo import PPOTrainer

    if state["checkpoint"]:
        trainer = PPOTrainer.load(out / state["checkpoint"], cfg.model, config=cfg.ppo)
        _load_rng(torch.load(out / state["checkpoint"] / "rng.pt", weights_only=False))
        return trainer
    torch.manual_seed(cfg.seed)
    model, tok = load_policy(cfg.model, cfg.lora)
    return PPOTrainer(model, tok, cfg.ppo)


def _evaluate(run: _Run, rnd: int) -> dict:
    """Held-out pass@k of the current policy (n samples at round 0 and the last round, n_mid between)."""
    from rl.evaluate import heldout_pass

    cfg = run.cfg
    n = cfg.eval.n if rnd in (0, cfg.rounds) else (cfg.eval.n_mid or cfg.eval.n)
    e = heldout_pass(run.trainer.model, run.trainer.tokenizer, run.heldout, cfg, sandbox=run.sandbox, n=n)
    return {**{k: e[k] for k in e if k.startswith("pass@")}, "per_template": e["per_template"]}


def _round0(run: _Run, state: dict, initial_eval: dict | None) -> None:
    """The evaluation before any update (reused from ``initial_eval`` when given)."""
    t0 = time.time()
    e = initial_eval if initial_eval is not None else _evaluate(run, 0)
    h = {
        "round": 0,
        "ppo_steps": 0,
        **{k: e[k] for k in e if k.startswith("pass@")},
        "per_template": e["per_template"],
        "seconds": time.time() - t0,
    }
    state["history"].append(h)
    run.commit(state)
    run.log(h)


def _generate(run: _Run, rnd: int, rdir: Path) -> list:
    """Stage 1: the round's rollouts (kept on disk: a resumed or paused round reuses them)."""
    from rl.policy.rollouts import generate, read_rollouts, write_rollouts

    cfg = run.cfg
    ro_file = rdir / "rollouts.jsonl"
    if ro_file.exists():
        return read_rollouts(ro_file)
    probs = random.Random(f"prompts/{cfg.seed}/{rnd}").sample(run.bench.train, cfg.prompts_per_round)
    rollouts = generate(
        run.trainer.model,
        run.trainer.tokenizer,
        [(p.task_id, p.prompt) for p in probs],
        n=cfg.samples,
        sampling=cfg.sampling,
        seed=cfg.seed * 100_003 + rnd,
        task_ids=[p.task_id for p in probs],
    )
    write_rollouts(ro_file, rollouts)
    return rollouts


def _labelstudio_votes(run: _Run, rnd: int, rdir: Path) -> tuple[Path, Path | None]:
    """``annotate = "labelstudio"``: the round's votes from the server (:mod:`rl.crowd.ls_backend`)."""
    from rl.crowd.ls_backend import WaitingForVotes, round_votes
    from rl.policy.rollouts import read_rollouts

    items = [(r.program, run.by_task[r.task_id], r.completion) for r in read_rollouts(rdir / "rollouts.jsonl")]
    try:
        return round_votes(run.cfg, run.rewarder, items, rnd, rdir)
    except WaitingForVotes as e:
        atomic_write_text(rdir / "PAUSED.txt", str(e))
        raise PausedForAnnotation(str(e)) from None


def _human_votes(run: _Run, rnd: int, rdir: Path) -> tuple[Path | None, Path | None]:
    """Pause mode: the round's human votes, or :class:`PausedForAnnotation` with instructions."""
    if run.cfg.annotate == "labelstudio" and run.cfg.reward_source in CROWD_METHODS:
        return _labelstudio_votes(run, rnd, rdir)
    if run.cfg.annotate != "pause" or run.cfg.reward_source not in CROWD_METHODS:
        return None, None
    votes_file = rdir / "votes.csv"
    if not votes_file.exists():
        instructions = (
            f"Round {rnd} waits for human votes.\n"
            f"  programs: {rdir / 'rollouts.jsonl'} (fields program, code, task_id; e.g. `rl export` it for Label Studio)\n"
            f"  put the votes in {votes_file} (program,line,annotator,label; lines numbered in `code`)\n"
            f"  optional honeypot truth: {rdir / 'truth.csv'} (program,line,truth)\n"
            f"  then run: rl loop --config <the same config> --resume\n"
        )
        atomic_write_text(rdir / "PAUSED.txt", instructions)
        raise PausedForAnnotation(instructions)
    return votes_file, (rdir / "truth.csv" if (rdir / "truth.csv").exists() else None)


def warning_kind(message: str) -> str:
    """A warning with its numbers replaced by ``#``: the same degeneracy with other figures is the same kind."""
    return re.sub(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", "#", message)


def say_fit_warnings(warned: set, rnd: int, method: str, messages: list[str]) -> list[str]:
    """Print each kind (:func:`warning_kind`) of crowdstat fit warning once per run on stderr (every round's
    warnings, with their figures, are in metrics.jsonl); ``warned`` holds the kinds already said. Returns the
    lines printed."""
    said = []
    for w in messages:
        kind = warning_kind(w)
        if kind not in warned:
            warned.add(kind)
            said.append(f"rl loop: warning: round {rnd}: crowdstat fit ({method}): {w} (said once per run; each round's in metrics.jsonl)")
            print(said[-1], file=sys.stderr)
    return said


def _reward(run: _Run, rnd: int, rdir: Path, rollouts: list) -> tuple[dict, list, dict]:
    """Stages 2-3: annotate + aggregate; the round's reward records (``rdir/rewards.jsonl``), scored programs, info."""
    from rl.crowd.rewards import load_rewards

    votes_file, truth_file = _human_votes(run, rnd, rdir)
    items = [(r.program, run.by_task[r.task_id], r.completion) for r in rollouts]
    _, scored, info = run.rewarder.rewards(items, f"r{rnd:03d}", votes_file, truth_file)
    say_fit_warnings(run.warned, rnd, info.get("fit_method", run.cfg.reward_source), info.get("fit_warnings", []))
    shutil.copyfile(run.out / "crowdwork" / f"r{rnd:03d}" / "rewards.jsonl", rdir / "rewards.jsonl")
    return load_rewards(rdir / "rewards.jsonl", rollouts), scored, info


def _train(run: _Run, rnd: int, rollouts: list, records: dict) -> dict:
    """Stage 4: one PPO step on the round's rollouts and their token rewards."""
    import torch

    from rl.crowd.rewards import token_rewards

    ppo = run.cfg.ppo
    kw = dict(line_reward=ppo.line_reward, credit=ppo.line_credit, missing_eos_penalty=ppo.missing_eos_penalty)
    tr = [token_rewards(r, records[r.program], ppo.reward_mode, **kw) for r in rollouts]
    torch.manual_seed(run.cfg.seed * 100_003 + rnd)  # minibatch order: independent of what ran before
    return run.trainer.step(rollouts, tr)


def _checkpoint(run: _Run, state: dict, rnd: int, h: dict) -> dict:
    """Stage 6: checkpoint (trainer + RNG states), then the commit point of the round (``state.json``)."""
    import torch

    ck = f"checkpoints/round_{rnd:03d}"
    run.trainer.save(run.out / ck)
    torch.save(_save_rng(), run.out / ck / ".rng.tmp")
    os.replace(run.out / ck / ".rng.tmp", run.out / ck / "rng.pt")
    _crash_hook("before_commit", rnd)
    old = state["checkpoint"]
    state = {**state, "round": rnd, "checkpoint": ck, "history": state["history"] + [h]}
    run.commit(state)
    if old and old != ck:
        shutil.rmtree(run.out / old, ignore_errors=True)
    run.log(h)
    return state


def _round(run: _Run, state: dict, rnd: int) -> dict:
    """One round: generate, reward, train, evaluate, checkpoint. Returns the committed state."""
    t0 = time.time()
    rdir = run.out / "rounds" / f"r{rnd:03d}"
    rdir.mkdir(parents=True, exist_ok=True)
    rollouts = _generate(run, rnd, rdir)
    _crash_hook("after_generate", rnd)
    records, scored, info = _reward(run, rnd, rdir, rollouts)
    _crash_hook("after_aggregate", rnd)
    stats = _train(run, rnd, rollouts, records)
    _crash_hook("after_train", rnd)
    h: dict[str, Any] = {"round": rnd, "ppo_steps": run.trainer.n_steps}
    if rnd % run.cfg.eval.every == 0 or rnd == run.cfg.rounds:
        h.update(_evaluate(run, rnd))
    tl = [t for s in scored for _, t in s.truths]
    h.update(
        {
            "mean_reward": sum(r["reward"] for r in records.values()) / len(records),
            "true_line_frac": sum(tl) / len(tl) if tl else 0.0,
            "exec_pass_rate": sum(s.passed for s in scored) / len(scored),
            "line_accuracy": info.get("line_accuracy", float("nan")),
            "reliability": info.get("reliability"),
            # annotator reviews asked for this round (simulated crowd): fixed or adaptive allocation
            "allocation": info.get("allocation"),
            # what the crowdstat fit said of itself: the method auto chose, the calibration map, degeneracy warnings
            "fit_method": info.get("fit_method"),
            "fit_calibration": info.get("fit_calibration"),
            "fit_warnings": info.get("fit_warnings", []),
            "ppo": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
            "seconds": time.time() - t0,
        }
    )
    return _checkpoint(run, state, rnd, h)


def run_rounds(cfg: LoopConfig, resume: bool = False, progress: bool = True, initial_eval: dict | None = None) -> dict:
    """Run (or resume) the loop; returns the final state (``history`` = one metrics dict per round).

    ``initial_eval``: a round-0 evaluation to reuse (same base model, held-out set and eval seed;
    the LoRA adapter starts at B = 0, so the round-0 policy is the base model).
    """
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from rl.evaluate import heldout_problems
    from rl.execution.sandbox import Sandbox
    from rl.tasks.synthetic import make_benchmark

    if not cfg.model:
        raise ValueError("loop config: 'model' (the warm-started model directory) is required")
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    t_start = time.time()
    state = _open_state(cfg, out, resume)
    bench = make_benchmark(**dataclasses.asdict(cfg.bench))
    trainer = _make_trainer(cfg, out, state)
    tb = SummaryWriter(str(out / "tb"))
    try:
        with Sandbox(workers=2) as sb:
            rewarder = CrowdRewarder(
                cfg.reward_source,
                out / "crowdwork",
                population=cfg.population,
                per_program=cfg.per_program,
                honeypot_fraction=cfg.honeypot_fraction,
                crowd_args=cfg.crowd_args,
                sandbox=sb,
                seed=cfg.seed,
                allocation=cfg.allocation,
                vote_budget=cfg.vote_budget,
                confidence=cfg.allocation_confidence,
            )
            run = _Run(
                cfg,
                out,
                bench,
                {p.task_id: p for p in bench.train + bench.heldout},
                heldout_problems(cfg, bench),
                trainer,
                sb,
                rewarder,
                tb,
            )
            if state["round"] == 0 and not state["history"]:
                _round0(run, state, initial_eval)
            bar = tqdm(
                range(state["round"] + 1, cfg.rounds + 1),
                desc=f"loop[{cfg.reward_source}]",
                disable=not progress,
                initial=state["round"],
                total=cfg.rounds,
            )
            for rnd in bar:
                state = _round(run, state, rnd)
                h = state["history"][-1]
                bar.set_postfix({k: f"{h[k]:.3f}" for k in ("mean_reward", "pass@1") if k in h})
    finally:
        tb.close()
    state["seconds_this_call"] = time.time() - t_start
    return state


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="loop config (.json or .toml); see rl.config.LoopConfig")
    p.add_argument("--resume", action="store_true", help="continue the run in the config's out directory")
    p.add_argument("--out", default=None, help="override the config's out directory")
    p.add_argument("--reward-source", default=None, choices=SOURCES, help="override the config's reward_source")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, out=args.out, reward_source=args.reward_source)
        check_out(cfg, Path(cfg.out), args.resume)  # before torch loads: a refused out costs nothing
        check_model(cfg.model, option=f"{args.config}: 'model'")
    except (ConfigError, PathError, RunDirError, FileExistsError) as e:
        print(f"rl loop: error: {e}", file=sys.stderr)
        return 2
    try:
        st = run_rounds(cfg, resume=args.resume, progress=not args.no_progress)
    except PausedForAnnotation as e:
        print(str(e), file=sys.stderr)
        return 3
    last = st["history"][-1]
    first = st["history"][0]
    print(
        f"loop done: {st['round']} rounds, pass@1 {first.get('pass@1', float('nan')):.3f} -> "
        f"{last.get('pass@1', float('nan')):.3f} ({cfg.out}/metrics.jsonl)"
    )
    return 0
