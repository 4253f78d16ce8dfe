"""Real crowdsourcing sets with gold labels (``shared/datasets``), as crowdstat vote tables.

Each item of a binary set becomes a one-line program: ``program = item id``, ``line = 1``,
``annotator = worker id``, ``label 1 -> +1, 0 -> -1`` (docs/formats.md). The gold labels come back
as a truth table ``program, line, truth`` (ALL gold; split it into honeypots and evaluation lines
with :func:`honeypot_split`). Multi-class sets are refused with a clear error.

The root is ``$CROWDSTAT_DATASETS`` if set, else ``<repo>/../shared/datasets``.

Repeated (item, worker) pairs: crowdstat rejects duplicate votes, so the loader resolves them
explicitly (``duplicates=``) and reports the counts in ``info`` -- never silently:

- ``"drop"`` (default): a pair answered twice with *different* labels is removed entirely
  (neither answer can be trusted over the other, and the result does not depend on row order);
- ``"first"``: keep the first answer in file order;
- ``"error"``: raise.

Identical repeated answers (same label) are merged into one vote under every policy, also counted.
This loads no JAX (pandas only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["DatasetError", "datasets_root", "list_datasets", "load", "honeypot_split"]


class DatasetError(ValueError):
    """A dataset is missing, malformed, or not binary."""


def datasets_root() -> Path:
    """``$CROWDSTAT_DATASETS``, else ``<repo>/../shared/datasets``; a clear error if it does not exist."""
    env = os.environ.get("CROWDSTAT_DATASETS")
    root = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "datasets"
    if not root.is_dir():
        how = "$CROWDSTAT_DATASETS" if env else "the default location (set $CROWDSTAT_DATASETS to override)"
        raise DatasetError(f"datasets root {root} does not exist ({how})")
    return root


def _is_binary(path: Path) -> bool:
    labels = pd.read_csv(path / "answers.csv", usecols=["label"])["label"]
    return bool(labels.isin([0, 1]).all())


def list_datasets(binary_only: bool = False) -> list[str]:
    """Names of the sets under the root (directories holding ``answers.csv`` and ``truth.csv``), sorted."""
    root = datasets_root()
    names = sorted(p.name for p in root.iterdir() if (p / "answers.csv").is_file() and (p / "truth.csv").is_file())
    if binary_only:
        names = [n for n in names if _is_binary(root / n)]
    return names


def load(name: str, duplicates: str = "drop") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Load one binary set as crowdstat tables.

    Parameters
    ----------
    name : str
        A name from :func:`list_datasets`.
    duplicates : {"drop", "first", "error"}
        Policy for an (item, worker) pair with two different answers (module docstring).

    Returns
    -------
    votes : DataFrame
        ``program, line, annotator, label`` (label +1 / -1), one row per (item, worker).
    truth : DataFrame
        ``program, line, truth`` (+1 / -1) for every gold item that has at least one vote.
    info : dict
        name, path, sizes, gold class counts, and the duplicate resolution:
        ``duplicate_policy``, ``n_conflicting_pairs``, ``n_votes_dropped_conflicts``,
        ``n_identical_repeats_merged``, ``n_gold_without_votes``.

    Raises
    ------
    DatasetError
        Unknown name (listing the available ones), missing files, labels other than 0/1
        (multi-class sets), conflicting duplicates with ``duplicates="error"``.
    """
    if duplicates not in ("drop", "first", "error"):
        raise ValueError(f"duplicates: expected 'drop', 'first' or 'error', got {duplicates!r}")
    root = datasets_root()
    path = root / name
    if not (path / "answers.csv").is_file() or not (path / "truth.csv").is_file():
        raise DatasetError(f"dataset {name!r}: no answers.csv/truth.csv under {path}; available: {list_datasets()}")
    ans = pd.read_csv(path / "answers.csv", dtype={"item": str, "worker": str})
    gold = pd.read_csv(path / "truth.csv", dtype={"item": str})
    for df, fname, cols in ((ans, "answers.csv", ["item", "worker", "label"]), (gold, "truth.csv", ["item", "label"])):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DatasetError(f"dataset {name!r}: {fname} lacks column(s) {missing}")
        bad = ~df["label"].isin([0, 1])
        if bad.any():
            vals = sorted(pd.unique(df["label"][bad]).tolist())[:10]
            raise DatasetError(
                f"dataset {name!r}: {fname} has labels other than 0/1 (e.g. {vals}; {int(bad.sum())} rows): "
                "a multi-class set; crowdstat's models are binary (line correct / wrong)"
            )
    n_answers = len(ans)
    # identical repeats: merge
    ident = ans.duplicated(["item", "worker", "label"], keep="first")
    n_ident = int(ident.sum())
    ans = ans[~ident]
    conflict = ans.duplicated(["item", "worker"], keep=False)
    n_conf_pairs = int(ans[conflict][["item", "worker"]].drop_duplicates().shape[0])
    if n_conf_pairs and duplicates == "error":
        ex = ans[conflict].head(4).to_dict("records")
        raise DatasetError(f"dataset {name!r}: {n_conf_pairs} (item, worker) pairs have two different answers, e.g. {ex}; "
                           "pass duplicates='drop' or 'first'")
    if duplicates == "drop":
        kept = ans[~conflict]
    else:
        kept = ans[~ans.duplicated(["item", "worker"], keep="first")]
    n_dropped = len(ans) - len(kept)
    votes = pd.DataFrame(
        {"program": kept["item"].to_numpy(), "line": np.ones(len(kept), np.int64), "annotator": kept["worker"].to_numpy(),
         "label": np.where(kept["label"].to_numpy() == 1, 1, -1).astype(np.int64)}
    ).reset_index(drop=True)
    voted = set(votes["program"])
    has_votes = gold["item"].isin(voted)
    g = gold[has_votes]
    truth = pd.DataFrame({"program": g["item"].to_numpy(), "line": np.ones(len(g), np.int64),
                          "truth": np.where(g["label"].to_numpy() == 1, 1, -1).astype(np.int64)}).reset_index(drop=True)
    info = {
        "name": name,
        "path": str(path),
        "n_answers_in_file": n_answers,
        "n_votes": len(votes),
        "n_items": int(votes["program"].nunique()),
        "n_workers": int(votes["annotator"].nunique()),
        "n_gold": len(truth),
        "n_gold_positive": int((truth["truth"] > 0).sum()),
        "n_gold_negative": int((truth["truth"] < 0).sum()),
        "n_gold_without_votes": int((~has_votes).sum()),
        "duplicate_policy": duplicates,
        "n_conflicting_pairs": n_conf_pairs,
        "n_votes_dropped_conflicts": n_dropped,
        "n_identical_repeats_merged": n_ident,
    }
    return votes, truth, info


def honeypot_split(truth: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random split of the gold into honeypots (``round(fraction * n)`` rows) and evaluation truth.

    Deterministic in ``seed`` (numpy ``default_rng``); both parts keep the input's row order.
    """
    if not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
        raise ValueError(f"fraction: expected a number in [0, 1], got {fraction!r}")
    n = len(truth)
    k = int(round(fraction * n))
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return truth[mask].reset_index(drop=True), truth[~mask].reset_index(drop=True)
