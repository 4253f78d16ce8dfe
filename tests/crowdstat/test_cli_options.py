"""``crowdstat fit`` refuses options that do not apply to --method, as crowdstat.fit does (issue 20)."""

from __future__ import annotations

import pytest

from crowdstat.cli import build_parser, main


@pytest.mark.parametrize(
    "method,extra,flag",
    [
        ("majority", ["--lam", "0.1"], "--lam"),
        ("majority", ["--lam=0.1"], "--lam"),
        ("sequential", ["--gamma", "5%"], "--gamma"),
        ("sequential", ["--ista"], "--ista"),
        ("majority", ["--nu", "0.7"], "--nu"),  # given at its default: still refused
    ],
)
def test_option_of_another_method_is_refused(tmp_path, capsys, method, extra, flag):
    votes = tmp_path / "votes.csv"
    votes.write_text("program,line,annotator,label\np,1,a,+1\n")
    rc = main(["fit", str(votes), "--method", method, "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert err[0].startswith("crowdstat fit: error: ") and flag in err[0] and method in err[0]
    assert not (tmp_path / "out").exists()


def test_options_that_apply_are_accepted(tmp_path, capsys):
    votes = tmp_path / "votes.csv"
    votes.write_text("program,line,annotator,label\np,1,a,+1\np,1,b,-1\np,2,a,+1\n")
    assert main(["fit", str(votes), "--method", "sequential", "--lam", "0.5", "--tau", "0.5", "--out", str(tmp_path / "out")]) == 0
    assert main(["fit", str(votes), "--method", "majority", "--prior", "0.5", "--x64", "--out", str(tmp_path / "o2")]) == 0


def test_compare_help_shows_a_single_percent_sign():
    sub = build_parser()._subparsers._group_actions[0].choices["compare"]
    text = sub.format_help()
    assert "%%" not in text and "gamma=5%" in text
