"""The config schema: derived from the code it configures (one place per default), every group option
composes and passes the checks, every bad value is refused in one line with exit status 2 before any file is
written."""
import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import dst_cli.machine as machine
from dst_cli.build import check_run
from dst_cli.cli import main
from dst_cli.checks import closest, edit_distance
from dst_cli.machine import resolve_threads
from dst_cli.plugins import signature_node
from dst_cli.schema import GROUP_OFFERS, RESULT_NEUTRAL_KEYS, TrainConfig, describe_keys, option_sources
from dst_cli.plugins import import_object
from dst_cli.sparse import SCHEDULE_PRESETS, UpdateSchedule, sparsify
from dst_cli.sparse.acquisition import EE
from dst_cli.sparse.init import SynFlow

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF = REPO_ROOT / "conf"
GROUP_OPTIONS = [(group, name) for group, options in option_sources().items() for name in options]
EXPERIMENTS = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
METHODS = sorted(ConfigStore.instance().repo["method"])


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_and_passes_the_checks(make_cfg, group, option):
    needs_root = ["dataset.root=/path/to/imagenet"] if option == "imagenet" else []  # required: no default
    cfg = make_cfg(f"{group}={option}", *needs_root)
    check_run(cfg)


@pytest.mark.parametrize("option", [*EXPERIMENTS, *(f"method={m.removesuffix('.yaml')}" for m in METHODS)])
def test_every_experiment_and_method_composes_and_passes_the_checks(make_cfg, option):
    overrides = [option if option.startswith("method=") else f"experiment={option}"]
    if "imagenet" in option:
        overrides.append("dataset.root=/path/to/imagenet")
    check_run(make_cfg(*overrides))


@pytest.mark.parametrize("group, option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_each_option_is_its_callables_signature_plus_its_presets_overrides(make_cfg, group, option):
    """The schema is derived: an option holds exactly the callable's defaults and its preset's overrides, so a
    default said anywhere else (a YAML file shadowing the option, a restated value) makes this fail."""
    target, overrides = option_sources()[group][option]
    needs_root = ["dataset.root=/data"] if option == "imagenet" else []
    cfg = make_cfg(f"{group}={option}", *needs_root)
    node = OmegaConf.to_container(cfg.logger[option] if group == "logger" else cfg[group], resolve=False)
    target = import_object(target) if isinstance(target, str) else target
    expected = signature_node(target, GROUP_OFFERS[group], overrides, path=node["_target_"])
    if needs_root:
        expected["root"] = "/data"
    assert node == expected


def test_the_defaults_are_written_once_where_the_code_defines_them(make_cfg):
    cfg = make_cfg("acq=ee", "init=synflow", "schedule=itop")
    assert cfg.acq.c == inspect.signature(EE).parameters["c"].default == 3e-4
    assert cfg.init.iterations == inspect.signature(SynFlow).parameters["iterations"].default == 100
    itop = UpdateSchedule(total_steps=1)  # the itop preset is UpdateSchedule's defaults
    assert SCHEDULE_PRESETS["itop"] == {} and cfg.schedule.drop_fraction == itop.drop_fraction == 0.5
    assert cfg.distribution == inspect.signature(sparsify).parameters["distribution"].default


def presets() -> list[Path]:
    """The experiment presets (a sparsity_level sets its column's sparsity whatever it was: not a default)."""
    return sorted((CONF / "experiment").glob("*.yaml"))


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("path", presets(), ids=lambda path: f"{path.parent.name}/{path.stem}")
def test_a_preset_only_names_overrides(make_cfg, path):
    """No preset restates a value the config already has without it (a second place for the same fact)."""
    text = yaml.safe_load(path.read_text()) or {}
    values = flat({key: value for key, value in text.items() if key not in ("defaults", "hydra")})
    defaults = text.get("defaults", [])
    parents = [f"experiment={item}" for item in defaults if isinstance(item, str) and item != "_self_"]
    choices = [f"{entry.split()[-1].lstrip('/')}={choice}" for item in defaults if isinstance(item, dict)
               for entry, choice in item.items()]
    base = make_cfg(*parents, *choices)
    restated = [key for key, value in values.items() if OmegaConf.select(base, key) == value]
    assert restated == [], f"{path.name} restates {restated}"


def test_defaults_are_the_paper_setting(make_cfg):
    cfg = make_cfg()
    assert (cfg.model._target_, cfg.dataset._target_) == ("dst_cli.models.vgg.build_vgg19",
                                                          "dst_cli.data.cifar.build_cifar10")
    assert cfg.acq._target_.endswith(".EE") and (cfg.sparsity, cfg.distribution) == (0.98, "erk")
    assert (cfg.optim._target_, cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov, cfg.optim.weight_decay) == (
        "torch.optim.SGD", 0.1, 0.9, True, 5e-4)
    assert (cfg.trainer.batch_size, cfg.trainer.epochs, list(cfg.lr_schedule.milestones)) == (128, 160, [0.5, 0.75])
    assert (cfg.schedule.update_interval, cfg.schedule.drop_fraction, cfg.schedule.rounding) == (1000, 0.5, "ceil")
    assert cfg.trainer.threads == "auto"


def run_cli(args, tmp_path, monkeypatch, capsys, base=("experiment=quickstart",)) -> str:
    """dst-train in this process, in an empty folder: the one stderr line of a refused config (exit 2)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO_ROOT))  # tests.plugins.* importable, as a user's own package
    with pytest.raises(SystemExit) as exit_info:
        main([*base, *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # no run dir, nothing written
    return err.strip()


@pytest.mark.parametrize("args, message", [
    (["trainer.bf16=maybe"], "trainer.bf16=maybe is invalid; allowed: auto | true | false"),
    (["dense_first_layer=maybe"], "dense_first_layer=maybe is invalid; allowed: true | false | null"),
    (["+foo=1"], "foo is not a config key"),
    (["sparsty=0.9"], "sparsty is not a config key; did you mean sparsity?"),
    (["trainer.epoch=3"], "trainer.epoch is not a config key; did you mean trainer.epochs?"),
    (["acq.cc=1"], "acq.cc is not a config key; did you mean acq.c? (a new argument of acq._target_ is added "
                   "with +acq.cc=VALUE)"),
    (["acq.c=nan"], "acq.c=nan is invalid; allowed: a finite number >= 0"),
    (["+trainer.epoch=3"], "trainer.epoch is not a config key; did you mean trainer.epochs?"),
    (["acq.c=foo"], "acq.c=foo is invalid; allowed: a number"),
    (["acq=foo"], "acq=foo is not an option; allowed: dsr, ee, mest, random, rigl, set, snfs, static"),
    (["lr_schedule.milestones=[1.5]"],
     "lr_schedule.milestones=[1.5] is invalid; allowed: a list of fractions of the epochs, each in [0, 1]"),
    (["lr_schedule.warmup_epochs=-1"], "lr_schedule.warmup_epochs=-1 is invalid; allowed: a number in [0, "
                                       "trainer.epochs=30]"),
    (["lr_schedule.warmup_epochs=31"], "lr_schedule.warmup_epochs=31 is invalid"),
    (["optim.momentum=-1"], "optim (torch.optim.SGD): Invalid momentum value: -1"),
    (["trainer.label_smoothing=2"], "trainer.label_smoothing=2.0 is invalid; allowed: a number in [0, 1]"),
    (["seed=100000000000000000000000"], "seed=100000000000000000000000 is invalid; allowed: an integer"),
    (["seed=-1"], "seed=-1 is invalid; allowed: an integer in [0, 18446744073709551615]"),
    (["sparsity=1.5"], "sparsity=1.5 is invalid; allowed: a number in [0, 1)"),
    (["model.width=x"], "model.width=x is invalid; allowed: a number"),
    (["trainer.foo=1"], "trainer.foo is not a config key"),
    (["trainer.epochs=x"], "trainer.epochs=x is invalid; allowed: an integer >= 1"),
    (["trainer.threads=0"], "trainer.threads=0 is invalid; allowed: auto | an integer >= 1"),
    (["trainer.compile=fast"], "trainer.compile=fast is invalid; allowed: auto | true | false | reduce-overhead | "
                               "max-autotune"),
    (["schedule.min_drop_fraction=0.9"], "schedule.min_drop_fraction=0.9 is invalid; allowed: a number in [0, 0.5]"),
    (["schedule.rounding=floor"], "schedule.rounding=floor is invalid; allowed: round | int | ceil"),
    (["optim=adamw", "optim.betas=[0.9]"], "optim.betas=[0.9] is invalid; allowed: a list of 2 values"),
    (["+dataset.foo=2"], "dataset.foo is not an argument of dst_cli.data.digits.build_digits; its arguments: "
                         "val_fraction, test_fraction, split_seed"),
    (["dataset.split_seed=x"], "dataset.split_seed=x is invalid; allowed: an integer"),
    (["method=rigl", "+acq.c=1"], "acq.c is not an argument of dst_cli.sparse.acquisition.RigL; its arguments: none"),
    (["optim.momentum=0"], "optim (torch.optim.SGD): Nesterov momentum requires a momentum and zero dampening"),
    (["acq._target_=tests.plugins.acq.MyAcq", "acq.alpha=-1"], "acq.alpha=-1 is invalid; allowed: a number >= 0"),
    (["acq._target_=tests.plugins.acq.MyAcq", "acq.alpha=abc"], "acq.alpha=abc is invalid; allowed: a number"),
    (["hydra.searchpath=[pkg://tests.plugins.conf]", "acq=my_acq", "+acq.alpha=abc"],
     "acq.alpha=abc is invalid; allowed: a number"),
    (["hydra.searchpath=[pkg://tests.plugins.conf]", "acq=my_acq", "acq.alpha=0.3"],
     "acq.alpha is not a config key"),
    (["hydra.searchpath=[pkg://tests.plugins.conf]", "acq=my_acq", "+acq.beta=1"],
     "acq.beta is not an argument of tests.plugins.acq.MyAcq; its arguments: alpha"),
    (["model._target_=tests.plugins.models.Nope"],
     "model._target_=tests.plugins.models.Nope cannot be imported (AttributeError:"),
    (["model._target_=tests.plugins.models.Conv1dNet", "model.depth=3"],
     "model.depth is not a config key"),
    (["model._target_=torch.nn.Linear"], "model.in_features is not set; give it as model.in_features=..."),
    (["model._target_=tests.plugins.models.Conv1dNet", "+model.channels=3"],
     "model.channels is already in the config; set it without +: model.channels=3"),
    (["hydra.searchpath=[pkg://nope.conf]"], "hydra.searchpath: nope.conf is not available"),
    (["sparsity=0.9,0.8"], "sparsity=0.9,0.8 is a sweep (one run per value); run it with -m"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate; allowed flags: -m,"),
    (["--hydra-help"], "--hydra-help, --info, --shell-completion"),
])
def test_a_bad_value_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys, args, message):
    assert run_cli(args, tmp_path, monkeypatch, capsys).startswith(f"dst-train: error: {message}")


def test_a_target_alone_brings_its_own_arguments(make_cfg):
    """model._target_=X without model=...: the node is X's signature (no width of the default cnn left over)."""
    from dst_cli.compose import with_derived_targets

    overrides = with_derived_targets(["experiment=quickstart", "model._target_=tests.plugins.models.Conv1dNet",
                                      "optim._target_=torch.optim.Adam", "optim.lr=1e-3"])
    assert overrides[:2] == ["model=tests.plugins.models.Conv1dNet", "optim=torch.optim.Adam"]
    cfg = make_cfg(*overrides)
    assert dict(cfg.model) == {"_target_": "tests.plugins.models.Conv1dNet", "channels": 32}
    assert cfg.optim.lr == 1e-3 and "momentum" not in cfg.optim and list(cfg.optim.betas) == [0.9, 0.999]
    check_run(cfg)


def test_did_you_mean_picks_the_closest_key_by_edit_distance():
    assert edit_distance("sparsty", "sparsity") == 1 and edit_distance("kitten", "sitting") == 3
    assert closest("sparsty", ["seed", "sparsity", "distribution"]) == "sparsity"
    assert closest("xyz", ["sparsity", "seed"]) is None


def test_every_key_has_a_type_allowed_values_and_help():
    rows = describe_keys()
    keys = [key for key, *_ in rows]
    assert len(keys) == len(set(keys))
    assert {"sparsity", "seed", "distribution", "trainer.threads", "trainer.label_smoothing"} <= set(keys)
    for key, allowed, help_text, _ in rows:
        assert allowed and help_text and "\n" not in help_text, key


def test_the_sparse_options_are_typed_from_sparsify():
    fields = TrainConfig.__dataclass_fields__
    assert fields["seed"].type is int and fields["distribution"].type is str
    assert fields["distribution"].metadata["check"].allowed == "erk | er | uniform"


def test_result_neutral_keys_are_keys_of_the_config(make_cfg):
    cfg = make_cfg("dataset=cifar10")
    missing = object()
    for key in RESULT_NEUTRAL_KEYS:
        if key != "hydra":
            assert OmegaConf.select(cfg, key, default=missing) is not missing, key


def test_threads_auto_is_omp_num_threads_else_one_for_a_small_step_else_the_physical_cores(monkeypatch):
    big, small = 2 * machine.SMALL_STEP_FLOPS, machine.SMALL_STEP_FLOPS / 2
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert resolve_threads("auto", small) == (3, "auto: OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(machine, "threads_per_core", lambda: 2)
    assert resolve_threads("auto", big) == (2, "auto: the 2 physical cores available")
    threads, why = resolve_threads("auto", small)
    assert threads == 1 and why.startswith("auto: a step of 2.5 GFLOP is too little work to share between threads")
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0})
    assert resolve_threads("auto", big)[0] == 1
    assert resolve_threads(3, small) == (3, "trainer.threads")


def test_the_cli_module_imports_neither_torch_nor_the_library():
    heavy = ("torch", "dst_cli.sparse", "torchvision", "sklearn")
    code = f"import sys, dst_cli.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_package_ships_in_the_wheel():
    declared = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(path.parent.relative_to(REPO_ROOT).parts) for path in (REPO_ROOT / "dst_cli").rglob("__init__.py")}
    assert on_disk | {"dst_cli.conf"} == declared


def test_slurm_launcher_preset_extends_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="dst_cli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.max_num_timeout, launcher.signal_delay_s) == (1, 5, 120)


def test_sweeps_pack_four_runs_per_gpu_through_joblib_unless_told_otherwise(monkeypatch):
    import dst_cli.sweep as sweep

    monkeypatch.setattr(sweep, "visible_gpus", lambda: 2)
    assert sweep.packing_overrides(["experiment=dstee_table"]) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=8"]
    assert sweep.packing_overrides(["hydra.launcher.n_jobs=3"]) == ["hydra/launcher=joblib"]
    assert sweep.packing_overrides(["hydra/launcher=slurm"]) == [] and sweep.packing_overrides(["trainer.device=cpu"]) == []
    monkeypatch.setattr(sweep, "visible_gpus", lambda: 0)
    assert sweep.packing_overrides(["experiment=dstee_table"]) == []  # CPU: one job after another
