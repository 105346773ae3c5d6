"""MEST, SNFS, DSR and GraNet's gradual density: hand-computed rules and exact counts through the engine."""
import random

import pytest
import torch
from torch import nn

from dst_cli.sparse import ScoreContext, SparseConfigError, acquisition_names, make_acquisition, sparsify
from dst_cli.sparse.acquisition import DSR, SNFS, apportion, momentum
from dst_cli.sparse.schedule import gradual_density


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
@pytest.mark.parametrize(("acq", "options"), [("mest", {"lam": 1.0}), ("snfs", {})])
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
    # MEST keeps every layer's count; SNFS moves regrowth between layers (the global count stays)
    assert (engine.counts == initial) == (acq == "mest")
