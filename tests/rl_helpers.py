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


def labelstudio_prepared(venv):
    """The prepared Label Studio data directory ``venv/prepared-data`` (migrations take minutes), made on first
    use by starting a server once in a temporary directory, renamed when complete (a failed start leaves none;
    another pytest worker may win the rename). Shared by the real-server tests."""
    import os
    import shutil
    import sys
    import time

    from rl.crowd import ls_server

    prepared = venv / "prepared-data"
    if not (prepared / "rl-server.json").exists():
        t0 = time.time()
        tmp = prepared.with_name(f"prepared-data.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with ls_server.Server(venv, tmp, timeout=1200):
            pass
        try:
            tmp.rename(prepared)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"prepared a Label Studio data directory in {time.time() - t0:.0f} s", file=sys.stderr)
    return prepared


def labelstudio_server_json(tmp_path_factory, venv, **server_kw):
    """A real Label Studio server (from :func:`labelstudio_prepared`) for a fixture's lifetime: yields the path of
    its ``server.json`` (what ``rl labelstudio serve`` writes); stopped, its data directory removed, after."""
    import json

    from rl.crowd import ls_server

    srv = ls_server.Server(venv, prepared=labelstudio_prepared(venv), timeout=600, **server_kw)
    try:
        info = srv.start()
        f = tmp_path_factory.mktemp("ls") / "server.json"
        f.write_text(json.dumps(info))
        yield f
    finally:
        srv.stop()
