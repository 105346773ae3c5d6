"""Models are plug-ins: `model._target_` names any nn.Module class or factory (the built-ins live in this
package: conf/model/*.yaml); `num_classes` and `input_shape` are passed when it has such parameters."""
from collections.abc import Mapping

from torch import nn

from dst_cli.config import call_plugin
from dst_cli.errors import UserError


def build_model(cfg: Mapping, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A freshly initialised model from the model node `cfg`; input_shape is the shape of one example."""
    model = call_plugin("model", cfg, num_classes=num_classes, input_shape=tuple(input_shape))
    if not isinstance(model, nn.Module):
        raise UserError(f"model._target_={cfg['_target_']} returned {type(model).__name__}; allowed: an nn.Module")
    return model
