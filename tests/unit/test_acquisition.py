"""Hand-computed cases of the acquisition functions and of the acquisition protocol's plug points."""
import math

import pytest
import torch
from torch import nn

from dst_cli.sparse import (
    Acquisition, ScoreContext, SparseConfigError, make_acquisition, register_acquisition, sparsify,
)
from dst_cli.sparse.acquisition import EE

WEIGHTS = [0.5, -0.1, 0.0, 0.0, 0.0, 0.0]


def one_layer(active_positions, grad, acq, acq_options=None, active_steps=None, step=100, **overrides):
    """A 1x6 layer with weights 0 and 1 active; |w1| < |w0| so weight 1 is dropped at a 0.5 update (k = 1)."""
    model = nn.Linear(6, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    options = dict(drop_fraction=0.5, decay="constant", rounding="round", regrow_dropped=False)
    engine = sparsify(model, optimizer, sparsity=0.6, total_steps=10_000, acq=acq, acq_options=acq_options,
                      **{**options, **overrides})
    mask = torch.zeros(1, 6, dtype=torch.bool)
    mask[0, active_positions] = True
    engine.masks.masks[0].copy_(mask)
    engine.masks.multipliers[0].copy_(mask)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([WEIGHTS]) * mask)
    if active_steps is not None:
        engine.masks.active_steps[0].copy_(torch.tensor([active_steps], dtype=torch.int32))
    engine.masks.counted_until = step
    model.weight.grad = torch.tensor([grad])
    return engine, model.weight, optimizer


def grown_after_update(acq, acq_options=None, active_steps=(100, 100, 0, 90, 3, 50), step=100):
    grad = [0.0, 0.0, 0.30, 0.20, 0.25, 0.01]
    engine, _, _ = one_layer([0, 1], grad, acq, acq_options, active_steps and list(active_steps), step)
    before = engine.masks.masks[0].clone()
    engine.update(step)
    return (engine.masks.masks[0] & ~before).nonzero()[:, 1].tolist()


def test_ee_with_c_zero_picks_exactly_rigls_weights():
    assert grown_after_update("ee", {"c": 0.0, "eps": 1.0, "bonus": "log"}) == [2]
    assert grown_after_update("rigl", active_steps=None) == [2]


def test_ee_with_known_counts_prefers_the_rarely_tried_weight():
    # scores at t=100, c=0.1, eps=1: w2 0.30 + 0.1*ln(100)/1 = 0.7605; w3 0.20 + 0.1*4.605/91 = 0.2051;
    # w4 0.25 + 0.1*4.605/4 = 0.3651; w5 0.01 + 0.1*4.605/51 = 0.0190 -> w2 (never active) wins
    assert grown_after_update("ee", {"c": 0.1, "eps": 1.0, "bonus": "log"}) == [2]
    # with w2 counted 1000 steps (t=2000: bonus 0.1*ln(2000)/1001 = 0.00076) w4 (N=3) wins:
    # w4: 0.25 + 0.1*7.601/4 = 0.440 > w2: 0.3008
    assert grown_after_update("ee", {"c": 0.1, "eps": 1.0, "bonus": "log"}, (100, 100, 1000, 90, 3, 50), 2000) == [4]


def test_ee_bonus_forms():
    counts = torch.tensor([0, 3, 99], dtype=torch.int32)
    expected = torch.tensor([math.log(50) / 0.5, math.log(50) / 3.5, math.log(50) / 99.5])
    assert torch.allclose(EE(c=1.0, eps=0.5, bonus="log").exploration_bonus(counts, 50), expected)
    assert torch.allclose(EE(c=1.0, eps=0.5, bonus="sqrt").exploration_bonus(counts, 50), expected.sqrt())
    assert torch.all(EE().exploration_bonus(counts, 0) == 0)  # a step-0 update: ln(max(t, 1)) = 0


def test_a_just_dropped_weight_with_the_largest_gradient_is_regrown_keeping_value_and_momentum():
    # w1 (|w| 0.1 < 0.5) is dropped; its gradient 0.9 is the largest, so RigL regrows it at once
    grad = [0.0, 0.9, 0.30, 0.20, 0.25, 0.01]
    engine, weight, optimizer = one_layer([0, 1], grad, "rigl", regrow_dropped=True)
    optimizer.state[weight]["momentum_buffer"] = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    engine.update(100)
    assert engine.masks.masks[0].nonzero()[:, 1].tolist() == [0, 1]
    assert weight[0, 1].item() == pytest.approx(-0.1)
    assert optimizer.state[weight]["momentum_buffer"].tolist() == [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]
    # switched off, exactly k previously inactive weights enter: w2, at 0 with zeroed momentum
    engine, weight, optimizer = one_layer([0, 1], grad, "rigl", regrow_dropped=False)
    optimizer.state[weight]["momentum_buffer"] = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    engine.update(100)
    assert engine.masks.masks[0].nonzero()[:, 1].tolist() == [0, 2]
    assert weight.tolist() == [[0.5, 0.0, 0.0, 0.0, 0.0, 0.0]]
    assert optimizer.state[weight]["momentum_buffer"].tolist() == [[1.0, 2.0, 0.0, 4.0, 5.0, 6.0]]


@pytest.mark.parametrize("options, message", [
    ({"c": -1.0}, "acq.c=-1.0 is invalid; allowed: a finite number >= 0"),
    ({"c": float("nan")}, "acq.c=nan is invalid"),
    ({"c": "foo"}, "acq.c=foo is invalid"),
    ({"c": float("inf")}, "acq.c=inf is invalid"),
    ({"eps": 0.0}, "acq.eps=0.0 is invalid; allowed: a finite number > 0"),
    ({"eps": float("nan")}, "acq.eps=nan is invalid"),
    ({"bonus": "exp"}, "acq.bonus=exp is invalid; allowed: log | sqrt"),
    ({"gamma": 1}, "acq.gamma is not an option of acq=ee; allowed: c, eps, bonus"),
])
def test_ee_rejects_bad_options(options, message):
    with pytest.raises(SparseConfigError, match=message.replace("(", r"\(").replace("|", r"\|")) as error:
        make_acquisition("ee", **options)
    assert error.value.key == f"acq.{next(iter(options))}"


def test_unknown_acquisition_lists_the_registered_ones():
    with pytest.raises(SparseConfigError, match=r"acq=foo is invalid; allowed: set \| random \| static \| rigl \| ee"):
        make_acquisition("foo")
    with pytest.raises(SparseConfigError, match="acq.c is not an option of acq=rigl; allowed: no options"):
        make_acquisition("rigl", c=1.0)


class GrowByMomentum(Acquisition):
    """A plug-in growing by momentum magnitude and moving every regrowth to the first layer."""

    def grow_scores(self, ctx: ScoreContext) -> torch.Tensor:
        return ctx.optimizer_state["momentum_buffer"].abs()

    def regrowth_counts(self, dropped, contexts, room):
        names = list(dropped)
        return {name: sum(dropped.values()) if name == names[0] else 0 for name in names}


def test_a_plugin_sees_optimizer_state_and_may_move_growth_between_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10, bias=False), nn.Linear(10, 10, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.5, total_steps=100, acq=GrowByMomentum, distribution="er",
                      update_interval=10, decay="constant", drop_fraction=0.2, rounding="round")
    for layer in model:
        layer.weight.grad = torch.randn(10, 10)
    optimizer.step()
    engine.masks.apply()
    engine.update(10)  # each layer drops 10; the first grows 20
    assert engine.counts == [60, 40]
    assert [int(m.sum()) for m in engine.masks.masks] == [60, 40]


@pytest.mark.parametrize("score", [-math.inf, math.nan])
def test_grow_scores_of_minus_inf_or_nan_still_grow_inactive_weights_only(score):
    """Such scores rank below every finite one but above the ineligible (active) weights, which are marked -inf:
    the mask gains exactly the regrowth count among the weights inactive before the update."""
    class NoPreference(Acquisition):
        def grow_scores(self, ctx):
            return torch.full_like(ctx.weight, score)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 10, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = sparsify(model, optimizer, sparsity=0.5, total_steps=100, acq=NoPreference, update_interval=10,
                      decay="constant", drop_fraction=0.3, rounding="round", regrow_dropped=False)
    # active (ineligible) weights in the second half, where CPU top-k picks among 400 equal values
    engine.masks.multipliers[0].copy_((torch.arange(400) >= 200).view(10, 40))
    before = engine.masks.masks[0].clone()
    model[0].weight.grad = torch.randn(10, 40)
    engine.update(10)  # drops 60 of the 200 active weights, grows 60 among the 200 inactive before
    after = engine.masks.masks[0]
    assert engine.counts == [200] and int(after.sum()) == 200
    assert int((after & ~before).sum()) == 60


def test_a_regrowth_that_breaks_the_global_count_is_refused():
    class Leaky(GrowByMomentum):
        def regrowth_counts(self, dropped, contexts, room):
            return {name: 0 for name in dropped}

    model = nn.Sequential(nn.Linear(10, 10, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.5, total_steps=100, acq=Leaky(), update_interval=10)
    model[0].weight.grad = torch.randn(10, 10)
    optimizer.step()
    with pytest.raises(RuntimeError, match="Leaky.regrowth_counts must return a count for every layer summing to"):
        engine.update(10)


def test_registering_a_name_makes_it_an_acq_value():
    @register_acquisition("test-largest-weight-grow")
    class LargestWeightGrow(Acquisition):
        uses_gradient = False

        def grow_scores(self, ctx):
            return ctx.weight.abs()

    assert isinstance(make_acquisition("test-largest-weight-grow"), LargestWeightGrow)
    with pytest.raises(ValueError, match="already taken"):
        register_acquisition("rigl")(LargestWeightGrow)
