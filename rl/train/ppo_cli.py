"""``rl train``: PPO with LoRA on a rollout file and its reward file (:class:`rl.train.ppo.PPOTrainer`).

Every input (and the ``--out`` location) is checked before a model is loaded; errors are one line
naming the file, the line and the field (``rl train: error: ...``, see :mod:`rl.cli`). Every
batch's old log-probabilities come from the policy that sampled the rollouts (all batches are
prepared before the first update).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from crowdstat.io.atomic import atomic_write_text
from rl.config import LoraSpec, PPOConfig, add_dataclass_arguments, dataclass_from_args
from rl.config.paths import PathError, check_model, check_output
from rl.train.ppo import PPOTrainer, rollout_temperature

__all__ = ["add_arguments", "run"]


def add_arguments(parser) -> None:
    parser.add_argument("--model", required=True, help="base model directory")
    parser.add_argument("--adapter", default=None, help="continue from this directory (a previous --out: adapter + value head + optimizer)")
    parser.add_argument("--rollouts", required=True, help="rollout file (rl generate --out)")
    parser.add_argument("--rewards", required=True, help="reward file (crowdstat fit --out DIR/rewards.jsonl)")
    parser.add_argument("--out", required=True, help="output directory (adapter, value head, config, stats)")
    parser.add_argument("--batch-size", type=int, default=0, help="rollouts per PPO step (default 0: all rollouts in one step)")
    parser.add_argument(
        "--prompt-lines",
        default="error",
        choices=("error", "ignore"),
        help="annotated lines that lie in the prompt: error (default) or ignore",
    )
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank of a new adapter (default: 8)")
    parser.add_argument("--lora-alpha", type=int, default=16, help="(default: 16)")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="(default: 0.0)")
    add_dataclass_arguments(parser, PPOConfig, title="PPO", defaults={"mixed_precision": "auto"})


def run(args) -> int:
    from tqdm.auto import tqdm

    from rl.crowd.rewards import load_rewards, token_rewards
    from rl.policy.models import _cpu_threads, load_policy
    from rl.policy.rollouts import read_rollouts

    # everything about the inputs and the output is checked before a model is loaded
    if args.batch_size < 0:
        raise ValueError(f"--batch-size must be >= 0 (0: all rollouts in one step), got {args.batch_size}")
    config = dataclass_from_args(PPOConfig, args)
    LoraSpec(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout)  # validates the options
    check_output(args.out)
    rollouts = read_rollouts(args.rollouts)
    records = load_rewards(args.rewards, rollouts, prompt_lines=args.prompt_lines)
    kw = dict(line_reward=config.line_reward, credit=config.line_credit, missing_eos_penalty=config.missing_eos_penalty)
    rewards = [token_rewards(r, records[r.program], config.reward_mode, **kw) for r in rollouts]
    rollout_temperature(rollouts, str(args.rollouts))  # one sampling temperature for every log prob
    check_model(args.model)
    if args.adapter and not Path(args.adapter).is_dir():
        raise PathError(f"--adapter {args.adapter}: no such directory (a previous --out of rl train)")
    _cpu_threads()
    prev_stats = ""
    if args.adapter and (Path(args.adapter) / "train_stats.jsonl").is_file():  # read now: --out may be --adapter
        prev_stats = (Path(args.adapter) / "train_stats.jsonl").read_text(encoding="utf-8")
    if args.adapter:
        trainer = PPOTrainer.load(args.adapter, args.model, config=config, progress=True)
    else:
        torch.manual_seed(config.seed)  # the LoRA initialisation (A random, B = 0): same seed, same adapter
        model, tok = load_policy(args.model, LoraSpec(r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout))
        trainer = PPOTrainer(model, tok, config, progress=True)
    order = torch.randperm(len(rollouts), generator=torch.Generator().manual_seed(config.seed)).tolist()
    acc = trainer.accelerator
    world, rank = acc.num_processes, acc.process_index
    if world > 1:  # data parallel: each process takes an equal share (DDP needs equal pass counts); docs/scale.md
        n_use = len(order) // world * world
        if n_use < len(order) and acc.is_main_process:
            print(f"warning: {len(order) - n_use} rollout(s) left out so that {world} processes get equal shares", file=sys.stderr)
        order = order[rank:n_use:world]
    bs = (args.batch_size // world if args.batch_size > 0 else len(order)) or 1
    # every batch's old log probs, values and reference log probs come from the policy that sampled the
    # rollouts: all batches are prepared before the first update
    bar = {"file": sys.stderr, "disable": not acc.is_main_process}
    chunks = [order[s : s + bs] for s in range(0, len(order), bs)]
    batches = [trainer.prepare([rollouts[i] for i in idx], [rewards[i] for i in idx]) for idx in tqdm(chunks, desc="old log probs", **bar)]
    log = []
    for batch in tqdm(batches, desc="train", unit="step", **bar):
        st = trainer.update(batch)
        log.append(st)
        if acc.is_main_process:
            print(
                json.dumps({k: st[k] for k in ("step", "reward/score_mean", "kl/k1_mean", "policy/clipfrac", "loss/value", "time_s")}),
                file=sys.stderr,
            )
    out = trainer.save(args.out)
    if acc.is_main_process:
        atomic_write_text(out / "train_stats.jsonl", prev_stats + "".join(json.dumps(s) + "\n" for s in log))
    if acc.is_main_process:
        print(f"trained {len(log)} PPO step(s) on {len(rollouts)} rollouts ({world} process(es)); saved to {out}", file=sys.stderr)
    return 0
