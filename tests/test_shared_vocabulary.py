"""The two halves share one vocabulary (issue 20): the annotators.csv of ``crowdstat simulate`` and of
``rl annotate`` have the same columns and the same annotator ids for the same SPEC,
``crowdstat compare --true-annotators`` reads either (and the old ``p`` column), and both tools
default to the same honeypot fraction."""

from __future__ import annotations

import argparse
import csv
import json

import pandas as pd
import pytest

SPEC = "expert:2@0.95,novice:2@0.7,spammer:1"
COLUMNS = ["annotator", "kind", "reliability", "sensitivity", "specificity"]


def _header(path):
    with open(path, newline="") as f:
        return next(csv.reader(f))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from crowdstat.cli import main as cs_main
    from rl.cli import main as rl_main

    root = tmp_path_factory.mktemp("vocab")
    assert cs_main(["simulate", "--population", SPEC, "--programs", "10", "--lines", "3", "--out", str(root / "sim")]) == 0
    progs = root / "programs.jsonl"
    progs.write_text(
        "".join(json.dumps({"program": f"p{i}", "code": "a\nb\nc\n", "truth": [[1, 1], [2, -1], [3, 1]]}) + "\n" for i in range(10))
    )
    assert rl_main(["annotate", "--programs", str(progs), "--population", SPEC, "--out", str(root / "ann")]) == 0
    return root


def test_same_columns_and_ids(both):
    sim, ann = both / "sim" / "annotators.csv", both / "ann" / "annotators.csv"
    assert _header(sim)[: len(COLUMNS)] == COLUMNS
    assert _header(ann)[: len(COLUMNS)] == COLUMNS
    ids = ["expert01", "expert02", "novice01", "novice02", "spammer01"]
    assert list(pd.read_csv(sim)["annotator"]) == ids == list(pd.read_csv(ann)["annotator"])
    assert set(pd.read_csv(both / "sim" / "votes.csv")["annotator"]) == set(ids)


def test_compare_reads_either_annotators_csv_and_the_old_p_column(both, tmp_path):
    from crowdstat.study.compare import compare

    sim = both / "sim"
    kw = dict(truth=sim / "truth.csv", true_lines=sim / "true_lines.csv", methods=["majority"])
    new = compare(sim / "votes.csv", true_annotators=sim / "annotators.csv", **kw).metrics
    old = pd.read_csv(sim / "annotators.csv").rename(columns={"reliability": "p"})
    old.to_csv(tmp_path / "old.csv", index=False)
    was = compare(sim / "votes.csv", true_annotators=tmp_path / "old.csv", **kw).metrics
    col = [c for c in new.columns if "rel" in c.lower() and new[c].notna().all()]
    assert col and new[col].equals(was[col])
    # rl annotate's annotators.csv too, against its own votes
    ann = both / "ann"
    compare(
        ann / "votes.csv",
        truth=ann / "truth.csv",
        true_lines=ann / "true_lines.csv",
        true_annotators=ann / "annotators.csv",
        methods=["majority"],
    )


def test_one_default_honeypot_fraction():
    from crowdstat.cli import build_parser
    from rl.crowd.annotate import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    rl_default = p.get_default("honeypots")
    sim = build_parser()._subparsers._group_actions[0].choices["simulate"]
    assert sim.get_default("honeypots") == rl_default == 0.1
