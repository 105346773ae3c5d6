"""MEST, SNFS, DSR and GraNet's gradual density: hand-computed rules and exact counts through the engine."""
import random

import pytest
import torch
from torch import nn

from dst_cli.sparse import (
    Acquisition, ScoreContext, SparseConfigError, acquisition_names, init_masks, make_acquisition, prunable_weights,
    sparsify, training_flops_ratio,
)
from dst_cli.sparse.acquisition import (
    DSR, SNFS, apportion, apportion_overflow_equally, momentum, overflow_equally_quotas,
)
from dst_cli.sparse.engine import SparseEngine
from dst_cli.sparse.schedule import UpdateSchedule, gradual_density


def context(name, weight, mask, grad=None, state=None):
    weight = torch.tensor(weight)
    return ScoreContext(
        name=name, weight=weight, grad=torch.zeros_like(weight) if grad is None else torch.tensor(grad),
        mask=torch.tensor(mask), optimizer_state=state or {}, active_steps=None, step=10,
        generator=torch.Generator().manual_seed(0),
    )


# ----- apportion: exact integer split -----
def test_apportion_largest_remainder_ties_to_the_earlier_layer():
    # quotas 2.5, 2.5, 5 -> floors 2, 2, 5 -> the one missing unit: tie at .5, the first layer gets it
    assert apportion(10, {"a": 1.0, "b": 1.0, "c": 2.0}, {"a": 99, "b": 99, "c": 99}) == {"a": 3, "b": 2, "c": 5}


def test_apportion_fills_a_layer_and_resplits_the_rest():
    # a's quota 8 exceeds its room 3: a = 3, the 7 left split 1:1 -> 3.5, 3.5 -> 4, 3
    assert apportion(10, {"a": 8.0, "b": 1.0, "c": 1.0}, {"a": 3, "b": 10, "c": 10}) == {"a": 3, "b": 4, "c": 3}


def test_apportion_without_positive_shares_splits_by_room():
    assert apportion(4, {"a": 0.0, "b": float("nan")}, {"a": 2, "b": 6}) == {"a": 1, "b": 3}


def test_apportion_refuses_more_than_the_room():
    with pytest.raises(ValueError, match="cannot place 5"):
        apportion(5, {"a": 1.0}, {"a": 4})


def test_apportion_is_exact_and_within_room_on_random_cases():
    rng = random.Random(0)
    for _ in range(500):
        names = [f"l{i}" for i in range(rng.randint(1, 6))]
        room = {n: rng.randint(0, 50) for n in names}
        total = rng.randint(0, sum(room.values()))
        shares = {n: rng.choice([0.0, rng.random(), rng.random() * 1e-9, 1e6 * rng.random()]) for n in names}
        counts = apportion(total, shares, room)
        assert sum(counts.values()) == total
        assert all(0 <= counts[n] <= room[n] for n in names)


# ----- MEST -----
def test_mest_drop_order_with_lambda():
    # |w| + 0.5 |g| = [0.1 + 0.5, 0.5 + 0, 0.3 + 0.05, 0.2 + 0.25] = [0.6, 0.5, 0.35, 0.45]
    ctx = context("w", [0.1, -0.5, 0.3, 0.2], [True] * 4, grad=[1.0, 0.0, -0.1, 0.5])
    scores = make_acquisition("mest", lam=0.5).drop_scores(ctx)
    torch.testing.assert_close(scores, torch.tensor([0.6, 0.5, 0.35, 0.45]))
    assert torch.argsort(scores).tolist() == [2, 3, 1, 0]
    # the code's default lam = 0: the order of |w| alone
    assert torch.argsort(make_acquisition("mest").drop_scores(ctx)).tolist() == [0, 3, 2, 1]


def test_mest_grows_at_random_and_checks_lambda():
    acq = make_acquisition("mest", lam=1.0)
    ctx = context("w", [0.0] * 6, [False] * 6)
    assert torch.equal(acq.grow_scores(ctx), torch.rand(6, generator=torch.Generator().manual_seed(0)))
    assert not acq.uses_gradient
    with pytest.raises(SparseConfigError) as error:
        make_acquisition("mest", lam=-1.0)
    assert error.value.key == "acq.lam"


# ----- SNFS -----
def test_snfs_momentum_sources():
    sgd = context("w", [0.0, 0.0], [True, False], grad=[5.0, 5.0], state={"momentum_buffer": torch.tensor([-1.0, 2.0])})
    assert momentum(sgd).tolist() == [-1.0, 2.0]
    adam = context("w", [0.0], [True], state={"exp_avg": torch.tensor([-2.0], dtype=torch.float64),
                                                    "exp_avg_sq": torch.tensor([4.0], dtype=torch.float64)})
    assert momentum(adam).item() == pytest.approx(-2.0 / (2.0 + 1e-8), rel=1e-12)
    assert momentum(context("w", [0.0], [True], grad=[3.0])).tolist() == [3.0]  # no state yet: the gradient
    assert SNFS().grow_scores(sgd).tolist() == [1.0, 2.0]


def test_snfs_redistributes_regrowth_by_mean_momentum_of_active_weights():
    # a: active momenta |1|, |3| -> mean 2 (inactive 9s ignored); b: active 4, 4, 4 -> mean 4. Shares 1/3, 2/3.
    # a dropped 2, b dropped 1: 3 regrown split 1 : 2 -> one unit moves from a to b.
    a = context("a", [0.0] * 4, [True, True, False, False], state={"momentum_buffer": torch.tensor([1.0, -3.0, 9.0, 9.0])})
    b = context("b", [0.0] * 6, [True, True, True, False, False, False],
                state={"momentum_buffer": torch.tensor([4.0, -4.0, 4.0, 0.0, 0.0, 0.0])})
    # room (what the engine passes with regrow_dropped): a 4 - 2 + 2 = 4, b 6 - 3 + 1 = 4
    assert SNFS().regrowth_counts({"a": 2, "b": 1}, {"a": a, "b": b}, {"a": 4, "b": 4}) == {"a": 1, "b": 2}


def test_snfs_regrowth_respects_layer_room():
    # b's share is 99%, but after dropping 1 of its 3 active it has 6 - 3 + 1 = 4 free slots
    a = context("a", [0.0] * 10, [True] * 5 + [False] * 5, state={"momentum_buffer": torch.full((10,), 0.01)})
    b = context("b", [0.0] * 6, [True] * 3 + [False] * 3, state={"momentum_buffer": torch.ones(6)})
    counts = SNFS().regrowth_counts({"a": 5, "b": 1}, {"a": a, "b": b}, {"a": 10, "b": 4})
    assert counts == {"a": 2, "b": 4}


def momentum_context(name, numel, active, value):
    """A layer of `numel` weights, the first `active` of them active, every momentum equal to `value`."""
    mask = [True] * active + [False] * (numel - active)
    return context(name, [0.5] * active + [0.0] * (numel - active), mask,
                   state={"momentum_buffer": torch.full((numel,), float(value))})


def test_snfs_spreads_a_layers_overflow_equally_over_the_other_layers():
    # mean |momentum| 6, 3, 1 -> shares 0.6, 0.3, 0.1 of the 10 regrown: quotas 6, 3, 1. a has room for 2:
    # its excess 4 goes to the others in equal parts (sparse_learning core.py:484-493, ITOP ImageNet/core.py
    # :573-582: residual / layers added to every layer, pass after pass): b 3 + 2 = 5, c 1 + 2 = 3.
    # (a split by momentum would give b 6, c 2.)
    contexts = {"a": momentum_context("a", 20, 10, 6.0), "b": momentum_context("b", 20, 10, 3.0),
                "c": momentum_context("c", 20, 10, 1.0)}
    assert SNFS().regrowth_counts({"a": 4, "b": 3, "c": 3}, contexts, {"a": 2, "b": 20, "c": 20}) == \
        {"a": 2, "b": 5, "c": 3}
    # b fills up on the way (room 4, it takes 1 of the equal increments): the rest goes to c, 1 + 3 = 4
    assert SNFS().regrowth_counts({"a": 4, "b": 3, "c": 3}, contexts, {"a": 2, "b": 4, "c": 20}) == \
        {"a": 2, "b": 4, "c": 4}


def reference_residual_loop(total, shares, room):
    """sparse_learning core.py:471-494 re-written with real quotas (no ceil) and the whole free room as the cap
    (not 99%), run until the residual vanishes: what apportion_overflow_equally computes in closed form."""
    norm = sum(shares.values())
    regrowth, residual, mean_residual = {}, 1.0, 0.0
    while residual > 1e-12:
        residual = 0.0
        for name in shares:
            value = regrowth.get(name, total * shares[name] / norm) + mean_residual
            regrowth[name] = min(value, room[name])
            residual += value - regrowth[name]
        mean_residual = residual / len(regrowth)
    return regrowth


def test_snfs_overflow_split_is_the_limit_of_the_references_residual_loop():
    rng = random.Random(1)
    for _ in range(300):
        names = [f"l{i}" for i in range(rng.randint(2, 6))]
        room = {n: rng.randint(0, 40) for n in names}
        total = rng.randint(0, sum(room.values()) - 1)
        shares = {n: rng.random() + 1e-3 for n in names}
        quotas = overflow_equally_quotas(total, shares, room)
        expected = reference_residual_loop(total, shares, room)
        assert all(quotas[n] == pytest.approx(expected[n], abs=1e-6) for n in names), (total, shares, room)
        counts = apportion_overflow_equally(total, shares, room)
        assert sum(counts.values()) == total and all(0 <= counts[n] <= room[n] for n in names)
        assert all(abs(counts[n] - quotas[n]) < 1 for n in names)


def test_snfs_a_dense_growing_layer_drops_at_most_its_sparsity():
    # adjust_prune_rate (sparse_learning core.py:359-375, ITOP ImageNet/core.py:436-452): a layer < 20% sparse
    # whose momentum share exceeds 1 / layers prunes at min(sparsity, rate): ceil(rate * active) -> ceil(sparsity
    # * active). a: 95 of 100 active (sparsity 0.05), share 0.6 > 1/2: ceil(0.05 * 95) = ceil(4.75) = 5 instead
    # of the planned ceil(0.5 * 95) = 48; b (80% sparse) keeps its plan; a fully dense growing layer drops 0.
    a, b = momentum_context("a", 100, 95, 0.6), momentum_context("b", 100, 20, 0.4)
    assert SNFS().drop_counts({"a": 48, "b": 10}, {"a": a, "b": b}) == {"a": 5, "b": 10}
    dense = momentum_context("a", 100, 100, 0.6)
    assert SNFS().drop_counts({"a": 50, "b": 10}, {"a": dense, "b": b}) == {"a": 0, "b": 10}
    # not growing (share 0.4 < 1/2), or growing but 20% sparse or more: the plan stands
    assert SNFS().drop_counts({"a": 48, "b": 10}, {"a": momentum_context("a", 100, 95, 0.4),
                                                   "b": momentum_context("b", 100, 20, 0.6)}) == {"a": 48, "b": 10}
    assert SNFS().drop_counts({"a": 40, "b": 10}, {"a": momentum_context("a", 100, 80, 0.6), "b": b}) == \
        {"a": 40, "b": 10}


def test_snfs_dense_layer_rule_through_the_engine():
    # the case above in a two-layer model, one update at step 10 with drop fraction 0.5 (ceil):
    # a drops 5 (not 48), b drops ceil(0.5 * 20) = 10: 15 regrown by share 0.6 : 0.4 -> 9 and 6 (a has room
    # 5 free + 5 dropped = 10). Counts: a 95 - 5 + 9 = 99, b 20 - 10 + 6 = 16 (the plan of 48 + 10 would
    # give a 82, b 33).
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    weights = dict(prunable_weights(model))
    masks = {"0.weight": torch.arange(100).view(10, 10) < 95, "1.weight": torch.arange(100).view(10, 10) < 20}
    schedule = UpdateSchedule(total_steps=100, update_interval=10, decay="constant")
    engine = SparseEngine(weights, optimizer, masks, schedule, SNFS(), torch.Generator().manual_seed(0))
    for weight, value in zip(weights.values(), (0.6, 0.4)):
        optimizer.state[weight]["momentum_buffer"] = torch.full_like(weight, value)
    engine.update(10)
    assert engine.counts == [99, 16] == [int(m.sum()) for m in engine.masks.masks]


# ----- DSR -----
def test_dsr_global_magnitude_cut_keeps_one_per_layer():
    # active |w|: a = 0.1, 0.5, 0.9; b = 0.2, 0.3 (b's largest, 0.3, is protected). Three smallest: 0.1, 0.2, 0.5.
    a = context("a", [0.1, -0.5, 0.9, 0.0], [True, True, True, False])
    b = context("b", [0.2, -0.3] + [0.0] * 8, [True, True] + [False] * 8)
    # the schedule planned 2 + 1 per layer; the global cut keeps the total 3 and moves where they come from
    assert DSR().drop_counts({"a": 1, "b": 2}, {"a": a, "b": b}) == {"a": 2, "b": 1}


def test_dsr_regrowth_proportional_to_surviving_weights():
    # survivors a: 3 - 2 = 1, b: 2 - 1 = 1 -> 1.5 each; a has room 4 - 3 = 1 (just-pruned excluded) -> a 1, b 2
    a = context("a", [0.1, -0.5, 0.9, 0.0], [True, True, True, False])
    b = context("b", [0.2, -0.3] + [0.0] * 8, [True, True] + [False] * 8)
    assert DSR().regrowth_counts({"a": 2, "b": 1}, {"a": a, "b": b}, {"a": 1, "b": 8}) == {"a": 1, "b": 2}
    assert {"mest", "snfs", "dsr"} <= set(acquisition_names())


# ----- GraNet's gradual density -----
def test_gradual_density_cubic_values():
    kw = dict(initial_density=0.5, final_density=0.1, start_step=0, end_step=1000)
    assert gradual_density(0, **kw) == 0.5
    assert gradual_density(250, **kw) == pytest.approx(0.1 + 0.4 * 0.75**3)  # 0.26875
    assert gradual_density(500, **kw) == pytest.approx(0.15)
    assert gradual_density(1000, **kw) == 0.1
    assert gradual_density(5000, **kw) == 0.1
    # GraNet core.py:378-381 at step 500, update every 100: iter 5 of 10 -> decay 0.125, rate 0.85, density 0.15
    assert gradual_density(500, **kw) == pytest.approx(1 - ((1 - 0.5) + (0.5 - 0.1) * (1 - (1 - 5 / 10) ** 3)))
    late = dict(kw, start_step=200)
    assert gradual_density(100, **late) == 0.5 and gradual_density(600, **late) == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(initial_density=0.1, final_density=0.5, start_step=0, end_step=10), "schedule.initial_density"),
        (dict(initial_density=1.0, final_density=0.0, start_step=0, end_step=10), "schedule.final_density"),
        (dict(initial_density=1.0, final_density=0.1, start_step=10, end_step=10), "schedule.end_step"),
    ],
)
def test_gradual_density_bad_arguments(kwargs, key):
    with pytest.raises(SparseConfigError) as error:
        gradual_density(0, **kwargs)
    assert error.value.key == key


# ----- through the engine -----
@pytest.mark.parametrize(("acq", "options"), [("mest", {"lam": 1.0}), ("snfs", {}), ("dsr", {})])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_engine_keeps_the_global_count_exact(acq, options, optimizer_name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    engine = sparsify(model, optimizer, sparsity=0.7, total_steps=40, acq=acq, acq_options=options,
                      schedule="itop", update_interval=5)
    initial = list(engine.counts)
    for _ in range(40):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 12)), torch.randint(0, 3, (8,))).backward()
        engine.step()
        measured = [int(m.sum()) for m in engine.masks.masks]
        assert measured == engine.counts and sum(measured) == sum(initial)
        assert all(int(torch.count_nonzero(w)) <= c for w, c in zip(engine.masks.weights, engine.counts))
    assert engine.updates_done == 7
    # MEST keeps every layer's count; SNFS and DSR move counts between layers (the global count stays)
    assert (engine.counts == initial) == (acq == "mest")


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def fresh_engine(**options):
    model = mlp()
    return sparsify(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), **options)


def train_steps(model, optimizer, engine, steps, seed=1, check=None):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        inputs, targets = torch.randn(8, 12, generator=generator), torch.randint(0, 3, (8,), generator=generator)
        nn.functional.cross_entropy(model(inputs), targets).backward()
        engine.step()
        if check:
            check(engine)


def test_dsr_moves_drops_by_one_global_cut_and_keeps_the_global_count():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.7, total_steps=40, acq="dsr", update_interval=5)
    assert engine.schedule.regrow_dropped is False  # DSR's default under a preset name
    given = fresh_engine(sparsity=0.7, total_steps=40, acq="dsr", regrow_dropped=True)
    assert given.schedule.regrow_dropped is True  # a given value wins
    initial = list(engine.counts)
    drops = []
    original = engine.acq.drop_counts
    engine.acq.drop_counts = lambda planned, contexts: drops.append((planned, original(planned, contexts))) or drops[-1][1]

    def exact(engine):
        assert [int(m.sum()) for m in engine.masks.masks] == engine.counts and sum(engine.counts) == sum(initial)
        assert engine.densities == {n: c / w.numel() for n, c, w in zip(engine.names, engine.counts, engine.masks.weights)}

    train_steps(model, optimizer, engine, 40, check=exact)
    assert engine.updates_done == 7
    assert all(sum(p.values()) == sum(d.values()) for p, d in drops)
    assert any(p != d for p, d in drops)  # the global cut moved drops between layers


class MovingDrops(Acquisition):
    uses_gradient = False

    def __init__(self, total_off: int = 0, layer_over: bool = False):
        self.total_off, self.layer_over = total_off, layer_over

    def grow_scores(self, ctx):
        return ctx.uniform()

    def drop_counts(self, planned, contexts):
        counts = dict(planned)
        first = next(iter(counts))
        counts[first] += self.total_off
        if self.layer_over:  # everything from the first layer: more than it holds
            counts = {name: sum(planned.values()) if name == first else 0 for name in planned}
        return counts


@pytest.mark.parametrize(("options", "message"), [
    ({"total_off": 1}, "MovingDrops.drop_counts must return a count for every layer summing to"),
    ({"layer_over": True}, "MovingDrops.drop_counts gave 0.weight"),
])
def test_a_drop_count_that_breaks_the_plan_is_refused(options, message):
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 40, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = sparsify(model, optimizer, sparsity=0.8, total_steps=100, acq=MovingDrops(**options), update_interval=10,
                      distribution="uniform", dense_first_layer=False, drop_fraction=0.5, decay="constant")
    with pytest.raises(RuntimeError, match=message):
        engine.update(10)


def test_snfs_needs_a_dense_gradient_every_step_for_flops():
    flops = {"0.weight": 1000, "2.weight": 100, "4.weight": 10}
    for acq, dense_gradient_steps in (("snfs", 17), ("rigl", 3)):  # rigl: the updates at 5, 10 and 15
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        engine = sparsify(model, optimizer, sparsity=0.7, total_steps=40, acq=acq, schedule="itop",
                          update_interval=5)
        train_steps(model, optimizer, engine, 17)
        densities = engine.mean_densities()  # counts move under SNFS: the mean over the 17 steps
        assert engine.training_flops_ratio(flops) == pytest.approx(
            training_flops_ratio(flops, densities, 17, dense_gradient_steps))


# ----- GraNet: schedule=gradual -----

def test_gradual_pruning_reaches_the_planned_count_at_every_update():
    # 12*16 + 16*16 + 16*3 = 496 prunable weights, ERK at 0.5 first, 90% sparse from the first update at or
    # after the end of the window: int(0.6875 * 64) = 44 -> updates at 8, 16, ..., 40 prune, 48.. do not
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.9, total_steps=64, acq="rigl", schedule="gradual", update_interval=8)
    assert abs(sum(engine.counts) - 248) <= 3
    seen = {}

    def record(engine):
        if engine.last_update_step not in seen and engine.last_update_step > 0:
            seen[engine.last_update_step] = list(engine.counts)
            assert [int(m.sum()) for m in engine.masks.masks] == engine.counts
            assert all(torch.all(w[~m] == 0) for w, m in zip(engine.masks.weights, engine.masks.masks))

    train_steps(model, optimizer, engine, 64, check=record)
    for step, counts in seen.items():
        density = gradual_density(step, initial_density=0.5, final_density=0.1, start_step=0, end_step=44)
        assert sum(counts) == int(496 * density), step
    assert sorted(seen) == [8, 16, 24, 32, 40, 48, 56]
    assert sum(seen[48]) == sum(seen[56]) == int(496 * 0.1) == 49
    assert engine.densities == {n: c / w.numel() for n, c, w in zip(engine.names, engine.counts, engine.masks.weights)}


def test_gradual_prune_cuts_the_smallest_magnitudes_globally_and_zeroes_their_momentum():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.9, total_steps=64, acq="static", schedule="gradual",
                      update_interval=8)
    weights = engine.masks.weights
    seen = {}
    prune = engine._prune_gradually

    def observed_prune(step):  # the 8th step: optimizer step, masking, then the prune on these weights
        seen["masks"] = [m.clone() for m in engine.masks.masks]
        seen["weights"] = [w.detach().clone() for w in weights]
        prune(step)

    engine._prune_gradually = observed_prune
    train_steps(model, optimizer, engine, 8)
    assert engine.updates_done == 1
    after = engine.masks.masks
    planned = int(496 * gradual_density(8, initial_density=0.5, final_density=0.1, start_step=0, end_step=44))
    assert sum(int(m.sum()) for m in after) == sum(engine.counts) == planned
    kept = torch.cat([w[m].abs() for w, m in zip(seen["weights"], after)])
    pruned = [b & ~m for b, m in zip(seen["masks"], after)]
    assert sum(int(p.sum()) for p in pruned) == sum(int(m.sum()) for m in seen["masks"]) - planned
    assert all(m.sum() > 0 for m in pruned)  # the cut is global: every layer lost some
    for weight, before, cut in zip(weights, seen["weights"], pruned):
        assert torch.all(before[cut].abs() <= kept.min())  # the smallest magnitudes across all layers went
        assert torch.all(weight[cut] == 0) and torch.all(optimizer.state[weight]["momentum_buffer"][cut] == 0)
    # static + gradual is gradual magnitude pruning: no drop-and-grow, so the kept weights are all from before
    assert all(torch.equal(m & b, m) for m, b in zip(after, seen["masks"]))


def test_gradual_needs_an_initial_density_above_the_final_one():
    model = mlp()
    with pytest.raises(SparseConfigError) as error:
        sparsify(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.3, total_steps=64, schedule="gradual")
    assert error.value.key == "schedule.initial_density"
    assert "schedule.initial_density=0.5 is invalid; allowed: a number in [0.7, 1]" in str(error.value)
    with pytest.raises(SparseConfigError) as error:
        sparsify(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.9, total_steps=64,
                 schedule="gradual", prune_start_fraction=0.5, prune_end_fraction=0.5)
    assert error.value.key == "schedule.prune_end_fraction"


# ----- pruning at initialization through sparsify -----

def test_snip_init_with_static_keeps_the_scored_mask_and_takes_counts_from_it():
    model = mlp()
    generator = torch.Generator().manual_seed(3)
    data = [(torch.randn(16, 12, generator=generator), torch.randint(0, 3, (16,), generator=generator))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    random_counts = fresh_engine(sparsity=0.9, total_steps=20).counts
    expected = init_masks("snip", dict(prunable_weights(model)), dict(zip(["0.weight", "2.weight", "4.weight"],
                          random_counts)), model=model, loss_fn=nn.functional.cross_entropy, batches=data)
    engine = sparsify(model, optimizer, sparsity=0.9, total_steps=20, acq="static", init="snip",
                      init_options={"loss_fn": nn.functional.cross_entropy, "batches": data})
    assert all(torch.equal(m, expected[n]) for n, m in zip(engine.names, engine.masks.masks))
    assert engine.counts == [int(expected[n].sum()) for n in engine.names] and sum(engine.counts) == sum(random_counts)
    assert engine.counts != random_counts  # the global cut moved weights between layers
    train_steps(model, optimizer, engine, 20)
    assert all(torch.equal(m, expected[n]) for n, m in zip(engine.names, engine.masks.masks))


@pytest.mark.parametrize(("arguments", "key", "message"), [
    ({"init": "magic"}, "init", "init=magic is invalid; allowed: random | snip | grasp | synflow"),
    ({"init": "snip"}, "init", "init=snip needs batches, loss_fn; allowed: pass them in init_options"),
    ({"init": "snip", "init_options": {"lr": 1}}, "init.lr", "init.lr is not an option of init=snip; allowed: num_batches"),
    ({"init": "snip", "init_options": [1]}, "init_options", "init_options=[1] is invalid"),
])
def test_bad_init_arguments_name_themselves(arguments, key, message):
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SparseConfigError) as error:
        sparsify(model, torch.optim.SGD(model.parameters(), lr=0.1), sparsity=0.9, total_steps=20, **arguments)
    assert error.value.key == key and message in str(error.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
