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


def resolve_threads(value: int | str) -> int:
    """trainer.threads: `auto` = OMP_NUM_THREADS when it is set (a cluster's or a shared machine's share),
    else the physical cores this process may use."""
    if value != "auto":
        return int(value)
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(omp) if omp.isdigit() and int(omp) > 0 else physical_cores()
