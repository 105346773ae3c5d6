#!/usr/bin/env bash
# The digits study: DST-EE against RigL, SET, random and static, 5 seeds at 90%, 95% and 98% sparsity,
# in the quickstart setting (75 runs). Writes only into the sweep dir: one run dir per job, and the sweep
# report (report.md, summary.csv, plots). With --docs, report.md and the plots are then also copied over the
# tracked files in docs/results-digits/ (used by docs/results-digits.md).
#
#   scripts/compare_digits.sh [--docs] [SWEEP_DIR]   (default outputs/multiruns/compare_digits; ~15 min on 2 CPU
#                                                    cores; a relative SWEEP_DIR is taken from the repository root)
#
# Finished runs are kept (they resume from their last checkpoint in about a second): running the script
# again rebuilds the report. Needs dst-train of the project's virtual environment on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
copy_to_docs=false
if [[ "${1:-}" == --docs ]]; then
    copy_to_docs=true
    shift
fi
if [[ "${1:-}" == -* || $# -gt 1 ]]; then
    echo "usage: scripts/compare_digits.sh [--docs] [SWEEP_DIR]" >&2
    exit 2
fi
sweep_dir="${1:-outputs/multiruns/compare_digits}"
docs_dir=docs/results-digits

echo "compare_digits: writing runs and the sweep report into $sweep_dir"
dst-train -m experiment=quickstart acq=ee,rigl,set,random,static sparsity=0.9,0.95,0.98 seed=0,1,2,3,4 \
    hydra.sweep.dir="$sweep_dir"
echo "compare_digits: report in $sweep_dir (report.md, summary.csv, plots)"

if [[ "$copy_to_docs" == true ]]; then
    mkdir -p "$docs_dir"
    cp "$sweep_dir"/report.md "$sweep_dir"/*.png "$docs_dir"/
    echo "compare_digits: copied report.md and plots over $docs_dir/"
else
    echo "compare_digits: $docs_dir/ untouched (--docs copies the report there)"
fi
