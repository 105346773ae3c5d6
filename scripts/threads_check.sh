#!/usr/bin/env bash
# Training time of the quickstart (and of a mid-size VGG-19 step) with trainer.threads=auto against explicit
# thread counts, on an idle machine and on one kept busy by two other CPU-bound processes (issue 18):
#
#   scripts/threads_check.sh [RUNS] [OUT_DIR]     (default 3 runs each, OUT_DIR outputs/threads_check)
#
# Prints one line per run ("case threads=T run=N training_s=S") and writes them to OUT_DIR/threads.txt.
# The training time is summary.json's wall_time_s (the epochs, without start-up). Needs dst-train on PATH.
set -euo pipefail
runs="${1:-3}"
out_dir="${2:-outputs/threads_check}"
mkdir -p "$out_dir"
report="$out_dir/threads.txt"
: > "$report"
busy_pids=()

start_busy() {  # two CPU-bound processes, as another user's jobs would be
    for _ in 1 2; do python3 -c "while True: pass" & busy_pids+=($!); done
}
stop_busy() {
    if ((${#busy_pids[@]})); then kill "${busy_pids[@]}" 2>/dev/null || true; fi
    busy_pids=()
}
trap stop_busy EXIT

# time CASE THREADS OVERRIDES...: one line per run
time_runs() {
    local case="$1" threads="$2"
    shift 2
    for run in $(seq "$runs"); do
        local dir="$out_dir/runs/${case}_${threads}_$run"
        rm -rf "$dir"
        dst-train "$@" trainer.threads="$threads" trainer.progress=none hydra.run.dir="$dir" > /dev/null
        seconds=$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(round(s['wall_time_s'], 2), s['recipe']['trainer']['threads'])" "$dir/summary.json")
        echo "$case threads=$threads run=$run training_s=${seconds% *} resolved_threads=${seconds#* }" | tee -a "$report"
    done
}

for load in idle busy; do
    [[ "$load" == busy ]] && start_busy
    for threads in auto 1 2; do
        time_runs "quickstart_$load" "$threads" experiment=quickstart
        time_runs "vgg19w025_$load" "$threads" model=vgg19 model.width=0.25 dataset=synthetic \
            dataset.train_size=640 dataset.test_size=64 trainer.epochs=1 trainer.batch_size=64
    done
    stop_busy
done
