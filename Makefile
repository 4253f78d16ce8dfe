# Two commands for a new user: `make demo` and `make test`.
# Both create .venv if it is missing and (re)install the project when pyproject.toml changes.
# `make test` runs `make lint` first; `make fmt` applies the formatter and ruff's safe fixes.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-slow lint fmt venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: a plain `torch` requirement would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[rl,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m crowdstat.demo --out demo-output

test: lint
	$(PY) -m pytest -q -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow

# Lint: ruff (rules and formatting), the import contracts and mypy, all configured in
# pyproject.toml. Every step runs even when an earlier one fails, so one pass shows everything.
LINT_PATHS := crowdstat rl tests experiments benchmarks

lint: $(STAMP)
	@status=0; \
	for step in "ruff check $(LINT_PATHS)" "ruff format --check --output-format concise $(LINT_PATHS)" "lint-imports --no-logo" "mypy"; do \
		echo "+ $$step"; $(VENV)/bin/$$step || status=1; \
	done; \
	exit $$status

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# Benchmarks (docs/performance.md): a separate venv, because crowd-kit 1.4.2 needs
# scikit-learn<1.6 (the `bench` extra) and the dev extra pins 1.9.1. OPENBLAS_CORETYPE and
# OPENBLAS_L2_SIZE are unset for the benchmark command only (they slow a current NumPy here).
# `make bench BENCH_ARGS=--smoke` runs the tiny version.
BENCH_VENV := .venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed
BENCH_ARGS ?=
.PHONY: bench

$(BENCH_STAMP): pyproject.toml
	@test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q -e '.[bench]'
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BENCH_PY) -m benchmarks.run $(BENCH_ARGS)
