"""Rules every acquisition function obeys through sparsify(), over acq x sparsity x layer shape x optimizer."""
import pytest
import torch
from torch import nn

from dst_cli.sparse import SparseEngine, acquisition_names, prunable_weights, sparsify
from dst_cli.sparse.masks import active_positions, finite_scores, lowest

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


@pytest.mark.parametrize("acq_name", ["rigl", "ee"])
def test_grow_among_equal_scores_takes_the_earlier_positions_as_the_drop_does(acq_name):
    """Equal grow scores (e.g. the equal gradients of inputs that are constant) go to the earlier positions, as in
    TF's top_k that RigL TF calls, whatever the other scores: torch.topk leaves ties to its implementation, and
    two runs whose other scores differ by rounding (another backend or thread count) then grew other weights."""
    engine, weight, _ = make_engine((24, 40), 0.9, acq_name, regrow_dropped=False)
    before = engine.masks.masks[0].clone()
    weight.grad = torch.ones_like(weight)  # every inactive weight ties (EE: N = 0 for all of them, too)
    engine.update(100)
    k = round(0.3 * engine.counts[0])
    grown = engine.masks.masks[0] & ~before
    earliest_inactive = (~before).flatten().nonzero().flatten()[:k]
    assert grown.flatten().nonzero().flatten().tolist() == earliest_inactive.tolist()


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


# ----- the drop ranks the active weights only (issue 12) -----

def all_weights_drop(flat_mask, scores, k):
    """The drop before issue 12: rank every weight of the layer, inactive ones last (+inf)."""
    return flat_mask & ~lowest(finite_scores(scores).masked_fill(~flat_mask, float("inf")), k)


def active_only_drop(flat_mask, scores, k):
    active = active_positions(flat_mask, int(flat_mask.sum()))
    kept = flat_mask.clone()
    kept.index_put_((active,), ~lowest(finite_scores(scores[active]), k))
    return kept


def test_lowest_is_the_stable_sort_order_with_ties_to_the_earlier_position():
    scores = torch.tensor([0.0, 2.0, 0.0, 1.0, 0.0, 1.0])
    assert lowest(scores, 2).tolist() == [True, False, True, False, False, False]
    assert lowest(scores, 4).tolist() == [True, False, True, True, True, False]
    assert not lowest(scores, 0).any() and lowest(scores, 6).all()


def test_active_only_drop_equals_the_all_weights_drop_on_random_cases_with_ties():
    generator = torch.Generator().manual_seed(0)
    for case in range(400):
        n = int(torch.randint(1, 300, (1,), generator=generator))
        mask = torch.rand(n, generator=generator) < float(torch.rand(1, generator=generator))
        if not mask.any():
            continue
        # few distinct values (many ties, zeros as for freshly grown weights), or continuous, or with NaN/inf
        kind = case % 3
        scores = torch.randint(0, 3, (n,), generator=generator).float() if kind == 0 else torch.randn(n, generator=generator)
        if kind == 2:
            scores[torch.rand(n, generator=generator) < 0.1] = float("nan")
            scores[torch.rand(n, generator=generator) < 0.1] = float("inf")
        active = int(mask.sum())
        k = int(torch.randint(0, active + 1, (1,), generator=generator))
        expected = all_weights_drop(mask, scores, k)
        assert torch.equal(active_only_drop(mask, scores, k), expected)
        assert int(expected.sum()) == active - k
        stable = torch.sort(finite_scores(scores).masked_fill(~mask, float("inf")), stable=True).indices[:k]
        assert torch.equal(expected, mask & ~torch.zeros(n, dtype=torch.bool).index_fill_(0, stable, True))
        if kind == 1:  # no ties: the old torch.topk over all weights chose the same weights
            old = mask.clone()
            old[torch.topk(scores.masked_fill(~mask, float("inf")), k, largest=False).indices] = False
            assert torch.equal(old, expected)


def test_training_with_the_active_only_drop_equals_the_all_weights_drop(monkeypatch):
    """A real run with ties at 0 (half the inputs are always 0, so their weights get no gradient and grown
    ones stay at 0): the engine's drop and the all-weights drop give the same masks and weights throughout."""

    def run():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        engine = sparsify(model, optimizer, sparsity=0.8, total_steps=60, acq="rigl", schedule="itop",
                          update_interval=3)
        generator = torch.Generator().manual_seed(1)
        history = []
        for _ in range(60):
            inputs = torch.randn(8, 16, generator=generator)
            inputs[:, 8:] = 0
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), torch.randint(0, 4, (8,), generator=generator)).backward()
            engine.step()
            history.append([m.clone() for m in engine.masks.masks])
        return history, [p.detach().clone() for p in model.parameters()], engine

    active_only, weights, engine = run()
    assert engine.updates_done == 19
    ties_seen = []
    original = SparseEngine._drop

    def reference_drop(self, i, ctx, k):
        flat = ctx.mask.flatten()
        scores = self.acq.drop_scores(ctx).flatten()
        ties_seen.append(int((scores[flat] == 0).sum()))
        expected = all_weights_drop(flat, scores, k)
        assert torch.equal(original(self, i, ctx, k), expected)
        return expected

    monkeypatch.setattr(SparseEngine, "_drop", reference_drop)
    all_weights, reference_weights, _ = run()
    assert max(ties_seen) > 1  # the case with tied zeros did occur
    assert all(torch.equal(a, b) for step_a, step_b in zip(active_only, all_weights) for a, b in zip(step_a, step_b))
    assert all(torch.equal(a, b) for a, b in zip(weights, reference_weights))


# ----- the memory of the mask state (issue 12) -----

@pytest.mark.parametrize("acq_name, expected", [("rigl", 1.25), ("set", 1.25), ("static", 1.25), ("ee", 5.25)])
def test_state_bytes_per_weight(acq_name, expected):
    # 24 x 40 = 960 weights: 1 byte uint8 mask + 1 bit explored + 1 bit epoch snapshot (+ 4 bytes N for EE)
    engine, _, _ = make_engine((24, 40), 0.9, acq_name)
    assert engine.state_bytes_per_weight() == expected
    assert all(m.dtype == torch.uint8 and m.data_ptr() == b.data_ptr()
               for m, b in zip(engine.masks.multipliers, engine.masks.masks))


def test_explored_and_turnover_stay_exact_over_updates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 7), nn.Linear(7, 5))  # 91 and 35 weights: not multiples of 8
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.7, total_steps=100, acq="set", update_interval=5,
                      drop_fraction=0.4, decay="constant")
    explored = [m.clone() for m in engine.masks.masks]
    engine.mark_epoch()
    marked = [m.clone() for m in engine.masks.masks]
    for update in range(1, 9):
        for layer in model:
            layer.weight.grad = torch.randn(layer.weight.shape)
        engine.update(5 * update)
        explored = [e | m for e, m in zip(explored, engine.masks.masks)]
        if update == 4:
            engine.mark_epoch()
            marked = [m.clone() for m in engine.masks.masks]
        stats = engine.stats()
        total = sum(m.numel() for m in explored)
        assert stats["explored"] == sum(int(e.sum()) for e in explored) / total
        entered = sum(int((m & ~old).sum()) for m, old in zip(engine.masks.masks, marked))
        assert stats["turnover"] == entered / sum(engine.counts)
    assert stats["explored"] > 0.5
