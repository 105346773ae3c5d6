import os

# One thread per process: on a 2-core machine shared with subprocess tests, two torch threads per process
# mostly wait on each other (set before torch is imported; subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402


@pytest.fixture
def make_cfg():
    """Compose conf/train.yaml with overrides, as the CLI would (without a Hydra run)."""

    def make(*overrides: str):
        with initialize_config_module(config_module="dst_cli.conf", version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))

    return make


# A few-second digits run: the quickstart scaled down.
TINY = ("experiment=quickstart", "trainer.epochs=2", "trainer.progress=none", "schedule.update_interval=5")


@pytest.fixture
def tiny_overrides():
    return TINY


def option_node(group: str, name: str, **overrides):
    """The config node of option `name` of `group` (as dst-train composes it), with some keys changed."""
    import dst_cli.schema  # noqa: F401  (registers the options)
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    return OmegaConf.merge(ConfigStore.instance().load(f"{group}/{name}.yaml").node, overrides)


def build_data(node, batch_size: int, seed: int, device: str, rank: int = 0, world_size: int = 1,
               eval_batch_size: int | None = None):
    """The loaders of a dataset node, with the LoaderSettings dst-train would give it."""
    import torch

    from dst_cli.build import build_data as build_from_node
    from dst_cli.data import LoaderSettings

    settings = LoaderSettings(batch_size, eval_batch_size or batch_size, seed, torch.device(device), rank, world_size)
    return build_from_node(node, settings)


def train_interrupted_after_first_epoch(cfg, run_dir, monkeypatch) -> None:
    """Train `cfg` in `run_dir` until epoch 1's checkpoint is written, then stop as a Ctrl-C would."""
    import pytest

    from dst_cli.build import train
    from dst_cli.train import Trainer

    original_save = Trainer.save

    def save_then_stop(self, row):
        original_save(self, row)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir)
    monkeypatch.setattr(Trainer, "save", original_save)
