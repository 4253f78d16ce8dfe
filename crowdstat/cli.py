"""The ``crowdstat`` command line (``crowdstat fit ...``; also ``python -m crowdstat``).

``crowdstat fit``'s method options are generated from the config dataclasses of
:mod:`crowdstat.estimators.registry` (flag, help, default, type and choices from each field), so
the CLI and :func:`crowdstat.fit` share one set of defaults.

Errors: every failure ends in one line per problem, ``crowdstat CMD: error: FILE:ROW:COLUMN: what``
(ROW and COLUMN where there are), and exit status 2 (1 for an internal error, 130 when
interrupted); never a traceback, unless ``--debug`` or ``CROWDSTAT_DEBUG=1``. ``--out`` is checked
(:func:`crowdstat.io.atomic.check_output_dir`) before anything is read or computed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings

from crowdstat.estimators.registry import CALIBRATE, METHODS, REGISTRY, CommonConfig, Config, format_default
from crowdstat.io.atomic import check_output_dir
from crowdstat.spec import DEFAULT_HONEYPOT_FRACTION

__all__ = ["main", "build_parser"]


def _config_classes() -> list[type[Config]]:
    """CommonConfig, then each method's config once, in registry order."""
    out: list[type[Config]] = [CommonConfig]
    for m in REGISTRY.values():
        if m.config not in out:
            out.append(m.config)
    return out


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


class _Store(argparse._StoreAction):
    """``store`` that also records the option as given on the command line (``args._given``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _note_given(namespace, self)


class _StoreTrue(argparse._StoreTrueAction):
    """``store_true`` that also records the switch as given (``args._given``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, values, option_string)
        _note_given(namespace, self)


def _note_given(namespace: argparse.Namespace, action: argparse.Action) -> None:
    given = getattr(namespace, "_given", None)
    if given is None:
        given = []
        namespace._given = given
    if action.option_strings[0] not in given:
        given.append(action.option_strings[0])


def _check_options_apply(method: str, args: argparse.Namespace) -> None:
    """A method option given for a method that does not take it is an error (as in :func:`crowdstat.fit`)."""
    if method != "auto" and method not in REGISTRY:  # a method without a config of its own (none today): fit checks them
        return
    classes = (CommonConfig,) if method == "auto" else (CommonConfig, REGISTRY[method].config)
    own = {fld.metadata["flag"] for cls in classes for fld in dataclasses.fields(cls) if "flag" in fld.metadata}
    foreign = [flag for flag in getattr(args, "_given", []) if flag not in own]
    if foreign:
        takes = sorted(own - {fld.metadata.get("flag") for fld in dataclasses.fields(CommonConfig)})
        theirs = f"its own options are {', '.join(takes)}" if takes else "it has no options of its own"
        raise ValueError(f"{', '.join(foreign)}: not an option of --method {method} ({theirs}, besides the common ones)")


def _option(fld: dataclasses.Field) -> dict:
    """argparse keyword arguments of a config field's flag; the help ends with the field's default."""
    md = fld.metadata
    text = md.get("flag_help", md["help"])
    doc = md.get("default_doc")
    if "switch" in md:
        kw = {"action": _StoreTrue, "default": False}
        shown = f"(default: {doc})" if doc else "(default off)"
    else:
        kinds = [t for t in (getattr(fld.type, "__args__", None) or (fld.type,)) if t is not type(None)]
        kw = {"action": _Store, "type": str if str in kinds else kinds[0], "default": fld.default}
        if "choices" in md:
            kw["choices"] = md["choices"]
        shown = f"(default: {doc})" if doc else f"(default {format_default(fld.default)})"
    kw["help"] = f"{text} {shown}".replace("%", "%%")  # argparse %-formats help strings
    return kw


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per config field that has a flag, grouped as the configs' ``cli_group`` says.

    A flag shared by two configs (``--nu``) is added once and must have one default.
    """
    groups: dict[str, argparse._ArgumentGroup] = {}
    added: dict[str, dataclasses.Field] = {}
    for cls in _config_classes():
        for fld in dataclasses.fields(cls):
            flag = fld.metadata.get("flag")
            if flag is None:
                continue
            if flag in added:
                if added[flag].default != fld.default or added[flag].type != fld.type:
                    raise RuntimeError(f"{flag}: configs disagree on its default or type ({cls.__name__}.{fld.name})")
                continue
            if cls.cli_group not in groups:
                groups[cls.cli_group] = parser.add_argument_group(cls.cli_group)
            groups[cls.cli_group].add_argument(flag, dest=_dest(flag), **_option(fld))
            added[flag] = fld


def _fit_params(method: str, args: argparse.Namespace) -> dict:
    """``crowdstat.fit`` keyword parameters of ``method`` from parsed ``crowdstat fit`` options.

    Valued options give their field's value; a switch (``--ista``, ``--latent``, ...) given sets
    the parameters its field's ``switch`` metadata names, after the valued ones.
    """
    params, switched = {}, {}
    for cls in (CommonConfig,) if method == "auto" else (CommonConfig, REGISTRY[method].config):
        for fld in dataclasses.fields(cls):
            flag = fld.metadata.get("flag")
            if flag is None:
                continue
            value = getattr(args, _dest(flag))
            if "switch" not in fld.metadata:
                params[fld.name] = value
            elif value:
                switched.update(fld.metadata["switch"])
    params.update(switched)
    return params


def _add_out(p: argparse.ArgumentParser) -> None:
    """``--out``, ``--force`` and ``--debug``, shared by every subcommand."""
    p.add_argument("--out", required=True, help="output directory, replaced atomically (docs/cli.md, 'Output directories')")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace a non-empty --out that is not an earlier output of this command (never the current directory, "
        "a file, or a directory holding an input)",
    )
    p.add_argument("--debug", action="store_true", help="on an error, show the traceback (also CROWDSTAT_DEBUG=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crowdstat", description="Calibrated crowd feedback on lines of code (cRLHF).")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser(
        "fit",
        help="fit an estimator to a vote table and write lines.csv, annotators.csv, rewards.jsonl, fit.json",
        description="Fit an estimator to a vote table (program,line,annotator,label) and write the results atomically to --out.",
    )
    f.add_argument("votes", help="vote table: .csv, .parquet or .jsonl with columns program,line,annotator,label")
    f.add_argument("--truth", help="honeypot truth table: program,line,truth")
    f.add_argument("--programs", help="program sizes: program,n_lines (for coverage)")
    f.add_argument(
        "--method",
        default="auto",
        choices=("auto", *METHODS),
        help="auto (default): em1, em2 or proximal --latent, whichever best predicts held-out honeypot truth "
        "(5-fold), or without enough honeypots em1 vs em2 by BIC; fit.json says what was compared",
    )
    f.add_argument(
        "--warm-start",
        metavar="PREVIOUS_OUT",
        help="continue the streaming fit saved in PREVIOUS_OUT (an earlier --out with state.npz) with VOTES, the new votes "
        "(docs/streaming.md); its method and parameters carry on, a different --method or option given is an error",
    )
    f.add_argument("--save-state", action="store_true", help="also write state.npz, for a later --warm-start (docs/streaming.md)")
    _add_out(f)
    _add_config_options(f)
    _add_simulate(sub)
    _add_compare(sub)
    _add_next(sub)
    _add_stream(sub)
    return parser


def _add_stream(sub) -> None:
    s = sub.add_parser(
        "stream",
        help="keep a streaming fit in a long-running process: JSON requests on stdin, one reply line each on stdout",
        description="Keep one streaming fit (crowdstat.online.OnlineFit) and read requests as JSON lines on stdin: "
        '{"op": "update", "votes": [[program, line, annotator, label], ...], "truth": [[program, line, truth], ...]} '
        'adds votes, {"op": "refit", ...} starts a new fit on exactly the votes given, {"op": "status"} reports. After '
        "each update or refit --out gets what crowdstat fit --save-state writes (one atomic swap), then one reply line "
        '{"ok": true, ...} or {"ok": false, "error": ...} (the fit unchanged). End of input ends it (docs/cli.md, '
        "'crowdstat stream'; docs/streaming.md).",
    )
    s.add_argument(
        "--method",
        default=None,
        choices=METHODS,
        help="em1, em2 or proximal (sequential is refused: docs/streaming.md); with --warm-start, the state's",
    )
    s.add_argument("--programs", help="program sizes: program,n_lines (for coverage), as crowdstat fit takes them")
    s.add_argument(
        "--warm-start",
        metavar="PREVIOUS_OUT",
        help="continue the fit saved in PREVIOUS_OUT (state.npz of crowdstat fit --save-state or of an earlier stream; "
        "may be --out itself); its method and parameters carry on, a different --method or option given is an error",
    )
    _add_out(s)
    _add_config_options(s)


def _main_stream(args) -> int:
    from crowdstat.online._serve import open_fit, read_programs, run

    flags = getattr(args, "_given", [])
    if args.method is not None:
        from crowdstat.online._serve import check_method

        check_method(args.method)  # sequential: one line, before anything is read
        _check_options_apply(args.method, args)
    inputs = [args.programs]
    check_output_dir(args.out, tool="crowdstat fit", force=args.force, inputs=inputs)

    def options(method: str) -> tuple[dict, set]:
        _check_options_apply(method, args)
        params = _fit_params(method, args)
        pbar = params.get("pbar_honeypot")
        if pbar is not None and not pbar < 1:
            raise ValueError(f"--pbar-honeypot: expected a number >= 0.5 and < 1 (1 has an infinite logit), got {pbar!r}")
        given = {fld.name for cls in _config_classes() for fld in dataclasses.fields(cls) if fld.metadata.get("flag") in flags}
        return params, given

    programs = read_programs(args.programs) if args.programs else None
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: print(f"crowdstat stream: warning: {msg}", file=sys.stderr)
        fit = open_fit(args.method, options, args.warm_start)
    name = args.programs or "--programs"
    return run(fit, args.out, programs=programs, programs_name=name, warm_start=args.warm_start, force=args.force, inputs=inputs)


def _add_next(sub) -> None:
    n = sub.add_parser(
        "next",
        help="propose which programs (or lines) get the next votes and from whom; write next.csv, programs.csv, next.json",
        description="Fit the votes so far, then propose the next --budget assignments by expected information about the "
        "lines' truth (honeypots where they teach most about the annotators), skipping programs already decided at "
        "--confidence (docs/allocation.md).",
    )
    n.add_argument("votes", help="vote table so far: program,line,annotator,label")
    n.add_argument("--truth", help="honeypot truth table: program,line,truth")
    n.add_argument("--programs", help="program,n_lines: every program to annotate, those without votes yet included")
    n.add_argument("--budget", type=int, required=True, help="assignments to propose (program reviews, or line votes with --unit line)")
    n.add_argument("--unit", choices=("program", "line"), default="program", help="a review of a whole program (default) or one line")
    n.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="stop asking about a program once all its line decisions are right with this probability (default 0.95)",
    )
    n.add_argument(
        "--honeypot-fraction",
        type=float,
        default=DEFAULT_HONEYPOT_FRACTION,
        help=f"share of the budget for honeypot items (default {DEFAULT_HONEYPOT_FRACTION:g})",
    )
    n.add_argument("--per-annotator", type=int, default=None, help="at most this many assignments per annotator (default: no limit)")
    n.add_argument("--annotators", default=None, help="comma-separated ids of who can be asked (default: every annotator in the votes)")
    n.add_argument("--method", default="auto", choices=("auto", *METHODS), help="the fit the proposal starts from (default auto)")
    n.add_argument(
        "--calibrate",
        default=None,
        choices=CALIBRATE,
        help="recalibrate the fit's posteriors on the honeypots first (docs/calibration.md): the stopping rule reads them "
        "(default: the method's, none except for auto with >= 5 honeypot programs)",
    )
    _add_out(n)


def _main_next(args) -> int:
    import json

    import pandas as pd

    from crowdstat.allocate import check_options, propose
    from crowdstat.api import fit, save_dir_atomically

    inputs = [args.votes, args.truth, args.programs]
    check_output_dir(args.out, tool="crowdstat next", force=args.force, inputs=inputs)
    check_options(args.budget, args.unit, args.confidence, args.honeypot_fraction, args.per_annotator)
    programs = None
    if args.programs:
        programs = pd.read_csv(args.programs)
        missing = [c for c in ("program", "n_lines") if c not in programs.columns]
        if missing:
            raise ValueError(f"{args.programs}: missing column(s) {', '.join(missing)} (expected program,n_lines)")
        bad = ~pd.to_numeric(programs["n_lines"], errors="coerce").between(1, 10**6)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise ValueError(f"{args.programs}:{row + 2}:n_lines: expected an integer >= 1, got {programs['n_lines'].iloc[row]!r}")
    who = [a.strip() for a in args.annotators.split(",") if a.strip()] if args.annotators else None
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: print(f"crowdstat next: warning: {msg}", file=sys.stderr)
        cal = {} if args.calibrate is None else {"calibrate": args.calibrate}
        res = fit(args.votes, truth=args.truth, method=args.method, programs=args.programs, **cal)
    prop = propose(
        res,
        args.budget,
        unit=args.unit,
        confidence=args.confidence,
        honeypot_fraction=args.honeypot_fraction,
        per_annotator=args.per_annotator,
        annotators=who,
        programs=programs,
    )

    def write(tmp):
        prop.assignments.to_csv(tmp / "next.csv", index=False, float_format="%.6g")
        prop.programs.to_csv(tmp / "programs.csv", index=False, float_format="%.6g")
        cal = res.diagnostics.get("calibration", {})
        record = {**prop.summary, "method": res.method, "calibration": cal.get("kind"), "votes": args.votes, "truth": args.truth}
        (tmp / "next.json").write_text(json.dumps(record, indent=2) + "\n")

    out = save_dir_atomically(args.out, write, tool="crowdstat next", force=args.force, inputs=inputs)
    s = prop.summary
    print(
        f"crowdstat next: {s['proposed']} of {s['budget']} assignments ({s['honeypot_assignments']} honeypot), "
        f"{s['programs_decided']} of {s['programs']} programs decided at {s['confidence']:g} ({res.method} fit) -> {out}"
    )
    return 0


def _add_simulate(sub) -> None:
    s = sub.add_parser(
        "simulate",
        help="simulate a crowd voting on lines of code; write votes.csv, truth.csv, true_lines.csv, annotators.csv",
        description=(
            "Simulate annotators voting on programs of K lines (crowdstat.study.simulate; docs/study.md). "
            "SPEC is the population grammar shared with rl (docs/formats.md, 'Annotator populations'): comma-separated "
            "kind[:count][@params][~decay] entries, kinds expert@p (0.95), novice@p (0.7), reliable@p (0.8), onecoin@p, "
            "spammer@q (0.5: votes +1 with probability q), adversary@p (0.3, < 1/2), twocoin@sens/spec (0.9/0.6: "
            "sensitivity P(+1 | correct) / specificity P(-1 | wrong)), lazy@a (0.5); examples is rl-only. ~decay = fatigue "
            "rate per vote cast (rates decay to 1/2 as exp(-decay n)); a JSON list or .json file is accepted too. "
            "Example: expert:3@0.95,novice:4@0.7,spammer:2,adversary:1@0.3,twocoin:2@0.9/0.6"
        ),
    )
    s.add_argument("--population", required=True, metavar="SPEC", help="annotator population, e.g. 'expert:3@0.95,spammer:2'")
    s.add_argument("--programs", type=int, default=50, help="number of programs (tasks) (default 50)")
    s.add_argument("--lines", type=int, default=6, help="lines per program (default 6)")
    s.add_argument(
        "--honeypots",
        type=float,
        default=DEFAULT_HONEYPOT_FRACTION,
        help=f"fraction of programs that are honeypots (default {DEFAULT_HONEYPOT_FRACTION}, as rl annotate and rl loop)",
    )
    s.add_argument("--placement", choices=("first", "random"), default="first", help="honeypot programs first (Algorithm 1) or scattered")
    s.add_argument("--design", choices=("program", "line"), default="program", help="r annotators per program (all its lines) or per line")
    s.add_argument("--per-item", type=int, default=None, metavar="R", help="annotators per program/line (default: all)")
    s.add_argument("--p-buggy", type=float, default=0.5, help="P(program is buggy) (default 0.5)")
    s.add_argument("--p-wrong", type=float, default=0.4, help="P(line wrong | buggy program) (default 0.4)")
    s.add_argument("--seed", type=int, default=0)
    _add_out(s)


def _add_compare(sub) -> None:
    c = sub.add_parser(
        "compare",
        help="run several methods on one data set and write a metrics table and figures",
        description=(
            "Fit several methods (crowdstat.fit) on one vote table and score them against the true lines "
            "(honeypot lines excluded) and, with --true-annotators, the true reliabilities. A method spec may carry "
            "parameters: 'sequential:lam=0.1:w_max=10', 'proximal:gamma=5%' (the names of crowdstat.fit, values read by "
            "the parameter's type)."
        ),
    )
    c.add_argument("votes", help="vote table (program,line,annotator,label)")
    c.add_argument("--truth", help="honeypot truth (program,line,truth)")
    c.add_argument("--true-lines", required=True, help="truth of every line (program,line,truth)")
    c.add_argument(
        "--true-annotators",
        help="true reliabilities (annotator,reliability[,kind]; the old column name p is read too), "
        "e.g. annotators.csv of crowdstat simulate or rl annotate",
    )
    c.add_argument(
        "--methods",
        default="majority,sequential,proximal",
        help=f"comma-separated method specs, methods among {','.join(METHODS)} (default majority,sequential,proximal)",
    )
    c.add_argument("--x64", action="store_true", help="compute in float64")
    _add_out(c)


def _population_file(spec: str) -> list[str]:
    """The population SPEC when it names a file (an input --out must not hold)."""
    return [spec] if spec.endswith(".json") and os.path.isfile(spec) else []


def _main_simulate(args) -> int:
    import json

    from crowdstat.api import save_dir_atomically
    from crowdstat.study.simulate import annotators_file_frame, parse_population, simulate_arrays, to_frames

    inputs = _population_file(args.population)
    check_output_dir(args.out, tool="crowdstat simulate", force=args.force, inputs=inputs)
    pop = parse_population(args.population)
    arr = simulate_arrays(
        args.seed,
        pop,
        args.programs,
        args.lines,
        args.p_buggy,
        args.p_wrong,
        args.honeypots,
        args.per_item,
        args.design,
        args.placement,
    )
    sim = to_frames(arr, pop)

    def write(tmp):
        sim.votes.to_csv(tmp / "votes.csv", index=False)
        sim.truth.to_csv(tmp / "truth.csv", index=False)
        sim.true_lines.to_csv(tmp / "true_lines.csv", index=False)
        annotators_file_frame(sim.reliability).to_csv(tmp / "annotators.csv", index=False, float_format="%.9g")
        keys = ("population", "programs", "lines", "honeypots", "placement", "design", "per_item", "p_buggy", "p_wrong", "seed")
        settings = {k: getattr(args, k) for k in keys}
        (tmp / "simulation.json").write_text(json.dumps(settings, indent=2) + "\n")

    out = save_dir_atomically(args.out, write, tool="crowdstat simulate", force=args.force, inputs=inputs)
    print(
        f"crowdstat simulate: {len(sim.votes)} votes, {args.programs} programs x {args.lines} lines, {pop.m} annotators, "
        f"{sim.truth['program'].nunique() if len(sim.truth) else 0} honeypot programs (seed {args.seed}) -> {out}"
    )
    return 0


def _main_compare(args) -> int:
    from crowdstat.study.compare import MethodUnavailable, compare, write_outputs

    inputs = [args.votes, args.truth, args.true_lines, args.true_annotators]
    check_output_dir(args.out, tool="crowdstat compare", force=args.force, inputs=inputs)
    methods = [m for m in args.methods.split(",") if m.strip()]
    try:
        cmp = compare(
            args.votes,
            truth=args.truth,
            true_lines=args.true_lines,
            true_annotators=args.true_annotators,
            methods=methods,
            common={"x64": args.x64},
            progress=True,
        )
    except MethodUnavailable as e:
        raise ValueError(f"{e}. Drop it from --methods.") from e
    meta = {k: getattr(args, k) for k in ("votes", "truth", "true_lines", "true_annotators", "methods", "x64")}
    out = write_outputs(cmp, args.out, meta, force=args.force, inputs=inputs)
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(cmp.metrics.drop(columns=["warnings"]).to_string(index=False))
    print(f"-> {out}")
    return 0


def _main_fit(args) -> int:
    from crowdstat.api import fit

    _check_options_apply(args.method, args)  # before anything is checked, read or computed
    inputs = [args.votes, args.truth, args.programs]
    check_output_dir(args.out, tool="crowdstat fit", force=args.force, inputs=inputs)
    params = {**_fit_params(args.method, args), "progress": sys.stderr.isatty()}
    if args.method == "auto" and "--calibrate" not in getattr(args, "_given", []):
        params.pop("calibrate", None)  # auto's own default: calibrated when it has held-out posteriors
    pbar = params.get("pbar_honeypot")
    if pbar is not None and not pbar < 1:  # the config accepts 1 (clipped to 1 - delta); the option says < 1
        raise ValueError(f"--pbar-honeypot: expected a number >= 0.5 and < 1 (1 has an infinite logit), got {pbar!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, *a, **k: print(f"crowdstat fit: warning: {msg}", file=sys.stderr)
        if args.warm_start is not None or args.save_state:  # streaming (crowdstat.online)
            from crowdstat.online import fit_command

            flags = getattr(args, "_given", [])
            given = {fld.name for cls in _config_classes() for fld in dataclasses.fields(cls) if fld.metadata.get("flag") in flags}
            res, out = fit_command(
                args.votes, args.truth, args.programs, args.method, params, given, args.warm_start, args.out, args.force, inputs
            )
            args.method = res.method  # the state's, for the summary line
        else:
            res = fit(args.votes, truth=args.truth, method=args.method, programs=args.programs, **params)
            out = res.save(args.out, force=args.force, inputs=inputs)
    d = res.diagnostics
    t = res.table
    assert t is not None  # fit() keeps the table it read
    chose = f" (chose {res.method}: {d['auto']['why']})" if "auto" in d else ""
    print(
        f"crowdstat fit --method {args.method}{chose}: {t.n_votes} votes, {t.n_lines} lines, {t.n_programs} programs, "
        f"{t.n_annotators} annotators, {t.n_honeypots} honeypot lines -> {out}"
    )
    cal = d.get("calibration") or {}
    if "log_loss_after" in cal and cal.get("kind") == "none":
        print(f"  calibration ({cal['requested']}): no map beat the raw posteriors on held-out honeypots; posteriors unchanged")
    elif "log_loss_after" in cal:  # a map was fitted (calibrate=, or auto's default): say so, with its held-out effect
        print(
            f"  calibrated on the honeypots ({cal['kind']}): cross-fitted honeypot log-loss {cal['log_loss_before']:.4g} -> "
            f"{cal['log_loss_after']:.4g}, ECE {cal['ece_before']:.3g} -> {cal['ece_after']:.3g}; lines.csv keeps posterior_raw"
        )
    if res.method == "proximal" and "gap" in d:
        print(
            f"  objective {d['objective']:.6g}, dual {d['dual_value']:.6g}, gap {d['gap']:.3g} "
            f"(relative {d['rel_gap']:.3g}), {d['iterations']} iterations, converged={d['converged']}"
        )
    return 0


def _flat(text) -> str:
    return " ".join(str(text).split())


def _error_lines(e: BaseException) -> tuple[list[str], int]:
    """The one-line messages of an error (one per table problem) and the exit status."""
    from crowdstat.io.rewards import RewardFileError
    from crowdstat.io.tables import VoteTableError

    if isinstance(e, VoteTableError):
        return e.located(), 2
    if isinstance(e, UnicodeError):  # a ValueError, but its text names no file
        return [f"not valid UTF-8: {_flat(e)}"], 2
    if isinstance(e, (RewardFileError, ValueError, TypeError)):
        return [_flat(e)], 2
    if isinstance(e, OSError):
        where = e.filename if e.filename is not None else ""
        text = e.strerror or _flat(e)
        return [f"{where}: {text}" if where else text], 2
    if isinstance(e, MemoryError):
        return ["out of memory"], 1
    return [f"internal error: {type(e).__name__}: {_flat(e)} (--debug or CROWDSTAT_DEBUG=1 shows the traceback)"], 1


_COMMANDS = {"fit": _main_fit, "simulate": _main_simulate, "compare": _main_compare, "next": _main_next, "stream": _main_stream}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("CROWDSTAT_DEBUG", "") not in ("", "0")
    cmd = f"crowdstat {args.command}"
    try:
        from crowdstat._cache import enable_compilation_cache

        # A CLI process compiles its drivers and exits: keep compiled programs on disk between runs
        # (CROWDSTAT_NO_COMPILE_CACHE=1 turns this off; CROWDSTAT_CACHE_DIR moves it).
        enable_compilation_cache()
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{cmd}: error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            raise
        lines, status = _error_lines(e)
        for line in lines:
            print(f"{cmd}: error: {line}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
