"""The one problem type of every benchmark (HumanEval, MBPP, synthetic): a prompt, tests and the
sandbox job a completion makes. Re-exported by :mod:`rl.tasks.benchmarks` (its usual import path);
a module of its own so that :mod:`rl.tasks.synthetic` and :mod:`rl.tasks.benchmarks` need not import
each other."""

from __future__ import annotations

from dataclasses import dataclass

from rl.execution import sandbox

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    entry_point: str
    tests: tuple[str, ...]
    setup: str
    canonical_solution: str
    source: str  # "humaneval" | "mbpp" | "synthetic"

    def program(self, completion: str) -> str:
        """The full program a completion makes (HumanEval: prompt + completion; MBPP: completion)."""
        if not isinstance(completion, str):
            raise TypeError(f"{self.task_id}: completion must be str, got {type(completion).__name__}")
        if self.source == "humaneval":
            return self.prompt + completion
        return completion

    def job(self, completion: str) -> sandbox.Job:
        return sandbox.Job(program=self.program(completion), tests=self.tests, setup=self.setup, entry_point=self.entry_point)

    @property
    def canonical_program(self) -> str:
        return self.program(self.canonical_solution)
