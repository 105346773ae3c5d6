#!/usr/bin/env bash
# GPU check, under 5 minutes on one H100: the machine, the step benchmark of VGG-19 (width 1, batch 128,
# CIFAR-shaped, 98% sparse, an update every 100 steps; dense, ee and rigl; eager and torch.compile) and the
# epoch time of `dst-train experiment=vgg19_cifar10` on a fake CIFAR-10 of 50,000 images (2 epochs: the
# first includes warm-up and compilation, the second is the steady state). Reading: docs/benchmarks.md.
#
#   scripts/gpu_check.sh [--smoke] [OUT_DIR]     (OUT_DIR defaults to $OUT, else outputs/gpu_check)
#
# --smoke: the same steps at toy sizes on the CPU (no compile), to check the script itself in a minute.
# Run from anywhere; it works in the repository root. When the project is not installed, it installs it:
# into the python3 that already has torch (a GPU image's environment), else into a new .venv. Offline,
# put the wheels of the missing dependencies into .whl/ (on the GPU image: hydra-core, omegaconf,
# antlr4-python3-runtime).
# Files in OUT_DIR: gpu_check.log (everything, ending with each step's exit status and seconds),
# machine.txt, bench_eager.json, bench_compile.json, epochs_eager.jsonl, epochs_compile.jsonl.
# Each step has a time limit and the whole script a budget of TIME_BUDGET_S seconds; a step that fails
# or runs out of time does not stop the others, but makes the script's exit status 1.
set -uo pipefail

TIME_BUDGET_S=290
smoke=false
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=true
    shift
fi
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

# pip install -e . with its build isolated (fetches setuptools, or takes it from .whl/), else with the
# environment's own setuptools and wheel.
pip_install_project() {
    local python="$1"
    "$python" -m pip install -q "${wheels[@]}" -e . ||
        "$python" -m pip install -q --no-build-isolation "${wheels[@]}" -e .
}

python=python3
if [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
fi
if ! "$python" -c "import dst_cli.conf, hydra" 2>/dev/null; then
    echo "=== install"
    wheels=()
    if [[ -d .whl ]]; then
        wheels=(--no-index --find-links .whl)
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
    train_size=(trainer.batch_size=32 model.width=0.125)
    modes=(eager)
else
    device=cuda
    bench_size=(--width 1 --batch-size 128)
    cifar_size=(--per-file 10000 --test-count 10000)
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

for mode in "${modes[@]}"; do
    compile_flag=()
    if [[ "$mode" == compile ]]; then
        compile_flag=(--compile)
    fi
    run_step "bench $mode" 120 "$python" scripts/bench.py --model vgg19 "${bench_size[@]}" --methods ee rigl \
        --sparsity 0.98 --update-interval 100 --device "$device" "${compile_flag[@]}" \
        --out "$out_dir/bench_$mode.json"
done

run_step "fake CIFAR-10" 60 "$python" tests/fakes.py "$work_dir/data" "${cifar_size[@]}"
for mode in "${modes[@]}"; do
    compile_value=false
    if [[ "$mode" == compile ]]; then
        compile_value=true
    fi
    run_dir="$work_dir/run_$mode"
    run_step "dst-train 2 epochs $mode" 150 "$python" -m dst_cli experiment=vgg19_cifar10 \
        dataset.root="$work_dir/data" dataset.download=false trainer.epochs=2 trainer.device="$device" \
        trainer.compile="$compile_value" trainer.checkpoint=false trainer.progress=log "${train_size[@]}" \
        hydra.run.dir="$run_dir"
    if [[ -f "$run_dir/metrics.jsonl" ]]; then
        cp "$run_dir/metrics.jsonl" "$out_dir/epochs_$mode.jsonl"
    fi
done

echo "=== steps (${SECONDS} s in all)"
printf '%s\n' "${steps_report[@]}"
exit $failed
