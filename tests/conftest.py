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
