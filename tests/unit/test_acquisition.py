"""Hand-computed DST-EE cases."""
import math

import pytest
import torch

from dst_cli.errors import UserError
from dst_cli.sparse.acquisition import build_acquisition
from dst_cli.sparse.masks import SparseMasks


def one_layer(active_positions, grad, active_steps, step):
    weight = torch.nn.Parameter(torch.tensor([[0.5, -0.1, 0.0, 0.0, 0.0, 0.0]]))
    masks = SparseMasks({"w": weight}, {"w": 2}, torch.Generator().manual_seed(0))
    masks.masks[0].copy_(torch.zeros(1, 6, dtype=torch.bool))
    masks.masks[0][0, active_positions] = True
    masks.active_steps[0].copy_(torch.tensor([active_steps], dtype=torch.int32))
    masks.counted_until = step
    weight.grad = torch.tensor([grad])
    return weight, masks, torch.optim.SGD([weight], lr=0.1)


def grown_after_update(acq, step=100):
    # weights 0 and 1 active; |w1| < |w0| so weight 1 is dropped (k = round(0.5 * 2) = 1)
    grad = [0.0, 0.0, 0.30, 0.20, 0.25, 0.01]
    active_steps = [100, 100, 0, 90, 3, 50]
    _, masks, optimizer = one_layer([0, 1], grad, active_steps, step)
    before = masks.masks[0].clone()
    masks.update(step, 0.5, acq, optimizer)
    return (masks.masks[0] & ~before).nonzero()[:, 1].tolist()


def test_ee_with_c_zero_picks_exactly_rigls_weights():
    assert grown_after_update(build_acquisition("ee", torch.Generator(), c=0.0, eps=1.0, bonus="log")) == [2]
    assert grown_after_update(build_acquisition("rigl", torch.Generator())) == [2]


def test_ee_with_known_counts_prefers_the_rarely_tried_weight():
    # scores at t=100, c=0.1, eps=1: w2 0.30 + 0.1*ln(100)/1 = 0.7605; w3 0.20 + 0.1*4.605/91 = 0.2051;
    # w4 0.25 + 0.1*4.605/4 = 0.3651; w5 0.01 + 0.1*4.605/51 = 0.0190 -> w2 (never active) wins
    assert grown_after_update(build_acquisition("ee", torch.Generator(), c=0.1, eps=1.0, bonus="log")) == [2]
    # with w2 counted 1000 steps (t=2000: bonus 0.1*ln(2000)/1001 = 0.00076) w4 (N=3) wins:
    # w4: 0.25 + 0.1*7.601/4 = 0.440 > w2: 0.3008
    grad = [0.0, 0.0, 0.30, 0.20, 0.25, 0.01]
    _, masks, optimizer = one_layer([0, 1], grad, [100, 100, 1000, 90, 3, 50], 2000)
    before = masks.masks[0].clone()
    masks.update(2000, 0.5, build_acquisition("ee", torch.Generator(), c=0.1, eps=1.0, bonus="log"), optimizer)
    assert (masks.masks[0] & ~before).nonzero()[:, 1].tolist() == [4]


def test_ee_bonus_forms():
    counts = torch.tensor([0, 3, 99], dtype=torch.int32)
    log_ee = build_acquisition("ee", torch.Generator(), c=1.0, eps=0.5, bonus="log")
    sqrt_ee = build_acquisition("ee", torch.Generator(), c=1.0, eps=0.5, bonus="sqrt")
    expected = torch.tensor([math.log(50) / 0.5, math.log(50) / 3.5, math.log(50) / 99.5])
    assert torch.allclose(log_ee.exploration_bonus(counts, 50), expected)
    assert torch.allclose(sqrt_ee.exploration_bonus(counts, 50), expected.sqrt())


@pytest.mark.parametrize("options, message", [
    ({"c": -1.0, "eps": 1.0, "bonus": "log"}, "acq.c=-1.0"),
    ({"c": 1.0, "eps": 0.0, "bonus": "log"}, "acq.eps=0.0"),
    ({"c": 1.0, "eps": 1.0, "bonus": "exp"}, "acq.bonus=exp"),
])
def test_ee_rejects_bad_options(options, message):
    with pytest.raises(UserError, match=message):
        build_acquisition("ee", torch.Generator(), **options)


def test_unknown_acquisition():
    with pytest.raises(UserError, match="acq=foo is not known; allowed: ee, rigl, set, random, static"):
        build_acquisition("foo", torch.Generator())
