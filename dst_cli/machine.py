"""What this machine offers a run: CPU threads and the training device (torch is imported only to ask it)."""
import os


def physical_cores() -> int:
    """CPU cores this process may use, counting hyper-threads of one core once (at least 1)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, available // threads_per_core())


def threads_per_core() -> int:
    try:
        with open("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list") as file:
            siblings = file.read().strip()
    except OSError:
        return 1
    count = 0
    for part in siblings.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return max(1, count)


# A training step with less work than this runs on one thread under trainer.threads=auto: split over several,
# its many small kernels each wait at a barrier for the slowest thread, and on a busy machine a thread that
# lost its core makes every one of them wait a scheduler time slice (docs/benchmarks.md, "Threads").
SMALL_STEP_FLOPS = 5e9


def resolve_threads(value: int | str, step_flops: float) -> tuple[int, str]:
    """trainer.threads and why: a number as given; `auto` = OMP_NUM_THREADS when it is set (a cluster's or a
    shared machine's share), else one thread for a step of less than SMALL_STEP_FLOPS (dense forward and
    backward), else the physical cores this process may use."""
    if value != "auto":
        return int(value), "trainer.threads"
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp), "auto: OMP_NUM_THREADS"
    cores = physical_cores()
    if cores > 1 and step_flops < SMALL_STEP_FLOPS:
        return 1, (f"auto: a step of {step_flops / 1e9:.2g} GFLOP is too little work to share between threads "
                   f"(under {SMALL_STEP_FLOPS / 1e9:g}); trainer.threads={cores} uses every core")
    return cores, f"auto: the {cores} physical cores available"
