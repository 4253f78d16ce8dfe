#!/usr/bin/env bash
# The simulation study (docs/study.md), one command per experiment; every option is passed to each. Usage:
#   experiments/run_study.sh                 # full size: writes the committed experiments/results and docs/figures (~35 min on 2 shared cores)
#   experiments/run_study.sh --quick         # CI-sized (5 replicates): writes under experiments/cache/<experiment>/quick, never the committed files
#   experiments/run_study.sh --quick --out DIR   # results in DIR, figures in DIR/figures
#   experiments/run_study.sh --plot-only     # redraw the committed figures from the committed results (seconds, runs nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for e in exp1_trajectories exp2_honeypots exp3_l1_path exp4_robustness exp5_compute_time exp6_allocation; do
  echo "== $e $*"
  nice -n 10 "$PY" "experiments/$e.py" "$@"
done
