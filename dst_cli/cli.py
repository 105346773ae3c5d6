"""`dst-train`: the only Hydra entry point; hands the composed config to train()."""
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


def main() -> None:
    hydra_main()
