"""The model zoo: build_model(name, ...) is the single entry point the trainer uses."""

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from dst_cli.errors import UserError
from dst_cli.models import vgg
from dst_cli.models.digits import CNN_MIN_INPUT_SIZE, build_cnn, build_mlp
from dst_cli.models.imagenet import build_resnet50_imagenet
from dst_cli.models.resnet import build_resnet


@dataclass(frozen=True)
class ModelSpec:
    # Called as builder(num_classes, input_shape, width), or without width when scales_width is False.
    builder: Callable[..., nn.Module]
    min_input_size: int
    scales_width: bool = True


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(build_mlp, min_input_size=1),
    "cnn": ModelSpec(build_cnn, min_input_size=CNN_MIN_INPUT_SIZE),
    "vgg16": ModelSpec(partial(vgg.build_vgg, 16), min_input_size=vgg.MIN_INPUT_SIZE),
    "vgg19": ModelSpec(partial(vgg.build_vgg, 19), min_input_size=vgg.MIN_INPUT_SIZE),
    "resnet18": ModelSpec(partial(build_resnet, 18), min_input_size=1),
    "resnet34": ModelSpec(partial(build_resnet, 34), min_input_size=1),
    "resnet50": ModelSpec(partial(build_resnet, 50), min_input_size=1),
    "resnet50_imagenet": ModelSpec(build_resnet50_imagenet, min_input_size=1, scales_width=False),
}


def build_model(name: str, num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """A freshly initialised model; input_shape is (channels, height, width) of one example."""
    spec = lookup_model(name)
    check_width(name, spec, width)
    check_input_size(name, spec, input_shape)
    if spec.scales_width:
        return spec.builder(num_classes, tuple(input_shape), width)
    return spec.builder(num_classes, tuple(input_shape))


def lookup_model(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown model '{name}'; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def check_width(name: str, spec: ModelSpec, width: float) -> None:
    if width <= 0:
        raise UserError(f"model.width must be > 0, got {width}")
    if not spec.scales_width and width != 1.0:
        raise UserError(f"model '{name}' has no width setting; model.width must be 1.0, got {width}")


def check_input_size(name: str, spec: ModelSpec, input_shape: tuple[int, int, int]) -> None:
    _, height, width_pixels = input_shape
    if min(height, width_pixels) < spec.min_input_size:
        raise UserError(
            f"model '{name}' needs inputs of at least {spec.min_input_size}x{spec.min_input_size} pixels, "
            f"got {height}x{width_pixels}"
        )
