"""rl: sandboxed execution, pass@k, annotation round trips and PPO from crowd rewards.

Importing ``rl`` loads neither JAX nor torch; submodules import what they need. rl reaches
crowdstat only through its host-only modules: ``crowdstat.io.*`` (the reward file schema, atomic
writes, JSONL), ``crowdstat.spec`` (annotator populations) and the method registry
``crowdstat.estimators.METHODS``; the estimators themselves run in a ``crowdstat fit`` subprocess.
"""

__version__ = "0.1.0"
