"""``rl labelstudio serve|push|status|pull|crowd|listen|browse``: annotation rounds on a real Label Studio server.

Label Studio runs from its own venv (``make labelstudio-venv``); see docs/annotation.md, "Real annotators
(Label Studio server)", for a team's walk-through.

``serve``   start a server (``--data-dir`` kept, or a temporary one removed at the end) and write
            ``--server-file`` (URL, admin login and API token); runs until Ctrl-C / SIGTERM, then stops
            the server and removes the server file. ``--stop-when-up``: start, wait until it answers,
            stop (prepares a data directory: migrations take minutes on the first start).
            ``--allow-local-webhooks``: let it post webhooks to a listener on this host (its SSRF
            protection off: :mod:`rl.crowd.ls_server`).
``push``    one round: one task per program (``--programs`` JSONL as for ``rl export``), honeypot
            programs (``--truth`` CSV, e.g. ``truth.csv`` of ``rl annotate``) shuffled in and their truth
            kept in the round directory only, annotator accounts signed up (``--annotators`` ids or the
            ids of ``--population``), overlap ``--per-program``.
``status``  how many of the round's tasks have enough annotations (``--wait``: poll until all do,
            exit status 3 at ``--timeout``).
``pull``    export through the API into the vote table (``program,line,annotator,label`` plus
            ``annotator_id,created_at,updated_at,lead_time``); skipped tasks reported, not counted.
``crowd``   the local crowd: ``--population`` simulated on the round's programs with their line truth
            (``--true-lines``, e.g. ``true_lines.csv`` of ``rl annotate``), each annotator posting its
            votes through the API as its own account; the simulated table goes to ``crowd_votes.csv``.
``listen``  per-annotation-event streaming (:mod:`rl.crowd.ls_stream`): a webhook listener on
            ``--host``/``--port`` registered on the round's project (the secret header from
            ``--secret`` or ``$RL_LS_WEBHOOK_SECRET``, else generated); every annotation saved becomes
            votes and one request to a ``crowdstat stream`` subprocess (``--method``, fit options), the
            outputs of ``crowdstat fit`` rewritten in ``--out`` after each; one line per event; Ctrl-C /
            SIGTERM applies the events received, removes the webhook and stops. ``--resume`` continues
            ``--out``. At start, once the webhook is registered, it catches up with the annotations
            saved while no listener ran (the project's export, as ``pull`` reads it; ``--no-sync``: not).
``browse``  headless Chromium (the system ``chromium``) opens one task's labelling page, counts its
            choice controls and saves a screenshot.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from crowdstat.io.atomic import atomic_write_csv, atomic_write_json
from rl.crowd.ls_events import read_truth

__all__ = ["add_arguments", "run"]


def _annotators(args) -> list[str]:
    if args.population:
        from rl.crowd.population import parse_population

        return [a.id for a in parse_population(args.population).annotators]
    ids = [a.strip() for a in (args.annotators or "").split(",") if a.strip()]
    if not ids:
        raise ValueError("give --annotators a,b,c or --population SPEC")
    return ids


def _serve(args) -> int:
    from rl.crowd.ls_server import Server

    local = args.allow_local_webhooks
    srv = Server(args.venv, args.data_dir, prepared=args.prepared, port=args.port, timeout=args.timeout, allow_local_webhooks=local)
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        info = srv.start()
        note = "; webhooks to local addresses allowed (SSRF protection off)" if local else ""
        print(f"rl labelstudio: server up at {info['url']} after {srv.startup_seconds:.0f} s (data: {srv.data_dir}){note}", flush=True)
        if args.stop_when_up:
            return 0
        atomic_write_json(args.server_file, info, parents=True)
        print(f"rl labelstudio: admin {info['username']} / {info['password']}; server file {args.server_file}; Ctrl-C stops", flush=True)
        while not stop["now"] and srv.proc is not None and srv.proc.poll() is None:
            time.sleep(1.0)
        if not stop["now"]:
            print("rl labelstudio serve: error: the server exited on its own (see server.log in the data directory)", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        srv.stop()
        if Path(args.server_file).exists() and srv.info:
            Path(args.server_file).unlink()


def _push(args) -> int:
    from rl.crowd.labelstudio import load_programs
    from rl.crowd.ls_ops import push_round

    programs = load_programs(args.programs)
    honeypots = read_truth(args.truth) if args.truth else {}
    m = push_round(
        args.server,
        args.round,
        programs,
        honeypots=honeypots,
        annotators=_annotators(args),
        per_program=args.per_program,
        seed=args.seed,
        title=args.title,
        project_id=args.project_id,
    )
    print(
        f"rl labelstudio push: {len(m['tasks'])} tasks ({len(m['honeypots'])} honeypots) -> project {m['project_id']} at {m['url']}; "
        f"{len(m['annotators'])} annotator accounts (passwords: {Path(args.server).with_name('accounts.json')}); "
        f"invite link {m['invite_url']}; round {args.round}"
    )
    return 0


def _status(args) -> int:
    from rl.crowd.ls_ops import round_status, wait_round

    if args.wait:
        st = wait_round(args.server, args.round, timeout=args.timeout, poll_seconds=args.poll, progress=not args.no_progress)
    else:
        st = round_status(args.server, args.round)
    print(
        f"rl labelstudio status: {st['done']}/{st['tasks']} tasks have {st['need']} annotations "
        f"({st['annotations']} annotations, {st['cancelled']} skipped)"
    )
    return 3 if args.wait and st["done"] < st["tasks"] else 0


def _pull(args) -> int:
    from rl.crowd.ls_ops import pull_round

    rows, rep = pull_round(args.server, args.round, args.out)
    out = args.out or Path(args.round) / "votes.csv"
    print(
        f"rl labelstudio pull: {len(rows)} votes from {rep['annotations']} annotations on {rep['tasks']} tasks -> {out}; "
        f"{len(rep['cancelled'])} skipped, {rep['replaced']} replaced by a later edit, {rep['unmarked']} lines left unmarked"
        + (f", {len(rep['bad_results'])} results ignored (unknown control or choice)" if rep["bad_results"] else "")
    )
    return 0


def _crowd(args) -> int:
    import numpy as np

    from rl.crowd.ls_ops import post_votes, read_round
    from rl.crowd.population import parse_population, simulate

    m = read_round(args.round)
    truth = read_truth(args.true_lines)
    progs = []
    for t in m["tasks"]:
        tt = truth.get(t["program"], {})
        missing = [ln for ln in t["lines"] if ln not in tt]
        if missing:
            raise ValueError(f"{args.true_lines}: no truth for program {t['program']!r} line(s) {missing[:5]}")
        progs.append((t["program"], t["lines"], [tt[ln] for ln in t["lines"]]))
    pop = parse_population(args.population)
    votes, _ = simulate(progs, pop, np.random.default_rng(args.seed), m.get("per_program"))
    atomic_write_csv(Path(args.round) / "crowd_votes.csv", ["program", "line", "annotator", "label"], votes)
    rep = post_votes(args.round, votes)
    print(f"rl labelstudio crowd: {len(votes)} votes posted by {len({v[2] for v in votes})} annotators ({rep['posted']} annotations)")
    return 0


def _browse(args) -> int:
    from rl.crowd.ls_ops import read_round
    from rl.crowd.ls_server import call_driver, chromium_path, read_server_json

    m = read_round(args.round)
    server = read_server_json(args.server)
    chromium = chromium_path()
    if chromium is None:
        raise ValueError("chromium not found (Debian: apt-get install chromium; `make labelstudio-browser`)")
    key = args.task or m["tasks"][0]["key"]
    if key not in m["task_ids"]:
        raise ValueError(f"{args.round}/round.json: no task {key!r}")
    lines = next(t["lines"] for t in m["tasks"] if t["key"] == key)
    req = {"url": server["url"], "email": server["username"], "password": server["password"], "project_id": m["project_id"]}
    rep = call_driver(
        "browse", {**req, "task_id": m["task_ids"][key], "screenshot": str(Path(args.screenshot).resolve()), "chromium": chromium}
    )
    print(f"rl labelstudio browse: task {key}: {rep['n_choice_groups']} choice controls for {len(lines)} lines -> {args.screenshot}")
    return 0 if rep["n_choice_groups"] == len(lines) else 1


def _fit_params(args) -> dict:
    """The OnlineFit parameters of ``listen``: --x64, --tol, --maxiter, --tau and every --param NAME=VALUE."""
    import json

    params: dict = {}
    if args.x64:
        params["x64"] = True
    for name in ("tol", "maxiter", "tau"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    for item in args.param or []:
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"--param {item!r}: expected NAME=VALUE (e.g. --param prior=0.6)")
        try:
            params[name.strip()] = json.loads(value)
        except ValueError:
            params[name.strip()] = value
    return params


def _listen(args) -> int:
    import os
    import secrets as _secrets

    from rl.crowd import ls_events, ls_stream
    from rl.crowd.ls_ops import read_round
    from rl.crowd.ls_server import call_driver, read_server_json

    m = read_round(args.round)
    server = read_server_json(args.server)
    if server["url"] != m["url"]:
        raise ValueError(f"{args.server}: server {server['url']} is not the round's server {m['url']}")
    secret = args.secret or os.environ.get(ls_stream.SECRET_ENV) or _secrets.token_urlsafe(32)
    rnd = ls_events.StreamRound(args.round, truth=args.truth, programs=args.programs)
    params = _fit_params(args)
    out = args.out or Path(args.round) / "stream"

    auth = {"url": server["url"], "token": server["token"]}

    def users(uid: int) -> str | None:
        reply = call_driver("users", auth)
        rnd.emails.update({int(u["id"]): u["email"] for u in reply["users"]})
        return rnd.emails.get(uid)

    def export() -> tuple[list, list]:  # the project's JSON export and users, as rl labelstudio pull reads them
        reply = call_driver("pull", {**auth, "project_id": rnd.project_id})
        return reply["tasks"], reply["users"]

    def log(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    lis = ls_stream.Listener(rnd, out, args.method or "em1", params, secret=secret, resume=args.resume, users=users, log=log)
    if args.resume and ((args.method and args.method != lis.method) or any(lis.params.get(k) != v for k, v in params.items())):
        lis.stop(drain=False)  # its crowdstat stream process
        raise ValueError(f"--resume {out}: the state is a --method {lis.method} fit with {lis.params}; drop --method and the fit options")
    stop = {"now": False}

    def _stop(*_):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    host, port = lis.serve(args.host, args.port or 0)
    target = args.public_url or f"http://{host}:{port}{ls_events.WEBHOOK_PATH}"
    hook = None
    try:
        if not args.no_register:
            req = {"url": server["url"], "token": server["token"], "project_id": rnd.project_id, "target": target}
            req.update(headers={ls_events.SECRET_HEADER: secret}, actions=list(ls_events.ACTIONS))
            try:
                hook = call_driver("webhook", req)["id"]
            except ValueError as e:
                hint = ""
                if not server.get("allow_local_webhooks") and host in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
                    hint = " (Label Studio refuses local webhook URLs: start it with rl labelstudio serve --allow-local-webhooks)"
                raise ValueError(f"{e}{hint}") from None
        log(
            f"rl labelstudio listen: {target} "
            + (f"(webhook {hook} on project {rnd.project_id}) " if hook is not None else "(not registered: --no-register) ")
            + f"-> {lis.method} fit in {out}; {len(lis.votes)} votes so far; Ctrl-C stops"
        )
        if not args.no_sync:  # after the webhook is registered: an annotation saved meanwhile is in the export or an event
            lis.sync(export)
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        lis.stop(drain=True)
        if hook is not None:
            try:
                call_driver("webhook", {"url": server["url"], "token": server["token"], "delete": hook})
            except ValueError as e:
                print(f"rl labelstudio listen: warning: webhook {hook} not removed: {e}", file=sys.stderr)
        st = lis.status()
        log(
            f"rl labelstudio listen: stopped; {st['events']} events ({st['online']} online updates, {st['refits']} refits, "
            f"{st['unchanged']} without change, {st['errors']} errors), {st['syncs']} syncs, {st['refused']} posts refused; "
            f"{st['votes']} votes in {out}"
        )
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ls_command", required=True, metavar="ACTION")
    s = sub.add_parser("serve", help="start a Label Studio server and write its server file")
    s.add_argument("--data-dir", type=Path, default=None, help="data directory to keep (default: a temporary one, removed at the end)")
    s.add_argument("--prepared", type=Path, default=None, help="a prepared data directory to copy first")
    s.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    s.add_argument("--server-file", type=Path, default=Path("server.json"))
    s.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the server to answer")
    s.add_argument("--venv", type=Path, default=None, help="the Label Studio venv (default .venv-labelstudio)")
    s.add_argument("--stop-when-up", action="store_true", help="stop once it answers (prepares --data-dir)")
    s.add_argument(
        "--allow-local-webhooks",
        action="store_true",
        help="post webhooks to loopback/private addresses (rl labelstudio listen on this host): Label Studio's "
        "SSRF_PROTECTION_ENABLED=false, which also lets its storages and ML backends reach them",
    )
    q = sub.add_parser("listen", help="per-annotation-event streaming: a webhook listener that keeps a crowdstat fit current")
    q.add_argument("--server", type=Path, default=Path("server.json"), help="server file of `rl labelstudio serve`")
    q.add_argument("--round", type=Path, required=True, help="the pushed round directory (round.json, truth.csv, programs.csv)")
    q.add_argument("--out", type=Path, default=None, help="output directory, rewritten after every event (default ROUND/stream)")
    q.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    q.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    q.add_argument("--secret", default=None, help="shared secret of the webhook header (default $RL_LS_WEBHOOK_SECRET, else generated)")
    q.add_argument("--public-url", default=None, help="the URL Label Studio posts to, when not http://HOST:PORT/webhook (a proxy)")
    q.add_argument("--no-register", action="store_true", help="do not register the webhook (one set up by hand, with the secret header)")
    q.add_argument("--method", choices=("em1", "em2", "proximal", "sequential"), default=None, help="the fit (default em1)")
    q.add_argument("--x64", action="store_true", help="fit in float64")
    q.add_argument("--tol", type=float, default=None, help="the method's tol (EM: log-likelihood gain; proximal: duality gap)")
    q.add_argument("--maxiter", type=int, default=None, help="the method's maxiter")
    q.add_argument("--tau", type=float, default=None, help="reward threshold on the posteriors")
    q.add_argument("--param", action="append", default=None, metavar="NAME=VALUE", help="any other crowdstat.fit parameter (repeatable)")
    q.add_argument("--truth", type=Path, default=None, help="honeypot truth (default ROUND/truth.csv)")
    q.add_argument("--programs", type=Path, default=None, help="program sizes program,n_lines (default ROUND/programs.csv)")
    q.add_argument("--resume", action="store_true", help="continue the listener state in --out")
    q.add_argument("--no-sync", action="store_true", help="do not catch up at start with the annotations saved while no listener ran")
    for name, help_ in (
        ("push", "push a round of programs as tasks"),
        ("status", "how many tasks have enough annotations"),
        ("pull", "export the round's annotations into a vote table"),
        ("crowd", "simulated annotators post votes through the server as their own accounts"),
        ("browse", "open a task in headless Chromium, count its choice controls, save a screenshot"),
    ):
        q = sub.add_parser(name, help=help_)
        q.add_argument("--server", type=Path, default=Path("server.json"), help="server file of `rl labelstudio serve`")
        q.add_argument("--round", type=Path, required=True, help="the round directory (round.json, truth.csv, votes.csv)")
        if name == "push":
            q.add_argument("--programs", type=Path, required=True, help="JSONL with program, code (and lines)")
            q.add_argument("--truth", type=Path, default=None, help="honeypot truth CSV program,line,truth (kept local)")
            q.add_argument("--annotators", default=None, help="comma-separated annotator ids (accounts <id>@crowd.local)")
            q.add_argument("--population", default=None, help="or a population SPEC: its annotator ids")
            q.add_argument("--per-program", type=int, default=None, help="annotations per task (default: every annotator)")
            q.add_argument("--seed", type=int, default=0)
            q.add_argument("--title", default="rl line labels")
            q.add_argument("--project-id", type=int, default=None, help="add the tasks to this project instead of a new one")
        elif name == "status":
            q.add_argument("--wait", action="store_true", help="poll until every task is done (exit 3 at the timeout)")
            q.add_argument("--timeout", type=float, default=3600.0)
            q.add_argument("--poll", type=float, default=10.0)
            q.add_argument("--no-progress", action="store_true")
        elif name == "pull":
            q.add_argument("--out", type=Path, default=None, help="vote table to write (default ROUND/votes.csv)")
        elif name == "crowd":
            q.add_argument("--population", required=True, help="population SPEC (the ids pushed as --population)")
            q.add_argument("--true-lines", type=Path, required=True, help="program,line,truth for every pushed line")
            q.add_argument("--seed", type=int, default=0)
        else:
            q.add_argument("--task", default=None, help="task key (default: the first)")
            q.add_argument("--screenshot", type=Path, default=Path("labelstudio_task.png"))


_ACTIONS = {"serve": _serve, "push": _push, "status": _status, "pull": _pull, "crowd": _crowd, "listen": _listen, "browse": _browse}


def run(args: argparse.Namespace) -> int:
    try:
        return _ACTIONS[args.ls_command](args)
    except ValueError as e:  # LabelStudioError included: one line naming the file, field or server
        print(f"rl labelstudio {args.ls_command}: error: {e}", file=sys.stderr)
        return 2
