import pytest
import torch
from torch import nn

from dst_cli.sparse import inference_flops_ratio, is_prunable, layer_flops, sparsify, training_flops_ratio

# Hand-computed dense forward FLOPs per sample of SmallNet on a 3x8x8 input:
#   features.0  conv 3->8, 3x3, pad 1        -> 8x8x8 out: 2 * (3*3*3)   * 8 * 64 = 27648
#   features.1  conv 8->8, 3x3, groups 4, s2 -> 8x4x4 out: 2 * (3*3*8/4) * 8 * 16 = 4608
#   classifier.1 linear 128 -> 16:                         2 * 128 * 16      = 4096
#   classifier.3 linear 16 -> 10:                          2 * 16 * 10       = 320
SMALL_NET_FLOPS = {
    "features.0.weight": 27648,
    "features.1.weight": 4608,
    "classifier.1.weight": 4096,
    "classifier.3.weight": 320,
}
DENSE_TOTAL = 36672

# A static ~90% sparse network with ERK-like per-layer densities; its sparse forward cost is
#   f_S = 0.3*27648 + 0.1*4608 + 0.05*4096 + 0.2*320 = 8294.4 + 460.8 + 204.8 + 64 = 9024
SPARSE_DENSITIES = {
    "features.0.weight": 0.3,
    "features.1.weight": 0.1,
    "classifier.1.weight": 0.05,
    "classifier.3.weight": 0.2,
}
SPARSE_TOTAL = 9024


class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.Conv2d(8, 8, 3, padding=1, stride=2, groups=4),
            nn.BatchNorm2d(8),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128, 16), nn.BatchNorm1d(16), nn.Linear(16, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def test_layer_flops_matches_hand_count_per_layer():
    assert layer_flops(SmallNet(), (3, 8, 8)) == SMALL_NET_FLOPS


def test_layer_flops_leaves_training_mode_as_it_was():
    model = SmallNet()
    layer_flops(model, (3, 8, 8))
    assert model.training
    model.eval()
    layer_flops(model, (3, 8, 8))
    assert not model.training


def test_layer_flops_scales_with_input_size():
    # a 3x16x16 input quadruples the conv output sizes; the linear layers need 128 inputs,
    # so measure a conv-only model
    flops = layer_flops(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1)), (3, 16, 16))
    assert flops == {"0.weight": 2 * 27 * 8 * 256}


def test_layer_flops_counts_a_reused_layer_once_per_call():
    class TwiceLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(self.fc(x))

    assert layer_flops(TwiceLinear(), (4,)) == {"fc.weight": 2 * (2 * 4 * 4)}


def test_conv1d_and_conv3d_layers_are_counted():
    # conv1d 2->4, k 3, stride 2 on length 9: out length 4 -> 2 * (3*2) * 4 * 4 = 192
    # conv3d 1->2, k (2,3,3), groups 1 on 3x5x5: out 2x2x3x3 -> 2 * (2*3*3*1) * 2 * 18 = 1296
    # grouped conv3d 2->4, k 1, groups 2 on 2x3x3: 2 * (1*2/2) * 4 * 18 = 144
    conv1d = nn.Conv1d(2, 4, 3, stride=2)
    assert layer_flops(nn.Sequential(conv1d), (2, 9)) == {"0.weight": 192}
    conv3d = nn.Sequential(nn.Conv3d(1, 2, (2, 3, 3)), nn.Conv3d(2, 4, 1, groups=2))
    assert layer_flops(conv3d, (1, 3, 5, 5)) == {"0.weight": 1296, "1.weight": 144}


def test_a_custom_prunable_predicate_selects_the_counted_layers():
    def only_linear(name, module):
        return isinstance(module, nn.Linear)

    assert set(layer_flops(SmallNet(), (3, 8, 8), only_linear)) == {"classifier.1.weight", "classifier.3.weight"}
    with pytest.raises(ValueError, match="no FLOPs rule for '2' \\(BatchNorm2d\\)"):
        layer_flops(SmallNet().features, (3, 8, 8), lambda name, module: name == "2" or is_prunable(name, module))


def test_dense_network_ratios_are_one():
    all_dense = {name: 1.0 for name in SMALL_NET_FLOPS}
    assert inference_flops_ratio(SMALL_NET_FLOPS, all_dense) == 1.0
    assert inference_flops_ratio(SMALL_NET_FLOPS, {}) == 1.0  # unmasked layers are dense
    assert training_flops_ratio(SMALL_NET_FLOPS, all_dense, steps=100, dense_grad_steps=0) == 1.0
    assert training_flops_ratio(SMALL_NET_FLOPS, all_dense, steps=100, dense_grad_steps=10) == 1.0


def test_uniform_density_gives_that_density():
    uniform = {name: 0.1 for name in SMALL_NET_FLOPS}
    assert inference_flops_ratio(SMALL_NET_FLOPS, uniform) == pytest.approx(0.1)
    assert training_flops_ratio(SMALL_NET_FLOPS, uniform, steps=50, dense_grad_steps=0) == pytest.approx(0.1)


def test_static_sparse_network_follows_per_layer_densities():
    expected = SPARSE_TOTAL / DENSE_TOTAL  # 0.24607...
    assert inference_flops_ratio(SMALL_NET_FLOPS, SPARSE_DENSITIES) == pytest.approx(expected)
    ratio = training_flops_ratio(SMALL_NET_FLOPS, SPARSE_DENSITIES, steps=1000, dense_grad_steps=0)
    assert ratio == pytest.approx(expected)


def test_dense_gradient_steps_add_the_dense_weight_gradient():
    # 90 sparse steps at 3 f_S + 10 update steps at 2 f_S + f_D, over 100 dense steps at 3 f_D:
    #   (90*3*9024 + 10*(2*9024 + 36672)) / (100*3*36672) = 2983680 / 11001600
    ratio = training_flops_ratio(SMALL_NET_FLOPS, SPARSE_DENSITIES, steps=100, dense_grad_steps=10)
    assert ratio == pytest.approx(2983680 / 11001600)
    assert ratio > inference_flops_ratio(SMALL_NET_FLOPS, SPARSE_DENSITIES)


def test_zero_steps_gives_the_per_step_ratio():
    ratio = training_flops_ratio(SMALL_NET_FLOPS, SPARSE_DENSITIES, steps=0, dense_grad_steps=0)
    assert ratio == pytest.approx(SPARSE_TOTAL / DENSE_TOTAL)


@pytest.mark.parametrize("steps, dense_grad_steps", [(10, 11), (10, -1), (-1, 0)])
def test_impossible_step_counts_are_rejected(steps, dense_grad_steps):
    with pytest.raises(ValueError, match="dense_grad_steps"):
        training_flops_ratio(SMALL_NET_FLOPS, SPARSE_DENSITIES, steps, dense_grad_steps)


def test_densities_of_unknown_layers_are_rejected():
    with pytest.raises(ValueError, match="bias"):
        inference_flops_ratio(SMALL_NET_FLOPS, {"features.0.bias": 0.5})


def test_dense_gradient_steps_at_other_densities_than_the_mean():
    # 10 steps at the SPARSE densities on average, the 2 dense-gradient steps at all-0.5 densities (f_S = 18336):
    #   (3*10*9024 + 2*(36672 - 18336)) / (10*3*36672) = 307392 / 1100160
    half = {name: 0.5 for name in SMALL_NET_FLOPS}
    ratio = training_flops_ratio(SMALL_NET_FLOPS, SPARSE_DENSITIES, steps=10, dense_grad_steps=2,
                                 dense_grad_densities=half)
    assert ratio == pytest.approx(307392 / 1100160)


@pytest.mark.parametrize("acq, expected", [
    # Linear(10, 10): F = 200 FLOPs. GraNet's cubic from 50 to 10 active weights over 4 steps, an update after
    # the optimizer step of steps 1, 2, 3 (ITOP order): int(100 * d) for d = 0.1 + 0.4 (1 - t/4)^3 = 26, 15, 10.
    # The 4 iterations run on 50, 26, 15, 10 active weights: 3 * 200 * 101/100 = 606 FLOPs of sparse passes.
    ("static", 606 / 2400),                    # pruning only: no dense gradient
    ("rigl", (606 + 600 - 200 * 91 / 100) / 2400),  # + 3 dense weight gradients, on 50 + 26 + 15 = 91 active
])
def test_training_flops_integrate_densities_that_change_during_the_run(acq, expected):
    torch.manual_seed(0)
    model = nn.Linear(10, 10, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = sparsify(model, optimizer, sparsity=0.9, total_steps=4, acq=acq, distribution="uniform",
                      dense_first_layer=False, schedule="gradual", update_interval=1, prune_end_fraction=1.0)
    actives = []
    for _ in range(4):
        actives.append(engine.stats()["layers"]["weight"]["active"])
        model(torch.randn(3, 10)).sum().backward()
        engine.step()
    assert actives == [50, 26, 15, 10] and engine.stats()["layers"]["weight"]["active"] == 10
    assert engine.mean_densities() == {"weight": 101 / 400}
    assert engine.training_flops_ratio({"weight": 200}) == pytest.approx(expected, rel=1e-12)
    assert inference_flops_ratio({"weight": 200}, engine.densities) == pytest.approx(0.1)
    copy = nn.Linear(10, 10, bias=False)
    restored = sparsify(copy, torch.optim.SGD(copy.parameters(), lr=0.1), sparsity=0.9, total_steps=4, acq=acq,
                        distribution="uniform", dense_first_layer=False, schedule="gradual", update_interval=1,
                        prune_end_fraction=1.0)
    restored.load_state_dict(engine.state_dict())
    assert restored.training_flops_ratio({"weight": 200}) == engine.training_flops_ratio({"weight": 200})
