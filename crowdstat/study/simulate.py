"""Reproducible simulation of noisy line annotators (JAX PRNG keys, key first).

Model (everything a simulation study of cRLHF needs, nothing more):

- **Programs** of ``k`` lines. A program is buggy with probability ``p_buggy_program``; a line of
  a buggy program is wrong with probability ``p_wrong_line_if_buggy`` (so wrong lines cluster in
  buggy programs); lines of clean programs are correct. Truth t = +1 (correct) / -1 (wrong).
- **Annotators** are two-coin: ``sens_i`` = P(vote +1 | line correct) = 1 - P(flag a correct
  line) and ``spec_i`` = P(vote -1 | line wrong) = 1 - P(miss a bug). One-coin annotators
  (experts, novices, reliable, adversaries p < 1/2) have sens = spec = p; a spammer voting +1
  with probability q has (q, 1 - q) (p = 1/2 at q = 1/2); a lazy annotator who accepts a line
  unseen with probability a has (1, 1 - a).
- **Drift / fatigue**: an annotator's rates decay towards 1/2 with the number ``n`` of votes they
  have already cast (in task order, then line order):
  ``rate(n) = 1/2 + (rate - 1/2) * exp(-decay_i * n)``; ``decay_i = 0`` means no drift.
- **Assignment**: ``design="program"``: ``r`` annotators per program (without replacement) label
  every line of it; ``design="line"``: ``r`` annotators per line, drawn independently per line.
  ``r = None`` means everyone labels everything.
- **Honeypots**: ``round(honeypot_fraction * n_programs)`` whole programs have known truth;
  ``honeypot_placement="first"`` puts them at the start of the task order (Algorithm 1),
  ``"random"`` scatters them through it.

Layers: :func:`simulate_arrays` is the pure array core (jit-compiled; shapes are static, every
probability a runtime argument), :func:`simulate_replicates` splits the key and ``vmap``s it, and
:func:`to_frames` / :func:`simulate` / :func:`simulate_votes` convert to the standard tables of
docs/formats.md on the host. Populations come from :func:`parse_population` (the SPEC
grammar of :mod:`crowdstat.spec`, documented in docs/formats.md, "Annotator populations (SPEC)")
or :func:`one_coin`. Every kind except ``examples`` (whose votes depend on the program text) is
simulated here, ``~decay`` included; annotators are numbered in SPEC order: ``ann00, ann01, ...``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from crowdstat import spec as _spec

__all__ = [
    "KINDS",
    "Population",
    "SimArrays",
    "Simulation",
    "canonicalize_key",
    "parse_population",
    "one_coin",
    "simulate_arrays",
    "simulate_replicates",
    "replicate",
    "to_frames",
    "simulate",
    "simulate_votes",
    "annotators_file_frame",
    "FILE_COLUMNS",
]

KINDS = tuple(_spec.KINDS)  # the kind codes of Population.kind
SUPPORTED_KINDS = tuple(k for k in KINDS if k != "examples")  # examples needs the programs (rl.crowd.population)
DESIGNS = ("program", "line")
PLACEMENTS = ("first", "random")


class Population(NamedTuple):
    """Annotator parameters (a pytree of arrays; ``kind`` is an int code into :data:`KINDS`)."""

    sens: jax.Array  # shape=(m,), float, P(vote +1 | line correct) at vote 0
    spec: jax.Array  # shape=(m,), float, P(vote -1 | line wrong) at vote 0
    decay: jax.Array  # shape=(m,), float >= 0, fatigue rate per vote already cast
    kind: jax.Array  # shape=(m,), int32, index into KINDS

    @property
    def m(self) -> int:
        return int(np.shape(self.sens)[0])

    def names(self) -> np.ndarray:
        """Annotator ids ``expert01, expert02, novice01, ...``: kind and count per kind, the ids ``rl annotate``
        gives the same SPEC (:func:`crowdstat.spec.annotator_ids`; before: ``ann00, ann01, ...``)."""
        return np.array(_spec.annotator_ids(KINDS[int(k)] for k in np.asarray(self.kind)), dtype=object)


class SimArrays(NamedTuple):
    """One simulated data set as dense arrays (leading replicate axis after :func:`simulate_replicates`)."""

    label: jax.Array  # shape=(P, k, m), int8, +1 / -1 vote, 0 = no vote
    truth: jax.Array  # shape=(P, k), int8, +1 correct / -1 wrong
    honeypot: jax.Array  # shape=(P,), bool, program is a honeypot (truth known)
    p_vote: jax.Array  # shape=(P, k, m), float, P(vote == truth) for that vote (0 where no vote)
    p_effective: jax.Array  # shape=(m,), float, mean of p_vote over the annotator's votes (the one-coin target)


class Simulation(NamedTuple):
    votes: pd.DataFrame  # program, line, annotator, label
    truth: pd.DataFrame  # program, line, truth (honeypot lines only)
    true_lines: pd.DataFrame  # program, line, truth (every line)
    reliability: pd.DataFrame  # annotator, p (+ kind, p_nominal, sens, spec, decay, n_votes)


def canonicalize_key(key) -> jax.Array:
    """Accept an int seed or a JAX key at the API edge (the key-first convention of this module)."""
    if isinstance(key, (int, np.integer)):
        if not 0 <= int(key) < 2**32:  # JAX keeps 32 bits of a seed: 2**32 would silently be seed 0
            raise ValueError(f"seed: expected an integer in [0, 2**32 - 1], got {int(key)}")
        return jax.random.key(int(key))
    return key


# ----------------------------------------------------------------------------------------------
# Populations


def parse_population(spec, dtype=jnp.float32) -> Population:
    """A :class:`Population` from a SPEC (:mod:`crowdstat.spec`), e.g. ``"expert:3@0.95,spammer:2,twocoin:1@0.9/0.6"``.

    ``spec`` may be the compact string, JSON text, a ``.json`` path or a loaded JSON list. Raises a
    one-line ``ValueError`` naming the offending entry (unknown kind, count < 1, probability outside
    [0, 1], adversary with p >= 1/2, negative decay, the ``examples`` kind, ...).
    """
    anns = _spec.parse(spec, supported=SUPPORTED_KINDS, tool="crowdstat simulate").annotators
    return Population(
        jnp.asarray([a.sensitivity for a in anns], dtype),
        jnp.asarray([a.specificity for a in anns], dtype),
        jnp.asarray([a.decay for a in anns], dtype),
        jnp.asarray([KINDS.index(a.kind) for a in anns], jnp.int32),
    )


def one_coin(p, decay=0.0, dtype=jnp.float32) -> Population:
    """A one-coin population with reliabilities ``p`` (kind: spammer at 1/2, adversary below, else reliable)."""
    p = np.asarray(p, np.float64).reshape(-1)
    if np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError(f"one_coin: reliabilities must lie in [0, 1], got {p.tolist()}")
    kind = np.where(p == 0.5, KINDS.index("spammer"), np.where(p < 0.5, KINDS.index("adversary"), KINDS.index("reliable")))
    d = np.broadcast_to(np.asarray(decay, np.float64), p.shape)
    return Population(jnp.asarray(p, dtype), jnp.asarray(p, dtype), jnp.asarray(d, dtype), jnp.asarray(kind, jnp.int32))


# ----------------------------------------------------------------------------------------------
# The array core


def _top_r(key, shape, r):
    """Boolean mask with exactly min(r, m) True entries along the last axis, uniformly at random."""
    scores = jax.random.uniform(key, shape)
    ranks = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
    return ranks < r


@partial(jax.jit, static_argnames=("n_programs", "lines_per_program", "design", "honeypot_placement"))
def _simulate_arrays(
    key,
    pop: Population,
    p_buggy_program,
    p_wrong_line_if_buggy,
    honeypot_fraction,
    annotators_per_item,
    *,
    n_programs: int,
    lines_per_program: int,
    design: str,
    honeypot_placement: str,
) -> SimArrays:
    P, k = n_programs, lines_per_program
    m = pop.sens.shape[0]
    dtype = pop.sens.dtype
    k_bug, k_line, k_assign, k_hp, k_vote = jax.random.split(key, 5)
    buggy = jax.random.bernoulli(k_bug, p_buggy_program, (P,))
    wrong = jax.random.bernoulli(k_line, p_wrong_line_if_buggy, (P, k)) & buggy[:, None]
    truth = jnp.where(wrong, -1, 1).astype(jnp.int8)
    # assignment mask (P, k, m)
    if design == "program":
        assigned = jnp.broadcast_to(_top_r(k_assign, (P, m), annotators_per_item)[:, None, :], (P, k, m))
    else:
        assigned = _top_r(k_assign, (P, k, m), annotators_per_item)
    # honeypot programs
    n_hp = jnp.round(honeypot_fraction * P).astype(jnp.int32)
    if honeypot_placement == "first":
        honeypot = jnp.arange(P) < n_hp
    else:
        order = jnp.argsort(jnp.argsort(jax.random.uniform(k_hp, (P,))))
        honeypot = order < n_hp
    # votes already cast by each annotator before this one (task order, then line order)
    flat = assigned.reshape(P * k, m).astype(jnp.int32)
    n_before = (jnp.cumsum(flat, axis=0) - flat).reshape(P, k, m).astype(dtype)
    fatigue = jnp.exp(-pop.decay * n_before)  # (P, k, m)
    rate = jnp.where((truth > 0)[..., None], pop.sens, pop.spec)  # (P, k, m) P(vote == truth) at vote 0
    p_vote = 0.5 + (rate - 0.5) * fatigue
    correct = jax.random.uniform(k_vote, (P, k, m), dtype) < p_vote
    label = jnp.where(correct, truth[..., None], -truth[..., None])
    label = jnp.where(assigned, label, 0).astype(jnp.int8)
    p_vote = jnp.where(assigned, p_vote, 0.0)
    n_votes = jnp.sum(assigned, axis=(0, 1))
    p_eff = jnp.where(n_votes > 0, jnp.sum(p_vote, axis=(0, 1)) / jnp.maximum(n_votes, 1), 0.5 * (pop.sens + pop.spec))
    return SimArrays(label, truth, honeypot, p_vote, p_eff)


def _prepared(pop, n_programs, lines_per_program, p_buggy_program, p_wrong_line_if_buggy, honeypot_fraction, r, design, placement):
    """Check the settings; return r (annotators per item, default all) and the core with its static
    arguments bound (``core(key, pop, p_buggy_program, p_wrong_line_if_buggy, honeypot_fraction, r)``)."""
    _check_settings(n_programs, lines_per_program, p_buggy_program, p_wrong_line_if_buggy, honeypot_fraction, r, pop.m, design, placement)
    core = partial(
        _simulate_arrays,
        n_programs=int(n_programs),
        lines_per_program=int(lines_per_program),
        design=design,
        honeypot_placement=placement,
    )
    return (pop.m if r is None else int(r)), core


def _check_settings(n_programs, lines_per_program, p_buggy_program, p_wrong_line_if_buggy, honeypot_fraction, r, m, design, placement):
    if not (isinstance(n_programs, (int, np.integer)) and n_programs >= 1):
        raise ValueError(f"n_programs: expected an integer >= 1, got {n_programs!r}")
    if not (isinstance(lines_per_program, (int, np.integer)) and lines_per_program >= 1):
        raise ValueError(f"lines_per_program: expected an integer >= 1, got {lines_per_program!r}")
    probs = (
        ("p_buggy_program", p_buggy_program),
        ("p_wrong_line_if_buggy", p_wrong_line_if_buggy),
        ("honeypot_fraction", honeypot_fraction),
    )
    for name, v in probs:
        if not (isinstance(v, (int, float, np.floating)) and 0.0 <= float(v) <= 1.0):
            raise ValueError(f"{name}: expected a number in [0, 1], got {v!r}")
    if r is not None and not (isinstance(r, (int, np.integer)) and 1 <= r <= m):
        raise ValueError(f"annotators_per_item: expected an integer in [1, {m}] (the population size), got {r!r}")
    if design not in DESIGNS:
        raise ValueError(f"design: expected one of {DESIGNS}, got {design!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"honeypot_placement: expected one of {PLACEMENTS}, got {placement!r}")


def simulate_arrays(
    key,
    pop: Population,
    n_programs: int = 50,
    lines_per_program: int = 6,
    p_buggy_program=0.5,
    p_wrong_line_if_buggy=0.4,
    honeypot_fraction=_spec.DEFAULT_HONEYPOT_FRACTION,
    annotators_per_item: int | None = None,
    design: str = "program",
    honeypot_placement: str = "first",
) -> SimArrays:
    """Draw one data set as dense arrays (module docstring for the model).

    Parameters
    ----------
    key : int or jax key
        Split once into five named subkeys (bugs, lines, assignment, honeypots, votes).
    pop : Population
    n_programs, lines_per_program : int
        Static: they decide the shapes (P, k, m).
    p_buggy_program, p_wrong_line_if_buggy, honeypot_fraction : float
        Runtime (no recompilation when they change).
    annotators_per_item : int, optional
        r per program (``design="program"``) or per line (``design="line"``); default all m.
    design : {"program", "line"}
    honeypot_placement : {"first", "random"}

    Returns
    -------
    SimArrays
    """
    key = canonicalize_key(key)
    r, core = _prepared(
        pop,
        n_programs,
        lines_per_program,
        p_buggy_program,
        p_wrong_line_if_buggy,
        honeypot_fraction,
        annotators_per_item,
        design,
        honeypot_placement,
    )
    return core(key, pop, p_buggy_program, p_wrong_line_if_buggy, honeypot_fraction, r)


def simulate_replicates(
    key,
    n_replicates: int,
    pop: Population,
    n_programs: int = 50,
    lines_per_program: int = 6,
    p_buggy_program=0.5,
    p_wrong_line_if_buggy=0.4,
    honeypot_fraction=_spec.DEFAULT_HONEYPOT_FRACTION,
    annotators_per_item: int | None = None,
    design: str = "program",
    honeypot_placement: str = "first",
) -> SimArrays:
    """``n_replicates`` independent data sets: ``jax.random.split(key, n)`` + ``vmap`` of the core.

    Every field of the returned :class:`SimArrays` has a leading axis ``n_replicates``; take one
    with :func:`replicate`. All replicates share shapes, so downstream fits compile once.
    """
    key = canonicalize_key(key)
    if not (isinstance(n_replicates, (int, np.integer)) and n_replicates >= 1):
        raise ValueError(f"n_replicates: expected an integer >= 1, got {n_replicates!r}")
    r, core = _prepared(
        pop,
        n_programs,
        lines_per_program,
        p_buggy_program,
        p_wrong_line_if_buggy,
        honeypot_fraction,
        annotators_per_item,
        design,
        honeypot_placement,
    )
    keys = jax.random.split(key, int(n_replicates))
    return jax.vmap(core, in_axes=(0, None, None, None, None, None))(
        keys, pop, p_buggy_program, p_wrong_line_if_buggy, honeypot_fraction, r
    )


def replicate(sims: SimArrays, i: int) -> SimArrays:
    """The i-th replicate of :func:`simulate_replicates`' output."""
    return SimArrays(*(x[i] for x in sims))


# ----------------------------------------------------------------------------------------------
# Host converters


def to_frames(sim: SimArrays, pop: Population, program_prefix: str = "prog") -> Simulation:
    """Dense arrays of one replicate -> the standard tables (docs/formats.md).

    ``votes`` is in task order (programs 0..P-1), then line, then annotator, so the sequential
    update processes the programs in the simulated order (honeypots first with placement "first").
    ``reliability`` has ``annotator, kind, p, p_nominal, sens, spec, decay, n_votes``: ``p`` is the
    annotator's expected agreement with the truth over the votes they actually cast (the quantity a
    one-coin estimator targets; equal to the set p without drift), ``p_nominal`` the same at vote 0
    averaged over the simulated line truths.
    """
    label = np.asarray(sim.label)
    truth = np.asarray(sim.truth)
    hp = np.asarray(sim.honeypot)
    if label.ndim != 3:
        raise ValueError(f"to_frames: expected one replicate (label of rank 3), got label of shape {label.shape}; use replicate(sims, i)")
    P, k, m = label.shape
    width = max(4, len(str(P - 1)))
    prog_ids = np.array([f"{program_prefix}{i:0{width}d}" for i in range(P)], dtype=object)
    ann_ids = pop.names()
    pi, li, ai = np.nonzero(label)
    votes = pd.DataFrame({"program": prog_ids[pi], "line": li + 1, "annotator": ann_ids[ai], "label": label[pi, li, ai].astype(int)})
    lp, ll = np.meshgrid(np.arange(P), np.arange(k), indexing="ij")
    true_lines = pd.DataFrame({"program": prog_ids[lp.ravel()], "line": ll.ravel() + 1, "truth": truth.ravel().astype(int)})
    hp_tab = true_lines[np.repeat(hp, k)].reset_index(drop=True)
    sens = np.asarray(pop.sens, np.float64)
    spec = np.asarray(pop.spec, np.float64)
    frac_correct = float(np.mean(truth > 0))
    rel = pd.DataFrame(
        {
            "annotator": ann_ids,
            "kind": np.array(KINDS, dtype=object)[np.asarray(pop.kind)],
            "p": np.asarray(sim.p_effective, np.float64),
            "p_nominal": frac_correct * sens + (1 - frac_correct) * spec,
            "sens": sens,
            "spec": spec,
            "decay": np.asarray(pop.decay, np.float64),
            "n_votes": (label != 0).sum(axis=(0, 1)),
        }
    )
    return Simulation(votes, hp_tab, true_lines, rel)


#: ``Simulation.reliability`` column -> its name in ``annotators.csv`` (the shared vocabulary, crowdstat.spec.ANNOTATOR_COLUMNS)
FILE_COLUMNS = {"p": "reliability", "sens": "sensitivity", "spec": "specificity", "p_nominal": "reliability_nominal"}


def annotators_file_frame(reliability: pd.DataFrame) -> pd.DataFrame:
    """``Simulation.reliability`` with the column names of ``annotators.csv``: ``annotator, kind, reliability,
    sensitivity, specificity, reliability_nominal, decay, n_votes`` (the columns ``rl annotate`` writes too).
    The in-memory frame keeps its short names (``p``, ``sens``, ``spec``, ``p_nominal``)."""
    df = reliability.rename(columns=FILE_COLUMNS)
    first = [c for c in _spec.ANNOTATOR_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def simulate(key, population, n_programs: int = 50, lines_per_program: int = 6, **kw) -> Simulation:
    """Host convenience: ``population`` is a SPEC string, a :class:`Population` or one-coin p's."""
    if isinstance(population, str):
        pop = parse_population(population)
    elif isinstance(population, Population):
        pop = population
    else:
        pop = one_coin(population)
    return to_frames(simulate_arrays(key, pop, n_programs, lines_per_program, **kw), pop)


def simulate_votes(
    key,
    p,
    n_programs: int = 50,
    lines_per_program: int = 6,
    p_buggy_program: float = 0.5,
    p_wrong_line_if_buggy: float = 0.4,
    honeypot_fraction: float = _spec.DEFAULT_HONEYPOT_FRACTION,
    annotators_per_program: int | None = None,
) -> Simulation:
    """One-coin annotators with reliabilities ``p`` vote on whole programs (the demo's simulator).

    Parameters
    ----------
    key : int or jax key
    p : array of shape (m,)
        Reliabilities; 1/2 is a spammer, < 1/2 an adversary.
    annotators_per_program : int, optional
        r annotators drawn without replacement per program (default: all m), who label all its lines.

    Returns
    -------
    Simulation(votes, truth, true_lines, reliability); ``reliability`` has ``annotator, p`` (the set
    p) plus the columns of :func:`to_frames`.
    """
    pop = one_coin(p)
    sim = to_frames(
        simulate_arrays(
            key,
            pop,
            n_programs,
            lines_per_program,
            p_buggy_program,
            p_wrong_line_if_buggy,
            honeypot_fraction,
            annotators_per_program,
            "program",
            "first",
        ),
        pop,
    )
    rel = sim.reliability.copy()
    rel["p"] = np.asarray(p, np.float64)  # no drift: p_effective == p up to float32 rounding
    return sim._replace(reliability=rel)
