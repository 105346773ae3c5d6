#!/usr/bin/env bash
# Choose DST-EE's default exploration weight c (and eps) on the VALIDATION split of digits, never the
# test split. Quickstart setting at sparsity 0.9, 0.95, 0.98 with tuning seeds 100-102 (the study in
# scripts/compare_digits.sh uses seeds 0-4). Results and the choice: docs/ee-tuning-digits.md.
#
#   scripts/tune_ee_digits.sh [OUT_DIR]      (default outputs/multiruns/tune_ee_digits; ~30 min on 2 CPU cores;
#                                            a relative OUT_DIR is taken from the repository root)
#
# Two sweeps, then the table: OUT_DIR/c_grid (c on a log grid, eps 1) and OUT_DIR/eps_grid (eps 0.1 and 10,
# c around the chosen value); the table is printed and written to OUT_DIR/table.md. Writes nothing outside
# OUT_DIR (docs/ee-tuning-digits.md is edited by hand from the table). Finished runs are kept (they resume
# from their last checkpoint in about a second): running the script again rewrites the table.
# Needs dst-train and python of the project's virtual environment on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == -* || $# -gt 1 ]]; then
    echo "usage: scripts/tune_ee_digits.sh [OUT_DIR]" >&2
    exit 2
fi
out_dir="${1:-outputs/multiruns/tune_ee_digits}"
echo "tune_ee_digits: writing runs into $out_dir/c_grid and $out_dir/eps_grid, the table into $out_dir/table.md"

# The sweep report callback is switched off: it tabulates test accuracy, which tuning must not look at.
setting=(experiment=quickstart acq=ee sparsity=0.9,0.95,0.98 seed=100,101,102 '~hydra.callbacks.sweep_report')
dst-train -m "${setting[@]}" acq.eps=1.0 acq.c=0,1e-4,3e-4,1e-3,3e-3,1e-2,3e-2,1e-1 \
    hydra.sweep.dir="$out_dir/c_grid"
# eps around the c chosen from c_grid (3e-4): the same c, and c scaled with eps (the same bonus c*ln(t)/eps
# for never-active weights, a different one for weights that were active before)
dst-train -m "${setting[@]}" acq.eps=0.1,10.0 acq.c=3e-5,3e-4,3e-3 hydra.sweep.dir="$out_dir/eps_grid"

# Per (c, eps): final val accuracy (mean ± std over seeds) per sparsity; its mean over sparsities (per seed,
# then mean ± std over seeds), and that mean minus RigL's (c = 0) seed by seed; the same mean for the best
# val accuracy of each run; the explored share per sparsity.
python - "$out_dir" > "$out_dir/table.md.tmp" <<'EOF'
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from dst_cli.report.runs import collect_runs

SPARSITIES = (0.9, 0.95, 0.98)
FINAL, BEST, EXPLORED = range(3)


def acq_option(run, name):
    line = next(o for o in run.summary["overrides"] if o.startswith(f"acq.{name}="))
    return float(line.split("=")[1])


def text(values):
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values) * 100:.2f} ± {std * 100:.2f}"


def mean_over_sparsities(by_sparsity, index):
    """seed -> mean over the sparsities, for the seeds that completed at every sparsity."""
    seeds = set.intersection(*(set(by_sparsity[s]) for s in SPARSITIES))
    return {seed: statistics.fmean(by_sparsity[s][seed][index] for s in SPARSITIES) for seed in sorted(seeds)}


runs = [run for run in collect_runs([Path(sys.argv[1])]) if run.status == "completed"]
results = defaultdict(lambda: defaultdict(dict))  # (c, eps) -> sparsity -> seed -> (final, best, explored)
for run in runs:
    val_acc = [row["val/acc"] for row in run.metrics]
    by_seed = results[acq_option(run, "c"), acq_option(run, "eps")][run.setting["sparsity"]]
    by_seed[run.setting["seed"]] = (val_acc[-1], max(val_acc), run.summary["explored"])
rigl = mean_over_sparsities(results[0.0, 1.0], FINAL)

header = ["c", "eps", *(f"final val acc {s:.0%}" for s in SPARSITIES), "final val acc, mean",
          "minus RigL's, per seed", "best val acc, mean", *(f"explored {s:.0%}" for s in SPARSITIES)]
print("| " + " | ".join(header) + " |")
print("|" + "---|" * len(header))
for (c, eps), by_sparsity in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
    final = mean_over_sparsities(by_sparsity, FINAL)
    cells = [f"{c:g}", f"{eps:g}"]
    cells += [text([value[FINAL] for value in by_sparsity[s].values()]) for s in SPARSITIES]
    cells += [f"**{text(list(final.values()))}**"]
    cells += [" ".join(f"{(final[seed] - rigl[seed]) * 100:+.2f}" for seed in final)]
    cells += [text(list(mean_over_sparsities(by_sparsity, BEST).values()))]
    cells += [text([value[EXPLORED] for value in by_sparsity[s].values()]) for s in SPARSITIES]
    print("| " + " | ".join(cells) + " |")
print(f"\n{len(runs)} completed runs; cells: mean ± sample std over seeds, in %.")
EOF
mv "$out_dir/table.md.tmp" "$out_dir/table.md"
cat "$out_dir/table.md"
