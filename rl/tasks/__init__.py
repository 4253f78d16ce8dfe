"""Benchmark tasks and what is known about their lines: HumanEval and MBPP
(:mod:`~rl.tasks.benchmarks`), the synthetic code benchmark (:mod:`~rl.tasks.synthetic`), line
truth (:mod:`~rl.tasks.lines`) and mutants (:mod:`~rl.tasks.mutants`)."""
