"""Where the sparsity goes: how many weights of each prunable layer stay active.

`erk` (Erdos-Renyi-Kernel), `er` (Erdos-Renyi) and `uniform`, as in RigL (Evci et al. 2020):
- erk / er: every sparse layer gets density eps * scale(layer); eps is chosen so that the active weights add
  up to the global budget, and a layer whose density would exceed 1 is made dense and eps is re-solved
  (rigl/sparse_utils.py:90-207).
- uniform: every layer not kept dense has exactly the target density (rigl/sparse_utils.py:210-235); RigL
  keeps the first layer dense unless told otherwise (imagenet_train_eval.py:247, 519-525), so `sparsify`
  does too for `uniform` by default, and the global density is then a little above the target.
"""
import math
from typing import Literal, get_args

from dst_cli.sparse.errors import SparseConfigError

Distribution = Literal["erk", "er", "uniform"]
DISTRIBUTIONS = get_args(Distribution)


def density_scale(shape: tuple[int, ...], distribution: str) -> float:
    """Relative density of an erk/er layer of `shape` = (out, in, *kernel) before normalisation."""
    dims = shape[:2] if distribution == "er" else shape
    return sum(dims) / math.prod(dims)


def layer_densities(
    shapes: dict[str, tuple[int, ...]],
    density: float,
    distribution: str,
    dense_layers: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Per-layer densities: `dense_layers` at 1; erk/er: the rest share the budget `density` of all weights;
    uniform: the rest at exactly `density`."""
    if distribution == "uniform":
        return {name: 1.0 if name in dense_layers else density for name in shapes}
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    budget_total = density * sum(numel.values())
    dense = set(dense_layers)
    while True:
        sparse = [name for name in shapes if name not in dense]
        budget = budget_total - sum(numel[name] for name in dense)
        if budget < 0:
            raise SparseConfigError(
                "sparsity",
                f"density {density:g} is below what the dense layers ({', '.join(sorted(dense))}) alone hold; "
                "lower the sparsity or let those layers be sparse",
            )
        if not sparse:
            return {name: 1.0 for name in shapes}
        scale = {name: density_scale(shapes[name], distribution) for name in sparse}
        eps = budget / sum(scale[name] * numel[name] for name in sparse)
        too_dense = {name for name in sparse if eps * scale[name] > 1.0}
        if not too_dense:
            return {name: 1.0 if name in dense else eps * scale[name] for name in shapes}
        dense |= too_dense


def active_counts(shapes: dict[str, tuple[int, ...]], densities: dict[str, float]) -> dict[str, int]:
    """Exact number of active weights per layer: the density rounded, at least one weight."""
    return {
        name: min(math.prod(shape), max(1, round(densities[name] * math.prod(shape))))
        for name, shape in shapes.items()
    }
