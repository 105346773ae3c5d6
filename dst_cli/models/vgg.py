"""CIFAR VGG with batch norm, as in the GraSP / ITOP / GraNet code.

Convs have no bias (batch norm follows each one); after the features comes global average
pooling and a single Linear(512, classes). VGG19 for 10 classes has 20,035,018 parameters.
"""

from collections import OrderedDict

from torch import nn

from dst_cli.models.common import check_input_size, check_width, init_weights, scale_channels

MAX_POOL = "M"

LAYER_PLANS = {
    16: [64, 64, MAX_POOL, 128, 128, MAX_POOL, 256, 256, 256, MAX_POOL,
         512, 512, 512, MAX_POOL, 512, 512, 512],
    19: [64, 64, MAX_POOL, 128, 128, MAX_POOL, 256, 256, 256, 256, MAX_POOL,
         512, 512, 512, 512, MAX_POOL, 512, 512, 512, 512],
}

# Four 2x2 max-pools: a 16x16 input leaves a 1x1 feature map.
MIN_INPUT_SIZE = 16


def build_features(plan: list, in_channels: int, width: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for entry in plan:
        if entry == MAX_POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out_channels = scale_channels(entry, width)
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    return nn.Sequential(*layers)


def build_vgg(depth: int, num_classes: int, input_shape: tuple[int, int, int], width: float) -> nn.Module:
    """VGG16 or VGG19 (depth) for CIFAR-sized inputs."""
    check_width(width)
    check_input_size(f"vgg{depth}", input_shape, MIN_INPUT_SIZE)
    plan = LAYER_PLANS[depth]
    model = nn.Sequential(OrderedDict(
        features=build_features(plan, input_shape[0], width),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        classifier=nn.Linear(scale_channels(plan[-1], width), num_classes),
    ))
    init_weights(model)
    return model


def build_vgg16(num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """CIFAR VGG-16 with batch norm (GraSP / ITOP / GraNet code).

    width: channel width factor (scales every layer's channels)
    """
    return build_vgg(16, num_classes, input_shape, width)


def build_vgg19(num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """CIFAR VGG-19 with batch norm (GraSP / ITOP / GraNet code).

    width: channel width factor (scales every layer's channels)
    """
    return build_vgg(19, num_classes, input_shape, width)
