"""The config schema: every group option composes and passes the checks; every bad value is refused in one
line with exit status 2 before any file is written; the schema mirrors the library's allowed names."""
import importlib.resources
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import dst_cli.sparse
from dst_cli import config
from dst_cli.build import check_run
from dst_cli.cli import main, unknown_group_option, with_custom_plugins
from dst_cli.config import RESULT_NEUTRAL_KEYS, check_config, describe_keys, display_name, resolve_threads
from dst_cli.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF = importlib.resources.files("dst_cli.conf")
GROUPS = ["model", "dataset", "acq", "schedule", "init", "optim", "experiment"]
OPTIONS = [(group, entry.name.removesuffix(".yaml")) for group in GROUPS
           for entry in sorted(CONF.joinpath(group).iterdir(), key=lambda e: e.name)
           if entry.name.endswith(".yaml") and entry.name != "custom.yaml"]


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_passes_the_checks(make_cfg, group, option):
    needs_root = ["dataset.root=/path/to/imagenet"] if "imagenet" in option else []  # mandatory: no default
    cfg = make_cfg(f"{group}={option}", *needs_root)
    check_run(cfg)
    if group in ("model", "dataset", "acq"):
        assert display_name(cfg[group]) == option
    elif group != "experiment":
        assert cfg[group].name == option


def test_defaults_are_the_paper_setting(make_cfg):
    cfg = make_cfg()
    names = (display_name(cfg.model), display_name(cfg.dataset), display_name(cfg.acq), cfg.schedule.name)
    assert names == ("vgg19", "cifar10", "ee", "itop")
    assert (cfg.sparsity, cfg.distribution) == (0.98, "erk")
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (0.1, 0.9, True, 5e-4)
    assert (cfg.trainer.batch_size, cfg.trainer.epochs, list(cfg.optim.milestones)) == (128, 160, [0.5, 0.75])
    assert (cfg.schedule.update_interval, cfg.schedule.drop_fraction) == (1000, 0.5)
    assert cfg.trainer.threads == "auto"


def run_cli(args, tmp_path, monkeypatch, capsys) -> str:
    """dst-train in this process, in an empty folder: the one stderr line of a refused config (exit 2)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO_ROOT))  # tests.plugins.* importable, as a user's own package
    monkeypatch.setattr(sys, "argv", ["dst-train", "experiment=quickstart", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run dir, nothing written
    return err.strip()


@pytest.mark.parametrize("args, message", [
    # every value of issue 8 that ran to the end with exit 0 or ended in a traceback with a run dir left behind
    (["trainer.bf16=maybe"], "trainer.bf16=maybe is invalid; allowed: auto | true | false"),
    (["dense_first_layer=maybe"], "dense_first_layer=maybe is invalid; allowed: null | true | false"),
    (["+foo=1"], "foo is not a config key; allowed at the top level: sparsity, distribution, dense_first_layer,"),
    (["acq.c=nan"], "acq.c=nan is invalid; allowed: a finite number >= 0"),
    (["acq.c=foo"], "acq.c=foo is invalid; allowed: a finite number >= 0"),
    (["optim.milestones=[1.5]"], "optim.milestones=[1.5] is invalid; allowed: a list of values, each a number in [0, 1]"),
    (["optim.warmup_epochs=-1"], "optim.warmup_epochs=-1.0 is invalid; allowed: a number >= 0"),
    (["optim.momentum=-1"], "optim.momentum=-1.0 is invalid; allowed: a number in [0, 1]"),
    (["optim.label_smoothing=2"], "optim.label_smoothing=2.0 is invalid; allowed: a number in [0, 1]"),
    (["seed=100000000000000000000000"],
     "seed=100000000000000000000000 is invalid; allowed: an integer in [0, 9223372036854775807]"),
    (["model.width=x"], "model.width=x is invalid; allowed: a number"),
    # more of the same kinds
    (["trainer.foo=1"], "trainer.foo is not a config key; allowed under trainer: epochs, batch_size,"),
    (["+trainer.foo=1"], "trainer.foo is not a config key; allowed under trainer: epochs, batch_size,"),
    (["trainer.epochs=x"], "trainer.epochs=x is invalid; allowed: an integer >= 1"),
    (["trainer.threads=0"], "trainer.threads=0 is invalid; allowed: auto | an integer >= 1"),
    (["trainer.compile=auto"], "trainer.compile=auto is invalid; allowed: true | false | reduce-overhead | "
                               "max-autotune"),
    (["schedule.min_drop_fraction=0.9"], "schedule.min_drop_fraction=0.9 is invalid; allowed: a number in [0, "
                                         "schedule.drop_fraction=0.5]"),
    (["schedule.rounding=floor"], "schedule.rounding=floor is invalid; allowed: null | round | int | ceil"),
    (["optim=adamw", "optim.betas=[0.9]"], "optim.betas=[0.9] is invalid; allowed: a list of 2 values"),
    (["dataset.foo=2"], "dataset.foo is not in this config; a new keyword argument of dataset._target_ is added "
                        "with +dataset.foo=VALUE"),
    (["+dataset.foo=2"], "dataset.foo is not an argument of dst_cli.data.digits.build_digits; its arguments: "
                         "val_fraction, test_fraction, split_seed"),
    (["dataset.split_seed=x"], "dataset.split_seed=x is invalid; allowed: an integer"),
    (["acq=rigl", "+acq.c=1"], "acq.c is not an option of acq=rigl; allowed: no options"),
    # torch refusing an argument, a plug-in refusing its own, a plug-in that is not there
    (["optim.momentum=0"], "optim: Nesterov momentum requires a momentum and zero dampening"),
    (["acq._target_=tests.plugins.acq.MyAcq", "+acq.alpha=-1"], "acq.alpha=-1 is invalid; allowed: a number >= 0"),
    (["model._target_=tests.plugins.models.Nope"],
     "model._target_=tests.plugins.models.Nope cannot be imported (AttributeError:"),
    (["model._target_=tests.plugins.models.Conv1dNet", "+model.depth=3"],
     "model.depth is not an argument of tests.plugins.models.Conv1dNet; its arguments: channels"),
    (["model._target_=torch.nn.Linear"], "model.in_features is not set; torch.nn.Linear needs it: give it as "
                                         "+model.in_features=..."),
    (["dataset=custom"], "dataset._target_ is not set"),
])
def test_a_bad_value_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys, args, message):
    assert run_cli(args, tmp_path, monkeypatch, capsys).startswith(f"dst-train: error: {message}")


def test_setting_a_target_selects_the_groups_custom_option():
    assert with_custom_plugins(["experiment=quickstart", "model._target_=a.B", "+acq._target_=c.D"]) == [
        "experiment=quickstart", "model._target_=a.B", "+acq._target_=c.D", "model=custom", "acq=custom"]
    assert with_custom_plugins(["-m", "model._target_=a.B"]) == ["-m", "model._target_=a.B", "model=custom"]
    assert with_custom_plugins(["model=mlp", "model._target_=a.B"]) == ["model=mlp", "model._target_=a.B"]


def test_a_target_replaces_the_built_in_and_its_arguments(make_cfg):
    cfg = make_cfg("experiment=quickstart", *with_custom_plugins(["model._target_=tests.plugins.models.Conv1dNet"]))
    assert dict(cfg.model) == {"_target_": "tests.plugins.models.Conv1dNet"}  # no width of the cnn left over
    check_config(cfg)


def test_unknown_group_options_are_named_with_the_allowed_ones():
    acq_options = sorted(path.name.removesuffix(".yaml") for path in CONF.joinpath("acq").iterdir()
                         if path.name.endswith(".yaml"))
    assert unknown_group_option(["acq=foo"]) == f"acq=foo is not an option; allowed: {', '.join(acq_options)}"
    assert unknown_group_option(["acq=ee,rigl", "sparsity=0.5", "schedule.update_interval=3"]) is None
    assert unknown_group_option(["schedule=itop,nope"]).startswith("schedule=nope is not an option")
    assert unknown_group_option(["optim=base_sgd"]).startswith("optim=base_sgd is not an option")  # schemas only


def test_allowed_names_mirror_the_library():
    assert config.DISTRIBUTIONS == tuple(dst_cli.sparse.DISTRIBUTIONS)
    assert config.SCHEDULE_PRESETS == tuple(dst_cli.sparse.SCHEDULE_PRESETS)
    assert config.DECAYS == tuple(dst_cli.sparse.DECAYS)
    assert config.ROUNDINGS == tuple(dst_cli.sparse.ROUNDINGS)
    assert config.INIT_METHODS == tuple(dst_cli.sparse.INIT_METHODS)
    schedule_keys = {f.name for f in fields(config.ScheduleConfig)} - {"name"}
    assert schedule_keys == set(dst_cli.sparse.SCHEDULE_OPTIONS)


def test_every_key_has_a_type_allowed_values_and_help():
    rows = describe_keys()
    keys = [key for key, *_ in rows]
    assert len(keys) == len(set(keys))
    assert {"sparsity", "seed", "trainer.threads", "schedule.update_interval", "logger.name"} <= set(keys)
    for key, allowed, help_text, _ in rows:
        assert allowed and help_text and "\n" not in help_text, key
    for schema in (config.TrainConfig, config.SGDConfig, config.AdamWConfig, config.ScheduleConfig):
        for field in fields(schema):
            assert field.type is not None and field.metadata["help"], (schema.__name__, field.name)


def test_result_neutral_keys_are_keys_of_the_config(make_cfg):
    cfg = make_cfg("dataset=cifar10")
    missing = object()
    for key in RESULT_NEUTRAL_KEYS:
        if key != "hydra":
            assert OmegaConf.select(cfg, key, default=missing) is not missing, key


def test_threads_auto_is_omp_num_threads_else_the_physical_cores_available(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads("auto") == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(config, "threads_per_core", lambda: 2)
    assert resolve_threads("auto") == 2
    monkeypatch.setattr(config.os, "sched_getaffinity", lambda pid: {0})
    assert resolve_threads("auto") == 1
    assert resolve_threads(3) == 3


def test_config_and_cli_import_neither_torch_nor_the_library():
    heavy = ("torch", "dst_cli.sparse", "torchvision", "sklearn")
    code = f"import sys, dst_cli.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_package_ships_in_the_wheel():
    declared = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(path.parent.relative_to(REPO_ROOT).parts) for path in (REPO_ROOT / "dst_cli").rglob("__init__.py")}
    assert on_disk | {"dst_cli.conf"} == declared


def test_slurm_launcher_preset_extends_submitit(make_cfg):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="dst_cli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.max_num_timeout, launcher.signal_delay_s) == (1, 5, 120)
