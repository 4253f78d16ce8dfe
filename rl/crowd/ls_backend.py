"""``rl loop`` with ``annotate = "labelstudio"``: a round's votes come from a Label Studio server.

:func:`round_votes` is called by the loop once per round, after generating (``labelstudio`` section of
the config: :class:`rl.config.LabelStudioSpec`). Each step is kept on disk in
``rounds/rNNN/labelstudio/``, so a stopped round resumes where it stopped:

1. **push** (once): the round's programs run in the sandbox for their annotated lines (and the line
   truth); a ``honeypot_fraction`` of them (drawn as in the simulated path) keep their truth in
   ``truth.csv`` only; one task per program goes to the run's project (created in round 1, its id kept
   in ``crowdwork/labelstudio.json``), with the ``population``'s annotator ids as accounts and
   ``per_program`` as the overlap;
2. **local crowd** (``local_crowd = true``, once): the simulated population votes as in the simulated
   path and each annotator posts its votes as its own account;
3. **wait**: poll until every task has ``per_program`` annotations (``wait = "poll"``, up to ``timeout``
   seconds, with a progress bar), or check once (``wait = "exit"``); still missing votes raise
   :class:`WaitingForVotes` (the loop stops with exit status 3; ``rl loop --resume`` continues);
With ``allocation = "adaptive"`` the push asks for :func:`rl.crowd.ls_adaptive.start_overlap`
annotations per task (2), and between 3 and 4 come steps of :mod:`rl.crowd.ls_adaptive` (``crowdstat
next`` raises the overlap of undecided programs' tasks, then 2-3 again for the new annotations),
until ``vote_budget`` annotations per program on average or every program is decided.

4. **pull**: the votes (``votes_labelstudio.csv`` with Label Studio's columns, ``votes.csv`` for the
   fit) go to the crowd pipeline exactly like simulated ones.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from crowdstat.io.atomic import atomic_write_csv, atomic_write_json
from rl.crowd import ls_adaptive, ls_ops, ls_round

__all__ = ["WaitingForVotes", "round_votes"]


class WaitingForVotes(Exception):
    """The round's tasks do not have their annotations yet (the message says what to do)."""


def _push(cfg, rewarder, items: list[tuple[str, Any, str]], tag: str, ls_dir: Path) -> dict:
    from rl.crowd.population import parse_population

    spec = cfg.labelstudio
    scored = rewarder.score(items)
    code = {prog: p.program(c) for prog, p, c in items}
    rng = random.Random(f"{cfg.seed}/{tag}")  # the honeypot draw of the simulated path
    honey = {s.program: {ln: 1 if t else -1 for ln, t in s.truths} for s in scored if s.truths and rng.random() < cfg.honeypot_fraction}
    programs = [{"program": s.program, "code": code[s.program], "lines": [ln for ln, _ in s.truths]} for s in scored]
    project_file = Path(cfg.out) / "crowdwork" / "labelstudio.json"
    project = json.loads(project_file.read_text())["project_id"] if project_file.exists() else None
    annotators = [a.id for a in parse_population(cfg.population).annotators]
    m = ls_ops.push_round(
        spec.server,
        ls_dir,
        programs,
        honeypots=honey,
        annotators=annotators,
        per_program=_start_overlap(cfg),
        seed=cfg.seed,
        title=spec.title or f"rl loop {Path(cfg.out).name}",
        project_id=project,
        key_prefix=f"{tag}-",
    )
    atomic_write_json(project_file, {"project_id": m["project_id"], "url": m["url"]}, parents=True)
    # local only: what the local crowd votes on, in the simulated path's order
    sim = [[s.program, [ln for ln, _ in s.truths], [1 if t else -1 for _, t in s.truths], s.shown_pass] for s in scored]
    atomic_write_json(ls_dir / "local_truth.json", sim)
    return m


def _start_overlap(cfg) -> int | None:
    if cfg.allocation != "adaptive":
        return cfg.per_program
    from rl.crowd.population import parse_population

    return ls_adaptive.start_overlap(cfg.vote_budget, len(parse_population(cfg.population).annotators))


def _local_crowd(cfg, rewarder, tag: str, ls_dir: Path) -> None:
    """The simulated population's votes (the same draw as the simulated path), posted through the server."""
    import zlib

    import numpy as np

    from rl.crowd.population import simulate

    progs = [tuple(x) for x in json.loads((ls_dir / "local_truth.json").read_text())]
    key = zlib.crc32(f"{cfg.seed}/{tag}".encode())
    votes, _ = simulate(progs, rewarder.population, np.random.default_rng([cfg.seed, key]), _start_overlap(cfg))
    atomic_write_csv(ls_dir / "crowd_votes.csv", ls_round.VOTE_COLUMNS, votes)
    ls_ops.post_votes(ls_dir, votes)
    (ls_dir / "crowd_posted").write_text("ok\n")


def _wait(cfg, ls_dir: Path, rnd: int, progress: bool) -> None:
    """Wait (or check once) until every task has the annotations it wants; :class:`WaitingForVotes` otherwise."""
    spec = cfg.labelstudio
    if spec.wait == "poll":
        st = ls_ops.wait_round(spec.server, ls_dir, timeout=spec.timeout, poll_seconds=spec.poll_seconds, progress=progress)
    else:
        st = ls_ops.round_status(spec.server, ls_dir)
    if st["done"] < st["tasks"]:
        m = ls_ops.read_round(ls_dir)
        want = f"the annotations they want ({st['wanted']} in all)" if "wanted" in st else f"{st['need']}"
        raise WaitingForVotes(
            f"Round {rnd} waits for Label Studio annotations: {st['done']}/{st['tasks']} tasks have {want} "
            f"({st['annotations']} annotations, {st['cancelled']} skipped).\n"
            f"  project {m['project_id']} at {m['url']} (annotators sign up with {m['invite_url']})\n"
            f"  check: rl labelstudio status --server {spec.server} --round {ls_dir}\n"
            f"  then run: rl loop --config <the same config> --resume\n"
        )


def round_votes(cfg, rewarder, items: list[tuple[str, Any, str]], rnd: int, rdir: Path, progress: bool = True) -> tuple[Path, Path | None]:
    """The round's ``(votes.csv, truth.csv)`` from the server; :class:`WaitingForVotes` while votes are missing."""
    spec = cfg.labelstudio
    tag = f"r{rnd:03d}"
    ls_dir = rdir / "labelstudio"
    if not (ls_dir / "round.json").exists():
        _push(cfg, rewarder, items, tag, ls_dir)
    if spec.local_crowd and not (ls_dir / "crowd_posted").exists():
        _local_crowd(cfg, rewarder, tag, ls_dir)
    adaptive = cfg.allocation == "adaptive"
    while True:
        if adaptive:
            ls_adaptive.complete_step(cfg, rewarder, tag, ls_dir)  # a step stopped half-way
        _wait(cfg, ls_dir, rnd, progress)
        if not adaptive or not ls_adaptive.next_step(cfg, rewarder, tag, ls_dir):
            break
    rows, _ = ls_ops.pull_round(spec.server, ls_dir, ls_dir / "votes_labelstudio.csv")
    ls_round.write_votes(rdir / "votes.csv", rows, detail=False)
    truth = ls_dir / "truth.csv"
    return rdir / "votes.csv", truth if truth.stat().st_size > len("program,line,truth\n") else None
