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


def check_width(width: float) -> None:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"model.width={width} is invalid; allowed: a number > 0")


def check_input_size(model: str, input_shape: tuple[int, ...], minimum: int) -> None:
    """Image models whose pooling needs at least minimum x minimum pixels."""
    height, width_pixels = input_shape[-2:]
    if min(height, width_pixels) < minimum:
        raise ValueError(f"{model} needs inputs of at least {minimum}x{minimum} pixels, got {height}x{width_pixels}")
