"""Small networks for tiny inputs such as the 8x8 sklearn digits."""

import math

from torch import nn

from dst_cli.models.common import check_input_size, check_width, init_weights, scale_channels

# The single 2x2 max-pool needs at least 2x2 pixels.
CNN_MIN_INPUT_SIZE = 2


def build_mlp(num_classes: int, input_shape: tuple[int, ...], width: float = 1.0) -> nn.Module:
    """An MLP for any input shape: flatten -> 256 -> 128 -> classes, ReLU between.

    width: width factor of the two hidden layers
    """
    check_width(width)
    hidden1 = scale_channels(256, width)
    hidden2 = scale_channels(128, width)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden1),
        nn.ReLU(inplace=True),
        nn.Linear(hidden1, hidden2),
        nn.ReLU(inplace=True),
        nn.Linear(hidden2, num_classes),
    )
    init_weights(model)
    return model


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # No conv bias: the batch norm that follows has its own shift.
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def build_cnn(num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """A small CNN: conv 32, conv 64, max-pool 2, conv 128, global average pool, linear (3x3 convs + BN + ReLU).

    width: channel width factor
    """
    check_width(width)
    check_input_size("cnn", input_shape, CNN_MIN_INPUT_SIZE)
    channels1, channels2, channels3 = (scale_channels(c, width) for c in (32, 64, 128))
    model = nn.Sequential(
        *conv_bn_relu(input_shape[0], channels1),
        *conv_bn_relu(channels1, channels2),
        nn.MaxPool2d(kernel_size=2, stride=2),
        *conv_bn_relu(channels2, channels3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels3, num_classes),
    )
    init_weights(model)
    return model
