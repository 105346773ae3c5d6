"""The README's own-loop example (examples/own_loop.py) runs and keeps the exact requested per-layer counts."""
import importlib.util
from pathlib import Path

import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_loop.py"


def load_example():
    spec = importlib.util.spec_from_file_location("own_loop", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_loop_example_trains_to_the_exact_requested_counts(capsys):
    model, engine = load_example().main(epochs=2)
    # ERK at 90% of 8464 weights (budget 846.4): the last layer's share exceeds 1, so it is dense (192);
    # eps = (846.4 - 192) / (22 + 192) with scales conv (16+1+5)/80, linear (64+128)/8192:
    # conv 80 * eps * 22/80 = 67.27 -> 67, linear 8192 * eps * 192/8192 = 587.1 -> 587
    expected = {"features.0.weight": 67, "classifier.1.weight": 587, "classifier.3.weight": 192}
    weights = dict(model.named_parameters())
    assert {name: int(mask.sum()) for name, mask in engine.masks_by_name().items()} == expected
    assert {name: int(torch.count_nonzero(weights[name])) for name in expected} == expected
    assert engine.updates_done == 3  # 2 epochs x 16 batches, every 10 steps: 10, 20, 30
    printed = capsys.readouterr().out
    assert "classifier.1.weight      587 of  8192 active" in printed
    assert "epoch 2: accuracy " in printed and ", 3 updates in 32 steps" in printed
    assert "SparseEngine(3 layers, 846/8464 weights active" in printed and "backend=masked" in printed
