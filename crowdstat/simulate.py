"""Reproducible simulation of noisy line annotators (JAX PRNG keys, key first).

A minimal generator used by the demo and tests: one-coin annotators with reliabilities p_i
vote on every line of programs of k lines; buggy lines cluster in buggy programs; a fraction
of programs are honeypots (their truth is returned as the honeypot table, and they come first,
as in Algorithm 1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

__all__ = ["Simulation", "simulate_votes", "canonicalize_key"]


class Simulation(NamedTuple):
    votes: pd.DataFrame  # program, line, annotator, label
    truth: pd.DataFrame  # program, line, truth (honeypot lines only)
    true_lines: pd.DataFrame  # program, line, truth (every line)
    reliability: pd.DataFrame  # annotator, p


def canonicalize_key(key) -> jax.Array:
    """Accept an int seed or a JAX key at the API edge."""
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


def simulate_votes(
    key,
    p,
    n_programs: int = 50,
    lines_per_program: int = 6,
    p_buggy_program: float = 0.5,
    p_wrong_line_if_buggy: float = 0.4,
    honeypot_fraction: float = 0.2,
    annotators_per_program: int | None = None,
) -> Simulation:
    """Draw votes of one-coin annotators with reliabilities ``p`` (P(label == truth)).

    Parameters
    ----------
    key : int or jax key
    p : array of shape (m,)
        Reliabilities; 1/2 is a spammer, < 1/2 an adversary.
    annotators_per_program : int, optional
        r annotators drawn without replacement per program (default: all m), who label all its lines.
    """
    key = canonicalize_key(key)
    p = jnp.asarray(p, jnp.float32)
    m = p.shape[0]
    k_bug, k_line, k_vote, k_assign = jax.random.split(key, 4)
    buggy = jax.random.bernoulli(k_bug, p_buggy_program, (n_programs,))
    wrong = jax.random.bernoulli(k_line, p_wrong_line_if_buggy, (n_programs, lines_per_program)) & buggy[:, None]
    truth = jnp.where(wrong, -1, 1).astype(jnp.int8)
    correct = jax.random.bernoulli(k_vote, jnp.broadcast_to(p, (n_programs, lines_per_program, m)))
    labels = jnp.where(correct, truth[..., None], -truth[..., None])
    r = m if annotators_per_program is None else int(annotators_per_program)
    scores = jax.random.uniform(k_assign, (n_programs, m))
    chosen = jnp.argsort(scores, axis=1)[:, :r]
    assigned = jnp.zeros((n_programs, m), bool).at[jnp.arange(n_programs)[:, None], chosen].set(True)
    labels, truth, assigned = np.asarray(labels), np.asarray(truth), np.asarray(assigned)
    prog_ids = np.array([f"prog{i:04d}" for i in range(n_programs)], dtype=object)
    ann_ids = np.array([f"ann{i:02d}" for i in range(m)], dtype=object)
    pi, li, ai = np.nonzero(np.broadcast_to(assigned[:, None, :], labels.shape))
    votes = pd.DataFrame({"program": prog_ids[pi], "line": li + 1, "annotator": ann_ids[ai], "label": labels[pi, li, ai].astype(int)})
    n_hp = int(round(honeypot_fraction * n_programs))
    lp, ll = np.meshgrid(np.arange(n_programs), np.arange(lines_per_program), indexing="ij")
    true_lines = pd.DataFrame({"program": prog_ids[lp.ravel()], "line": ll.ravel() + 1, "truth": truth.ravel().astype(int)})
    hp = true_lines[true_lines["program"].isin(prog_ids[:n_hp])].reset_index(drop=True)
    rel = pd.DataFrame({"annotator": ann_ids, "p": np.asarray(p, np.float64)})
    return Simulation(votes, hp, true_lines, rel)
