"""Time full SGD training steps with the sparse compute backend (dst_cli.sparse.backend) against the masked and
the dense model, on the CPU.

For each model (and sparsity) and each thread count, four copies of the same model train on one fixed
synthetic batch:

  dense:   no masks, plain optimizer.step();
  masked:  sparsify() (SET, ERK): dense compute on masked weights, engine.step() (what dst-train runs today);
  sparse:  the same engine, the backend in mode "sparse" (every layer with a kernel runs it);
  auto:    the same engine, the backend in mode "auto" (per layer the faster of kernel and masked path).

One step = zero_grad, forward, loss, backward, optimizer / engine step. The four are timed in turn (the order
rotates every repeat) and each time is the median over repeats, so that the drift of a shared machine hits all
alike. Before timing each runs `--warmup` steps; the auto backend times its layers in its first step (reported
as "first step"). Then one mask update is made in the sparse and auto copies (engine.update, SET) and timed with
backend.rebuild and the re-planning the next step does (that step minus a median step): "rebuild".

  amortised = median step + rebuild / update_interval            (sparse, auto; masked and dense: median step)
  rigl-like = amortised + (masked step - step) / update_interval  (the update step runs on the masked path)

Also printed: the per-layer timings and choices of the auto backend (the first model), and what a dense
SGD-momentum optimizer step costs over the 20.0M weights of VGG-19 (with the engine's zeroing of inactive
weights), since the engine keeps dense weights and optimizer state.

    OMP_NUM_THREADS=1 python scripts/bench_backend.py                    # -> outputs/bench/backend.json
    python scripts/bench_backend.py --models vgg19@0.98 cnn@0.9 --threads 1 --repeats 3
"""
import argparse
import copy
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dst_cli.models.digits import build_cnn
from dst_cli.models.resnet import build_resnet50
from dst_cli.models.vgg import build_vgg19
from dst_cli.sparse import sparsify
from dst_cli.sparse.backend import attach_backend, kernel_library, unavailable_reason

MODELS = {  # name -> (builder, input shape)
    "vgg19": (build_vgg19, (3, 32, 32)),
    "resnet50": (build_resnet50, (3, 32, 32)),
    "cnn": (build_cnn, (1, 8, 8)),
}
DEFAULT_MODELS = ["vgg19@0.98", "resnet50@0.98", "vgg19@0.9", "cnn@0.9", "cnn@0.98"]
MODES = ("dense", "masked", "sparse", "auto")
DEFAULT_OUT = Path("outputs/bench/backend.json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="models: " + ", ".join(MODELS) + " (name@sparsity)")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, help=f"default: {' '.join(DEFAULT_MODELS)}")
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch threads (default: 1 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="default: 64")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per copy (default: 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per copy first (default: 2)")
    parser.add_argument("--update-interval", type=int, default=100, help="for the amortised cost (default: 100)")
    parser.add_argument("--optimizer-weights", type=int, default=None,
                        help="weights of the optimizer-step measurement (default: VGG-19's 20.0M)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default: {DEFAULT_OUT})")
    return parser.parse_args(argv)


def parse_model(spec: str) -> tuple[str, float]:
    name, _, sparsity = spec.partition("@")
    if name not in MODELS:
        raise SystemExit(f"--models: {name} is not one of {', '.join(MODELS)}")
    return name, float(sparsity or 0.98)


# --------------------------------------------------------------------------------------------- one copy

@dataclass
class Copy:
    """One mode's model, optimizer, engine and backend, and its step times."""

    mode: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    engine: object = None
    backend: object = None
    seconds: list[float] = field(default_factory=list)
    first_step: float = 0.0

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        start = time.perf_counter()
        self.optimizer.zero_grad()
        nn.functional.cross_entropy(self.model(inputs), targets).backward()
        if self.engine is None:
            self.optimizer.step()
        else:
            self.engine.step()
        return time.perf_counter() - start


def build_copies(name: str, sparsity: float, modes: tuple[str, ...]) -> dict[str, Copy]:
    builder, input_shape = MODELS[name]
    torch.manual_seed(0)
    initial = builder(10, input_shape)
    copies = {}
    for mode in modes:
        model = copy.deepcopy(initial)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        entry = Copy(mode, model, optimizer)
        if mode != "dense":
            # no update falls in the timed steps: the first is at step 100000 / 100 ... far away
            entry.engine = sparsify(model, optimizer, sparsity=sparsity, total_steps=10**6, acq="set",
                                    distribution="erk", update_interval=10**5, seed=0)
        if mode in ("sparse", "auto"):
            engine = entry.engine
            weights, masks = dict(zip(engine.names, engine.masks.weights)), dict(zip(engine.names, engine.masks.masks))
            entry.backend = attach_backend(model, weights, masks, mode=mode)
        copies[mode] = entry
    return copies


def time_rebuild(entry: Copy, inputs: torch.Tensor, targets: torch.Tensor, median_step: float) -> dict:
    """One SET update of the masks, backend.rebuild, and the re-planning of the next step."""
    engine = entry.engine
    start = time.perf_counter()
    engine.update(engine.optimizer_steps)
    update = time.perf_counter() - start
    start = time.perf_counter()
    entry.backend.rebuild(dict(zip(engine.names, engine.masks.masks)))
    rebuild = time.perf_counter() - start
    replan = max(0.0, entry.step(inputs, targets) - median_step)
    return {"update_s": update, "rebuild_s": rebuild, "replan_s": replan}


def bench_model(name: str, sparsity: float, threads: int, args: argparse.Namespace, modes: tuple[str, ...]) -> dict:
    torch.set_num_threads(threads)
    copies = build_copies(name, sparsity, modes)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(args.batch_size, *MODELS[name][1], generator=generator)
    targets = torch.randint(0, 10, (args.batch_size,), generator=generator)
    for entry in copies.values():
        entry.first_step = entry.step(inputs, targets)
        for _ in range(args.warmup - 1):
            entry.step(inputs, targets)
    order = list(copies.values())
    for repeat in range(args.repeats):
        for entry in order[repeat % len(order):] + order[: repeat % len(order)]:
            entry.seconds.append(entry.step(inputs, targets))
    result = {"model": name, "sparsity": sparsity, "threads": threads, "batch_size": args.batch_size, "modes": {}}
    masked_step = statistics.median(copies["masked"].seconds) if "masked" in copies else None
    for mode, entry in copies.items():
        step = statistics.median(entry.seconds)
        row = {"step_s": step, "steps_s": entry.seconds, "first_step_s": entry.first_step, "amortised_s": step}
        if entry.backend is not None:
            row.update(time_rebuild(entry, inputs, targets, step))
            row["amortised_s"] = step + (row["rebuild_s"] + row["replan_s"]) / args.update_interval
            if masked_step is not None:
                row["rigl_like_s"] = row["amortised_s"] + (masked_step - step) / args.update_interval
            row["kernels"] = entry.backend.kernels
            row["timings_s"] = entry.backend.timings()
            row["densities"] = {layer: entry.engine.densities[layer] for layer in entry.engine.names}
        result["modes"][mode] = row
    return result


# ------------------------------------------------------------------------------------- optimizer step

def bench_optimizer(weights: int | None, threads: int, repeats: int) -> dict:
    """A dense SGD-momentum step (and the engine's zeroing of inactive weights) over VGG-19's weights, or
    `weights` weights in one tensor."""
    torch.set_num_threads(threads)
    if weights is None:
        model = build_vgg19(10, (3, 32, 32))
        params = [p for p in model.parameters()]
    else:
        model = nn.Linear(weights, 1, bias=False)
        params = [model.weight]
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    optimizer.step()  # creates the momentum buffers
    multipliers = [torch.ones_like(p, dtype=torch.uint8) for p in params]
    steps, applies = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer.step()
        steps.append(time.perf_counter() - start)
        start = time.perf_counter()
        with torch.no_grad():
            torch._foreach_mul_(params, multipliers)
        applies.append(time.perf_counter() - start)
    count = sum(p.numel() for p in params)
    return {"threads": threads, "weights": count, "optimizer_step_s": statistics.median(steps),
            "masks_apply_s": statistics.median(applies),
            # read weight, grad, momentum; write weight, momentum: 5 x 4 bytes a weight
            "optimizer_gb_per_s": 20 * count / statistics.median(steps) / 1e9}


# ------------------------------------------------------------------------------------------- printing

def print_model(result: dict) -> None:
    modes = result["modes"]
    masked = modes.get("masked", {}).get("step_s")
    dense = modes.get("dense", {}).get("step_s")
    print(f"\n{result['model']} @ {result['sparsity']:.0%} sparse, batch {result['batch_size']}, "
          f"{result['threads']} thread(s)")
    print(f"  {'mode':7s} {'step ms':>9s} {'amortised':>10s} {'rigl-like':>10s} {'vs masked':>10s} {'vs dense':>9s} "
          f"{'first step':>11s} {'rebuild ms':>11s}")
    for mode, row in modes.items():
        step = row["amortised_s"]
        rigl = f"{row['rigl_like_s'] * 1e3:10.1f}" if "rigl_like_s" in row else f"{'':10s}"
        rebuild = (f"{(row['rebuild_s'] + row['replan_s']) * 1e3:11.1f}" if "rebuild_s" in row else f"{'':11s}")
        print(f"  {mode:7s} {row['step_s'] * 1e3:9.1f} {step * 1e3:10.1f} {rigl} "
              f"{(masked / step if masked else float('nan')):9.2f}x {(dense / step if dense else float('nan')):8.2f}x "
              f"{row['first_step_s']:10.1f}s {rebuild}")
    if "auto" in modes:
        kernels = list(modes["auto"]["kernels"].values())
        print("  auto choices: " + ", ".join(f"{kernels.count(k)} {k}" for k in sorted(set(kernels))))


def print_layers(result: dict) -> None:
    auto = result["modes"].get("auto")
    if auto is None:
        return
    print(f"\nper layer, {result['model']} @ {result['sparsity']:.0%}, {result['threads']} thread(s): "
          "forward + backward ms at the auto backend's timing, and its choice")
    print(f"  {'layer':22s} {'density':>8s} {'rows':>8s} {'batch':>8s} {'masked':>8s}  choice")
    for layer, kernel in auto["kernels"].items():
        timings = auto["timings_s"].get(layer, {})
        cells = " ".join(f"{timings[k] * 1e3:8.2f}" if k in timings else f"{'-':>8s}"
                         for k in ("rows", "batch", "masked"))
        print(f"  {layer:22s} {auto['densities'][layer]:8.3f} {cells}  {kernel}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reason = unavailable_reason()
    modes = MODES if reason is None else ("dense", "masked")
    if reason:
        print(f"sparse kernels unavailable, timing dense and masked only: {reason}")
    report = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                          "kernels": None if reason else kernel_library().name},
              "update_interval": args.update_interval, "models": [], "optimizer": []}
    for spec in args.models:
        name, sparsity = parse_model(spec)
        for threads in args.threads:
            result = bench_model(name, sparsity, threads, args, modes)
            report["models"].append(result)
            print_model(result)
            if spec == args.models[0]:
                print_layers(result)
    print("\ndense optimizer step (SGD, momentum, weight decay) and the engine's zeroing of inactive weights:")
    for threads in args.threads:
        row = bench_optimizer(args.optimizer_weights, threads, max(args.repeats, 5))
        report["optimizer"].append(row)
        print(f"  {row['weights'] / 1e6:.1f}M weights, {threads} thread(s): optimizer.step "
              f"{row['optimizer_step_s'] * 1e3:.1f} ms ({row['optimizer_gb_per_s']:.1f} GB/s), "
              f"masks.apply {row['masks_apply_s'] * 1e3:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
