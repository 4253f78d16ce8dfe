"""Helpers shared by the rl tests (importable as ``tests.rl_helpers``)."""


def run_rl_train(model, folder, *extra: str) -> int:
    """``rl train`` in-process on ``folder/r.jsonl`` (rollouts) and ``folder/w.jsonl`` (rewards), lines
    mode, prompt lines ignored; ``extra`` options after these (``--out`` among them)."""
    import argparse

    from rl.train import ppo_cli

    parser = argparse.ArgumentParser()
    ppo_cli.add_arguments(parser)
    base = ["--model", str(model), "--rollouts", str(folder / "r.jsonl"), "--rewards", str(folder / "w.jsonl")]
    args = parser.parse_args([*base, "--reward-mode", "lines", "--prompt-lines", "ignore", *extra])
    assert args.mixed_precision == "auto"  # rl train's own default, not PPOConfig's
    return ppo_cli.run(args)


def reward_record(program: str, lines: list[int], post: list[float], n_lines: int, method: str = "test") -> dict:
    """One rewards.jsonl record (schema of crowdstat.io.rewards) from line posteriors, tau = 0.5."""
    return {
        "program": program,
        "reward": sum(p > 0.5 for p in post) / len(lines),
        "reward_soft": sum(post) / len(lines),
        "n_lines": n_lines,
        "n_annotated": len(lines),
        "coverage": len(lines) / n_lines,
        "lines": lines,
        "posteriors": post,
        "tau": 0.5,
        "method": method,
    }
