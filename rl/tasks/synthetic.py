"""A synthetic code benchmark for RL with a tiny model on CPU.

A family of short Python function tasks (arithmetic, strings, lists; one to five lines)
built from templates with random constants. Each task is an :class:`rl.tasks.benchmarks.Problem`,
so the sandbox, pass@k and ``rl annotate`` work on it unchanged. The prompt is a
plain-language comment, two input/output examples and the signature; the completion is the
indented body, e.g.::

    # multiply x by 3, then add 4          <- prompt
    # f(2) == 10
    # f(5) == 19
    def f(x):
        y = x * 3                            <- completion (canonical solution)
        return y + 4

Split (deterministic by ``seed``): for every template with two or more constants, the constant
combinations are shuffled and a quarter of them (at least one) is reserved for held-out
problems, so these use combinations never seen in training (each constant value itself is
seen). Templates with one constant contribute new held-out *instances* (fresh examples and
tests, training constants): with a single constant an unseen combination is an unseen value,
which a tiny character model does not copy from the comment (its held-out pass@1 is then near
zero: nothing to reinforce). A few templates (``HELDOUT_ONLY``) appear only in the
held-out set: recombinations of trained templates. ``hold_single=True`` restores the strict split.

Each template also has systematic, plausible bugs (one line changed: wrong operator, wrong
comparison, swapped arguments, off by one), used for the supervised warm start: a fraction of
the training solutions (10/30/60 % by template) carry one of them, so the warm-started model
makes the kind of mistakes a crowd can catch line by line.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rl.tasks.problem import Problem as _BaseProblem

__all__ = [
    "TEMPLATES",
    "HELDOUT_ONLY",
    "Template",
    "SyntheticBenchmark",
    "make_benchmark",
    "template_of",
    "split_of",
]

ENTRY = "f"
_WORDS = ("ab", "xy", "hi", "ok", "zz", "no", "yes", "pre")
_LETTERS = "abcde"


@dataclass(frozen=True)
class Problem(_BaseProblem):
    """The shared :class:`rl.tasks.benchmarks.Problem` (sandbox jobs, pass@k and annotation consume it),
    whose program is prompt + completion (HumanEval style)."""

    def program(self, completion: str) -> str:
        if not isinstance(completion, str):
            raise TypeError(f"{self.task_id}: completion must be str, got {type(completion).__name__}")
        return self.prompt + completion


@dataclass(frozen=True)
class Template:
    """One task family.

    name: identifier (appears in task ids).
    arg: the argument name, which decides the input kind: ``x`` int, ``s`` str, ``xs`` list.
    consts: constant name -> allowed values; every combination is a distinct task family member.
    comment: plain-language description, formatted with the constants.
    body: the canonical body lines (without indentation), formatted with the constants.
    fn: constants -> the reference function (an independent oracle for the expected outputs).
    bugs: alternative bodies, each differing from ``body`` in exactly one line.
    bug_rate: fraction of warm-start solutions of this template that carry a bug.
    """

    name: str
    arg: str
    consts: dict[str, tuple]
    comment: str
    body: tuple[str, ...]
    fn: Callable[..., Callable[[Any], Any]]
    bugs: tuple[tuple[str, ...], ...]
    bug_rate: float = 0.3

    def combos(self) -> list[dict[str, Any]]:
        keys = sorted(self.consts)
        out = []
        for vals in itertools.product(*(self.consts[k] for k in keys)):
            c = dict(zip(keys, vals))
            if self.name == "replace_char" and c["c"] == c["d"]:
                continue
            out.append(c)
        return out

    def render_body(self, consts: dict[str, Any], body: tuple[str, ...] | None = None) -> str:
        lines = self.body if body is None else body
        return "".join("    " + ln.format(**consts) + "\n" for ln in lines)


def _T(name, arg, consts, comment, body, fn, bugs, bug_rate):
    return Template(name, arg, consts, comment, tuple(body), fn, tuple(tuple(b) for b in bugs), bug_rate)


_R19 = tuple(range(1, 10))
TEMPLATES: tuple[Template, ...] = (
    # ---- integers
    _T(
        "add_const",
        "x",
        {"a": _R19},
        "add {a} to x",
        ["return x + {a}"],
        lambda a: lambda x: x + a,
        [["return x - {a}"], ["return x + {a} + 1"]],
        0.1,
    ),
    _T("sub_const", "x", {"a": _R19}, "subtract {a} from x", ["return x - {a}"], lambda a: lambda x: x - a, [["return {a} - x"]], 0.3),
    _T(
        "mul_add",
        "x",
        {"a": tuple(range(2, 8)), "b": tuple(range(1, 8))},
        "multiply x by {a}, then add {b}",
        ["y = x * {a}", "return y + {b}"],
        lambda a, b: lambda x: x * a + b,
        [["y = x + {a}", "return y + {b}"], ["y = x * {a}", "return y * {b}"]],
        0.6,
    ),
    _T(
        "mod_const",
        "x",
        {"a": tuple(range(2, 10))},
        "remainder of x divided by {a}",
        ["return x % {a}"],
        lambda a: lambda x: x % a,
        [["return x // {a}"]],
        0.1,
    ),
    _T(
        "floor_div",
        "x",
        {"a": tuple(range(2, 10))},
        "x divided by {a}, rounded down",
        ["return x // {a}"],
        lambda a: lambda x: x // a,
        [["return x // {a} + 1"], ["return x % {a}"]],
        0.3,
    ),
    _T(
        "clamp_max",
        "x",
        {"a": tuple(range(5, 16))},
        "x, but at most {a}",
        ["return min(x, {a})"],
        lambda a: lambda x: min(x, a),
        [["return max(x, {a})"]],
        0.6,
    ),
    _T(
        "square_plus",
        "x",
        {"a": _R19},
        "x squared plus {a}",
        ["return x * x + {a}"],
        lambda a: lambda x: x * x + a,
        [["return x * 2 + {a}"]],
        0.1,
    ),
    _T(
        "abs_diff",
        "x",
        {"a": tuple(range(3, 16))},
        "distance between x and {a}",
        ["return abs(x - {a})"],
        lambda a: lambda x: abs(x - a),
        [["return x - {a}"]],
        0.3,
    ),
    _T(
        "above",
        "x",
        {"a": tuple(range(3, 16))},
        "1 if x is greater than {a}, else 0",
        ["if x > {a}:", "    return 1", "return 0"],
        lambda a: lambda x: 1 if x > a else 0,
        [["if x < {a}:", "    return 1", "return 0"], ["if x > {a}:", "    return 0", "return 0"]],
        0.6,
    ),
    # ---- strings
    _T(
        "repeat",
        "s",
        {"a": (2, 3, 4)},
        "s repeated {a} times",
        ["return s * {a}"],
        lambda a: lambda s: s * a,
        [["return s * {a} + s"]],
        0.1,
    ),
    _T("prefix", "s", {"w": _WORDS}, "put '{w}' before s", ["return '{w}' + s"], lambda w: lambda s: w + s, [["return s + '{w}'"]], 0.3),
    _T(
        "first_upper",
        "s",
        {"a": (1, 2, 3)},
        "first {a} characters of s in upper case",
        ["return s[:{a}].upper()"],
        lambda a: lambda s: s[:a].upper(),
        [["return s[{a}:].upper()"], ["return s[:{a}]"]],
        0.6,
    ),
    _T(
        "count_char",
        "s",
        {"c": tuple(_LETTERS)},
        "how many times '{c}' appears in s",
        ["return s.count('{c}')"],
        lambda c: lambda s: s.count(c),
        [["return len(s)"]],
        0.1,
    ),
    _T(
        "replace_char",
        "s",
        {"c": tuple(_LETTERS), "d": tuple(_LETTERS)},
        "replace '{c}' with '{d}' in s",
        ["return s.replace('{c}', '{d}')"],
        lambda c, d: lambda s: s.replace(c, d),
        [["return s.replace('{d}', '{c}')"]],
        0.3,
    ),
    _T(
        "reverse_suffix",
        "s",
        {"w": _WORDS},
        "s reversed, then '{w}'",
        ["t = s[::-1]", "return t + '{w}'"],
        lambda w: lambda s: s[::-1] + w,
        [["t = s[1:]", "return t + '{w}'"], ["t = s[::-1]", "return '{w}' + t"]],
        0.6,
    ),
    # ---- lists
    _T(
        "sum_plus",
        "xs",
        {"a": _R19},
        "sum of xs plus {a}",
        ["return sum(xs) + {a}"],
        lambda a: lambda xs: sum(xs) + a,
        [["return len(xs) + {a}"]],
        0.1,
    ),
    _T(
        "max_minus",
        "xs",
        {"a": _R19},
        "largest item of xs minus {a}",
        ["return max(xs) - {a}"],
        lambda a: lambda xs: max(xs) - a,
        [["return min(xs) - {a}"]],
        0.3,
    ),
    _T(
        "keep_greater",
        "xs",
        {"a": tuple(range(2, 8))},
        "items of xs greater than {a}",
        ["return [x for x in xs if x > {a}]"],
        lambda a: lambda xs: [x for x in xs if x > a],
        [["return [x for x in xs if x < {a}]"]],
        0.6,
    ),
    _T(
        "scale",
        "xs",
        {"a": tuple(range(2, 10))},
        "each item of xs times {a}",
        ["return [x * {a} for x in xs]"],
        lambda a: lambda xs: [x * a for x in xs],
        [["return [x + {a} for x in xs]"]],
        0.1,
    ),
    _T(
        "count_greater",
        "xs",
        {"a": tuple(range(2, 8))},
        "count items of xs greater than {a}",
        ["n = 0", "for x in xs:", "    if x > {a}:", "        n += 1", "return n"],
        lambda a: lambda xs: sum(1 for x in xs if x > a),
        [
            ["n = 1", "for x in xs:", "    if x > {a}:", "        n += 1", "return n"],
            ["n = 0", "for x in xs:", "    if x < {a}:", "        n += 1", "return n"],
        ],
        0.3,
    ),
    _T(
        "sum_first",
        "xs",
        {"a": (1, 2, 3)},
        "sum of the first {a} items of xs",
        ["return sum(xs[:{a}])"],
        lambda a: lambda xs: sum(xs[:a]),
        [["return sum(xs[{a}:])"]],
        0.6,
    ),
    # ---- held-out only: recombinations of the trained templates
    _T(
        "sub_mul",
        "x",
        {"a": tuple(range(1, 8)), "b": tuple(range(2, 8))},
        "subtract {a} from x, then multiply by {b}",
        ["y = x - {a}", "return y * {b}"],
        lambda a, b: lambda x: (x - a) * b,
        [["y = x + {a}", "return y * {b}"]],
        0.3,
    ),
    _T(
        "keep_less",
        "xs",
        {"a": tuple(range(2, 8))},
        "items of xs less than {a}",
        ["return [x for x in xs if x < {a}]"],
        lambda a: lambda xs: [x for x in xs if x < a],
        [["return [x for x in xs if x > {a}]"]],
        0.3,
    ),
)
HELDOUT_ONLY = ("sub_mul", "keep_less")
_BY_NAME = {t.name: t for t in TEMPLATES}


def _inputs(arg: str, rng: random.Random, k: int) -> list:
    seen, out = set(), []
    while len(out) < k:
        if arg == "x":
            v: Any = rng.randint(0, 20)
        elif arg == "s":
            v = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(2, 4)))
        else:
            v = [rng.randint(0, 9) for _ in range(rng.randint(3, 4))]
        key = repr(v)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


def _problem(t: Template, consts: dict, split: str, idx: int, rng: random.Random, n_tests: int) -> Problem:
    fn = t.fn(**consts)
    ins = _inputs(t.arg, rng, n_tests)
    pairs = [(repr(v), repr(fn(v))) for v in ins]
    examples = "".join(f"# {ENTRY}({a}) == {b}\n" for a, b in pairs[:2])
    prompt = f"# {t.comment.format(**consts)}\n{examples}def {ENTRY}({t.arg}):\n"
    tests = tuple(f"assert {ENTRY}({a}) == {b}" for a, b in pairs)
    return Problem(
        task_id=f"synth/{split}/{t.name}/{idx:04d}",
        prompt=prompt,
        entry_point=ENTRY,
        tests=tests,
        setup="",
        canonical_solution=t.render_body(consts),
        source="synthetic",
    )


def template_of(task_id: str) -> str:
    """The template name of a synthetic task id (``synth/<split>/<template>/<idx>``)."""
    parts = task_id.split("/")
    if len(parts) != 4 or parts[0] != "synth":
        raise ValueError(f"not a synthetic task id: {task_id!r}")
    return parts[2]


def split_of(task_id: str) -> str:
    return task_id.split("/")[1]


@dataclass
class SyntheticBenchmark:
    """Train and held-out problems plus what generated them.

    consts: task_id -> the constants of that task (for bug generation and reporting).
    heldout_combos: template -> the constant combinations reserved for held-out problems.
    """

    train: list[Problem]
    heldout: list[Problem]
    consts: dict[str, dict] = field(default_factory=dict)
    heldout_combos: dict[str, list[dict]] = field(default_factory=dict)
    seed: int = 0

    def problem(self, task_id: str) -> Problem:
        for p in itertools.chain(self.train, self.heldout):
            if p.task_id == task_id:
                return p
        raise KeyError(f"unknown task id {task_id!r}")

    def buggy_completions(self, problem: Problem) -> list[str]:
        """Every systematic bug of the problem's template, rendered with its constants."""
        t = _BY_NAME[template_of(problem.task_id)]
        c = self.consts[problem.task_id]
        return [t.render_body(c, b) for b in t.bugs]

    def sft_texts(self, n: int, seed: int = 0, eos: str = "") -> list[tuple[str, str, bool]]:
        """``n`` warm-start examples ``(prompt, completion + eos, is_correct)`` from training problems.

        Per template, a ``bug_rate`` fraction of the completions carries one systematic bug.
        """
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            p = rng.choice(self.train)
            t = _BY_NAME[template_of(p.task_id)]
            if rng.random() < t.bug_rate:
                out.append((p.prompt, rng.choice(self.buggy_completions(p)) + eos, False))
            else:
                out.append((p.prompt, p.canonical_solution + eos, True))
        return out


def make_benchmark(
    seed: int = 0,
    n_train_per_template: int = 40,
    n_heldout_per_template: int = 4,
    n_tests: int = 5,
    heldout_fraction: float = 0.25,
    templates: tuple[str, ...] | None = None,
    hold_single: bool = False,
) -> SyntheticBenchmark:
    """Build the benchmark deterministically from ``seed``.

    Training problems: ``n_train_per_template`` per trained template, with constants drawn from
    that template's training combinations (a combination can recur with other test inputs).
    Held-out problems: ``n_heldout_per_template`` per template (trained and ``HELDOUT_ONLY``).
    Templates with two or more constants: constants from the reserved combinations (cycling
    through them), never seen in training. Templates with one constant: new instances (fresh
    examples and tests) with training constants, unless ``hold_single`` (then their held-out
    constant values are unseen too, and a tiny model scores ~0 on them).
    ``heldout_combos[template]`` lists the reserved combinations ([] for instance-only templates).
    """
    if n_tests < 3:
        raise ValueError(f"n_tests must be >= 3 (two are shown as examples), got {n_tests}")
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    names = templates if templates is not None else tuple(t.name for t in TEMPLATES)
    unknown = [n for n in names if n not in _BY_NAME]
    if unknown:
        raise ValueError(f"unknown templates {unknown}; known: {sorted(_BY_NAME)}")
    rng = random.Random(seed)
    train, heldout, consts, held_combos = [], [], {}, {}
    for name in names:
        t = _BY_NAME[name]
        combos = t.combos()
        rng.shuffle(combos)
        n_held = max(1, round(heldout_fraction * len(combos)))
        held, trn = combos[:n_held], combos[n_held:]
        if name in HELDOUT_ONLY:
            held, trn = combos, []
        elif len(t.consts) == 1 and not hold_single:
            # one constant: an unseen value is an unseen *program* for a tiny model (it memorises
            # per-template constants rather than copying them from the comment: pass@1 ~ 0, nothing
            # to reinforce). Held-out problems of these templates are new instances (new examples and
            # tests) with training constants; only multi-constant templates hold out combinations.
            held, trn = combos, combos
            held_combos[name] = []
        held_combos.setdefault(name, held)
        for i in range(n_train_per_template if trn else 0):
            c = rng.choice(trn)
            p = _problem(t, c, "train", i, rng, n_tests)
            train.append(p)
            consts[p.task_id] = c
        for i in range(n_heldout_per_template):
            c = held[i % len(held)]
            p = _problem(t, c, "heldout", i, rng, n_tests)
            heldout.append(p)
            consts[p.task_id] = c
    return SyntheticBenchmark(train, heldout, consts, held_combos, seed)
