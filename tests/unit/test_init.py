"""Pruning at initialization: hand-computed SNIP / SynFlow scores, GraSP against a full Hessian, exact counts,
and the model left exactly as it was."""
import pytest
import torch
from torch import nn
from torch.func import functional_call

from dst_cli.sparse.errors import SparseConfigError
from dst_cli.sparse.init import (
    grasp_scores,
    init_masks,
    keep_highest,
    snip_scores,
    synflow_round_budget,
)


def weights_of(model: nn.Module) -> dict[str, nn.Parameter]:
    return {f"{name}.weight": module.weight for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def linear_net(first: list, second: list) -> nn.Sequential:
    """x -> W1 -> W2 without biases or nonlinearity: every gradient has a closed form."""
    net = nn.Sequential(nn.Linear(len(first[0]), len(first), bias=False), nn.Linear(len(second[0]), len(second), bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(first))
        net[1].weight.copy_(torch.tensor(second))
    return net


def output_sum(outputs, targets):
    return outputs.sum()


def test_snip_scores_and_global_cut_by_hand():
    # out = W2 W1 x, L = sum(out), x = [1, 2]:
    # dL/dW1[i, j] = W2[0, i] x[j] = [[2, 4], [-1, -2]]   -> |g w| = [[2, 8], [3, 1]]
    # dL/dW2 = (W1 x)^T = [-3, 4]                          -> |g w| = [6, 4]
    net = linear_net([[1.0, -2.0], [3.0, 0.5]], [[2.0, -1.0]])
    weights = weights_of(net)
    batches = [(torch.tensor([[1.0, 2.0]]), torch.zeros(1))]
    scores = snip_scores(net, weights, output_sum, batches)
    assert torch.equal(scores["0.weight"], torch.tensor([[2.0, 8.0], [3.0, 1.0]]))
    assert torch.equal(scores["1.weight"], torch.tensor([[6.0, 4.0]]))
    # budget 2 + 1 = 3 chosen globally: 8, 6, 4 -> the second layer gets 2 although its own count was 1
    masks = init_masks("snip", weights, {"0.weight": 2, "1.weight": 1}, model=net, loss_fn=output_sum, batches=batches)
    assert torch.equal(masks["0.weight"], torch.tensor([[False, True], [False, False]]))
    assert torch.equal(masks["1.weight"], torch.tensor([[True, True]]))


def test_snip_sums_the_loss_over_batches():
    net = linear_net([[1.0, -2.0], [3.0, 0.5]], [[2.0, -1.0]])
    one = [(torch.tensor([[1.0, 2.0]]), torch.zeros(1))]
    # the same sample twice: every gradient, hence every score, doubles
    two = snip_scores(net, weights_of(net), output_sum, one * 2)
    assert torch.equal(two["0.weight"], 2 * torch.tensor([[2.0, 8.0], [3.0, 1.0]]))


def test_synflow_scores_one_round_by_hand():
    # |W| everywhere, input ones, R = 1^T |W2| |W1| 1: score(W1[0, j]) = |W1[0, j]| * sum|W2| = [8, 6],
    # score(W2[k, 0]) = |W2[k, 0]| * sum|W1| = 3.5 each. Signs must not matter (abs).
    net = linear_net([[-2.0, 1.5]], [[1.0], [-1.0], [1.0], [1.0]])
    weights = weights_of(net)
    counts = {"0.weight": 1, "1.weight": 2}  # budget 3
    inputs = [(torch.randn(5, 2), torch.zeros(5))]
    masks = init_masks("synflow", weights, counts, model=net, batches=inputs, iterations=1)
    assert masks["0.weight"].tolist() == [[True, True]]
    assert masks["1.weight"].flatten().tolist() == [True, False, False, False]  # ties 3.5: stable, first wins


def test_synflow_iterative_rounds_rescore_with_the_mask_applied():
    # Two rounds, N = 6, budget 3: round 1 keeps round(6 * 0.5 ** 0.5) = 4 -> drops W2[2], W2[3] (3.5, ties:
    # the last ones go). Round 2 rescored with them masked: W1 -> |W1| * 2 = [4, 3]; W2[0], W2[1] -> 3.5.
    # Keep 3: W1[0] (4), W2[0], W2[1] (3.5) -- W1[1] is dropped, unlike the one-shot result above.
    assert synflow_round_budget(6, 3, 1, 2) == 4
    net = linear_net([[-2.0, 1.5]], [[1.0], [-1.0], [1.0], [1.0]])
    weights = weights_of(net)
    masks = init_masks(
        "synflow", weights, {"0.weight": 1, "1.weight": 2}, model=net, batches=[(torch.ones(1, 2), None)], iterations=2
    )
    assert masks["0.weight"].tolist() == [[True, False]]
    assert masks["1.weight"].flatten().tolist() == [True, True, False, False]


def test_synflow_round_budget_is_exponential_and_ends_at_the_budget():
    budgets = [synflow_round_budget(1000, 10, r, 4) for r in range(1, 5)]
    assert budgets == [round(1000 * 0.01**0.25), round(1000 * 0.01**0.5), round(1000 * 0.01**0.75), 10]
    assert budgets == [316, 100, 32, 10]


def test_synflow_overflow_is_refused():
    net = linear_net([[1e20, 1e20]], [[1e20]])
    with pytest.raises(SparseConfigError, match="non-finite"):
        init_masks("synflow", weights_of(net), {"0.weight": 1, "1.weight": 0}, model=net, batches=[(torch.ones(1, 2), None)])


def test_grasp_scores_match_a_full_hessian():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    weights = weights_of(net)
    batches = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 3, (5,))) for _ in range(2)]
    temperature = 2.0
    loss_fn = nn.CrossEntropyLoss()
    scores = grasp_scores(net, weights, loss_fn, batches, temperature)

    names = list(weights)
    shapes = [weights[n].shape for n in names]
    theta = torch.cat([weights[n].detach().flatten() for n in names])

    def loss_of(flat):
        parts = dict(zip(names, torch.split(flat, [s.numel() for s in shapes])))
        params = {n: p.view(s) for (n, p), s in zip(parts.items(), shapes)}
        return sum(loss_fn(functional_call(net, params, (x,)) / temperature, y) for x, y in batches)

    gradient = torch.autograd.functional.jacobian(loss_of, theta)
    hessian = torch.autograd.functional.hessian(loss_of, theta)
    expected = torch.split(theta * (hessian @ gradient), [s.numel() for s in shapes])
    for name, shape, want in zip(names, shapes, expected):
        torch.testing.assert_close(scores[name], want.view(shape), rtol=1e-9, atol=1e-12)


def test_keep_highest_exact_count_and_stable_ties():
    scores = {"a": torch.tensor([1.0, 5.0, 5.0]), "b": torch.tensor([[5.0, 0.0]])}
    masks = keep_highest(scores, 2)
    assert masks["a"].tolist() == [False, True, True]  # three 5s: the two earliest win
    assert masks["b"].tolist() == [[False, False]]


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


@pytest.mark.parametrize("method", ["random", "snip", "grasp", "synflow"])
def test_exact_global_count_and_model_untouched(method):
    net = bn_net().train()
    net[1].eval()  # a module in its own mode must get that mode back
    weights = {"0.weight": net[0].weight, "5.weight": net[5].weight}
    counts = {"0.weight": 10, "5.weight": 40}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [(torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,)))]
    masks = init_masks(
        method, weights, counts, generator=torch.Generator().manual_seed(3), model=net,
        loss_fn=nn.CrossEntropyLoss(), batches=batches, **({"iterations": 5} if method == "synflow" else {}),
    )
    assert sum(int(m.sum()) for m in masks.values()) == 50
    assert all(masks[n].shape == weights[n].shape and masks[n].dtype == torch.bool for n in weights)
    if method == "random":
        assert {n: int(m.sum()) for n, m in masks.items()} == counts
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in net.parameters())
    assert [m.training for m in net.modules()] == [True, True, False, True, True, True, True]


def test_random_is_per_layer_and_reproducible():
    net = bn_net()
    weights = {"0.weight": net[0].weight, "5.weight": net[5].weight}
    counts = {"0.weight": 7, "5.weight": 19}
    first = init_masks("random", weights, counts, generator=torch.Generator().manual_seed(1))
    again = init_masks("random", weights, counts, generator=torch.Generator().manual_seed(1))
    other = init_masks("random", weights, counts, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(first[n], again[n]) for n in weights)
    assert not all(torch.equal(first[n], other[n]) for n in weights)
    # one torch.rand per layer in module order, top-k: the engine's random initial mask
    generator = torch.Generator().manual_seed(1)
    for name, weight in weights.items():
        scores = torch.rand(weight.shape, generator=generator)
        assert torch.equal(first[name].flatten(), torch.zeros(weight.numel(), dtype=torch.bool).index_fill_(
            0, torch.topk(scores.flatten(), counts[name]).indices, True))


def test_dense_layers_stay_dense_and_out_of_the_competition():
    net = linear_net([[1.0, -2.0], [3.0, 0.5]], [[2.0, -1.0]])
    weights = weights_of(net)
    batches = [(torch.tensor([[1.0, 2.0]]), torch.zeros(1))]
    # second layer dense (count == size): the first keeps its 1 best by SNIP (score 8), not 3 by the global cut
    masks = init_masks("snip", weights, {"0.weight": 1, "1.weight": 2}, model=net, loss_fn=output_sum, batches=batches)
    assert masks["1.weight"].all()
    assert masks["0.weight"].tolist() == [[False, True], [False, False]]


def test_deterministic_on_repeat():
    net = bn_net()
    weights = {"0.weight": net[0].weight, "5.weight": net[5].weight}
    counts = {"0.weight": 10, "5.weight": 40}
    batches = [(torch.randn(8, 1, 6, 6, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3)]
    runs = [
        init_masks("grasp", weights, counts, model=net, loss_fn=nn.CrossEntropyLoss(), batches=batches) for _ in range(2)
    ]
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in weights)


@pytest.mark.parametrize(
    ("kwargs", "key", "message"),
    [
        ({"method": "magnitude"}, "init", "init=magnitude is invalid"),
        ({"method": "snip"}, "init", "init=snip needs model, batches, loss_fn"),
        ({"method": "random"}, "init", "needs a generator"),
        ({"method": "synflow", "iterations": 0, "with_model": True}, "init.iterations", "init.iterations=0 is invalid"),
        ({"method": "random", "counts": {"0.weight": 5, "1.weight": 1}}, "counts[0.weight]", "is invalid"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, key, message):
    net = linear_net([[1.0, -2.0], [3.0, 0.5]], [[2.0, -1.0]])
    extra = {"model": net, "batches": [(torch.ones(1, 2), None)]} if kwargs.pop("with_model", False) else {}
    counts = kwargs.pop("counts", {"0.weight": 1, "1.weight": 1})
    with pytest.raises(SparseConfigError, match=message) as error:
        init_masks(kwargs.pop("method"), weights_of(net), counts, **kwargs, **extra)
    assert error.value.key == key
