"""Rules every acquisition function obeys, over acq x sparsity x layer shape."""
import pytest
import torch

from dst_cli.sparse.acquisition import build_acquisition
from dst_cli.sparse.masks import SparseMasks, prunable_weights

ACQ_OPTIONS = {"ee": {"c": 1e-2, "eps": 1.0, "bonus": "log"}, "rigl": {}, "set": {}, "random": {}, "static": {}}
SHAPES = {"linear": (24, 40), "conv": (8, 6, 3, 3)}


def make_layer(shape, sparsity, optimizer_name="sgd", seed=0):
    torch.manual_seed(seed)
    weight = torch.nn.Parameter(torch.randn(shape))
    count = round((1 - sparsity) * weight.numel())
    masks = SparseMasks({"w": weight}, {"w": count}, torch.Generator().manual_seed(seed))
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    else:
        optimizer = torch.optim.AdamW([weight], lr=0.01, weight_decay=5e-4)
    weight.grad = torch.randn(shape)
    optimizer.step()  # populate momentum / Adam moments everywhere, inactive weights included
    masks.apply()
    weight.grad = torch.randn(shape)
    return weight, masks, optimizer, count


@pytest.mark.parametrize("acq_name", list(ACQ_OPTIONS))
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_update_invariants(acq_name, sparsity, shape, optimizer_name):
    weight, masks, optimizer, count = make_layer(shape, sparsity, optimizer_name)
    acq = build_acquisition(acq_name, torch.Generator().manual_seed(1), **ACQ_OPTIONS[acq_name])
    before = masks.masks[0].clone()
    drop_fraction = 0.3
    if acq.updates_topology:
        masks.update(step=100, drop_fraction=drop_fraction, acq=acq, optimizer=optimizer)
    after = masks.masks[0]
    dropped, grown = before & ~after, after & ~before
    k = min(round(drop_fraction * count), weight.numel() - count) if acq.updates_topology else 0
    # exactly k dropped and k grown (a just-dropped weight regrown would make both counts smaller)
    assert int(after.sum()) == count
    assert torch.equal(masks.multipliers[0], after.float())
    assert int(dropped.sum()) == k
    assert int(grown.sum()) == k
    # grown weights start at zero with zeroed optimizer state; so do dropped weights' values
    assert torch.all(weight[grown] == 0)
    assert torch.all(weight[dropped] == 0)
    for state in optimizer.state[weight].values():
        if state.shape == weight.shape:
            assert torch.all(state[grown] == 0)
            assert torch.any(state[after & ~grown] != 0)
    # after an optimizer step with momentum and weight decay, inactive weights are exactly zero
    optimizer.step()
    masks.apply()
    assert torch.all(weight[~after] == 0)
    assert int(torch.count_nonzero(weight)) <= count


@pytest.mark.parametrize("acq_name", ["ee", "rigl", "set"])
def test_drop_removes_the_smallest_magnitudes(acq_name):
    weight, masks, optimizer, count = make_layer((24, 40), 0.9)
    before = masks.masks[0].clone()
    active_values = weight[before].abs().sort().values
    acq = build_acquisition(acq_name, torch.Generator().manual_seed(1), **ACQ_OPTIONS[acq_name])
    masks.update(100, 0.25, acq, optimizer)
    k = round(0.25 * count)
    dropped = before & ~masks.masks[0]
    assert int(dropped.sum()) == k
    threshold = active_values[k - 1]
    assert torch.all(weight.detach()[before & masks.masks[0]].abs() >= threshold)


def test_rigl_grows_the_largest_dense_gradients_among_previously_inactive():
    weight, masks, optimizer, count = make_layer((24, 40), 0.9)
    before = masks.masks[0].clone()
    grad = weight.grad.clone()
    acq = build_acquisition("rigl", torch.Generator())
    masks.update(100, 0.3, acq, optimizer)
    k = round(0.3 * count)
    expected = torch.topk(grad.abs().masked_fill(before, -1).flatten(), k).indices
    grown = (masks.masks[0] & ~before).flatten().nonzero().flatten()
    assert set(grown.tolist()) == set(expected.tolist())


def test_random_growth_is_reproducible_from_the_seed():
    def grown(seed):
        weight, masks, optimizer, _ = make_layer((24, 40), 0.9)
        before = masks.masks[0].clone()
        masks.update(100, 0.3, build_acquisition("set", torch.Generator().manual_seed(seed)), optimizer)
        return masks.masks[0] & ~before

    assert torch.equal(grown(3), grown(3))
    assert not torch.equal(grown(3), grown(4))


def test_active_steps_count_training_steps_lazily():
    weight, masks, optimizer, count = make_layer((10, 10), 0.5)
    first = masks.masks[0].clone()
    masks.update(40, 0.5, build_acquisition("set", torch.Generator().manual_seed(0)), optimizer)
    assert torch.equal(masks.active_steps[0], first.int() * 40)
    second = masks.masks[0].clone()
    masks.count_active_steps(100)
    assert torch.equal(masks.active_steps[0], first.int() * 40 + second.int() * 60)
    assert masks.explored_share() == pytest.approx(float((first | second).sum()) / 100)


def test_state_dict_round_trip():
    weight, masks, optimizer, count = make_layer((10, 10), 0.5)
    masks.update(40, 0.5, build_acquisition("set", torch.Generator().manual_seed(0)), optimizer)
    state = masks.state_dict()
    _, other, _, _ = make_layer((10, 10), 0.5, seed=7)
    other.load_state_dict(state)
    assert torch.equal(other.masks[0], masks.masks[0])
    assert torch.equal(other.active_steps[0], masks.active_steps[0])
    assert other.counted_until == 40


def test_prunable_weights_are_conv_and_linear_weights_in_order():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )
    assert list(prunable_weights(model)) == ["0.weight", "3.weight"]


def test_channels_last_weights_keep_exact_counts_and_zeros():
    weight, masks, optimizer, count = make_layer((8, 6, 3, 3), 0.9)
    weight.data = weight.data.contiguous(memory_format=torch.channels_last)
    cl_masks = SparseMasks({"w": weight}, {"w": count}, torch.Generator().manual_seed(0))
    assert cl_masks.masks[0].is_contiguous(memory_format=torch.channels_last)
    before = cl_masks.masks[0].clone()
    cl_masks.update(100, 0.3, build_acquisition("rigl", torch.Generator()), optimizer)
    after = cl_masks.masks[0]
    assert int(after.sum()) == count
    assert int((after & ~before).sum()) == int((before & ~after).sum()) == round(0.3 * count)
    assert torch.all(weight[~after] == 0)
