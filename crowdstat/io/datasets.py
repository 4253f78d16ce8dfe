"""Real crowdsourcing sets with gold labels, as crowdstat vote tables, and the lookup of data folders.

Each item of a binary set becomes a one-line program: ``program = item id``, ``line = 1``,
``annotator = worker id``, ``label 1 -> +1, 0 -> -1`` (docs/formats.md). The gold labels come back
as a truth table ``program, line, truth`` (ALL gold; split it into honeypots and evaluation lines
with :func:`honeypot_split`). Multi-class sets are refused with a clear error: crowdstat's models
are binary (a line is correct or wrong).

Where data sets are found (:func:`dataset_places`, in this order; the first place that holds the
requested set wins, per set):

1. ``$CROWDSTAT_DATASETS``, when set: a folder holding one sub-folder per set;
2. ``../shared/datasets`` relative to the repository root (the checkout): the ``shared/`` folder
   kept beside the repository.

:func:`find_dataset_dir` applies the chain to one set and raises a one-line :class:`DatasetError`
naming both places, and what to do, when neither holds it. It is the one home of these two steps:
other lookups (the MBPP lookup of ``rl.tasks.benchmarks``, which then tries the Hugging Face hub)
reuse it rather than repeat them.

Repeated (item, worker) pairs: crowdstat rejects duplicate votes, so the loader resolves them
explicitly (``duplicates=``) and reports the counts in ``info`` -- never silently:

- ``"drop"`` (default): a pair answered twice with *different* labels is removed entirely
  (neither answer can be trusted over the other, and the result does not depend on row order);
- ``"first"``: keep the first answer in file order;
- ``"error"``: raise.

Identical repeated answers (same label) are merged into one vote under every policy, also counted.
Host only: the standard library, plus NumPy and pandas once a set is read (never JAX), so the
lookup costs other code (``rl``) no heavy import.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DatasetError",
    "ENV_VAR",
    "REPO_ROOT",
    "dataset_places",
    "find_dataset_dir",
    "datasets_root",
    "list_datasets",
    "load",
    "honeypot_split",
    "honeypots_first",
]

#: The environment variable naming a folder of data sets; searched first.
ENV_VAR = "CROWDSTAT_DATASETS"
#: The repository root (the checkout); its sibling ``shared/datasets`` is searched second.
REPO_ROOT = Path(__file__).resolve().parents[2]

_CROWD_FILES = ("answers.csv", "truth.csv")


class DatasetError(ValueError):
    """A dataset is missing, malformed, or not binary."""


def dataset_places() -> list[Path]:
    """The folders searched for data sets, in order: ``$CROWDSTAT_DATASETS`` (only when set), then
    ``<repository root>/../shared/datasets``. Listed whether they exist or not."""
    env = os.environ.get(ENV_VAR)
    places = [Path(env).expanduser()] if env else []
    places.append(REPO_ROOT.parent / "shared" / "datasets")
    return places


def _places_text() -> str:
    """Both places and their state, for one-line messages."""
    env = os.environ.get(ENV_VAR)
    shared = REPO_ROOT.parent / "shared" / "datasets"

    def state(p: Path) -> str:
        return str(p) if p.is_dir() else f"{p}, no such folder"

    first = f"${ENV_VAR} ({state(Path(env).expanduser())})" if env else f"${ENV_VAR} (unset)"
    return f"{first} and ../shared/datasets beside the checkout ({state(shared)})"


def _holds(folder: Path, files: Iterable[str]) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


def find_dataset_dir(name: str, files: Iterable[str] = ()) -> Path:
    """The folder of data set ``name``: ``<place>/<name>`` for the first of :func:`dataset_places`
    where that folder exists and holds every one of ``files``.

    Raises
    ------
    DatasetError
        One line naming both places and what to do, when no place holds the set.
    """
    files = tuple(files)
    for place in dataset_places():
        if _holds(place / name, files):
            return place / name
    need = f"{name}/ (with {', '.join(files)})" if files else f"{name}/"
    raise DatasetError(
        f"data set {name!r} not found: looked in {_places_text()}; "
        f"set {ENV_VAR} to a folder that holds {need}, or put it in shared/datasets/ beside the repository"
    )


def datasets_root() -> Path:
    """The first of :func:`dataset_places` that exists (for files kept beside the sets, e.g. ANCHORS.md).

    Raises
    ------
    DatasetError
        One line naming both places and what to do, when neither exists.
    """
    for place in dataset_places():
        if place.is_dir():
            return place
    raise DatasetError(
        f"no data set folder: looked in {_places_text()}; "
        f"set {ENV_VAR} to the folder that holds the data sets, or put them in shared/datasets/ beside the repository"
    )


def _is_binary(path: Path) -> bool:
    import pandas as pd

    labels = pd.read_csv(path / "answers.csv", usecols=["label"])["label"]
    return bool(labels.isin([0, 1]).all())


def _available() -> dict[str, Path]:
    """Set name -> folder, over every existing place (the first place wins a name)."""
    found: dict[str, Path] = {}
    for place in dataset_places():
        if place.is_dir():
            for p in sorted(place.iterdir()):
                if p.name not in found and _holds(p, _CROWD_FILES):
                    found[p.name] = p
    return found


def list_datasets(binary_only: bool = False) -> list[str]:
    """Names of the crowd sets (folders holding ``answers.csv`` and ``truth.csv``) in every place, sorted.

    Raises :class:`DatasetError` when no place exists.
    """
    datasets_root()  # the one-line error when there is no place at all
    found = _available()
    names = sorted(found)
    if binary_only:
        names = [n for n in names if _is_binary(found[n])]
    return names


def _read_set(name: str) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """(folder, answers, gold) of set ``name``, columns and 0/1 labels checked."""
    import pandas as pd

    try:
        path = find_dataset_dir(name, _CROWD_FILES)
    except DatasetError as e:
        raise DatasetError(f"{e}; available: {sorted(_available())}") from None
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
    return path, ans, gold


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
        A set no place holds (one line naming both places and the available sets), missing
        columns, labels other than 0/1 (multi-class sets), conflicting duplicates with
        ``duplicates="error"``.
    """
    if duplicates not in ("drop", "first", "error"):
        raise ValueError(f"duplicates: expected 'drop', 'first' or 'error', got {duplicates!r}")
    import numpy as np
    import pandas as pd

    path, ans, gold = _read_set(name)
    n_answers = len(ans)
    # identical repeats: merge
    ident = ans.duplicated(["item", "worker", "label"], keep="first")
    n_ident = int(ident.sum())
    ans = ans[~ident]
    conflict = ans.duplicated(["item", "worker"], keep=False)
    n_conf_pairs = int(ans[conflict][["item", "worker"]].drop_duplicates().shape[0])
    if n_conf_pairs and duplicates == "error":
        ex = ans[conflict].head(4).to_dict("records")
        raise DatasetError(
            f"dataset {name!r}: {n_conf_pairs} (item, worker) pairs have two different answers, e.g. {ex}; "
            "pass duplicates='drop' or 'first'"
        )
    if duplicates == "drop":
        kept = ans[~conflict]
    else:
        kept = ans[~ans.duplicated(["item", "worker"], keep="first")]
    n_dropped = len(ans) - len(kept)
    votes = pd.DataFrame(
        {
            "program": kept["item"].to_numpy(),
            "line": np.ones(len(kept), np.int64),
            "annotator": kept["worker"].to_numpy(),
            "label": np.where(kept["label"].to_numpy() == 1, 1, -1).astype(np.int64),
        }
    ).reset_index(drop=True)
    voted = set(votes["program"])
    has_votes = gold["item"].isin(voted)
    g = gold[has_votes]
    truth = pd.DataFrame(
        {
            "program": g["item"].to_numpy(),
            "line": np.ones(len(g), np.int64),
            "truth": np.where(g["label"].to_numpy() == 1, 1, -1).astype(np.int64),
        }
    ).reset_index(drop=True)
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
    import numpy as np

    if not (isinstance(fraction, (int, float)) and 0 <= fraction <= 1):
        raise ValueError(f"fraction: expected a number in [0, 1], got {fraction!r}")
    n = len(truth)
    k = int(round(fraction * n))
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return truth[mask].reset_index(drop=True), truth[~mask].reset_index(drop=True)


def honeypots_first(votes: pd.DataFrame, honeypots: pd.DataFrame) -> pd.DataFrame:
    """The vote rows of the programs in ``honeypots`` first, then the others, each part in its input order.

    Algorithm 1's task order (honeypot tasks first): it matters to the sequential update only, and the
    studies use it for every method so that all see the same table. The rows are kept, not changed.
    """
    import pandas as pd

    first = votes["program"].isin(set(honeypots["program"]))
    return pd.concat([votes[first], votes[~first]], ignore_index=True)
