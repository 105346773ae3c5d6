"""`dst-train`: the only Hydra entry point; hands the composed config to train()."""
import importlib.resources
import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dst_cli.console import print_summary
from dst_cli.errors import UserError
from dst_cli.train import NonFiniteLoss, train

RUN_FILES = ("metrics.jsonl", "summary.json", "checkpoints")


def holds_a_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in RUN_FILES)


@hydra.main(version_base="1.3", config_path="pkg://dst_cli.conf", config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = not holds_a_run(run_dir)
    try:
        summary = train(cfg, run_dir)
    except UserError as error:
        if fresh:  # bad input: leave no half-written run directory behind
            shutil.rmtree(run_dir, ignore_errors=True)
        print(f"dst-train: error: {error}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLoss as error:
        print(f"dst-train: run failed: {error} (status 'failed' in {run_dir / 'summary.json'})", file=sys.stderr)
        sys.exit(1)
    print_summary(summary)
    return summary["best_test_acc"]


def group_options(group: str) -> list[str] | None:
    """The options of config group `group`, or None if there is no such group."""
    folder = importlib.resources.files("dst_cli.conf").joinpath(group)
    if not folder.is_dir():
        return None
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def unknown_group_option(args: list[str]) -> str | None:
    """Hydra reports an unknown group option over many lines; name it in one, with the allowed options."""
    for arg in args:
        key, equals, value = arg.partition("=")
        if not equals or not key.isidentifier() or "(" in value:
            continue
        options = group_options(key)
        if options is None:
            continue
        for choice in value.split(","):
            if choice not in options and choice != "null":
                return f"{key}={choice} is not an option; allowed: {', '.join(options)}"
    return None


def main() -> None:
    problem = unknown_group_option(sys.argv[1:])
    if problem:
        print(f"dst-train: error: {problem}", file=sys.stderr)
        sys.exit(2)
    hydra_main()
