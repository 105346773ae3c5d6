#!/usr/bin/env bash
# GPU check, about 3 minutes on one H200 (183 s measured). It measures, into OUT_DIR:
#   (a) the step benchmark of VGG-19 (width 1, batch 128, CIFAR-shaped, 98% sparse, an update every 100 steps;
#       dense, ee and rigl): eager in float32 + NCHW, eager in bf16 + channels_last, compiled in bf16 +
#       channels_last (bench_eager_fp32.json, bench_eager.json, bench_compile.json);
#   (b) the epoch time of `dst-train experiment=vgg19_cifar10` on a fake CIFAR-10 of 50,000 images with the
#       tensor pipeline (dataset.pipeline=device), 2 epochs (the first includes warm-up and compilation, the
#       second is the steady state): eager is the 1-run case of (c), compiled in epochs_compile.jsonl;
#   (c) the aggregate throughput of concurrent runs on the one GPU (Hydra's joblib launcher), 2 epochs each:
#       1, 2 and 4 eager runs (trainer.compile=false), and 1, 4 and 8 runs with the default trainer.compile=auto
#       (CUDA graphs, reduce-overhead: the packed default of a sweep on a GPU): concurrency.json (each run's
#       epoch times, the sweep's wall time and the summed second-epoch images/s); epochs_eager.jsonl is the
#       1-run eager case.
# Reading: docs/benchmarks.md.
#
#   scripts/gpu_check.sh [--smoke] [--only bench|train|concurrency[,...]] [OUT_DIR]
#                                            (OUT_DIR defaults to $OUT, else outputs/gpu_check)
#
# --smoke: the same steps at toy sizes on the CPU (no compile), to check the script itself in a few minutes.
# --only: run these parts alone (for a rerun of a part that failed); all three by default.
# Run from anywhere; it works in the repository root. When the project is not installed, it installs it:
# into the python3 that already has torch (a GPU image's environment), else into a new .venv. Offline,
# put the wheels of the missing dependencies into .whl/ (on the GPU image: hydra-core, omegaconf,
# antlr4-python3-runtime, hydra-joblib-launcher); every wheel there is installed.
# Files in OUT_DIR (8 at most): gpu_check.log (everything, ending with each step's exit status and seconds),
# machine.txt and the JSON/JSONL files named above.
# Each step has a time limit and the whole script a budget of TIME_BUDGET_S seconds; a step that fails
# or runs out of time does not stop the others, but makes the script's exit status 1.
set -uo pipefail

TIME_BUDGET_S=520
smoke=false
parts=bench,train,concurrency
while [[ "${1:-}" == --* ]]; do
    case "$1" in
    --smoke) smoke=true ;;
    --only) parts="${2:-}"; shift ;;
    *) echo "gpu_check: unknown option $1; allowed: --smoke, --only PARTS" >&2; exit 2 ;;
    esac
    shift
done
if [[ -z "$parts" ]]; then
    echo "gpu_check: --only needs a list of parts; allowed: bench, train, concurrency (comma-separated)" >&2
    exit 2
fi
for part in ${parts//,/ }; do
    if [[ ! "$part" =~ ^(bench|train|concurrency)$ ]]; then
        echo "gpu_check: --only $parts: unknown part '$part'; allowed: bench, train, concurrency" >&2
        exit 2
    fi
done
# wants PART: whether PART is among those to run
wants() { [[ ",$parts," == *",$1,"* ]]; }
out_dir="${1:-${OUT:-}}"
if [[ -n "$out_dir" ]]; then
    mkdir -p "$out_dir" && out_dir="$(cd "$out_dir" && pwd)" || exit 1
fi
cd "$(dirname "$0")/.." || exit 1
out_dir="${out_dir:-$PWD/outputs/gpu_check}"
mkdir -p "$out_dir" || exit 1
work_dir="$(mktemp -d)"
trap 'rm -rf "$work_dir"' EXIT
exec > >(tee "$out_dir/gpu_check.log") 2>&1
steps_report=()
failed=0

# run_step NAME SECONDS COMMAND...: run it with a time limit (cut to what is left of the budget) and note
# its exit status (124: out of time) and the seconds it took.
run_step() {
    local name="$1" limit="$2"
    shift 2
    local left=$((TIME_BUDGET_S - SECONDS))
    if ((left < limit)); then
        limit=$left
    fi
    echo "=== $name (limit ${limit} s)"
    if ((limit <= 0)); then
        steps_report+=("$name: skipped, no time left")
        failed=1
        return
    fi
    local started=$SECONDS status
    timeout "$limit" "$@"
    status=$?
    steps_report+=("$name: exit $status, $((SECONDS - started)) s")
    if ((status != 0)); then
        failed=1
    fi
}

# pip install -e .: offline (with .whl/) with the environment's own setuptools, as an isolated build would
# need setuptools from a registry; online with its build isolated.
pip_install_project() {
    local python="$1" isolation=()
    if [[ -d .whl ]]; then
        isolation=(--no-build-isolation)
    fi
    "$python" -m pip install -q "${isolation[@]}" "${wheels[@]}" -e .
}

python=python3
if [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
fi
if ! "$python" -c "import dst_cli.conf, hydra, hydra_plugins.hydra_joblib_launcher" 2>/dev/null; then
    echo "=== install"
    wheels=()
    if [[ -d .whl ]]; then
        wheels=(--no-index --find-links .whl .whl/*.whl)
    fi
    if python3 -c "import torch" 2>/dev/null; then
        python=python3  # keep the installed torch
    else
        python3 -m venv .venv
        python=.venv/bin/python
    fi
    if ! pip_install_project "$python"; then
        echo "gpu_check: installing the project failed"
        exit 1
    fi
    steps_report+=("install: exit 0, ${SECONDS} s")
fi

if $smoke; then
    device=cpu
    bench_size=(--width 0.125 --batch-size 8 --warmup 1 --blocks 2 --block-steps 1)
    cifar_size=(--per-file 64 --test-count 64)
    train_images=320
    train_size=(trainer.batch_size=32 model.width=0.125)
    modes=(eager)
else
    device=cuda
    bench_size=(--width 1 --batch-size 128)
    cifar_size=(--per-file 10000 --test-count 10000)
    train_images=50000
    train_size=()
    modes=(eager compile)
fi

{
    nvidia-smi || echo "nvidia-smi: not available"
    "$python" -c "
import platform, torch
print('python', platform.python_version())
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
print('gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
} > "$out_dir/machine.txt" 2>&1
cat "$out_dir/machine.txt"

# (a) the step benchmark: eager in float32 + NCHW, then in the trainer's CUDA defaults (bf16, channels_last),
# eager and compiled
if wants bench; then
    run_step "bench eager fp32" 90 "$python" scripts/bench.py --model vgg19 "${bench_size[@]}" --methods ee rigl \
        --sparsity 0.98 --update-interval 100 --device "$device" --no-bf16 --no-channels-last \
        --out "$out_dir/bench_eager_fp32.json"
    for mode in "${modes[@]}"; do
        compile_flag=()
        if [[ "$mode" == compile ]]; then
            compile_flag=(--compile)
        fi
        run_step "bench $mode" 120 "$python" scripts/bench.py --model vgg19 "${bench_size[@]}" --methods ee rigl \
            --sparsity 0.98 --update-interval 100 --device "$device" "${compile_flag[@]}" \
            --out "$out_dir/bench_$mode.json"
    done
fi

if wants train || wants concurrency; then
    run_step "fake CIFAR-10" 60 "$python" tests/fakes.py "$work_dir/data" "${cifar_size[@]}"
fi
train_args=(experiment=vgg19_cifar10 dataset.root="$work_dir/data" dataset.download=false dataset.pipeline=device
    trainer.epochs=2 trainer.device="$device" trainer.checkpoint=false trainer.progress=log "${train_size[@]}")

# (b) one run, compiled (the eager run is the 1-run case of (c))
if wants train && [[ " ${modes[*]} " == *" compile "* ]]; then
    run_dir="$work_dir/run_compile"
    run_step "dst-train 2 epochs compile" 150 "$python" -m dst_cli "${train_args[@]}" trainer.compile=true \
        hydra.run.dir="$run_dir"
    if [[ -f "$run_dir/metrics.jsonl" ]]; then
        cp "$run_dir/metrics.jsonl" "$out_dir/epochs_compile.jsonl"
    fi
fi

# (c) concurrent runs (seeds 0..n-1) on the one GPU: eager 1, 2, 4; CUDA graphs (compile=auto) 1, 4, 8
if wants concurrency; then
    for case in eager:false:1 eager:false:2 eager:false:4 graphs:auto:1 graphs:auto:4 graphs:auto:8; do
        IFS=: read -r mode compile jobs <<< "$case"
        seeds=$(seq -s, 0 $((jobs - 1)))
        started=$SECONDS
        run_step "dst-train 2 epochs, $jobs concurrent, $mode" 150 "$python" -m dst_cli -m "${train_args[@]}" \
            trainer.compile="$compile" hydra/launcher=joblib hydra.launcher.n_jobs="$jobs" seed="$seeds" \
            hydra.sweep.dir="$work_dir/concurrent_${mode}_$jobs"
        echo "${mode}_$jobs $((SECONDS - started))" >> "$work_dir/sweep_seconds.txt"
    done
    if [[ -f "$work_dir/concurrent_eager_1/0/metrics.jsonl" ]]; then
        cp "$work_dir/concurrent_eager_1/0/metrics.jsonl" "$out_dir/epochs_eager.jsonl"
    fi
    "$python" - "$work_dir" "$out_dir/concurrency.json" "$train_images" <<'PY'
import json, sys
from pathlib import Path

work_dir, out, train_images = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
wall = dict(line.split() for line in (work_dir / "sweep_seconds.txt").read_text().splitlines())
result = []
for case, seconds in wall.items():
    mode, jobs = case.rsplit("_", 1)
    runs = []
    for metrics in sorted((work_dir / f"concurrent_{case}").glob("*/metrics.jsonl")):
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        epochs = [row["time/epoch_s"] for row in rows if "time/epoch_s" in row]
        runs.append({"run": metrics.parent.name, "epoch_s": epochs})
    last = [run["epoch_s"][-1] for run in runs if run["epoch_s"]]
    result.append({"mode": mode, "concurrent_runs": int(jobs), "sweep_wall_s": int(seconds), "runs": runs,
                   "finished_runs": len(last),
                   "aggregate_images_per_s_last_epoch": round(sum(train_images / s for s in last), 1)})
out.write_text(json.dumps(result, indent=1) + "\n")
print(json.dumps(result, indent=1))
PY
fi

echo "=== steps (${SECONDS} s in all)"
printf '%s\n' "${steps_report[@]}"
exit $failed
