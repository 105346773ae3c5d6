"""Which weights are sparse: the one prunable predicate, used by the masks and the FLOPs count alike."""
from collections.abc import Callable

from torch import nn

from dst_cli.sparse.errors import SparseConfigError

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

Prunable = Callable[[str, nn.Module], bool]


def is_prunable(name: str, module: nn.Module) -> bool:
    """The default: the weight of every Conv1d/2d/3d and Linear layer; biases and norm layers stay dense."""
    return isinstance(module, PRUNABLE_TYPES)


def prunable_weights(model: nn.Module, prunable: Prunable = is_prunable) -> dict[str, nn.Parameter]:
    """`{"<module>.weight": weight}` of every module `prunable(name, module)` selects, in module order.

    A weight shared by several modules is listed once, under its first name.
    """
    weights: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        if not prunable(module_name, module):
            continue
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter):
            raise SparseConfigError(
                "prunable",
                f"prunable selected module '{module_name}' ({type(module).__name__}), which has no weight "
                "parameter; allowed: modules with a `weight` nn.Parameter",
            )
        if id(weight) not in seen:
            seen.add(id(weight))
            weights[f"{module_name}.weight" if module_name else "weight"] = weight
    return weights
