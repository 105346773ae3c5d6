"""Every method of the paper table completes the quickstart (2 epochs, an update every 5 steps) with the exact
number of active weights its plan gives: the distribution's per-layer counts, kept by the fixed-count methods
layer by layer and by SNFS / DSR / scored inits in total, or GraNet's final gradual-pruning count."""
import math

import pytest

from dst_cli.sparse.distribution import active_counts, layer_densities
from dst_cli.build import train

from test_presets import one_thread  # noqa: F401  (autouse: these runs are tiny)

pytestmark = pytest.mark.slow

QUICK = ("experiment=quickstart", "trainer.epochs=2", "schedule.update_interval=5", "trainer.progress=none",
         "trainer.checkpoint=false")
FIXED_LAYER_COUNTS = ("ee", "rigl", "set", "random", "static", "mest")
METHODS = {
    **{acq: (f"acq={acq}",) for acq in (*FIXED_LAYER_COUNTS, "snfs", "dsr")},
    "granet": ("acq=rigl", "schedule=gradual"),
    **{f"{init}+{acq}": (f"init={init}", f"acq={acq}") for init in ("snip", "grasp", "synflow")
       for acq in ("static", "rigl")},
}


@pytest.mark.parametrize("method", METHODS)
def test_method_completes_the_quickstart_with_its_exact_budget(method, make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, *METHODS[method])
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] == "completed" and summary["steps"] == 2 * 19
    layers = summary["layers"]
    shapes = {name: tuple(layer["shape"]) for name, layer in layers.items()}
    numel = sum(layer["numel"] for layer in layers.values())
    active = {name: layer["active"] for name, layer in layers.items()}
    planned = active_counts(shapes, layer_densities(shapes, 1 - cfg.sparsity, "erk"))
    if method == "granet":  # pruned from density 0.5 to floor(numel * 0.1) by the update at step 30 >= 0.6875 * 38
        assert sum(active.values()) == math.floor(numel * 0.1 + 1e-6)
    elif method in FIXED_LAYER_COUNTS:
        assert active == planned
    else:  # SNFS / DSR move counts between layers, scored inits cut globally
        assert sum(active.values()) == sum(planned.values()) and active != planned
    share = sum(active.values()) / numel
    assert share == pytest.approx(0.1, abs=1e-3)
    # measured from the weights: a weight grown at the last update after the optimizer step may still be 0
    assert share - 0.01 < summary["density"] <= share
    assert summary["train_flops_ratio"] > 0 and summary["inference_flops_ratio"] > 0
