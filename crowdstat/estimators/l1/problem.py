"""Proximal operators."""

import jax.numpy as jnp

__all__ = ["soft_threshold"]


def soft_threshold(x, thresh):
    """S_t(x) = sign(x) * max(|x| - t, 0): the prox of t * ||.||_1."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - thresh, 0.0)
