"""Every paper preset in conf/experiment/ composes and trains a few steps on fake data in the real formats
(the digits table on the real, offline digits); the table presets sweep every method row by themselves."""
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from dst_cli.build import build_model, train
from dst_cli.methods import METHODS
from dst_cli.models import MODELS

from fakes import write_fake_cifar10, write_fake_cifar100, write_fake_image_folder

pytestmark = pytest.mark.slow

EXPERIMENT_DIR = Path(__file__).resolve().parents[2] / "conf" / "experiment"
# the paper presets; quickstart (test_cli) and planted (test_planted) are small studies of their own
PRESETS = sorted(path.stem for path in EXPERIMENT_DIR.glob("*.yaml") if path.stem not in ("quickstart", "planted"))

# preset -> (model, dataset, number of classes of the real dataset)
SETUPS = {
    "vgg19_cifar10": ("vgg19", "cifar10", 10),
    "vgg19_cifar100": ("vgg19", "cifar100", 100),
    "resnet50_cifar10": ("resnet50", "cifar10", 10),
    "resnet50_cifar100": ("resnet50", "cifar100", 100),
    "resnet50_imagenet": ("resnet50_imagenet", "imagenet", 1000),
    "granet_cifar10": ("vgg19", "cifar10", 10),
    "dstee_table": ("vgg19", "cifar10", 10),
    "dstee_table_digits": ("cnn", "digits", 10),
}
METHOD_ROWS = sorted(method.name for method in METHODS if method.name not in ("static", "random"))  # the paper's
TABLE_PRESETS = ("dstee_table", "dstee_table_digits")
# Parameter counts at full width for the class counts that tests/unit/test_models.py does not pin
# (it pins VGG-19 and CIFAR ResNet-50 for 10 classes and derives torchvision's 25,557,032 for 1000):
# only the classifier changes, e.g. VGG-19: 20,035,018 - (512 + 1) * 10 + (512 + 1) * 100.
PARAMETERS = {
    ("vgg19", 100): 20_081_188,
    ("resnet50", 100): 23_705_252,
    ("resnet50_imagenet", 1000): 25_557_032,
}
FAKE_WRITERS = {"cifar10": write_fake_cifar10, "cifar100": write_fake_cifar100, "imagenet": write_fake_image_folder}
# A few cheap steps: 40 fake CIFAR images in batches of 8 (5 steps), 6 fake ImageNet images of 32x32 in
# batches of 2 (3 steps); a mask update every 2 steps.
QUICK = ("trainer.epochs=1", "trainer.progress=none", "trainer.checkpoint=false", "schedule.update_interval=2")
QUICK_FOR_DATASET = {
    "cifar10": ("trainer.batch_size=8", "dataset.download=false", "model.width=0.125"),
    "cifar100": ("trainer.batch_size=8", "dataset.download=false", "model.width=0.125"),
    "imagenet": ("trainer.batch_size=2", "dataset.num_workers=0", "dataset.crop_size=32", "dataset.resize_size=36",
                 "lr_schedule.warmup_epochs=0.5"),  # the preset warms up for 5 of 100 epochs
    "digits": ("trainer.batch_size=250",),  # 1257 training digits: 5 steps
}


@pytest.fixture(autouse=True)
def one_thread():
    """These steps are tiny: on one thread they skip the threads' hand-offs (slow on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_preset_is_known_here():
    assert set(PRESETS) == set(SETUPS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_header_gives_the_command_that_runs_it(preset):
    lines = (EXPERIMENT_DIR / f"{preset}.yaml").read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert header[0] == "# @package _global_"
    assert any(line.startswith(f"# dst-train experiment={preset}") for line in header)
    text = " ".join(line.lstrip("# ") for line in header)
    assert "Huang et al." in text  # the paper; and where the numbers come from:
    assert "github.com/" in text or "the recipe of vgg19_cifar10 (see there" in text


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_on_fake_data_at_its_sparsity(preset, make_cfg, tmp_path):
    model_name, dataset, _ = SETUPS[preset]
    data = ()
    if dataset in FAKE_WRITERS:
        FAKE_WRITERS[dataset](tmp_path / "data")
        data = (f"dataset.root={tmp_path / 'data'}",)
    cfg = make_cfg(f"experiment={preset}", *data, *QUICK, *QUICK_FOR_DATASET[dataset])
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed"
    assert (summary["model"], summary["dataset"]) == (model_name, dataset)
    assert summary["steps"] == (3 if dataset == "imagenet" else 5)
    layers = summary["layers"].values()
    active_share = sum(layer["active"] for layer in layers) / sum(layer["numel"] for layer in layers)
    assert active_share == pytest.approx(1 - cfg.sparsity, abs=1e-3)  # GraNet: pruned to it from 0.5 by step 4  # exact counts, up to per-layer rounding
    # measured from the weights: weights grown at the last update (ITOP: after the optimizer step) may still be 0
    assert active_share - 0.002 < summary["density"] <= active_share
    assert summary["explored"] > 1.1 * active_share  # the mask updates replaced weights


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_model_at_full_width_has_the_published_size(preset, make_cfg):
    model_name, _, num_classes = SETUPS[preset]
    cfg = make_cfg(f"experiment={preset}")
    assert cfg.model._target_ == MODELS[model_name] and cfg.model.get("width", 1.0) == 1.0
    if (model_name, num_classes) in PARAMETERS:
        model = build_model(cfg.model, num_classes=num_classes, input_shape=(3, 32, 32))
        assert sum(p.numel() for p in model.parameters()) == PARAMETERS[model_name, num_classes]


def test_cifar_presets_share_the_vgg19_cifar10_recipe_and_sparsity_stays_overridable(make_cfg):
    recipe_keys = ("sparsity", "distribution", "trainer", "schedule", "optim", "acq")
    reference = make_cfg("experiment=vgg19_cifar10")
    assert (reference.trainer.epochs, reference.trainer.batch_size, reference.optim.nesterov) == (160, 128, True)
    for preset in ("vgg19_cifar100", "resnet50_cifar10", "resnet50_cifar100"):
        cfg = make_cfg(f"experiment={preset}")
        assert all(cfg[key] == reference[key] for key in recipe_keys), preset
    for preset in PRESETS:
        assert make_cfg(f"experiment={preset}", "sparsity=0.95").sparsity == 0.95


@pytest.mark.parametrize("preset", TABLE_PRESETS)
def test_table_preset_is_a_sweep_over_every_method_row_and_sparsity(preset):
    with initialize_config_module(config_module="dst_cli.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"  # dst-train experiment=dstee_table sweeps without -m
    params = cfg.hydra.sweeper.params
    assert sorted(params.method.split(",")) == METHOD_ROWS and len(METHOD_ROWS) == 12
    assert params.sparsity_level == "s90,s95,s98" and params.seed == "0,1,2"


@pytest.mark.parametrize("row", METHOD_ROWS)
def test_every_method_row_composes_into_its_method_at_the_swept_sparsity(row):
    for preset in TABLE_PRESETS:
        with initialize_config_module(config_module="dst_cli.conf", version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"experiment={preset}", f"method={row}",
                                                          "sparsity_level=s95"], return_hydra_config=True)
        expected = {"dense": ("static", "random", "itop"), "granet": ("rigl", "random", "gradual"),
                    "rigl": ("rigl", "random", "rigl"), "rigl-itop": ("rigl", "random", "itop")}.get(row)
        if row in ("snip", "grasp", "synflow"):
            expected = ("static", row, "itop")
        choices = cfg.hydra.runtime.choices
        assert (choices.acq, choices.init, choices.schedule) == (expected or (row, "random", "itop"))
        assert cfg.sparsity == (0.0 if row == "dense" else 0.95)
        assert cfg.schedule.regrow_dropped == (row != "dsr")  # DSR's own default comes with its method
