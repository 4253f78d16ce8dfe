"""rl: sandboxed execution, pass@k, annotation round trips and PPO from crowd rewards.

Importing ``rl`` loads neither JAX nor torch; submodules import what they need.
The only part of crowdstat that rl may import is ``crowdstat.io.rewards`` (the reward file schema).
"""

__version__ = "0.1.0"
