"""dst_cli.sparse: dynamic sparse training for any PyTorch model and training loop (torch only).

    engine = sparsify(model, optimizer, sparsity=0.9, total_steps=len(loader) * epochs, acq="ee")
    for inputs, targets in loader:
        optimizer.zero_grad()
        loss_fn(model(inputs), targets).backward()
        engine.step()   # mask update when due, optimizer.step(), inactive weights back to 0
"""
from dst_cli.sparse.acquisition import (
    Acquisition, ScoreContext, acquisition_names, make_acquisition, register_acquisition,
)
from dst_cli.sparse.api import check_layout, sparsify
from dst_cli.sparse.distribution import DISTRIBUTIONS, layer_densities
from dst_cli.sparse.engine import DDP_MODES, SparseEngine
from dst_cli.sparse.errors import MasksDiverged, SparseConfigError
from dst_cli.sparse.flops import inference_flops_ratio, layer_flops, training_flops_ratio
from dst_cli.sparse.init import INIT_INPUTS, Init, init_masks, init_names, make_init, register_init
from dst_cli.sparse.prunable import is_prunable, prunable_weights
from dst_cli.sparse.schedule import (
    DECAYS, ROUNDINGS, SCHEDULE_OPTIONS, SCHEDULE_PRESETS, UpdateSchedule, gradual_density, schedule_preset,
)

__all__ = [
    "Acquisition", "DDP_MODES", "DECAYS", "DISTRIBUTIONS", "INIT_INPUTS", "Init", "MasksDiverged",
    "ROUNDINGS", "SCHEDULE_OPTIONS", "SCHEDULE_PRESETS", "ScoreContext", "SparseConfigError", "SparseEngine",
    "UpdateSchedule", "acquisition_names", "check_layout", "gradual_density", "inference_flops_ratio",
    "init_masks", "init_names", "is_prunable", "layer_densities", "layer_flops", "make_acquisition",
    "make_init", "prunable_weights", "register_acquisition", "register_init", "schedule_preset", "sparsify",
    "training_flops_ratio",
]
