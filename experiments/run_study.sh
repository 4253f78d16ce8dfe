#!/usr/bin/env bash
# The simulation study (docs/study.md), one command per experiment. Usage:
#   experiments/run_study.sh            # full size, the numbers in docs/study.md (~35 min on 2 shared cores)
#   experiments/run_study.sh --quick    # CI-sized (5 replicates; a few minutes per experiment)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for e in exp1_trajectories exp2_honeypots exp3_l1_path exp4_robustness exp5_compute_time; do
  echo "== $e $*"
  nice -n 10 "$PY" "experiments/$e.py" "$@"
done
