import math

import pytest

from dst_cli.sparse import SparseConfigError
from dst_cli.sparse.distribution import active_counts, layer_densities

# conv 3->8 3x3, conv 8->16 3x3, linear 16*4*4 -> 10
SHAPES = {"c1": (8, 3, 3, 3), "c2": (16, 8, 3, 3), "fc": (10, 256)}
NUMEL = {"c1": 216, "c2": 1152, "fc": 2560}  # total 3928


def test_erk_matches_hand_computed_values():
    # scales: c1 (8+3+3+3)/216 = 17/216, c2 (16+8+3+3)/1152 = 30/1152, fc (10+256)/2560 = 266/2560
    # eps = 0.1 * 3928 / (17 + 30 + 266) = 392.8 / 313
    densities = layer_densities(SHAPES, 0.1, "erk")
    eps = 392.8 / 313
    assert densities["c1"] == pytest.approx(eps * 17 / 216)
    assert densities["c2"] == pytest.approx(eps * 30 / 1152)
    assert densities["fc"] == pytest.approx(eps * 266 / 2560)


def test_er_ignores_kernel_size():
    # ER scale is (in + out) / (in * out): c1 11/24, c2 24/128, fc 266/2560
    # eps = 392.8 / (11/24 * 216 + 24/128 * 1152 + 266) = 392.8 / 581
    densities = layer_densities(SHAPES, 0.1, "er")
    assert densities["c1"] == pytest.approx(392.8 / 581 * 11 / 24)
    assert densities["c2"] == pytest.approx(392.8 / 581 * 24 / 128)


def test_erk_makes_layers_dense_when_their_share_exceeds_one_and_resolves():
    # density 0.9, budget 3535.2: eps = 3535.2/313 puts fc at 1.17 -> fc dense;
    # re-solve eps = (3535.2-2560)/(17+30) puts c1 at 1.63 -> c1 dense; re-solve: c2 = (3535.2-2560-216)/1152
    densities = layer_densities(SHAPES, 0.9, "erk")
    assert densities["fc"] == 1.0
    assert densities["c1"] == 1.0
    assert densities["c2"] == pytest.approx(759.2 / 1152)


@pytest.mark.parametrize("distribution", ["erk", "er", "uniform"])
@pytest.mark.parametrize("density", [0.02, 0.05, 0.1, 0.5])
@pytest.mark.parametrize("dense", [frozenset(), frozenset({"c1"}), frozenset({"c1", "fc"})])
def test_global_density_exact_within_one_weight_per_layer(distribution, density, dense):
    try:
        densities = layer_densities(SHAPES, density, distribution, dense)
    except SparseConfigError:
        assert sum(NUMEL[n] for n in dense) > density * 3928
        return
    counts = active_counts(SHAPES, densities)
    assert all(densities[n] == 1.0 for n in dense)
    assert all(0 < densities[n] <= 1.0 for n in SHAPES)
    if distribution == "uniform":  # the dense layers come on top of the density
        expected = sum(NUMEL[n] if n in dense else density * NUMEL[n] for n in SHAPES)
    else:
        expected = density * 3928
    assert abs(sum(counts.values()) - expected) <= len(SHAPES)


def test_uniform_keeps_every_other_layer_at_exactly_the_density():
    # RigL's uniform (sparse_utils.py get_sparsities_uniform): the dense layers do not change the others
    assert layer_densities(SHAPES, 0.1, "uniform", frozenset({"c1"})) == {"c1": 1.0, "c2": 0.1, "fc": 0.1}


def test_dense_layers_larger_than_the_budget_are_an_error():
    with pytest.raises(SparseConfigError, match="dense layers"):
        layer_densities(SHAPES, 0.05, "erk", frozenset({"fc"}))


def test_counts_are_rounded_and_at_least_one():
    counts = active_counts({"a": (10, 10), "b": (3, 3)}, {"a": 0.123, "b": 0.01})
    assert counts == {"a": 12, "b": 1}
    assert math.prod((10, 10)) == 100
