"""The model zoo: shapes, exact parameter counts, width scaling, init, input checks, configs."""

import math

import pytest
import torch
from torch import nn

from conftest import option_node
from dst_cli.build import build_model as build_from_node
from dst_cli.errors import UserError
from dst_cli.models import MODELS


def build_model(name: str, num_classes: int, input_shape: tuple, **arguments) -> nn.Module:
    """The built-in model=<name> with some of its arguments changed."""
    return build_from_node(option_node("model", name, **arguments), num_classes, input_shape)

SMALL_INPUT = {
    "mlp": (1, 8, 8),
    "cnn": (1, 8, 8),
    "vgg16": (3, 32, 32),
    "vgg19": (3, 32, 32),
    "resnet18": (3, 32, 32),
    "resnet34": (3, 32, 32),
    "resnet50": (3, 32, 32),
    "resnet50_imagenet": (3, 64, 64),
}


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_every_built_in_model_has_a_test_input():
    assert set(SMALL_INPUT) == set(MODELS)


@pytest.mark.parametrize("name", sorted(SMALL_INPUT))
def test_forward_gives_one_logit_per_class(name):
    torch.manual_seed(0)
    input_shape = SMALL_INPUT[name]
    model = build_model(name, num_classes=7, input_shape=input_shape)
    logits = model(torch.randn(2, *input_shape))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


# Hand counts. conv = in*out*k*k (no conv biases), BN = 2*channels, linear = in*out + out.
# vgg19: conv weights 1,728 + 36,864 + 73,728 + 147,456 + 294,912 + 3*589,824 + 1,179,648
#        + 7*2,359,296 = 20,018,880; BN 2*(2*64 + 2*128 + 4*256 + 8*512) = 11,008; linear 5,130
#        -> 20,035,018 (the ~20.03M of the GraSP / ITOP papers).
# vgg16: conv weights 1,728 + 36,864 + 73,728 + 147,456 + 294,912 + 2*589,824 + 1,179,648
#        + 5*2,359,296 = 14,710,464; BN 2*(2*64 + 2*128 + 3*256 + 6*512) = 8,448; linear 5,130.
# resnet18: stem 1,728 + 128; layer1 2*(2*36,864 + 256) = 147,968;
#        layer2 (73,728 + 147,456 + 8,192 + 768) + (2*147,456 + 512) = 525,568;
#        layer3 (294,912 + 589,824 + 32,768 + 1,536) + (2*589,824 + 1,024) = 2,099,712;
#        layer4 (1,179,648 + 2,359,296 + 131,072 + 3,072) + (2*2,359,296 + 2,048) = 8,393,728; linear 5,130
#        -> 11,173,962.
# resnet50 (bottleneck = 1x1 in->p, 3x3 p->p, 1x1 p->4p, projection 1x1 in->4p in the first block):
#        stem 1,856; layer1 75,008 + 2*70,400 = 215,808; layer2 379,392 + 3*280,064 = 1,219,584;
#        layer3 1,512,448 + 5*1,117,184 = 7,098,368; layer4 6,039,552 + 2*4,462,592 = 14,964,736;
#        linear 2048*10 + 10 = 20,490 -> 23,520,842 (~23.5M).
# mlp on 8x8 digits: (64*256 + 256) + (256*128 + 128) + (128*10 + 10) = 50,826.
@pytest.mark.parametrize(
    "name, input_shape, expected",
    [
        ("vgg19", (3, 32, 32), 20_018_880 + 11_008 + 5_130),
        ("vgg16", (3, 32, 32), 14_710_464 + 8_448 + 5_130),
        ("resnet18", (3, 32, 32), 1_856 + 147_968 + 525_568 + 2_099_712 + 8_393_728 + 5_130),
        ("resnet50", (3, 32, 32), 1_856 + 215_808 + 1_219_584 + 7_098_368 + 14_964_736 + 20_490),
        ("mlp", (1, 8, 8), 50_826),
    ],
)
def test_exact_parameter_count_for_ten_classes(name, input_shape, expected):
    assert count_parameters(build_model(name, num_classes=10, input_shape=input_shape)) == expected


def test_quarter_width_shrinks_vgg19():
    model = build_model("vgg19", num_classes=10, input_shape=(3, 32, 32), width=0.25)
    conv_channels = [module.out_channels for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert conv_channels == [16, 16, 32, 32, 64, 64, 64, 64] + [128] * 8
    # Every conv but the first (3 input channels) shrinks 16x: (20,018,880 - 1,728) / 16 + 3*16*9;
    # BN shrinks 4x (11,008 / 4); the linear becomes 128*10 + 10.
    assert count_parameters(model) == 1_251_072 + 432 + 2_752 + 1_290
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_width_scales_resnet_and_cnn_channels():
    resnet = build_model("resnet18", num_classes=10, input_shape=(3, 32, 32), width=0.5)
    assert resnet.linear.in_features == 256
    cnn = build_model("cnn", num_classes=10, input_shape=(1, 8, 8), width=2.0)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)] == [64, 128, 256]


def test_convs_are_kaiming_normal_and_norms_start_as_identity():
    torch.manual_seed(0)
    model = build_model("vgg19", num_classes=10, input_shape=(3, 32, 32))
    last_conv = [module for module in model.modules() if isinstance(module, nn.Conv2d)][-1]
    expected_std = math.sqrt(2 / (512 * 3 * 3))  # 0.02083, fan-in of a 512-channel 3x3 conv
    assert last_conv.weight.std().item() == pytest.approx(expected_std, rel=0.01)
    assert last_conv.bias is None
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))


def test_imagenet_resnet50_is_torchvisions_and_accepts_grey_images():
    model = build_model("resnet50_imagenet", num_classes=10, input_shape=(3, 64, 64))
    assert count_parameters(model) == 23_528_522  # 25,557,032 for 1000 classes minus 990*(2048 + 1)
    grey = build_model("resnet50_imagenet", num_classes=10, input_shape=(1, 64, 64))
    assert grey.conv1.in_channels == 1
    assert grey(torch.randn(2, 1, 64, 64)).shape == (2, 10)


def test_an_unknown_target_is_named():
    with pytest.raises(UserError, match=r"model._target_=dst_cli.models.vgg.build_vgg11 cannot be imported"):
        build_from_node({"_target_": "dst_cli.models.vgg.build_vgg11"}, num_classes=10, input_shape=(3, 32, 32))


def test_a_target_that_is_not_a_module_is_refused():
    with pytest.raises(UserError, match=r"model._target_=builtins.dict returned dict; allowed: an nn.Module"):
        build_from_node({"_target_": "builtins.dict"}, num_classes=10, input_shape=(3, 32, 32))


def test_num_classes_and_input_shape_are_passed_only_when_accepted():
    linear = build_from_node({"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 2}, 10, (4,))
    assert (linear.in_features, linear.out_features) == (4, 2)


@pytest.mark.parametrize("name, min_size", [("vgg19", 16), ("vgg16", 16), ("cnn", 2)])
def test_input_below_minimum_is_rejected_and_minimum_works(name, min_size):
    channels = SMALL_INPUT[name][0]
    too_small = min_size - 1
    with pytest.raises(UserError, match=f"{name} needs inputs of at least {min_size}x{min_size} pixels, got "
                                        f"{too_small}x{min_size}"):
        build_model(name, num_classes=10, input_shape=(channels, too_small, min_size))
    model = build_model(name, num_classes=10, input_shape=(channels, min_size, min_size))
    assert model(torch.randn(2, channels, min_size, min_size)).shape == (2, 10)


@pytest.mark.parametrize("name", ["mlp", "resnet18", "resnet50_imagenet"])
def test_models_without_a_size_limit_run_on_one_pixel(name):
    channels = SMALL_INPUT[name][0]
    model = build_model(name, num_classes=10, input_shape=(channels, 1, 1))
    assert model(torch.randn(2, channels, 1, 1)).shape == (2, 10)


@pytest.mark.parametrize("width", [0.0, -0.5])
def test_non_positive_width_is_rejected(width):
    with pytest.raises(UserError, match=f"model.width={width} is invalid; allowed: a number > 0"):
        build_model("vgg19", num_classes=10, input_shape=(3, 32, 32), width=width)


def test_width_is_rejected_for_imagenet_resnet50():
    with pytest.raises(UserError, match="model.width is not an argument of "
                                        "dst_cli.models.imagenet.build_resnet50_imagenet"):
        build_model("resnet50_imagenet", num_classes=10, input_shape=(3, 64, 64), width=0.5)


def test_every_model_option_builds_its_model():
    for name in MODELS:
        node = option_node("model", name)
        assert node._target_.endswith(f".build_{name}")
        assert isinstance(build_from_node(node, 10, SMALL_INPUT[name]), nn.Module)


# About 2.5 s on an idle 2-core machine, several times that under load.
@pytest.mark.slow
def test_cnn_learns_digits_to_95_percent_in_five_epochs():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(0)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.2, random_state=0, stratify=labels
    )
    model = build_model("cnn", num_classes=10, input_shape=(1, 8, 8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(5):
        model.train()
        for batch in torch.randperm(len(train_x)).split(64):
            loss = nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_x).argmax(dim=1) == test_y).float().mean().item()
    assert accuracy >= 0.95
