"""Test-process setup: float64 JAX (crowdstat itself never touches jax.config), seeded fixtures."""

import jax

jax.config.update("jax_enable_x64", True)

# `tests` and `tests/crowdstat` are packages (tests/__init__.py, tests/crowdstat/__init__.py), so
# pytest puts the repository root on sys.path and `import crowdstat` always finds the real package,
# never the directory tests/crowdstat. Never put tests/ itself on sys.path.
import pytest  # noqa: E402

from tests.strategies import random_tables  # noqa: E402


@pytest.fixture
def make_tables():
    """Factory: make_tables(seed, **kw) -> (votes, truth) DataFrames, deterministic in seed."""
    return random_tables
