"""The documented journeys: every command block of README.md and docs/*.md, found and run.

A *command block* is a code block (indented by four spaces after a blank line, or fenced with
```) whose first command line starts with a command a reader would type (``make``, ``crowdstat``,
``rl``, ``python``, ``.venv/bin/...``, ...). Every command block must say what it is, in an HTML
comment on the line just before it (invisible on the rendered page):

- ``<!-- journey: NAME -->``: run it. The blocks of one NAME on one page run in page order, in one
  fresh temporary directory, as one bash script (``set -euo pipefail``), with the repository's
  ``.venv/bin`` first on PATH, a ``.venv`` link to it, and ``REPO`` naming the checkout. A journey
  whose blocks say ``journey: NAME slow`` (any of them) is marked slow (``make test-slow``).
  ``journey: NAME in-repo`` runs the journey in a fresh copy of the checkout's tracked files
  instead of an empty directory (for ``make`` targets and repository scripts).
- ``<!-- journey: NAME file: PATH -->`` on any block (a config file, a data file): the block's
  text is written to PATH in the journey's directory at that point of the journey.
- ``<!-- not-run: REASON -->``: a synopsis, a GPU/hub/cluster command, or one whose effect the
  test suite already is; REASON says which.

Lines of a block that start with ``#`` or are empty are skipped when classifying; ``\\`` line
continuations are kept. tests/test_journeys.py checks the classification and runs the journeys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: first words of a line a reader would type into a shell
COMMAND_WORDS = re.compile(
    r"^(make|crowdstat|rl|python3?|\.venv[\w-]*/bin/\S+|nice|accelerate|torchrun|experiments/\S+|bash|pip|tensorboard|"
    r"HF_\w+=\S*|CUDA_\w+=\S*|env|cd|ls|cat|head|label-studio|apt-get|sudo|OPENBLAS_\w+=\S*|RL_\w+=\S*|CROWDSTAT_\w+=\S*)(?=\s|$)"
)
#: a Python snippet: a fenced ```python block, or one that starts with an import
PYTHON_START = re.compile(r"^(import \w|from [\w.]+ import )")
MARKER = re.compile(r"^<!--\s*(journey|not-run):\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the block's first line
    text: str
    marker: tuple[str, str] | None  # (kind, argument) of the comment just before it
    lang: str = ""  # the fence's language, if any

    def _first(self) -> str:
        for ln in self.text.splitlines():
            s = ln.strip()
            if s and not s.startswith("#"):
                return s
        return ""

    @property
    def is_python(self) -> bool:
        return self.lang in ("python", "py") or (not self.lang and bool(PYTHON_START.match(self._first())))

    @property
    def is_command(self) -> bool:
        """A block a reader runs: shell commands or a Python snippet."""
        return self.is_python or (self.lang in ("", "bash", "sh", "shell", "console") and bool(COMMAND_WORDS.match(self._first())))

    def as_bash(self) -> str:
        if self.marker and "file:" in self.marker[1]:
            path = self.marker[1].split("file:", 1)[1].strip()
            return f"mkdir -p \"$(dirname '{path}')\" && cat > '{path}' <<'DOC_FILE'\n{self.text}\nDOC_FILE"
        if self.is_python:
            return f"python - <<'PYTHON_SNIPPET'\n{self.text}\nPYTHON_SNIPPET"
        return self.text

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass
class Journey:
    page: Path
    name: str
    blocks: list[Block] = field(default_factory=list)
    slow: bool = False
    in_repo: bool = False

    @property
    def id(self) -> str:
        return f"{self.page.stem}:{self.name}"

    def script(self) -> str:
        return "\n".join(f"# {b.where}\n{b.as_bash()}" for b in self.blocks)


#: blocks whose page must stay free of markers: (page, first line of the block) -> reason
EXEMPT = {
    ("README.md", "make demo"): "the README opens with exactly these two commands; make demo is what tests/test_demo.py "
    "runs and make test is this suite itself",
}


def _marker_before(lines: list[str], i: int, page: Path | None = None) -> tuple[str, str] | None:
    """The marker comment on the last non-empty line before line index ``i`` (or the block's exemption)."""
    if page is not None and i < len(lines):
        first = lines[i].strip().split("#")[0].strip()
        if (page.name, first) in EXEMPT:
            return ("not-run", EXEMPT[(page.name, first)])
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    m = MARKER.match(lines[j].strip()) if j >= 0 else None
    return (m.group(1), m.group(2)) if m else None


def blocks(page: Path) -> list[Block]:
    """The code blocks of a markdown page (fenced, and indented blocks outside lists)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.lstrip().startswith("```"):
            indent = len(ln) - len(ln.lstrip())
            j = i + 1
            while j < len(lines) and not lines[j].lstrip().startswith("```"):
                j += 1
            body = "\n".join(x[indent:] for x in lines[i + 1 : j])
            out.append(Block(page, i + 2, body, _marker_before(lines, i), ln.strip()[3:].strip().lower()))
            i = j + 1
            continue
        prev_blank = i == 0 or not lines[i - 1].strip()
        if ln.startswith("    ") and ln.strip() and prev_blank and not _in_list(lines, i):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            while j > i and not lines[j - 1].strip():
                j -= 1
            body = "\n".join(x[4:] for x in lines[i:j])
            out.append(Block(page, i + 1, body, _marker_before(lines, i, page)))
            i = j
            continue
        i += 1
    return out


def _in_list(lines: list[str], i: int) -> bool:
    """An indented paragraph that continues a list item is not a code block."""
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0:
        return False
    prev = lines[j]
    return bool(re.match(r"^\s*([-*+]|\d+\.)\s", prev)) or (prev.startswith("  ") and not prev.startswith("    "))


def journeys(pages=PAGES) -> list[Journey]:
    found: dict[tuple[Path, str], Journey] = {}
    for page in pages:
        for b in blocks(page):
            if not b.marker or b.marker[0] != "journey":
                continue
            name, *flags = b.marker[1].split("file:")[0].split()
            j = found.setdefault((page, name), Journey(page, name))
            j.blocks.append(b)
            j.slow |= "slow" in flags
            j.in_repo |= "in-repo" in flags
    return list(found.values())
