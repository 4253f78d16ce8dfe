"""PPO data parallel (DDP, gloo, CPU): N processes take the step one process takes on the global batch.

Fast, in this process: the loss-normalisation math with simulated ranks (:func:`token_weight` against
DDP's gradient average, whitening and line baselines through a thread-simulated all-reduce).

Launched (``torchrun --standalone --nproc_per_node 2`` in a subprocess, this file as the worker):
the rollouts of one global batch are split so that the two processes hold very different token
counts (and, in one case, one process holds only empty completions); the gradients of every
optimizer step, the parameters after each step and the statistics must equal those of one process on
the whole batch, both processes must hold identical parameters, and a checkpoint saved by the pair
and resumed by it must continue as the single process does. On the code before the fix (each
process's own token mean, averaged by DDP; whitening and line baselines per process; AdamW's state
dropped on resume under DDP on CPUs) both launched cases failed at the first optimizer step: 57 % of
the gradient entries outside rtol 1e-4, the largest relative error 0.5 with the empty process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]

# the global batch: (prompt_id, completion); shares are contiguous halves. Rank 0: long completions,
# rank 1: short ones (or empty), prompt groups split across the ranks.
LONG = ["abc\ndef\nggg\nabc\n", "aaa\nbbb\nccc\nddd\neee\n", "abh\ndef\nabc\ndda\n", "hhh\nabc\nded\n"]
SHORT = ["ab\n", "a\n", "bc\n", "h\n"]
GROUPS = ["t0", "t1", "t0", "t1"]


def _rollouts(tok, completions: list[str], groups: list[str], tag: str):
    from rl.policy.rollouts import Rollout, compute_line_spans

    out = []
    for i, (c, g) in enumerate(zip(completions, groups)):
        prompt = "h\n"
        ids = tok.convert_tokens_to_ids(list(c))
        ends = list(range(1, len(c) + 1))
        out.append(
            Rollout(
                program=f"{tag}{i}",
                prompt_id=g,
                prompt=prompt,
                completion=c,
                code=prompt + c,
                prompt_ids=tok.convert_tokens_to_ids(list(prompt)),
                completion_ids=ids,
                logprobs=[0.0] * len(ids),
                ref_logprobs=[0.0] * len(ids),
                line_spans=compute_line_spans(prompt + c, len(prompt), ends),
                char_ends=ends,
            )
        )
    return out


def _rewards(rollouts, step: int) -> list[list[float]]:
    """Per-token "lines" rewards from made-up posteriors (a line with an "a" is judged correct), varying by step."""
    from rl.crowd.rewards import token_rewards

    out = []
    for r in rollouts:
        lines = [ln for ln, _, _ in r.line_spans]
        if not lines:
            out.append([0.0] * len(r.completion_ids))
            continue
        code_lines = r.code.split("\n")
        post = [0.9 if ("a" in code_lines[ln - 1]) != (step % 2 == 1) else 0.2 for ln in lines]
        out.append(token_rewards(r, {"program": r.program, "lines": lines, "posteriors": post}, "lines"))
    return out


def _global_batch(tok, case: str):
    second = [""] * 4 if case == "empty" else SHORT
    return _rollouts(tok, LONG, GROUPS, "L") + _rollouts(tok, second, GROUPS, "S")


def _flat(trainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).cpu() for p in trainer.params])


def worker(spec_file: str) -> None:
    """One process of the launched run (or the single-process reference): 2 PPO steps, save, resume, 1 step."""
    from rl.policy.models import LoraSpec, load_policy
    from rl.train.ppo import PPOConfig, PPOTrainer

    spec = json.loads(Path(spec_file).read_text())
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the LoRA initialisation: the same on every process
    model, tok = load_policy(spec["model"], LoraSpec(r=4, alpha=8))
    everything = _global_batch(tok, spec["case"])
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    share = len(everything) // world
    mine = list(range(rank * share, (rank + 1) * share))
    cfg = PPOConfig(**spec["config"], minibatch_size=share, grad_accum_steps=2, seed=1)
    out = Path(spec["out"])
    record: dict = {"grads": [], "params": [], "stats": []}

    def spy(trainer):
        inner = trainer.optimizer.step

        def step(*a, **k):
            record["grads"].append(torch.cat([p.grad.detach().reshape(-1).cpu() for p in trainer.params]))
            return inner(*a, **k)

        trainer.optimizer.step = step

    def train(trainer, steps):
        for s in steps:
            rs = [everything[i] for i in mine]
            rw = _rewards(everything, s)
            record["stats"].append(trainer.step(rs, [rw[i] for i in mine]))
            record["params"].append(_flat(trainer))

    trainer = PPOTrainer(model, tok, cfg)
    spy(trainer)
    train(trainer, [0, 1])
    trainer.save(out / "ckpt")
    again = PPOTrainer.load(out / "ckpt", spec["model"])
    # AdamW's state restored on every process (before the fix: map_location "cpu:0" under DDP on CPUs failed
    # and the resumed run started AdamW afresh, with a warning)
    record["adam_steps"] = sorted({int(v["step"]) for v in again.optimizer.state_dict()["state"].values()})
    spy(again)
    train(again, [2])
    record["n_steps"] = again.n_steps
    record["world"] = again.accelerator.num_processes
    torch.save(record, out / f"rank{rank}.pt")
    from rl.train.ppo_dist import shutdown

    shutdown()  # without it a rank could abort in gloo's threads at exit (SIGABRT seen once in CI)


# ---------------------------------------------------------------------------------------------
# launching


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from rl.policy.models import build_tiny_model, train_char_tokenizer

    root = tmp_path_factory.mktemp("ddp")
    tok = train_char_tokenizer(["abcdefgh\n"], root / "tok")
    return build_tiny_model(root / "model", tok, hidden_size=32, num_layers=1, num_heads=2, initializer_range=0.2)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_", "ACCELERATE_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def torchrun(nproc: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node nproc ARGS`` (gloo on CPU) with a timeout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def _run(model_path, tmp_path, case: str, config: dict, nproc: int) -> list[dict]:
    out = tmp_path / f"{case}-{nproc}"
    out.mkdir(parents=True)
    spec = out / "spec.json"
    spec.write_text(json.dumps({"model": str(model_path), "case": case, "config": config, "out": str(out)}))
    if nproc == 1:
        p = subprocess.run(
            [sys.executable, __file__, "--worker", str(spec)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300
        )
        assert p.returncode == 0, p.stderr[-6000:]
    else:
        torchrun(nproc, __file__, "--worker", str(spec))
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(nproc)]


CASES = {
    # the default estimator: line baselines per prompt group, the groups split across the processes
    "lines": ("short", {"advantage": "lines", "ppo_epochs": 2, "kl_coef": 0.05, "learning_rate": 1e-2}),
    # GAE with whitened advantages and rescaled rewards; one process holds only empty completions
    "gae-empty": ("empty", {"advantage": "gae", "whiten_rewards": True, "ppo_epochs": 2, "kl_coef": 0.05, "learning_rate": 1e-2}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_take_the_single_process_step(model_path, tmp_path, name):
    case, config = CASES[name]
    one = _run(model_path, tmp_path, case, config, 1)[0]
    two = _run(model_path, tmp_path, case, config, 2)
    assert one["world"] == 1 and two[0]["world"] == two[1]["world"] == 2
    assert one["n_steps"] == two[0]["n_steps"] == 3
    assert one["adam_steps"] == two[0]["adam_steps"] == two[1]["adam_steps"] == [2 * config["ppo_epochs"]]
    # the ranks stay identical: the same gradients (after DDP's all-reduce) and bit-equal parameters
    for a, b in zip(two[0]["params"], two[1]["params"]):
        assert torch.equal(a, b)
    # and equal to the single process on the global batch: every optimizer step's gradient, every step's parameters
    assert len(one["grads"]) == len(two[0]["grads"]) == 3 * config["ppo_epochs"]
    for k, (g1, g2) in enumerate(zip(one["grads"], two[0]["grads"])):
        assert g1.abs().max() > 0
        torch.testing.assert_close(g2, g1, rtol=1e-4, atol=1e-6, msg=lambda m, k=k: f"optimizer step {k}: {m}")
    for p1, p2 in zip(one["params"], two[0]["params"]):
        torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-6)
    # the statistics are those of the global batch, the same on both processes
    keys = ["loss/policy", "loss/value", "loss/total", "policy/approx_kl", "policy/clipfrac", "policy/entropy", "kl/k1_mean"]
    keys += ["reward/score_mean", "reward/score_std", "value/mean", "advantages/mean", "tokens/n", "n_rollouts", "n_empty"]
    for s1, s2a, s2b in zip(one["stats"], two[0]["stats"], two[1]["stats"]):
        assert {k: s2a[k] for k in keys} == {k: s2b[k] for k in keys}
        for k in keys:
            assert s2a[k] == pytest.approx(s1[k], rel=1e-4, abs=1e-6), k
    assert one["stats"][0]["n_empty"] == (4 if case == "empty" else 0) and one["stats"][0]["n_rollouts"] == 8


@pytest.mark.slow
def test_rl_train_under_torchrun_matches_one_process_and_resumes(model_path, tmp_path):
    """``torchrun --nproc_per_node 2 -m rl train`` (each process half of every ``--batch-size`` batch,
    ``--minibatch-size`` per process) writes the adapter and value head one process writes; resumed with
    ``--adapter`` in place it continues the step count and the statistics file."""
    from safetensors.torch import load_file

    from crowdstat.io.rewards import write_rewards
    from rl.policy.models import load_tokenizer
    from rl.policy.rollouts import write_rollouts
    from tests.rl_helpers import reward_record

    tok = load_tokenizer(model_path)
    rs = _global_batch(tok, "short")
    write_rollouts(tmp_path / "r.jsonl", rs)
    recs = []
    for r in rs:
        lines = [ln for ln, _, _ in r.line_spans]
        post = [0.9 if "a" in r.code.split("\n")[ln - 1] else 0.2 for ln in lines]
        recs.append(reward_record(r.program, lines, post, len(r.code.splitlines())))
    write_rewards(tmp_path / "w.jsonl", recs)
    common = ["-m", "rl", "train", "--model", str(model_path), "--rollouts", str(tmp_path / "r.jsonl")]
    common += ["--rewards", str(tmp_path / "w.jsonl"), "--prompt-lines", "ignore", "--batch-size", "4", "--ppo-epochs", "2"]
    common += ["--learning-rate", "1e-2", "--seed", "3"]
    one = subprocess.run(
        [sys.executable, *common, "--minibatch-size", "4", "--out", str(tmp_path / "one")],
        cwd=ROOT,
        env={**_env(), "RL_TORCH_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-4000:]
    torchrun(2, *common, "--minibatch-size", "2", "--out", str(tmp_path / "two"))
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        a, b = load_file(str(tmp_path / "one" / name)), load_file(str(tmp_path / "two" / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)
    s1 = [json.loads(x) for x in (tmp_path / "one" / "train_stats.jsonl").read_text().splitlines()]
    s2 = [json.loads(x) for x in (tmp_path / "two" / "train_stats.jsonl").read_text().splitlines()]
    assert [x["n_rollouts"] for x in s2] == [4, 4] and [x["tokens/n"] for x in s1] == [x["tokens/n"] for x in s2]
    for x, y in zip(s1, s2):
        assert y["loss/total"] == pytest.approx(x["loss/total"], rel=1e-4, abs=1e-6)
    p = torchrun(2, *common, "--minibatch-size", "2", "--adapter", str(tmp_path / "two"), "--out", str(tmp_path / "two"))
    assert "not restored" not in p.stderr
    assert json.loads((tmp_path / "two" / "trainer_state.json").read_text())["n_steps"] == 4
    steps = [json.loads(x)["step"] for x in (tmp_path / "two" / "train_stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------
# fast: the math with simulated ranks (threads stand in for processes)


class ThreadRanks:
    """``world`` threads acting as processes: ``sum`` and ``gather`` are collectives over them."""

    def __init__(self, world: int):
        self.world = world
        self.slots: list = [None] * world
        self.barrier = threading.Barrier(world)
        self.local = threading.local()

    def _exchange(self, x) -> list:
        self.barrier.wait()
        self.slots[self.local.rank] = x
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out

    def sum(self, t):
        return sum(self._exchange(t.clone()))

    def gather(self, items: list) -> list:
        return [x for part in self._exchange(list(items)) for x in part]

    def run(self, fn, shares: list) -> list:
        results: list = [None] * self.world
        errors: list = []

        def go(rank):
            self.local.rank = rank
            try:
                results[rank] = fn(*shares[rank])
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)
                self.barrier.abort()

        threads = [threading.Thread(target=go, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        if errors:
            raise errors[0]
        return results


def _token_losses(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x @ w).tanh() ** 2  # a per-token loss with a parameter


@pytest.mark.parametrize("counts", [(7, 2), (1, 9, 4), (5, 5), (6, 0)])
def test_token_weight_gives_the_global_token_mean_under_ddp_averaging(counts):
    """Each rank: micro-batch token means times token_weight; DDP: the mean of the ranks' gradients. That is
    the gradient of the token mean over all ranks' tokens; the mean of per-rank token means is not (unless
    the counts are equal)."""
    from rl.train.ppo_math import token_weight

    g = torch.Generator().manual_seed(len(counts) * 10 + counts[0])
    w0 = torch.randn(3, generator=g, dtype=torch.float64)
    xs = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in counts]
    world, total = len(counts), sum(counts)

    def grad(loss_of):
        w = w0.clone().requires_grad_(True)
        loss_of(w).backward()
        return w.grad

    reference = grad(lambda w: _token_losses(w, torch.cat(xs)).mean())
    ddp, old = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for x in xs:
        micro = [u for u in (x[: len(x) // 2], x[len(x) // 2 :]) if len(u)]  # two micro-batches per rank
        n = len(x)

        # a rank without tokens still takes part, with a zero loss (all-masked rows)
        def new_loss(w, micro=micro):
            return sum((_token_losses(w, u).mean() * token_weight(len(u), total, world) for u in micro), 0 * w.sum())

        def old_loss(w, micro=micro, n=n):
            return sum((_token_losses(w, u).mean() * len(u) / max(n, 1) for u in micro), 0 * w.sum())

        ddp += grad(new_loss) / world
        old += grad(old_loss) / world
    torch.testing.assert_close(ddp, reference, rtol=1e-12, atol=1e-12)
    if len(set(counts)) > 1:
        assert (old - reference).abs().max() > 1e-3  # the old normalisation: a mean of per-rank means
    else:
        torch.testing.assert_close(old, reference, rtol=1e-12, atol=1e-12)
    assert token_weight(0, 0, 2) == 0.0


def test_whitening_and_rescaling_over_simulated_ranks_equal_the_whole_batch():
    from rl.train.ppo_math import masked_mean, masked_rescale, masked_var, masked_whiten

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    mask[4:] = 0.0  # the last rank's rows are all masked (empty completions)
    ranks = ThreadRanks(3)
    shares = [(x[2 * r : 2 * r + 2], mask[2 * r : 2 * r + 2]) for r in range(3)]

    def local(xr, mr):
        red = ranks.sum
        return (
            masked_whiten(xr, mr, reduce=red),
            masked_rescale(xr, mr, reduce=red),
            masked_mean(xr, mr, reduce=red),
            masked_var(xr, mr, reduce=red),
        )

    got = ranks.run(local, shares)
    torch.testing.assert_close(torch.cat([r[0] for r in got]), masked_whiten(x, mask), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r[1] for r in got]), masked_rescale(x, mask), rtol=1e-5, atol=1e-6)
    for r in got:
        torch.testing.assert_close(r[2], masked_mean(x, mask), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r[3], masked_var(x, mask), rtol=1e-5, atol=1e-6)
    # per rank (the old behaviour) the whitened values differ
    per_rank = torch.cat([masked_whiten(xr, mr) for xr, mr in shares])
    assert (per_rank - masked_whiten(x, mask)).abs().max() > 1e-2
    with pytest.raises(ValueError, match="dim=None"):
        masked_mean(x, mask, dim=1, reduce=ranks.sum)


def test_line_baselines_over_simulated_ranks_equal_the_whole_batch(model_path):
    """Prompt groups split across two simulated ranks: each rank's line advantages equal the whole batch's."""
    from rl.crowd.rewards import token_lines
    from rl.policy.models import load_tokenizer
    from rl.train.ppo_math import line_advantages

    tok = load_tokenizer(model_path)
    rs = _global_batch(tok, "short")
    rewards = _rewards(rs, 0)
    C = max(len(r.completion_ids) for r in rs)

    def grid(rows):
        out = torch.zeros(len(rows), C)
        for b, row in enumerate(rows):
            out[b, : len(row)] = torch.tensor(row, dtype=torch.float32)
        return out

    sc = grid(rewards)
    rw = sc - 0.01 * grid([[(i % 3) / 3 for i in range(len(r.completion_ids))] for r in rs])  # a made-up KL term
    own = grid([token_lines(r) for r in rs])
    mask = grid([[1.0] * len(r.completion_ids) for r in rs])
    groups = [r.prompt_id for r in rs]
    whole = line_advantages(rw, sc, own, mask, groups)
    ranks = ThreadRanks(2)
    halves = [slice(0, 4), slice(4, 8)]
    got = ranks.run(lambda s: line_advantages(rw[s], sc[s], own[s], mask[s], groups[s], gather=ranks.gather), [(s,) for s in halves])
    torch.testing.assert_close(torch.cat(got), whole, rtol=1e-5, atol=1e-6)
    alone = torch.cat([line_advantages(rw[s], sc[s], own[s], mask[s], groups[s]) for s in halves])
    assert (alone - whole).abs().max() > 0.1  # per process (the old behaviour): other baselines


def test_collectives_of_one_process_are_the_identity():
    from rl.train.ppo_dist import Collectives

    c = Collectives()
    t = torch.tensor([1.0, 2.0])
    assert c.world == 1 and c.rank == 0 and c.sum(t) is t and c.max(t) is t
    assert c.gather([3, 4]) == [3, 4]
    c.check_same([1, 2], "anything")  # nothing to compare with


def test_rollouts_of_the_cases_hold_different_token_counts(model_path):
    """The launched test's premise: the two shares hold very different token counts (else the old code passes)."""
    from rl.policy.models import load_tokenizer

    tok = load_tokenizer(model_path)
    for case in ("short", "empty"):
        rs = _global_batch(tok, case)
        n0, n1 = sum(len(r.completion_ids) for r in rs[:4]), sum(len(r.completion_ids) for r in rs[4:])
        assert n0 >= 3 * max(n1, 1), (case, n0, n1)
        assert {r.prompt_id for r in rs[:4]} == {r.prompt_id for r in rs[4:]}  # groups split across the shares


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        sys.exit(f"usage: {sys.argv[0]} --worker SPEC.json (a test helper; run the tests with pytest)")
