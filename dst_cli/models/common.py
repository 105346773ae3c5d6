"""Helpers shared by our own (non-torchvision) models: weight init and width scaling."""

from torch import nn


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal conv/linear weights, zero biases, identity batch norm (as the CIFAR DST codes do)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def scale_channels(channels: int, width: float) -> int:
    """Channel count multiplied by the width factor, rounded, never below 1."""
    return max(1, round(channels * width))
