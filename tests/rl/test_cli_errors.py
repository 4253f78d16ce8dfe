"""Every ``rl`` error path ends in one line ``rl CMD: error: ...`` naming the file (and line or field)
and a non-zero exit, never a traceback; ``--debug`` (or ``RL_DEBUG=1``) shows the traceback instead.

Each command runs in-process through :func:`rl.cli.main`; the inputs are checked before any model is
loaded, so the model paths below need not exist."""

from __future__ import annotations

import json
import os

import pytest

from rl.cli import main
from tests.rl_helpers import reward_record

PROMPT = "def f(x):\n"  # line 1: prompt only
COMPLETION = "    y = x\n    return y\n"  # lines 2 and 3
BAD_UTF8 = b'{"a": "\xff\xfe"}\n'


def _rollout(program: str) -> dict:
    """A rollout file line: one token per character, then an EOS token without text."""
    from rl.policy.rollouts import Rollout, compute_line_spans

    ids = list(range(10, 10 + len(COMPLETION))) + [2]
    ends = list(range(1, len(COMPLETION) + 1)) + [len(COMPLETION)]
    code = PROMPT + COMPLETION
    r = Rollout(
        program=program,
        prompt_id=program.split("#")[0],
        prompt=PROMPT,
        completion=COMPLETION,
        code=code,
        prompt_ids=[5] * len(PROMPT),
        completion_ids=ids,
        logprobs=[-1.0] * len(ids),
        ref_logprobs=[-1.0] * len(ids),
        line_spans=compute_line_spans(code, len(PROMPT), ends),
        task_id="T/f",
        finish_reason="eos",
        char_ends=ends,
    )
    return r.to_dict()


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _rec(program, lines=(2, 3), post=(0.9, 0.2)):
    return {"schema_version": 1, **reward_record(program, list(lines), list(post), n_lines=3)}


def _one_line_error(capsys, code, command: str, *needles: str) -> str:
    """Assert exit 2 and exactly one stderr line ``rl COMMAND: error: ...`` containing every needle."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rl {command}: error: "), err
    for n in needles:
        assert n in lines[0], (n, err)
    return lines[0]


@pytest.fixture
def train_files(tmp_path):
    """``(rollouts, rewards, argv)`` of an `rl train` whose rewards file the test fills in."""
    ro = _jsonl(tmp_path / "r.jsonl", [_rollout("f#0"), _rollout("f#1")])
    rw = tmp_path / "w.jsonl"
    argv = ["train", "--model", str(tmp_path / "no-model"), "--rollouts", str(ro), "--rewards", str(rw), "--out", str(tmp_path / "o")]
    return ro, rw, argv


# ------------------------------------------------------------------------------------------ rl train


def test_train_reward_on_a_prompt_line_is_a_message(train_files, capsys):
    _, rw, argv = train_files
    _jsonl(rw, [_rec("f#1"), _rec("f#0", (1, 2), (0.1, 0.9))])
    line = _one_line_error(capsys, main(argv), "train", f"{rw}:2: ", "'f#0'", "line 1", "--prompt-lines ignore")
    assert "not a line of the completion" in line
    # with --prompt-lines ignore the rewards pass: the next error is the model's
    _one_line_error(capsys, main([*argv, "--prompt-lines", "ignore"]), "train", "no-model: cannot load model")


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--batch-size", "-1"], ("--batch-size",)),
        (["--lora-r", "0"], ("LoraSpec.r",)),
        (["--learning-rate", "nan"], ("learning_rate",)),
        (["--adapter", "ADAPTER"], ("--adapter", "no such directory")),
    ],
)
def test_train_bad_options(extra, needles, train_files, tmp_path, capsys):
    _, rw, argv = train_files
    _jsonl(rw, [_rec("f#0"), _rec("f#1")])
    extra = [str(tmp_path / "no-adapter") if e == "ADAPTER" else e for e in extra]
    (tmp_path / "no-model").mkdir()
    _one_line_error(capsys, main([*argv, *extra]), "train", *needles)


def _bad_rewards(name: str, rw):
    """Write the bad reward file ``name``; return the strings its message must hold."""
    good = _rec("f#1")
    if name == "missing field":
        bad = _rec("f#0")
        del bad["posteriors"]
        return _jsonl(rw, [good, bad]), (f"{rw}:2: ", "'posteriors'")
    if name == "wrong type":
        return _jsonl(rw, [good, {**_rec("f#0"), "reward": "high"}]), (f"{rw}:2: ", "field 'reward'")
    if name == "posterior out of range":
        return _jsonl(rw, [_rec("f#0", post=(0.5, 1.5)), good]), (f"{rw}:1: ", "'posteriors'[1]")
    if name == "nan":
        return _jsonl(rw, [good, {**_rec("f#0"), "reward_soft": float("nan")}]), (f"{rw}:2: ", "'reward_soft'")
    if name == "line numbers not ints":
        return _jsonl(rw, [good, {**_rec("f#0"), "lines": [2.0, "3"]}]), (f"{rw}:2: ", "'lines'[0]")
    if name == "unknown program":
        return _jsonl(rw, [_rec("f#0"), good, _rec("g#7")]), (f"{rw}:3: ", "'g#7'", "not among the 2 rollouts")
    if name == "duplicate program":
        return _jsonl(rw, [_rec("f#0"), good, _rec("f#0")]), (f"{rw}:3: ", "duplicate program 'f#0'", "line 1")
    if name == "missing program":
        return _jsonl(rw, [good]), (f"{rw}: ", "no reward record for program 'f#0'")
    if name == "line beyond the code":
        return _jsonl(rw, [good, _rec("f#0", (2, 9), (0.9, 0.9))]), (f"{rw}:2: ", "line 9 does not exist")
    if name == "empty file":
        rw.write_text("")
        return rw, (f"{rw}: ", "no records")
    if name == "invalid json":
        return _jsonl(rw, [good, '{"program": "f#0", ']), (f"{rw}:2: ", "JSON")
    if name == "not an object":
        return _jsonl(rw, [good, "[1, 2]"]), (f"{rw}:2: ", "JSON object")
    if name == "invalid utf-8":
        rw.write_bytes(json.dumps(good).encode() + b"\n" + BAD_UTF8)
        return rw, (f"{rw}:2: ", "UTF-8")
    if name == "directory":
        rw.mkdir()
        return rw, (str(rw), "is a directory")
    if name == "missing file":
        return rw, (str(rw), "no such file")
    raise AssertionError(name)


BAD_REWARDS = [
    "missing field",
    "wrong type",
    "posterior out of range",
    "nan",
    "line numbers not ints",
    "unknown program",
    "duplicate program",
    "missing program",
    "line beyond the code",
    "empty file",
    "invalid json",
    "not an object",
    "invalid utf-8",
    "directory",
    "missing file",
]


@pytest.mark.parametrize("name", BAD_REWARDS)
def test_train_bad_rewards_file_is_one_line(name, train_files, capsys):
    _, rw, argv = train_files
    _, needles = _bad_rewards(name, rw)
    _one_line_error(capsys, main(argv), "train", *needles)


BAD_ROLLOUTS = {
    "missing file": (None, ("no such file",)),
    "directory": ("DIR", ("is a directory",)),
    "empty file": ("", ("no rollouts",)),
    "invalid json": ("{oops\n", (":1: ", "JSON")),
    "wrong type": (json.dumps({**_rollout("f#0"), "completion_ids": "abc"}) + "\n", (":1: ", "field 'completion_ids'")),
    "invalid utf-8": (BAD_UTF8, (":1: ", "UTF-8")),
}


@pytest.mark.parametrize("name", list(BAD_ROLLOUTS))
def test_train_bad_rollouts_file_is_one_line(name, train_files, capsys):
    ro, rw, argv = train_files
    _jsonl(rw, [_rec("f#0"), _rec("f#1")])
    content, needles = BAD_ROLLOUTS[name]
    ro.unlink()
    if content == "DIR":
        ro.mkdir()
    elif isinstance(content, bytes):
        ro.write_bytes(content)
    elif content is not None:
        ro.write_text(content)
    _one_line_error(capsys, main(argv), "train", str(ro), *needles)


@pytest.mark.parametrize("where", ["below a file", "a file"])
def test_train_out_that_cannot_be_a_directory_is_refused_before_anything(where, train_files, tmp_path, capsys):
    _, rw, argv = train_files
    _jsonl(rw, [_rec("f#0"), _rec("f#1")])
    (tmp_path / "f").write_text("keep")
    out = tmp_path / "f" / "o" if where == "below a file" else tmp_path / "f"
    argv[argv.index("--out") + 1] = str(out)
    _one_line_error(capsys, main(argv), "train", "--out", str(tmp_path / "f"), "not a directory")
    assert (tmp_path / "f").read_text() == "keep"


def test_debug_flag_and_env_show_the_traceback(train_files, capsys, monkeypatch):
    from crowdstat.io.rewards import RewardFileError

    _, rw, argv = train_files
    rw.write_text("")
    with pytest.raises(RewardFileError, match="no records"):
        main(["--debug", *argv])
    with pytest.raises(RewardFileError, match="no records"):
        main([*argv, "--debug"])
    monkeypatch.setenv("RL_DEBUG", "1")
    with pytest.raises(RewardFileError, match="no records"):
        main(argv)
    monkeypatch.setenv("RL_DEBUG", "0")
    _one_line_error(capsys, main(argv), "train", "no records")


def test_an_unexpected_error_is_one_line_too(train_files, capsys, monkeypatch):
    from rl.train import ppo_cli

    def boom(args):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(ppo_cli, "run", boom)
    code = main(train_files[2])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("rl train: error: ") and "RuntimeError: something broke" in err and "--debug" in err


# ------------------------------------------------------------------------------------------ rl generate


@pytest.mark.parametrize(
    "content, needles",
    [
        (None, ("no such file",)),
        ("DIR", ("is a directory",)),
        ("", ("no prompts",)),
        ('{"prompt_id": "a", "prompt": 3}\n', (":1: ", "field 'prompt'")),
        ("{oops\n", (":1: ", "JSON")),
        (BAD_UTF8, (":1: ", "UTF-8")),
    ],
)
def test_generate_bad_prompts_file(content, needles, tmp_path, capsys):
    p = tmp_path / "p.jsonl"
    if content == "DIR":
        p.mkdir()
    elif isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content)
    code = main(["generate", "--model", str(tmp_path / "m"), "--prompts", str(p), "--out", str(tmp_path / "r.jsonl")])
    _one_line_error(capsys, code, "generate", str(p), *needles)


@pytest.mark.parametrize("where", ["below a file", "a directory"])
def test_generate_out_is_checked_before_the_model_loads(where, tmp_path, capsys):
    p = _jsonl(tmp_path / "p.jsonl", [{"prompt_id": "a", "prompt": "def f():\n"}])
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    out = tmp_path / "f" / "r.jsonl" if where == "below a file" else tmp_path / "d"
    code = main(["generate", "--model", str(tmp_path / "no-model"), "--prompts", str(p), "--out", str(out)])
    _one_line_error(capsys, code, "generate", "--out", str(tmp_path / ("f" if where == "below a file" else "d")))


# ------------------------------------------------------------------------------------------ rl loop


def _loop_config(tmp_path, **kw) -> tuple:
    from rl.config import LoopConfig

    out = tmp_path / "run"
    (tmp_path / "model").mkdir(exist_ok=True)
    d = {"model": str(tmp_path / "model"), "out": str(out), "rounds": 3, **kw}
    cfg_file = tmp_path / "loop.json"
    cfg_file.write_text(json.dumps(d))
    return cfg_file, out, LoopConfig(**d)


def _saved_run(tmp_path, **kw):
    from rl.loop import _open_state

    cfg_file, out, cfg = _loop_config(tmp_path, **kw)
    state = _open_state(cfg, out, resume=False)
    (out / "state.json").write_text(json.dumps(state))
    return cfg_file, out


def test_loop_on_an_out_that_holds_a_run_is_refused(tmp_path, capsys):
    cfg_file, out = _saved_run(tmp_path)
    line = _one_line_error(capsys, main(["loop", "--config", str(cfg_file)]), "loop", str(out), "--resume")
    assert "new --out" in line


def test_loop_resume_after_the_config_changed_names_the_keys(tmp_path, capsys):
    _saved_run(tmp_path)
    cfg_file, out, _ = _loop_config(tmp_path, rounds=5, honeypot_fraction=0.2)
    line = _one_line_error(capsys, main(["loop", "--config", str(cfg_file), "--resume"]), "loop", str(out / "state.json"))
    assert "rounds (3 -> 5)" in line and "honeypot_fraction (0.1 -> 0.2)" in line


@pytest.mark.parametrize("content", [b"{not json", BAD_UTF8, b"[1]"])
def test_loop_resume_on_a_damaged_state_is_a_message(content, tmp_path, capsys):
    cfg_file, out = _saved_run(tmp_path)
    (out / "state.json").write_bytes(content)
    _one_line_error(capsys, main(["loop", "--config", str(cfg_file), "--resume"]), "loop", str(out / "state.json"))


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_loop_out_that_cannot_be_a_directory(where, tmp_path, capsys):
    (tmp_path / "f").write_text("keep")
    cfg_file, _, _ = _loop_config(tmp_path, out=str(tmp_path / "f" / ("x" if where == "below a file" else "")))
    _one_line_error(capsys, main(["loop", "--config", str(cfg_file)]), "loop", str(tmp_path / "f"), "not a directory")
    assert (tmp_path / "f").read_text() == "keep"


@pytest.mark.parametrize(
    "content, needles",
    [
        (None, ("no such file",)),
        ("DIR", ("is a directory",)),
        (b"", ("cannot parse",)),
        (b'{"rounds": ', ("cannot parse",)),
        (b'{"model": "m", "rounds": "three"}', ("'rounds'",)),
        (b'{"model": "m", "rounds": 0}', ("rounds",)),
        (b'{"model": "m", "x": \xff}', (":1: ", "UTF-8")),
    ],
)
def test_loop_bad_config_file(content, needles, tmp_path, capsys):
    c = tmp_path / "loop.json"
    if content == "DIR":
        c.mkdir()
    elif content is not None:
        c.write_bytes(content)
    _one_line_error(capsys, main(["loop", "--config", str(c)]), "loop", str(c), *needles)


def test_toml_config_with_invalid_utf8(tmp_path, capsys):
    c = tmp_path / "loop.toml"
    c.write_bytes(b'model = "m"\nrounds = 2\nout = "\xff"\n')
    _one_line_error(capsys, main(["loop", "--config", str(c)]), "loop", f"{c}:3: ", "UTF-8")


# ------------------------------------------------------------------------------------------ rl check


@pytest.fixture
def samples(tmp_path):
    from rl.tasks.benchmarks import load_humaneval

    p = load_humaneval()[0]
    return _jsonl(tmp_path / "s.jsonl", [{"task_id": p.task_id, "completion": p.canonical_solution}])


@pytest.mark.parametrize("timeout", ["inf", "nan", "-1", "0", "-inf"])
def test_check_timeout_must_be_finite_and_positive(timeout, samples, tmp_path, capsys):
    code = main(["check", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(tmp_path / "o"), f"--timeout={timeout}"])
    _one_line_error(capsys, code, "check", "--timeout")


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_check_out_is_checked_before_any_sample_runs(where, samples, tmp_path, capsys, monkeypatch):
    from rl.execution import check

    def never(*a, **k):
        raise AssertionError("samples ran before --out was checked")

    monkeypatch.setattr(check, "check_samples", never)
    (tmp_path / "f").write_text("keep")
    out = tmp_path / "f" if where == "a file" else tmp_path / "f" / "o"
    code = main(["check", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(out), "--no-progress"])
    _one_line_error(capsys, code, "check", "--out", str(tmp_path / "f"), "not a directory")
    assert (tmp_path / "f").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_check_out_in_an_unwritable_directory(samples, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main(["check", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(ro / "o")])
        _one_line_error(capsys, code, "check", str(ro), "not writable")
    finally:
        ro.chmod(0o755)


def test_check_out_that_is_not_writable_is_refused_as_root_too(samples, tmp_path, capsys, monkeypatch):
    import rl.config.paths as paths

    monkeypatch.setattr(paths.os, "access", lambda p, mode: str(p) != str(tmp_path))
    code = main(["check", "--benchmark", "humaneval", "--samples", str(samples), "--out", str(tmp_path / "a" / "o")])
    _one_line_error(capsys, code, "check", f"--out {tmp_path / 'a' / 'o'}: {tmp_path} is not writable")


def test_check_samples_with_invalid_utf8_names_file_and_line(tmp_path, samples, capsys):
    s = tmp_path / "bad.jsonl"
    s.write_bytes(samples.read_bytes() + BAD_UTF8)
    code = main(["check", "--benchmark", "humaneval", "--samples", str(s), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "check", f"{s}:2: ", "UTF-8")


def test_check_samples_directory(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    code = main(["check", "--benchmark", "humaneval", "--samples", str(tmp_path / "d"), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, code, "check", str(tmp_path / "d"), "is a directory")


# ------------------------------------------------------------------------------------------ rl evaluate, rl grpo


@pytest.mark.parametrize("extra, needles", [(["--timeout", "inf"], ("--timeout",)), (["--out", "BELOW"], ("--out", "not a directory"))])
def test_evaluate_arguments_are_checked_before_the_model_loads(extra, needles, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    extra = [str(tmp_path / "f" / "o") if e == "BELOW" else e for e in extra]
    argv = ["evaluate", "--model", str(tmp_path / "no-model"), "--benchmark", "humaneval", "--n", "1", "--out", str(tmp_path / "o")]
    _one_line_error(capsys, main([*argv, *extra]), "evaluate", *needles)


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--num-generations", "0"], ("num_generations",)),
        (["--steps", "0"], ("steps",)),
        (["--temperature", "nan"], ("temperature",)),
        (["--honeypot-fraction", "2"], ("honeypot_fraction",)),
        (["--out", "BELOW"], ("--out", "not a directory")),
    ],
)
def test_grpo_arguments_are_checked_before_the_model_loads(extra, needles, tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    extra = [str(tmp_path / "f" / "o") if e == "BELOW" else e for e in extra]
    argv = ["grpo", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o"), "--device", "cpu"]
    _one_line_error(capsys, main([*argv, *extra]), "grpo", *needles)


@pytest.mark.parametrize("command", ["grpo", "train", "generate", "evaluate", "loop"])
def test_a_missing_model_directory_is_named_before_anything_loads(command, tmp_path, capsys):
    model = str(tmp_path / "no-model")
    p = _jsonl(tmp_path / "p.jsonl", [{"prompt_id": "a", "prompt": "def f():\n"}])
    ro = _jsonl(tmp_path / "r.jsonl", [_rollout("f#0")])
    rw = _jsonl(tmp_path / "w.jsonl", [_rec("f#0")])
    (tmp_path / "loop.json").write_text(json.dumps({"model": model, "out": str(tmp_path / "run")}))
    argv = {
        "grpo": ["--model", model, "--out", str(tmp_path / "o"), "--device", "cpu"],
        "train": ["--model", model, "--rollouts", str(ro), "--rewards", str(rw), "--out", str(tmp_path / "o")],
        "generate": ["--model", model, "--prompts", str(p), "--out", str(tmp_path / "o.jsonl")],
        "evaluate": ["--model", model, "--benchmark", "humaneval", "--n", "1", "--out", str(tmp_path / "o")],
        "loop": ["--config", str(tmp_path / "loop.json")],
    }[command]
    _one_line_error(capsys, main([command, *argv]), command, f"{model}: cannot load model: no such directory")
    assert not (tmp_path / "o").exists() and not (tmp_path / "run").exists()
