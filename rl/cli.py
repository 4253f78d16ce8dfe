"""The ``rl`` command line.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their subcommand runs, so ``rl --help``
stays fast and loads no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("rl.execution.check", "run samples of a benchmark in the sandbox and write results + pass@k"),
    "evaluate": ("rl.evaluate", "sample from a model on a benchmark and report pass@k"),
    "annotate": ("rl.crowd.annotate", "simulate annotators voting on the lines of programs"),
    "export": ("rl.crowd.labelstudio", "export programs as a line-labelling task file (Label Studio JSON or CSV)"),
    "import": ("rl.crowd.labelstudio", "import labelling results back into a vote table"),
    "generate": ("rl.policy.rollouts", "sample completions with the current policy and write a rollout file"),
    "train": ("rl.train.ppo", "PPO with LoRA on rollouts and their crowd rewards"),
    "grpo": ("rl.train.grpo", "TRL GRPOTrainer with a crowd-backed reward function (comparison trainer)"),
    "warmstart": ("rl.train.sft", "supervised warm start of a tiny model on the synthetic code benchmark"),
    "loop": ("rl.loop", "Algorithm 1 end to end: generate, annotate, aggregate, train, evaluate; resumable"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, helptext) in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = (mod, helptext)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (mod, helptext) in _available().items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        m = importlib.import_module(mod)
        adder = getattr(m, f"add_{name}_arguments", None) or m.add_arguments
        adder(p)
        modules[name] = m
    args = parser.parse_args(argv)
    m = modules[args.command]
    runner = getattr(m, f"run_{args.command}", None) or m.run
    return int(runner(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
