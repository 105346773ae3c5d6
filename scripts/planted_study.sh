#!/usr/bin/env bash
# The planted-teacher study (issue 10, item 4): every method on experiment=planted at 95/98/99% sparsity and
# on digits (experiment=quickstart) at 99/99.5%, 5 seeds each, plus the dense network; DST-EE's c is chosen
# first on the planted VALIDATION split with tuning seeds 100-102 (the test split is never looked at for it).
# Then scripts/planted_analysis.py writes the tables: test accuracy, share of the planted connections found
# and share of first-layer connections on relevant inputs, per method x sparsity, mean ± std over seeds.
#
#   scripts/planted_study.sh [--docs] [STUDY_DIR]   (default outputs/multiruns/planted_study; a relative
#                                                   STUDY_DIR is taken from the repository root)
#
# The tables go into STUDY_DIR/results-planted.md, or with --docs into docs/results-planted.md (only the
# generated block between its marker lines is replaced; the reading around it is kept).
# Runs go one after another on one thread each: a planted run takes ~2 s of training, a quickstart run ~9 s,
# plus start-up: the 264 runs take about 22 min on an idle 2-core machine, about 70 min on a busy one.
# Finished runs are kept (they resume from their last checkpoint in about a second): running the script
# again only runs what is missing, then rebuilds the tables. Needs dst-train and python of the project's
# virtual environment on PATH.
set -euo pipefail

# Each method: "label: overrides" (the label names the sweep folder and the table row). DST-EE is added
# with the c chosen on validation for the planted runs and its digits default (docs/ee-tuning-digits.md).
METHODS=(
    "rigl: acq=rigl"
    "set: acq=set"
    "static: acq=static"
    "random: acq=random"
    "mest: acq=mest"
    "snfs: acq=snfs"
    "granet: acq=rigl schedule=gradual"
)
PLANTED_SPARSITIES=0.95,0.98,0.99
DIGITS_SPARSITIES=0.99,0.995
SEEDS=0,1,2,3,4
TUNING_SEEDS=100,101,102
C_GRID=0,1e-4,3e-4,1e-3,3e-3,1e-2
COMMON=(trainer.threads=1 trainer.progress=none)

cd "$(dirname "$0")/.."
docs=false
if [[ "${1:-}" == "--docs" ]]; then
    docs=true
    shift
fi
study_dir="${1:-outputs/multiruns/planted_study}"
failed=0

# sweep DIR OVERRIDES...: one dst-train sweep; a failed run is reported and skipped by the tables
sweep() {
    local dir="$1"
    shift
    dst-train -m "$@" "${COMMON[@]}" hydra.sweep.dir="$dir" || failed=1
}

# DST-EE's c on the validation split only; the sweep report is off (it tabulates test accuracy)
sweep "$study_dir/ee_c" experiment=planted acq=ee acq.c="$C_GRID" sparsity="$PLANTED_SPARSITIES" \
    seed="$TUNING_SEEDS" '~hydra.callbacks.sweep_report'
c="$(python scripts/planted_analysis.py choose-c "$study_dir/ee_c")"
echo "DST-EE's c chosen on validation: $c"

# benchmark NAME EXPERIMENT SPARSITIES EE_OVERRIDES: the dense network, DST-EE and every method of METHODS
benchmark() {
    local name="$1" experiment="$2" sparsities="$3" ee="$4" entry label overrides
    sweep "$study_dir/$name/dense" experiment="$experiment" acq=static sparsity=0 seed="$SEEDS"
    for entry in "ee: $ee" "${METHODS[@]}"; do
        label="${entry%%:*}"
        read -ra overrides <<< "${entry#*:}"
        sweep "$study_dir/$name/$label" experiment="$experiment" "${overrides[@]}" sparsity="$sparsities" seed="$SEEDS"
    done
}

benchmark planted planted "$PLANTED_SPARSITIES" "acq=ee acq.c=$c"
benchmark digits quickstart "$DIGITS_SPARSITIES" "acq=ee"

into="$study_dir/results-planted.md"
if $docs; then
    into=docs/results-planted.md
fi
python scripts/planted_analysis.py report "$study_dir" --into "$into"
exit "$failed"
