"""Hypothesis strategies and seeded generators for valid vote tables (+ honeypot truth).

A vote table is a DataFrame with columns program, line, annotator, label (+1/-1); truth a
DataFrame program, line, truth on a subset of the voted lines. Every generated table is valid
input for ``crowdstat.fit``: no duplicate (program, line, annotator), at least one vote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import strategies as st

VOTE_COLUMNS = ["program", "line", "annotator", "label"]
TRUTH_COLUMNS = ["program", "line", "truth"]


def random_tables(
    seed: int,
    n_programs: int = 6,
    max_lines: int = 8,
    n_annotators: int = 8,
    p_vote: float = 0.5,
    p_honeypot: float = 0.3,
    reliabilities=None,
    full: bool = False,
    shuffle: bool = True,
    program_names=None,
):
    """Seeded simulated crowd: a true label per line, each annotator votes with prob p_vote and
    is right with its reliability. Returns (votes, truth) DataFrames (+1/-1 coding).

    ``full=True`` gives every program ``max_lines`` lines and every annotator a vote on every line
    (fixed shapes: one JAX compilation for many tables). Rows are shuffled within a program-order
    preserving scheme unless ``shuffle=False``. ``program_names[i]`` renames program i.
    """
    rng = np.random.default_rng(seed)
    if reliabilities is None:
        reliabilities = rng.uniform(0.25, 0.95, n_annotators)
    rows, truth = [], []
    for p in range(n_programs):
        n_lines = max_lines if full else int(rng.integers(1, max_lines + 1))
        line_ids = sorted(rng.choice(np.arange(1, 3 * max_lines + 1), n_lines, replace=False)) if not full else range(1, n_lines + 1)
        for line in line_ids:
            t = int(rng.choice([-1, 1]))
            voters = [a for a in range(n_annotators) if full or rng.random() < p_vote]
            if not voters:
                voters = [int(rng.integers(n_annotators))]
            for a in voters:
                lab = t if rng.random() < reliabilities[a] else -t
                rows.append((f"p{p}", int(line), f"a{a}", int(lab)))
            if rng.random() < p_honeypot:
                truth.append((f"p{p}", int(line), t))
    votes = pd.DataFrame(rows, columns=VOTE_COLUMNS)
    if shuffle:
        # shuffle rows, then stable-sort by program index: programs keep first-appearance order
        # p0, p1, ... while rows (and so annotators' first appearance) inside a program are mixed
        votes = votes.sample(frac=1.0, random_state=seed)
        key = votes["program"].str[1:].astype(int)
        votes = votes.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)
    if program_names is not None:  # e.g. names whose sorted order differs from first appearance
        names = {f"p{i}": str(n) for i, n in enumerate(program_names)}
        votes["program"] = votes["program"].map(names)
        truth = [(names[p], l, t) for p, l, t in truth]
    return votes, pd.DataFrame(truth, columns=TRUTH_COLUMNS)


@st.composite
def vote_tables(draw, max_programs=4, max_lines=5, max_annotators=6, min_honeypots=0):
    """Random valid vote tables of variable shape, with truth on a random subset of voted lines."""
    n_prog = draw(st.integers(1, max_programs))
    n_ann = draw(st.integers(1, max_annotators))
    rows, keys = [], []
    for p in range(n_prog):
        lines = draw(st.lists(st.integers(0, 3 * max_lines), min_size=1, max_size=max_lines, unique=True))
        for line in lines:
            voters = draw(st.lists(st.integers(0, n_ann - 1), min_size=1, max_size=n_ann, unique=True))
            for a in voters:
                rows.append((f"p{p}", line, f"a{a}", draw(st.sampled_from([-1, 1]))))
            keys.append((f"p{p}", line))
    n_hp = draw(st.integers(min(min_honeypots, len(keys)), len(keys)))
    idx = draw(st.permutations(range(len(keys))))[:n_hp]
    truth = [(keys[i][0], keys[i][1], draw(st.sampled_from([-1, 1]))) for i in sorted(idx)]
    return pd.DataFrame(rows, columns=VOTE_COLUMNS), pd.DataFrame(truth, columns=TRUTH_COLUMNS)


@st.composite
def fixed_shape_tables(draw, n_programs=3, n_lines=4, n_annotators=5, n_honeypots=6):
    """Every annotator votes on every line (fixed shapes: cheap on JAX compilation); labels and
    truths random; truth on the first ``n_honeypots`` lines in line order."""
    rows, truth = [], []
    k = 0
    for p in range(n_programs):
        for line in range(1, n_lines + 1):
            labels = draw(st.lists(st.sampled_from([-1, 1]), min_size=n_annotators, max_size=n_annotators))
            for a, lab in enumerate(labels):
                rows.append((f"p{p}", line, f"a{a}", lab))
            if k < n_honeypots:
                truth.append((f"p{p}", line, draw(st.sampled_from([-1, 1]))))
            k += 1
    return pd.DataFrame(rows, columns=VOTE_COLUMNS), pd.DataFrame(truth, columns=TRUTH_COLUMNS)
