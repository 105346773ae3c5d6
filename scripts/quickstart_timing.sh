#!/usr/bin/env bash
# Wall time of `dst-train experiment=quickstart` split into startup and training loop, and the import time of
# dst_cli.cli, on one thread. loop = summary.json's wall_time_s (the epochs: training and evaluation);
# startup = the process's wall time - loop (imports, config, data, model, engine, run files, exit).
# With BASELINE set, an older checkout is timed too, alternating with this one (the first of the pair
# swaps every round), so that a shared machine's drift hits both alike; medians at the end.
#
#   scripts/quickstart_timing.sh [ROUNDS] [OUT_DIR]     # defaults: 3, outputs/quickstart_timing
#   BASELINE=/path/to/old/checkout scripts/quickstart_timing.sh 5
#
# BASELINE is put first on PYTHONPATH (its dst_cli must find its conf); this checkout runs with
# trainer.threads=1, the baseline with BASELINE_ARGS (default: none; OMP_NUM_THREADS=1 holds for both).
set -euo pipefail

rounds=${1:-3}
out=${2:-outputs/quickstart_timing}
here=$(cd "$(dirname "$0")/.." && pwd)
export OMP_NUM_THREADS=1
mkdir -p "$out/runs"
out=$(cd "$out" && pwd)  # every command runs in $out: a checkout in the working directory would shadow PYTHONPATH
cd "$out"
times="$out/times.tsv"
printf 'round\tcode\twall_s\tloop_s\tstartup_s\timport_s\n' >"$times"

# Fail unless PYTHONPATH=$1 imports dst_cli from checkout $1.
check_imports_from() {
    local found
    found=$(PYTHONPATH="$1" python -c "import dst_cli, pathlib; print(pathlib.Path(dst_cli.__file__).resolve())")
    [[ $found == "$(cd "$1" && pwd -P)"/* ]] || { echo "quickstart_timing: $1 imports $found" >&2; exit 1; }
}

# One timed quickstart and one import-time measurement of checkout $2 (label $1), appended to $times.
measure() {
    local label=$1 path=$2 round=$3 run_dir="$out/runs/$1-$3"
    shift 3
    rm -rf "$run_dir"
    local started ended import_us
    started=$(date +%s.%N)
    PYTHONPATH="$path" python -m dst_cli experiment=quickstart "hydra.run.dir=$run_dir" "$@" >"$run_dir.log" 2>&1 \
        || { echo "quickstart_timing: $label failed; the end of $run_dir.log:" >&2; tail -n 20 "$run_dir.log" >&2; exit 1; }
    ended=$(date +%s.%N)
    # The cumulative column (us) of the top-level (unindented) dst_cli.cli line holds everything it pulled in.
    import_us=$(PYTHONPATH="$path" python -X importtime -c "import dst_cli.cli" 2>&1 \
        | awk -F'|' '$3 == " dst_cli.cli" {print $2}')
    python - "$run_dir/summary.json" "$started" "$ended" "$import_us" "$round" "$label" >>"$times" <<'EOF'
import json, sys
summary, started, ended, import_us, round_, label = sys.argv[1:]
wall, loop = float(ended) - float(started), json.load(open(summary))["wall_time_s"]
print(f"{round_}\t{label}\t{wall:.2f}\t{loop:.2f}\t{wall - loop:.2f}\t{int(import_us) / 1e6:.2f}")
EOF
    tail -n 1 "$times"
}

check_imports_from "$here"
[[ -z "${BASELINE:-}" ]] || { BASELINE=$(cd "$BASELINE" && pwd); check_imports_from "$BASELINE"; }
for round in $(seq 1 "$rounds"); do
    if [[ -z "${BASELINE:-}" ]]; then
        measure current "$here" "$round" trainer.threads=1
    elif (( round % 2 )); then
        measure baseline "$BASELINE" "$round" ${BASELINE_ARGS:-}
        measure current "$here" "$round" trainer.threads=1
    else
        measure current "$here" "$round" trainer.threads=1
        measure baseline "$BASELINE" "$round" ${BASELINE_ARGS:-}
    fi
done

python - "$times" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"medians over {max(int(r['round']) for r in rows)} rounds (seconds); all rows in {sys.argv[1]}")
print("code      wall  startup   loop  import dst_cli.cli")
for code in dict.fromkeys(r["code"] for r in rows):
    median = lambda key: statistics.median(float(r[key]) for r in rows if r["code"] == code)
    print(f"{code:8} {median('wall_s'):5.2f}  {median('startup_s'):7.2f}  {median('loop_s'):5.2f}  {median('import_s'):18.2f}")
EOF
