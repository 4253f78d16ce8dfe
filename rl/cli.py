"""The ``rl`` command line.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int`` (or ``add_<name>_arguments`` / ``run_<name>`` when one module serves several
commands). ``rl --help`` lists the commands from :data:`COMMANDS` without importing any of them, and
``rl CMD ...`` imports CMD's module only, so the help is instant and loads no torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["COMMANDS", "main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("rl.execution.check", "run samples of a benchmark in the sandbox and write results + pass@k"),
    "evaluate": ("rl.evaluate", "sample from a model on a benchmark and report pass@k"),
    "annotate": ("rl.crowd.annotate", "simulate annotators voting on the lines of programs"),
    "export": ("rl.crowd.labelstudio", "export programs as a line-labelling task file (Label Studio JSON or CSV)"),
    "import": ("rl.crowd.labelstudio", "import labelling results back into a vote table"),
    "generate": ("rl.policy.rollouts", "sample completions with the current policy and write a rollout file"),
    "train": ("rl.train.ppo_cli", "PPO with LoRA on rollouts and their crowd rewards"),
    "grpo": ("rl.train.grpo", "TRL GRPOTrainer with a crowd-backed reward function (comparison trainer)"),
    "warmstart": ("rl.train.sft", "supervised warm start of a tiny model on the synthetic code benchmark"),
    "loop": ("rl.loop", "Algorithm 1 end to end: generate, annotate, aggregate, train, evaluate; resumable"),
}


def _parser(command: str | None) -> tuple[argparse.ArgumentParser, object | None]:
    """The ``rl`` parser; only ``command``'s subparser gets its options (its module is imported)."""
    parser = argparse.ArgumentParser(
        prog="rl", description="rl: sandboxed execution, pass@k, crowd annotation and RL (PPO, GRPO) from crowd rewards"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    module = None
    for name, (mod, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name == command:
            module = importlib.import_module(mod)
            adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
            adder(p)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # rl has no options of its own but -h
    parser, module = _parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)  # --help and unknown commands exit here, nothing imported
    runner = getattr(module, f"run_{args.command}", None) or module.run
    return int(runner(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
