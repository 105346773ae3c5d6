#!/usr/bin/env bash
# The digits study: DST-EE against RigL, SET, random and static, 5 seeds at 90%, 95% and 98% sparsity,
# in the quickstart setting (75 runs). The sweep report (report.md, summary.csv, plots) is written into the
# sweep dir; report.md and the plots are then copied to docs/results-digits/ for docs/results-digits.md.
#
#   scripts/compare_digits.sh [SWEEP_DIR]     (default outputs/multiruns/compare_digits; ~15 min on 2 CPU cores;
#                                             a relative SWEEP_DIR is taken from the repository root)
#
# Finished runs are kept (they resume from their last checkpoint in about a second): running the script
# again rebuilds the report. Needs dst-train of the project's virtual environment on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
sweep_dir="${1:-outputs/multiruns/compare_digits}"
docs_dir=docs/results-digits

dst-train -m experiment=quickstart acq=ee,rigl,set,random,static sparsity=0.9,0.95,0.98 seed=0,1,2,3,4 \
    hydra.sweep.dir="$sweep_dir"

mkdir -p "$docs_dir"
cp "$sweep_dir"/report.md "$sweep_dir"/*.png "$docs_dir"/
echo "copied report.md and plots to $docs_dir"
