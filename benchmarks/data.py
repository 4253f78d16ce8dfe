"""Synthetic vote tables with fixed seeds (the same data for every competitor).

A table of ``n_votes`` votes: programs of ``lines_per_program`` lines, each line voted on by
``votes_per_line`` distinct annotators out of ``n_annotators``. Annotator reliabilities are
drawn from a mixture of good workers, sloppy workers and spammers; line truths are +1 with
probability 0.7; ``honeypot_frac`` of the lines carry their truth (honeypots).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crowdstat._typing import VoteArrays


@dataclass
class Synth:
    votes: VoteArrays  # integer-coded, sorted by line (as crowdstat.io.tables builds it)
    n_annotators: int
    p_true: np.ndarray  # (m,), annotator reliabilities used to simulate
    line_truth: np.ndarray  # (n_lines,), +-1, every line's truth (honeypot or not)
    seed: int

    @property
    def n_votes(self) -> int:
        return self.votes.n_votes

    def frame(self):
        """The votes as a user's table ``program, line, annotator, label`` (string ids, like real data)."""
        import pandas as pd

        v = self.votes
        prog = np.char.add("prog", v.line_program.astype(np.int64).astype(str))
        ann_ids = np.char.add("w", np.arange(self.n_annotators).astype(str))
        starts = np.concatenate([[0], np.cumsum(np.bincount(v.line_program))[:-1]])
        line_no = np.arange(v.n_lines) - starts[v.line_program] + 1
        return pd.DataFrame(
            {
                "program": prog[v.line],
                "line": line_no[v.line].astype(np.int64),
                "annotator": ann_ids[v.annotator],
                "label": v.label.astype(np.int64),
            }
        )

    def truth_frame(self):
        import pandas as pd

        v = self.votes
        hp = np.flatnonzero(v.truth != 0)
        starts = np.concatenate([[0], np.cumsum(np.bincount(v.line_program))[:-1]])
        return pd.DataFrame(
            {
                "program": np.char.add("prog", v.line_program[hp].astype(np.int64).astype(str)),
                "line": (hp - starts[v.line_program[hp]] + 1).astype(np.int64),
                "truth": v.truth[hp].astype(np.int64),
            }
        )


def synth(
    n_votes: int,
    n_annotators: int = 1000,
    votes_per_line: int = 5,
    lines_per_program: int = 10,
    honeypot_frac: float = 0.1,
    seed: int = 0,
) -> Synth:
    """Build a table of ``n_votes`` votes (rounded down to whole lines)."""
    rng = np.random.default_rng(seed)
    k = min(votes_per_line, n_annotators)
    n_lines = max(n_votes // k, 1)
    m = n_annotators
    kind = rng.random(m)
    p = np.where(kind < 0.7, rng.uniform(0.75, 0.95, m), np.where(kind < 0.9, rng.uniform(0.55, 0.75, m), 0.5))
    t = np.where(rng.random(n_lines) < 0.7, 1, -1).astype(np.int8)
    # k distinct annotators per line: base + j * step (mod m), with k * step <= m.
    base = rng.integers(0, m, n_lines)
    step = rng.integers(1, max(m // k, 1) + 1, n_lines)
    ann = ((base[:, None] + np.arange(k)[None, :] * step[:, None]) % m).astype(np.int32).ravel()
    line = np.repeat(np.arange(n_lines, dtype=np.int32), k)
    correct = rng.random(line.shape[0]) < p[ann]
    label = np.where(correct, t[line], -t[line]).astype(np.int8)
    line_program = (np.arange(n_lines) // lines_per_program).astype(np.int32)
    n_prog = int(line_program[-1]) + 1
    truth = np.where(rng.random(n_lines) < honeypot_frac, t, 0).astype(np.int8)
    program_size = np.bincount(line_program, minlength=n_prog).astype(np.int32)
    votes = VoteArrays(line=line, annotator=ann, label=label, line_program=line_program, truth=truth, program_size=program_size)
    return Synth(votes=votes, n_annotators=m, p_true=p, line_truth=t, seed=seed)
