"""Package boundaries, checked in fresh subprocesses (STYLE.md §10).

- ``import rl`` (and ``rl.config``) loads neither jax nor torch.
- ``import rl.crowd.rewards, rl.train.ppo`` loads no jax and no crowdstat module but ``crowdstat.io.rewards``.
- ``import crowdstat, crowdstat.api`` loads no torch (nor transformers/peft).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("JAX_ENABLE_X64", None)
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _top(mods: set[str]) -> set[str]:
    return {m.split(".")[0] for m in mods}


def test_import_rl_is_light():
    mods = _modules_after("import rl, rl.config")
    assert "jax" not in _top(mods)
    assert "torch" not in _top(mods)
    assert not any(m.startswith("crowdstat") for m in mods)


def test_rl_training_modules_load_no_jax_and_only_host_io():
    mods = _modules_after("import rl, rl.crowd.rewards, rl.train.ppo, rl.policy.rollouts, rl.policy.models")
    assert "torch" in _top(mods)  # the probe really imported the training stack
    assert "jax" not in _top(mods) and "jaxlib" not in _top(mods)
    crowd = {m for m in mods if m == "crowdstat" or m.startswith("crowdstat.")}
    assert crowd <= {"crowdstat", "crowdstat.io", "crowdstat.io.rewards", "crowdstat.io.atomic", "crowdstat.io.jsonl"}, crowd
    assert "crowdstat.io.rewards" in crowd


def test_crowdstat_loads_no_torch():
    mods = _modules_after("import crowdstat, crowdstat.api")
    assert "crowdstat.api" in mods  # the probe really imported the facade
    assert not ({"torch", "transformers", "peft", "trl", "accelerate"} & _top(mods))
