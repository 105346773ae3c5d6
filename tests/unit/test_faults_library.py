"""Faults of the library found in review (issue 18): a mask update without gradients, a half-applied
load_state_dict, GraNet's pruning window gating every topology change."""
import pytest
import torch
from torch import nn

from dst_cli.sparse import sparsify


def two_layers(out_features=5, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, out_features))


def backward(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(8, 10, generator=generator)
    targets = torch.randint(0, model[2].out_features, (8,), generator=generator)
    nn.functional.cross_entropy(model(inputs), targets).backward()


def clone(value):
    """A deep copy of nested dicts / lists / tensors (the state_dicts hold live tensors)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {key: clone(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clone(item) for item in value]
    return value


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def snapshot(model, optimizer, engine) -> dict:
    """Everything an engine call could change: the engine's full state (masks, flags, counters, generator),
    its multipliers and densities, the model's parameters and the optimizer's state."""
    return clone({
        "engine": engine.state_dict(),
        "multipliers": engine.masks.multipliers,
        "densities": engine.densities,
        "counts": engine.counts,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
    })


# ----- 1. a mask update without gradients is refused before anything changes -----

@pytest.mark.parametrize(("acq", "schedule"), [("rigl", "itop"), ("set", "itop"), ("ee", "rigl"), ("snfs", "itop")])
def test_an_update_without_gradients_is_refused_and_changes_nothing(acq, schedule):
    model = two_layers()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.8, total_steps=100, acq=acq, schedule=schedule, update_interval=2)
    first_update = 0 if schedule == "rigl" else 2  # rigl: update_at_step0, before the optimizer step
    for _ in range(first_update - 1):  # the iterations before the one that updates, with backward passes
        optimizer.zero_grad()
        backward(model)
        engine.step()
    optimizer.zero_grad()  # set_to_none: no gradient at all, as without a backward pass
    before = snapshot(model, optimizer, engine)
    with pytest.raises(ValueError) as error:
        engine.step()
    assert str(error.value) == (
        f"engine.step() at optimizer step {first_update} runs a mask update, but layers 0.weight, 2.weight have "
        "no gradient (.grad is None); allowed: call loss.backward() before engine.step() (nothing was changed)")
    assert same(snapshot(model, optimizer, engine), before)
    assert engine.step_count == max(first_update - 1, 0) and engine.updates_done == 0
    # with the backward pass the same iteration runs its update
    backward(model)
    engine.step()
    assert engine.updates_done == 1


def test_one_layer_without_a_gradient_is_named_and_steps_without_a_topology_change_need_none():
    model = two_layers()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.8, total_steps=100, acq="rigl", update_interval=2)
    engine.step()  # optimizer step 1: no update due, no gradient needed (the optimizer skips grad-less weights)
    assert engine.step_count == 1 and engine.updates_done == 0
    backward(model)
    model[2].weight.grad = None
    before = snapshot(model, optimizer, engine)
    with pytest.raises(ValueError, match=r"but layer 2\.weight has no gradient \(\.grad is None\)"):
        engine.step()
    assert same(snapshot(model, optimizer, engine), before)
    # an update that only prunes (acq=static with gradual pruning) reads |w| alone: no gradient needed;
    # the window is [0, int(0.6875 * 40) = 27]: d(4) = 0.1 + 0.4 * (23/27)^3 = 0.34726 -> 104.18 -> 104
    model = two_layers()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.9, total_steps=40, acq="static", schedule="gradual",
                      update_interval=4, distribution="uniform", dense_first_layer=False)
    for _ in range(4):
        engine.step()
    assert engine.updates_done == 1 and sum(engine.counts) == int(300 * (0.1 + 0.4 * (23 / 27) ** 3)) == 104




# ----- 2. load_state_dict is all or nothing -----

def engine_pair(acq="rigl", out_features=5):
    """A trained engine (the one loaded into) and the state of another engine."""
    model = two_layers()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.8, total_steps=100, acq=acq, update_interval=2, seed=0)
    for seed in range(3):
        optimizer.zero_grad()
        backward(model, seed)
        engine.step()
    other_model = two_layers(out_features, seed=1)
    other_optimizer = torch.optim.SGD(other_model.parameters(), lr=0.1, momentum=0.9)
    other = sparsify(other_model, other_optimizer, sparsity=0.8, total_steps=100, acq=acq, update_interval=2, seed=1)
    return model, optimizer, engine, clone(other.state_dict())


def test_the_state_of_another_model_is_refused_and_changes_nothing():
    # the same layer names, the first layer of the same shape: the old code replaced its mask, then refused
    model, optimizer, engine, state = engine_pair(out_features=7)
    assert state["masks"]["0.weight"].shape == engine.mask("0.weight").shape
    assert not torch.equal(state["masks"]["0.weight"], engine.mask("0.weight"))
    before = snapshot(model, optimizer, engine)
    with pytest.raises(ValueError) as error:
        engine.load_state_dict(state)
    assert same(snapshot(model, optimizer, engine), before)
    assert str(error.value) == ("the state's masks of 2.weight is a torch.bool tensor of shape (7, 20); allowed: "
                                "a torch.bool tensor of shape (5, 20)")


def test_counts_that_disagree_with_the_masks_are_refused_and_change_nothing():
    model, optimizer, engine, state = engine_pair()
    state["counts"]["2.weight"] += 1
    before = snapshot(model, optimizer, engine)
    with pytest.raises(ValueError) as error:
        engine.load_state_dict(state)
    held = int(state["masks"]["2.weight"].sum())
    assert str(error.value) == (f"the state records {held + 1} active weights for 2.weight but its mask holds {held}; "
                                "allowed: a state whose counts match its masks")
    assert same(snapshot(model, optimizer, engine), before)


def without(state, key):
    return {k: v for k, v in state.items() if k != key}


BAD_STATES = [
    (lambda s: without(s, "generator"), "the state lacks generator"),
    (lambda s: without(s, "explored"), "the state lacks explored"),
    (lambda s: {**s, "explored": {**s["explored"], "2.weight": s["explored"]["2.weight"][:-1]}},
     "the state's explored of 2.weight is a torch.uint8 tensor of shape (12,); allowed: a torch.uint8 tensor of "
     "shape (13,)"),
    (lambda s: {**s, "epoch_start": {"0.weight": s["epoch_start"]["0.weight"]}},
     "the state's epoch_start are of layers ['0.weight']"),
    (lambda s: {**s, "active_steps": {n: torch.zeros(m.shape, dtype=torch.int32) for n, m in s["masks"].items()}},
     "the state holds N counters (active_steps); this engine's acquisition has no such counters"),
    (lambda s: {**s, "masks": {n: m.to(torch.uint8) for n, m in s["masks"].items()}},
     "the state's masks of 0.weight is a torch.uint8 tensor"),
    (lambda s: {**s, "active_sums": {"0.weight": 0}}, "the state's active_sums are of layers ['0.weight']"),
    (lambda s: {**s, "updates_done": -1}, "the state's updates_done=-1 is invalid; allowed: an integer >= 0"),
    (lambda s: {**s, "generator": torch.zeros(3, dtype=torch.uint8)}, "the state's generator state does not fit"),
]


@pytest.mark.parametrize(("corrupt", "message"), BAD_STATES)
def test_a_bad_state_is_refused_before_anything_changes(corrupt, message):
    model, optimizer, engine, state = engine_pair()
    before = snapshot(model, optimizer, engine)
    with pytest.raises(ValueError) as error:
        engine.load_state_dict(corrupt(state))
    assert same(snapshot(model, optimizer, engine), before)
    assert message in str(error.value) and "\n" not in str(error.value)
    engine.load_state_dict(state)  # the good state loads
    assert engine.masks_by_name().keys() == state["masks"].keys()
    assert all(torch.equal(engine.mask(n), m) for n, m in state["masks"].items())
    assert engine.counts == list(state["counts"].values()) and engine.step_count == state["step_count"]


def test_a_state_without_the_n_counters_is_refused_by_an_ee_engine():
    model, optimizer, engine, state = engine_pair(acq="ee")
    before = snapshot(model, optimizer, engine)
    with pytest.raises(ValueError, match=r"the state lacks N counters \(active_steps\); this engine's acquisition "
                                         r"needs such counters"):
        engine.load_state_dict({**state, "active_steps": None})
    assert same(snapshot(model, optimizer, engine), before)


# ----- 3. GraNet: no topology change before the pruning window opens -----

def test_gradual_pruning_changes_nothing_before_the_window_then_follows_the_cubic():
    # 10*20 + 20*5 = 300 weights; uniform 0.5 without a dense first layer: 100 + 50 = 150 active at the start.
    # 40 steps, updates every 4, window [0.2, 0.8] = steps [8, 32], final density 0.1:
    #   step 4 is before the window: no update at all (GraNet core.py:344);
    #   step 8 opens it: drop-and-grow only (the cubic still at 0.5: int(300 * 0.5) = 150);
    #   d(t) = 0.1 + 0.4 * (1 - (t - 8) / 24) ** 3:
    #   12: 0.1 + 0.4 * (5/6)^3 = 0.33148 -> 99.44 -> 99     16: 0.1 + 0.4 * (2/3)^3 = 0.21852 -> 65.56 -> 65
    #   20: 0.1 + 0.4 * (1/2)^3 = 0.15    -> 45             24: 0.1 + 0.4 * (1/3)^3 = 0.11481 -> 34.44 -> 34
    #   28: 0.1 + 0.4 * (1/6)^3 = 0.10185 -> 30.56 -> 30    32 and 36: the final 0.1 -> 30
    model = two_layers()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.9, total_steps=40, acq="rigl", schedule="gradual",
                      update_interval=4, prune_start_fraction=0.2, prune_end_fraction=0.8,
                      distribution="uniform", dense_first_layer=False)
    assert engine.counts == [100, 50]
    initial = engine.masks_by_name()
    totals, changed_at = {}, []
    for step in range(1, 41):
        masks = engine.masks_by_name()
        optimizer.zero_grad()
        backward(model, seed=step)
        engine.step()
        if any(not torch.equal(masks[n], m) for n, m in engine.masks_by_name().items()):
            changed_at.append(step)
        if engine.last_update_step == step:
            totals[step] = sum(engine.counts)
        if step < 8:
            assert all(torch.equal(initial[n], m) for n, m in engine.masks_by_name().items()), step
            assert engine.updates_done == 0
    assert changed_at[0] == 8 and engine.updates_done == 8
    assert totals == {8: 150, 12: 99, 16: 65, 20: 45, 24: 34, 28: 30, 32: 30, 36: 30}
    assert [int(m.sum()) for m in engine.masks.masks] == engine.counts
