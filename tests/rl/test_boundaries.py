"""Package boundaries at run time, checked in fresh subprocesses.

The static contracts live in pyproject.toml (``[tool.importlinter]``, run by ``make lint``); these
tests check what really gets loaded, including modules a package pulls in lazily through
``importlib`` (invisible to the static import graph).

- ``import rl`` (and ``rl.config``) loads neither jax nor torch, and no crowdstat module.
- rl's training and crowd modules load no jax, and of crowdstat only the host-only seam: the
  package itself, ``crowdstat.io`` with ``io.rewards`` / ``io.atomic`` / ``io.jsonl``,
  ``crowdstat.spec`` and the registry ``crowdstat.estimators`` (+ ``.registry``).
- That seam itself loads the standard library only (no jax, torch, NumPy, pandas).
- ``import crowdstat`` and its top layers load no torch (nor transformers/peft/trl/accelerate).
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


# What rl may load of crowdstat (the seam of README / pyproject's import contracts).
RL_MAY_LOAD = {
    "crowdstat",
    "crowdstat.io",
    "crowdstat.io.rewards",
    "crowdstat.io.atomic",
    "crowdstat.io.jsonl",
    "crowdstat.spec",
    "crowdstat.estimators",
    "crowdstat.estimators.registry",
}
JAX_STACK = {"jax", "jaxlib", "numpyro", "optax"}
TORCH_STACK = {"torch", "transformers", "peft", "trl", "accelerate"}


def _crowdstat(mods: set[str]) -> set[str]:
    return {m for m in mods if m == "crowdstat" or m.startswith("crowdstat.")}


def test_rl_training_modules_load_no_jax_and_only_host_io():
    mods = _modules_after("import rl, rl.crowd.rewards, rl.train.ppo, rl.policy.rollouts, rl.policy.models")
    assert "torch" in _top(mods)  # the probe really imported the training stack
    assert not JAX_STACK & _top(mods), JAX_STACK & _top(mods)
    crowd = _crowdstat(mods)
    assert crowd <= RL_MAY_LOAD, crowd - RL_MAY_LOAD
    assert "crowdstat.io.rewards" in crowd


def test_rl_loop_and_crowd_pipeline_load_only_the_seam():
    probe = (
        "import rl.loop, rl.evaluate, rl.train.grpo, rl.train.sft, "
        "rl.crowd.pipeline, rl.crowd.population, rl.crowd.annotate, rl.crowd.labelstudio"
    )
    mods = _modules_after(probe)
    assert "rl.crowd.pipeline" in mods and "rl.loop" in mods
    assert not JAX_STACK & _top(mods), JAX_STACK & _top(mods)
    crowd = _crowdstat(mods)
    assert crowd <= RL_MAY_LOAD, crowd - RL_MAY_LOAD


def test_the_seam_is_standard_library_only():
    mods = _modules_after("import " + ", ".join(sorted(RL_MAY_LOAD)))
    assert RL_MAY_LOAD <= mods  # every seam module exists and imports
    heavy = JAX_STACK | TORCH_STACK | {"numpy", "pandas", "pyarrow", "scipy", "matplotlib"}
    assert not heavy & _top(mods), heavy & _top(mods)


def test_crowdstat_loads_no_torch():
    mods = _modules_after("import crowdstat, crowdstat.api, crowdstat.cli, crowdstat.demo, crowdstat.study.compare")
    assert "crowdstat.api" in mods  # the probe really imported the facade
    assert not TORCH_STACK & _top(mods), TORCH_STACK & _top(mods)
