"""Rules every acquisition function obeys through sparsify(), over acq x sparsity x layer shape x optimizer."""
import pytest
import torch
from torch import nn

from dst_cli.sparse import acquisition_names, prunable_weights, sparsify

ACQ_OPTIONS = {"ee": {"c": 1e-2, "eps": 1.0, "bonus": "log"}, "rigl": {}, "set": {}, "random": {}, "static": {}}
SHAPES = {"linear": (24, 40), "conv": (8, 6, 3, 3)}


def layer_model(shape) -> nn.Module:
    if len(shape) == 2:
        return nn.Linear(shape[1], shape[0], bias=False)
    return nn.Conv2d(shape[1], shape[0], shape[2:], bias=False)


def make_engine(shape, sparsity, acq="rigl", optimizer_name="sgd", seed=0, **overrides):
    """One prunable layer with optimizer state everywhere and a fresh dense gradient, ready for an update."""
    torch.manual_seed(seed)
    model = layer_model(shape)
    weight = model.weight
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    else:
        optimizer = torch.optim.AdamW([weight], lr=0.01, weight_decay=5e-4)
    options = dict(update_interval=100, drop_fraction=0.3, decay="constant", rounding="round")
    engine = sparsify(model, optimizer, sparsity=sparsity, total_steps=1000, acq=acq,
                      acq_options=ACQ_OPTIONS.get(acq), seed=seed, **{**options, **overrides})
    weight.grad = torch.randn(shape)
    optimizer.step()  # populate momentum / Adam moments everywhere, inactive weights included
    engine.masks.apply()
    weight.grad = torch.randn(shape)
    return engine, weight, optimizer


@pytest.mark.parametrize("acq_name", list(ACQ_OPTIONS))
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
@pytest.mark.parametrize("regrow_dropped", [True, False])
def test_update_invariants(acq_name, sparsity, shape, optimizer_name, regrow_dropped):
    engine, weight, optimizer = make_engine(shape, sparsity, acq_name, optimizer_name, regrow_dropped=regrow_dropped)
    count = engine.counts[0]
    before = engine.masks.masks[0].clone()
    values_before = weight.detach().clone()
    state_before = {k: v.clone() for k, v in optimizer.state[weight].items() if v.shape == weight.shape}
    if engine.is_update_step(100):
        engine.update(100)
    after = engine.masks.masks[0]
    dropped, grown = before & ~after, after & ~before
    k = min(round(0.3 * count), weight.numel() - count) if engine.acq.updates_topology else 0
    assert int(after.sum()) == count == engine.counts[0]
    assert engine.masks.multipliers[0].dtype == torch.uint8 and torch.equal(engine.masks.multipliers[0], after.to(torch.uint8))
    if regrow_dropped:  # a just-dropped weight may come back: at most k change, as many in as out
        assert int(dropped.sum()) == int(grown.sum()) <= k
    else:
        assert int(dropped.sum()) == int(grown.sum()) == k
    # entering weights start at zero with zeroed optimizer state; dropped weights become zero;
    # weights active before and after keep value and state
    assert torch.all(weight[grown] == 0) and torch.all(weight[dropped] == 0)
    stayed = before & after
    assert torch.equal(weight.detach()[stayed], values_before[stayed])
    for key, state in state_before.items():
        assert torch.all(optimizer.state[weight][key][grown] == 0)
        assert torch.equal(optimizer.state[weight][key][stayed], state[stayed])
    # after the next engine step (optimizer step with momentum and weight decay), inactive weights are exactly 0
    engine.step()
    assert torch.all(weight[~after] == 0)
    assert int(torch.count_nonzero(weight)) <= count


@pytest.mark.parametrize("acq_name", ["ee", "rigl", "set"])
def test_drop_removes_the_smallest_magnitudes(acq_name):
    engine, weight, _ = make_engine((24, 40), 0.9, acq_name, drop_fraction=0.25, regrow_dropped=False)
    count = engine.counts[0]
    before = engine.masks.masks[0].clone()
    active_values = weight[before].abs().sort().values
    engine.update(100)
    k = round(0.25 * count)
    dropped = before & ~engine.masks.masks[0]
    assert int(dropped.sum()) == k
    assert torch.all(weight.detach()[before & engine.masks.masks[0]].abs() >= active_values[k - 1])


def test_rigl_grows_the_largest_dense_gradients_among_previously_inactive():
    engine, weight, _ = make_engine((24, 40), 0.9, "rigl", regrow_dropped=False)
    before = engine.masks.masks[0].clone()
    grad = weight.grad.clone()
    engine.update(100)
    k = round(0.3 * engine.counts[0])
    expected = torch.topk(grad.abs().masked_fill(before, -1).flatten(), k).indices
    grown = (engine.masks.masks[0] & ~before).flatten().nonzero().flatten()
    assert set(grown.tolist()) == set(expected.tolist())


def test_rigl_with_regrowth_grows_the_largest_gradients_among_all_not_kept():
    engine, weight, _ = make_engine((24, 40), 0.9, "rigl")
    before = engine.masks.masks[0].clone()
    k = round(0.3 * engine.counts[0])
    kept_scores = weight.detach().abs().masked_fill(~before, float("inf")).flatten()
    kept = before.flatten().clone()
    kept[torch.topk(kept_scores, k, largest=False).indices] = False
    expected = kept.clone()
    expected[torch.topk(weight.grad.abs().flatten().masked_fill(kept, -1), k).indices] = True
    engine.update(100)
    assert torch.equal(engine.masks.masks[0].flatten(), expected)


def test_random_growth_is_reproducible_from_the_seed():
    def grown(seed):
        engine, _, _ = make_engine((24, 40), 0.9, "set")
        engine.generator.manual_seed(seed)
        before = engine.masks.masks[0].clone()
        engine.update(100)
        return engine.masks.masks[0] & ~before

    assert torch.equal(grown(3), grown(3))
    assert not torch.equal(grown(3), grown(4))


def test_active_steps_count_training_steps_lazily_and_explored_share():
    engine, _, _ = make_engine((10, 10), 0.5, "ee", drop_fraction=0.5)
    masks = engine.masks
    first = masks.masks[0].clone()
    engine.update(40)
    assert torch.equal(masks.active_steps[0], first.int() * 40)
    second = masks.masks[0].clone()
    masks.count_active_steps(100)
    assert torch.equal(masks.active_steps[0], first.int() * 40 + second.int() * 60)
    assert engine.stats()["explored"] == pytest.approx(float((first | second).sum()) / 100)


def test_only_ee_keeps_active_step_counters():
    assert make_engine((10, 10), 0.5, "ee")[0].masks.active_steps is not None
    assert make_engine((10, 10), 0.5, "rigl")[0].masks.active_steps is None


def test_turnover_is_the_share_of_active_weights_new_since_mark_epoch():
    engine, _, _ = make_engine((10, 10), 0.5, "set", drop_fraction=0.5, regrow_dropped=False)
    engine.mark_epoch()
    start = engine.masks.masks[0].clone()
    assert engine.stats()["turnover"] == 0.0
    engine.update(100)
    assert engine.stats()["turnover"] == pytest.approx(float((engine.masks.masks[0] & ~start).sum()) / 50)
    assert engine.stats()["turnover"] == pytest.approx(25 / 50)


def test_prunable_weights_are_conv_and_linear_weights_in_order():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Conv3d(4, 2, 1), nn.Flatten(), nn.Linear(4, 2))
    assert list(prunable_weights(model)) == ["0.weight", "2.weight", "4.weight"]


def test_channels_last_weights_keep_exact_counts_and_zeros():
    torch.manual_seed(0)
    model = nn.Conv2d(6, 8, 3, bias=False).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.9, total_steps=1000, acq="rigl", drop_fraction=0.3,
                      decay="constant", regrow_dropped=False, rounding="round")
    masks = engine.masks
    assert masks.masks[0].is_contiguous(memory_format=torch.channels_last)
    count = engine.counts[0]
    before = masks.masks[0].clone()
    model.weight.grad = torch.randn(model.weight.shape)
    engine.update(100)
    after = masks.masks[0]
    assert int(after.sum()) == count
    assert int((after & ~before).sum()) == int((before & ~after).sum()) == round(0.3 * count)
    assert torch.all(model.weight[~after] == 0)


def test_every_builtin_is_registered():
    assert set(ACQ_OPTIONS) <= set(acquisition_names())
