"""The ``rl`` command line.

Each subcommand lives in its own module, which defines ``add_arguments(parser)`` and
``run(args) -> int`` (or ``add_<name>_arguments`` / ``run_<name>`` when one module serves several
commands). ``rl --help`` lists the commands from :data:`COMMANDS` without importing any of them, and
``rl CMD ...`` imports CMD's module only, so the help is instant and loads no torch.

Errors. A command that fails prints one line ``rl CMD: error: ...`` to stderr and exits non-zero,
never a traceback: the readers and checks raise ``ValueError`` (``ConfigError``,
``RewardFileError``, ``RolloutFileError``, ``PathError``, ...) whose messages name the file and
the line or field, and ``OSError`` names its file; both exit with status 2. Any other exception
(a bug) is one line too, with its type, and exit status 1. ``rl --debug CMD ...`` (or ``--debug``
after the command, or ``RL_DEBUG=1`` in the environment) lets the exception through, traceback and all.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

__all__ = ["COMMANDS", "error_message", "main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("rl.execution.check", "run samples of a benchmark in the sandbox and write results + pass@k"),
    "evaluate": ("rl.evaluate", "sample from a model on a benchmark and report pass@k"),
    "annotate": ("rl.crowd.annotate", "simulate annotators voting on the lines of programs"),
    "export": ("rl.crowd.labelstudio", "export programs as labelling tasks (Label Studio: one task per program, or a CSV sheet)"),
    "import": ("rl.crowd.labelstudio", "import labelling results (Label Studio's JSON export, or the CSV sheet) into a vote table"),
    "labelstudio": ("rl.crowd.labelstudio_cli", "rounds on a real Label Studio server: serve, push, status, pull, crowd, browse"),
    "prompts": ("rl.tasks.prompts", "write the prompt file of rl generate from a benchmark split (synthetic, MBPP, HumanEval)"),
    "generate": ("rl.policy.rollouts", "sample completions with the current policy and write a rollout file"),
    "merge": ("rl.policy.merge", "merge a LoRA adapter into its base model and save a plain model directory"),
    "train": ("rl.train.ppo_cli", "PPO with LoRA on rollouts and their crowd rewards"),
    "grpo": ("rl.train.grpo", "TRL GRPOTrainer with a crowd-backed reward function (comparison trainer)"),
    "warmstart": ("rl.train.sft", "supervised warm start of a tiny model on the synthetic code benchmark"),
    "loop": ("rl.loop", "Algorithm 1 end to end: generate, annotate, aggregate, train, evaluate; resumable"),
}

DEBUG_HELP = "on an error, show the traceback instead of a one-line message (also RL_DEBUG=1)"


def _parser(command: str | None) -> tuple[argparse.ArgumentParser, object | None]:
    """The ``rl`` parser; only ``command``'s subparser gets its options (its module is imported)."""
    parser = argparse.ArgumentParser(
        prog="rl", description="rl: sandboxed execution, pass@k, crowd annotation and RL (PPO, GRPO) from crowd rewards"
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    module = None
    for name, (mod, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name == command:
            module = importlib.import_module(mod)
            adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
            adder(p)
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser, module


def error_message(exc: BaseException) -> tuple[str, int]:
    """``(one-line message, exit status)`` for an exception that ends a command (see the module docstring)."""
    if isinstance(exc, UnicodeDecodeError):  # a reader that does not name its file; the readers of rl do
        status, msg = 2, f"an input file is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    elif isinstance(exc, OSError) and exc.strerror:
        names = [str(n) for n in (exc.filename, exc.filename2) if n is not None]
        status, msg = 2, ": ".join([*names, exc.strerror[:1].lower() + exc.strerror[1:]])
    elif isinstance(exc, (OSError, ValueError)):
        status, msg = 2, str(exc) or type(exc).__name__
    else:
        status, msg = 1, f"{type(exc).__name__}: {exc} (an unexpected error: run with --debug or RL_DEBUG=1 for the traceback)"
    return re.sub(r"\s*\n\s*", " ", msg.strip()), status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # rl has no options of its own but -h, --debug
    parser, module = _parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)  # --help and unknown commands exit here, nothing imported
    runner = getattr(module, f"run_{args.command}", None) or module.run
    try:
        if getattr(args, "debug", False) or os.environ.get("RL_DEBUG", "0") not in ("", "0"):
            return int(runner(args) or 0)
        try:
            return int(runner(args) or 0)
        except KeyboardInterrupt:
            print(f"rl {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as e:
            msg, status = error_message(e)
            print(f"rl {args.command}: error: {msg}", file=sys.stderr)
            return status
    finally:
        if "torch.distributed" in sys.modules:  # under torchrun: leave the process group before exit
            from rl.train.ppo_dist import shutdown

            shutdown()


if __name__ == "__main__":
    sys.exit(main())
