"""Every config group option composes and passes validation; bad values are named in one line."""
import importlib.resources
import tomllib
from pathlib import Path

import pytest

from dst_cli.cli import unknown_group_option
from dst_cli.config import validate_config
from dst_cli.errors import UserError

CONF = importlib.resources.files("dst_cli.conf")
GROUPS = ["model", "dataset", "acq", "schedule", "optim", "experiment"]
OPTIONS = [(group, entry.name.removesuffix(".yaml")) for group in GROUPS
           for entry in sorted(CONF.joinpath(group).iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")]


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(make_cfg, group, option):
    cfg = make_cfg(f"{group}={option}")
    validate_config(cfg)
    if group != "experiment":
        assert cfg[group].name == option


def test_defaults_are_the_paper_setting(make_cfg):
    cfg = make_cfg()
    assert (cfg.model.name, cfg.dataset.name, cfg.acq.name, cfg.schedule.name) == ("vgg19", "cifar10", "ee", "itop")
    assert (cfg.sparsity, cfg.distribution) == (0.98, "erk")
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert (cfg.trainer.batch_size, cfg.trainer.epochs, list(cfg.optim.milestones)) == (128, 160, [0.5, 0.75])
    assert (cfg.schedule.update_interval, cfg.schedule.drop_fraction) == (1000, 0.5)


@pytest.mark.parametrize("override, message", [
    ("sparsity=1.0", "sparsity=1.0 is invalid; allowed: a number in [0, 1)"),
    ("sparsity=-0.1", "sparsity=-0.1 is invalid"),
    ("distribution=foo", "distribution=foo is invalid; allowed: erk | er | uniform"),
    ("trainer.epochs=0", "trainer.epochs=0 is invalid; allowed: an integer >= 1"),
    ("trainer.batch_size=0", "trainer.batch_size=0 is invalid"),
    ("schedule.update_interval=-5", "schedule.update_interval=-5 is invalid"),
    ("schedule.drop_fraction=1.5", "schedule.drop_fraction=1.5 is invalid"),
    ("trainer.device=tpu", "trainer.device=tpu is invalid; allowed: auto | cpu | cuda"),
])
def test_bad_values_are_named(make_cfg, override, message):
    with pytest.raises(UserError) as error:
        validate_config(make_cfg(override))
    assert message in str(error.value)


def test_unknown_group_options_are_named_with_the_allowed_ones():
    assert unknown_group_option(["acq=foo"]) == "acq=foo is not an option; allowed: ee, random, rigl, set, static"
    assert unknown_group_option(["acq=ee,rigl", "sparsity=0.5", "schedule.update_interval=3"]) is None
    assert unknown_group_option(["schedule=itop,nope"]).startswith("schedule=nope is not an option")


def test_every_package_ships_in_the_wheel():
    root = Path(__file__).resolve().parents[2]
    declared = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(path.parent.relative_to(root).parts) for path in (root / "dst_cli").rglob("__init__.py")}
    assert on_disk | {"dst_cli.conf"} == declared


def test_slurm_launcher_preset_extends_submitit(make_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="dst_cli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.max_num_timeout, launcher.signal_delay_s) == (1, 5, 120)
