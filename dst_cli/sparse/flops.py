"""FLOPs accounting for sparse networks, following the RigL paper (Evci et al. 2020, appendix H).

Only the prunable layers are counted (the same predicate as the masks, `is_prunable` by default): their
multiply-adds dominate the cost, and they are the layers whose cost shrinks with the mask. One multiply-add
counts as 2 FLOPs.
"""

import math

import torch
from torch import nn

from dst_cli.sparse.prunable import PRUNABLE_TYPES, Prunable, is_prunable, prunable_weights


def layer_flops(model: nn.Module, input_shape: tuple[int, ...], prunable: Prunable = is_prunable) -> dict[str, int]:
    """Dense forward FLOPs per sample of every prunable layer, keyed by its weight's parameter name.

    input_shape is the shape of one sample without the batch dimension, e.g. (3, 32, 32).
    The counts are measured with forward hooks on one dummy sample, so the output sizes of the
    convolutions are whatever the model really produces:
      conv (1d/2d/3d): 2 * prod(kernel) * c_in / groups * c_out * prod(output positions)
      linear:          2 * in_features * out_features (times any extra positions, e.g. tokens)
    A layer called several times in one forward pass is counted once per call.
    """
    weight_names = {id(weight): name for name, weight in prunable_weights(model, prunable).items()}
    flops = dict.fromkeys(weight_names.values(), 0)
    hooks = []
    for module_name, module in model.named_modules():
        if prunable(module_name, module):
            if not isinstance(module, PRUNABLE_TYPES):
                raise ValueError(
                    f"no FLOPs rule for '{module_name}' ({type(module).__name__}); FLOPs are counted for "
                    "Conv1d/2d/3d and Linear layers"
                )
            weight_name = weight_names[id(module.weight)]
            hooks.append(module.register_forward_hook(_flops_counter(flops, weight_name)))

    first_parameter = next(model.parameters())
    dummy = torch.zeros(1, *input_shape, device=first_parameter.device, dtype=first_parameter.dtype)
    # eval mode: batch norm cannot compute batch statistics from a single sample
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(dummy)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return flops


def _flops_counter(flops: dict[str, int], weight_name: str):
    def count(module: nn.Module, inputs, output: torch.Tensor) -> None:
        flops[weight_name] += _forward_flops(module, output)

    return count


def _forward_flops(module: nn.Module, output: torch.Tensor) -> int:
    """FLOPs of one forward call for a batch of one sample, given the call's output."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        macs_per_output = math.prod(module.kernel_size) * module.in_channels // module.groups
        return 2 * macs_per_output * output.numel()  # output.numel() = c_out * prod(output positions)
    positions = output.numel() // module.out_features
    return 2 * module.in_features * module.out_features * positions


def sparse_forward_flops(layer_flops: dict[str, int], densities: dict[str, float]) -> float:
    """f_S = sum_l d_l * F_l. Layers missing from densities have no mask and count as dense."""
    unknown = sorted(set(densities) - set(layer_flops))
    if unknown:
        raise ValueError(f"densities name layers that are not prunable layers of the model: {unknown}")
    return sum(flops * densities.get(name, 1.0) for name, flops in layer_flops.items())


def inference_flops_ratio(layer_flops: dict[str, int], densities: dict[str, float]) -> float:
    """Forward cost of the sparse network relative to the dense one: sum d_l F_l / sum F_l."""
    return sparse_forward_flops(layer_flops, densities) / sum(layer_flops.values())


def training_flops_ratio(
    layer_flops: dict[str, int],
    densities: dict[str, float],
    steps: int,
    dense_grad_steps: int,
    dense_grad_densities: dict[str, float] | None = None,
) -> float:
    """Training cost relative to dense training with the same number of steps (RigL accounting).

    With F_l the dense forward FLOPs of layer l, f_D = sum F_l and f_S = sum d_l F_l:
      - dense training costs 3 f_D per step: forward, backward w.r.t. inputs, backward w.r.t. weights;
      - a sparse training step costs 3 f_S;
      - a step that needs the dense weight gradient (a mask update of RigL / DST-EE; every step of SNFS)
        pays f_D instead of f_S for its weight-gradient pass: 2 f_S + f_D.
    densities: each layer's density averaged over the `steps` steps; dense_grad_densities: averaged over the
    `dense_grad_steps` steps that need the dense gradient (default: `densities`). Both averages make the ratio
    exact when densities change during a run (SparseEngine.training_flops_ratio keeps the sums):
      ratio = (3 steps f_S(mean) + dense_grad_steps (f_D - f_S(dense-grad mean))) / (3 steps f_D)
    With steps == 0 the ratio is the per-step one, f_S / f_D, so it is defined from the very start of a run.
    """
    if not 0 <= dense_grad_steps <= steps:
        raise ValueError(f"need 0 <= dense_grad_steps <= steps, got {dense_grad_steps} and {steps}")
    dense = float(sum(layer_flops.values()))
    sparse = sparse_forward_flops(layer_flops, densities)
    if steps == 0:
        return sparse / dense
    sparse_at_dense_grad = sparse_forward_flops(layer_flops, dense_grad_densities or densities)
    training_cost = 3 * steps * sparse + dense_grad_steps * (dense - sparse_at_dense_grad)
    return training_cost / (steps * 3 * dense)
