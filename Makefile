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

.PHONY: demo test test-slow lint fmt venv clean sandbox-deps

venv: $(STAMP) sandbox-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: a plain `torch` requirement would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[rl,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m crowdstat.demo --out demo-output

test: lint sandbox-deps
	$(PY) -m pytest -q -n 2

test-slow: $(STAMP) sandbox-deps
	$(PY) -m pytest -q -n 2 -m slow

# PPO as 2 torchrun processes and crowdstat as 2 jax.distributed processes (gloo, CPU), fast and slow tests (docs/scale.md)
.PHONY: test-distributed
test-distributed: $(STAMP)
	$(PY) -m pytest -q -m 'slow or not slow' tests/rl/test_distributed.py tests/crowdstat/test_multiprocess.py

# bubblewrap (Debian package `bubblewrap`) runs every sandbox worker in a read-only view of only the
# interpreter, with private /tmp, /dev/shm and namespaces (docs/sandbox.md). Installed here when it
# is missing and this can (root and apt-get); otherwise a note, never a failure: without it the
# sandbox runs with process isolation only and says so in every result.
sandbox-deps:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "+ apt-get install -y bubblewrap (for the sandbox: docs/sandbox.md)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; } \
		|| echo "note: could not install bubblewrap; the sandbox runs with process isolation only (docs/sandbox.md)"; \
	else \
		echo "note: bubblewrap (bwrap) is not installed, so the sandbox runs with process isolation only (docs/sandbox.md)."; \
		echo "      Install it for the full isolation, e.g. on Debian/Ubuntu: sudo apt-get install bubblewrap"; \
	fi

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

# Label Studio (docs/annotation.md, "Real annotators"): the server, its SDK and playwright live in their
# own venv, built from the `labelstudio` extra of pyproject.toml WITHOUT installing the project (their
# numpy/pyarrow pins conflict with ours). rl drives it only through subprocesses. The browser test
# uses the system Chromium (Debian package `chromium`), installed here when missing and this is root.
# `make test-labelstudio` runs the integration tests (real server; marked slow, not in `make test`).
LS_VENV := .venv-labelstudio
LS_PY := $(LS_VENV)/bin/python
LS_STAMP := $(LS_VENV)/.installed
.PHONY: labelstudio-venv labelstudio-browser test-labelstudio

labelstudio-venv: $(LS_STAMP)

$(LS_STAMP): pyproject.toml
	@test -x $(LS_PY) || $(PYTHON) -m venv $(LS_VENV)
	$(LS_PY) -m pip install -q --upgrade pip
	$(LS_PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["labelstudio"]))' > $(LS_VENV)/requirements.txt
	$(LS_PY) -m pip install -q -r $(LS_VENV)/requirements.txt
	@touch $(LS_STAMP)

labelstudio-browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "+ apt-get install -y chromium (for the Label Studio browser test)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq chromium >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; } \
		|| echo "note: could not install chromium; the browser test will be skipped"; \
	else \
		echo "note: chromium is not installed, so the browser test is skipped (e.g. sudo apt-get install chromium)"; \
	fi

test-labelstudio: $(STAMP) $(LS_STAMP) labelstudio-browser
	$(PY) -m pytest -q -m slow tests/rl/test_labelstudio_server.py tests/rl/test_labelstudio_file_server.py tests/rl/test_labelstudio_adaptive.py tests/rl/test_labelstudio_stream_server.py

# verl (docs/verl.md): verl 0.9.1 needs transformers <5.11 (the rl extra pins 5.23), so it lives in its
# own venv, built from the project and its `verl` extra (torch's CPU build first, as for .venv).
# `make test-verl` runs tests/rl/test_verl.py there: the reward managers on a DataProto of real rollouts
# of a tiny model give the project's PPO per-token rewards. CI runs it after `make test` (.ci/run).
VERL_VENV := .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
VERL_STAMP := $(VERL_VENV)/.installed
.PHONY: verl-venv test-verl

verl-venv: $(VERL_STAMP)

$(VERL_STAMP): pyproject.toml
	@test -x $(VERL_PY) || $(PYTHON) -m venv $(VERL_VENV)
	$(VERL_PY) -m pip install -q --upgrade pip
	$(VERL_PY) -m pip install -q torch==2.13.0
	$(VERL_PY) -m pip install -q -e '.[verl]'
	@touch $(VERL_STAMP)

test-verl: $(VERL_STAMP) sandbox-deps
	$(VERL_PY) -m pytest -q tests/rl/test_verl.py
