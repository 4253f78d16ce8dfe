"""Test-process setup: float64 JAX (crowdstat itself never touches jax.config), seeded fixtures."""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

# `tests` is not a package: make `strategies` and `reference.oracles` importable from any test.
sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402

from strategies import random_tables  # noqa: E402


@pytest.fixture
def make_tables():
    """Factory: make_tables(seed, **kw) -> (votes, truth) DataFrames, deterministic in seed."""
    return random_tables
