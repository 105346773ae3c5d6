"""The sparse compute backend (dst_cli.sparse.backend): the kernels give the masked model's outputs and, at the
active positions, its weight gradients (0 elsewhere); masks can change; steps can switch to the masked path."""
import copy

import pytest
import torch
from torch import nn

from dst_cli.sparse import backend as sparse_backend
from dst_cli.sparse import sparsify
from dst_cli.sparse.backend import (
    BackendUnavailable, attach_backend, layer_geometry, unavailable_reason,
)

CPU_HAS_AVX2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
UNAVAILABLE = unavailable_reason()
needs_kernels = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"{UNAVAILABLE}")

RTOL = 1e-5


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = RTOL) -> bool:
    """Equal within rtol of the expected values' largest magnitude (per tensor)."""
    if expected.numel() == 0:
        return actual.numel() == 0
    scale = expected.abs().max().item() or 1.0
    return (actual.double() - expected.double()).abs().max().item() <= rtol * scale


def attach(module: nn.Module, mask: torch.Tensor, mode="sparse", **options):
    model = nn.Sequential(module)
    with torch.no_grad():
        module.weight.mul_(mask)
    return model, attach_backend(model, {"0.weight": module.weight}, {"0.weight": mask}, mode=mode, **options)


def random_mask(shape, density: float, seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density


def forward_backward(model: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    """Output, weight gradient and input gradient of one pass (fresh gradients)."""
    for p in model.parameters():
        p.grad = None
    x = x.clone().requires_grad_()
    out = model(x)
    out.backward(grad_out)
    return out.detach(), model[0].weight.grad.clone(), x.grad


@pytest.mark.skipif(not CPU_HAS_AVX2, reason="the sparse kernels need AVX2 + FMA")
def test_the_kernels_are_built_where_the_cpu_can_run_them():
    assert UNAVAILABLE is None, UNAVAILABLE


# ----------------------------------------------------------------------------------------------- by hand

@needs_kernels
@pytest.mark.parametrize("kernel", ["batch"])
def test_linear_by_hand(kernel):
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 5.0, 2.0], [7.0, -1.0, 9.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
    mask = torch.tensor([[True, False, True], [False, True, False]])
    model, _ = attach(layer, mask, kernels=[kernel])
    x = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    out = model(x)
    out.backward(torch.tensor([[1.0, 10.0]]))
    # active weights: w00 = 1, w02 = 2, w11 = -1
    assert out.tolist() == [[1 * 1 + 2 * 3 + 0.5, -1 * 2 - 0.5]]
    assert layer.weight.grad.tolist() == [[1.0, 0.0, 3.0], [0.0, 20.0, 0.0]]  # dO_r * x_c, active only
    assert x.grad.tolist() == [[1.0, -10.0, 2.0]]                              # W_masked^T dO
    assert layer.bias.grad.tolist() == [1.0, 10.0]


@needs_kernels
@pytest.mark.parametrize("kernel", ["rows", "batch"])
def test_conv_by_hand(kernel):
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(3.0)
        conv.weight[0, 0, 1, 1] = 2.0  # centre
        conv.weight[0, 0, 0, 0] = 1.0  # top left: out[p, q] reads x[p - 1, q - 1]
    mask = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    mask[0, 0, 1, 1] = mask[0, 0, 0, 0] = True
    model, _ = attach(conv, mask, kernels=[kernel])
    x = torch.arange(9.0).view(1, 1, 3, 3).requires_grad_()
    out = model(x)
    out.backward(torch.ones_like(out))
    expected = 2 * x.detach()
    expected[0, 0, 1:, 1:] += x.detach()[0, 0, :-1, :-1]
    assert torch.equal(out, expected)
    grad = torch.zeros(1, 1, 3, 3)
    grad[0, 0, 1, 1] = x.sum()                 # every output reads its own pixel
    grad[0, 0, 0, 0] = x[0, 0, :2, :2].sum()   # the outputs with p, q >= 1 read x[p - 1, q - 1]
    assert torch.equal(conv.weight.grad, grad)
    grad_x = torch.full((1, 1, 3, 3), 2.0)
    grad_x[0, 0, :2, :2] += 1.0                # x[y, x] feeds out[y + 1, x + 1] through the top-left weight
    assert torch.equal(x.grad, grad_x)


# --------------------------------------------------------------------------------- against the masked path

LAYERS = {
    "conv3x3": (lambda: nn.Conv2d(5, 7, 3, padding=1, bias=False), (4, 5, 9, 11)),
    "conv3x3-bias-32px": (lambda: nn.Conv2d(3, 6, 3, padding=1), (3, 3, 32, 32)),
    "conv3x3-stride2": (lambda: nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), (5, 6, 9, 8)),
    "conv1x1": (lambda: nn.Conv2d(6, 8, 1, bias=False), (5, 6, 8, 8)),
    "conv1x1-stride2": (lambda: nn.Conv2d(6, 8, 1, stride=2), (5, 6, 9, 8)),
    "conv-odd": (lambda: nn.Conv2d(6, 8, (3, 5), stride=(2, 3), padding=(0, 2)), (3, 6, 11, 13)),
    "conv5x5": (lambda: nn.Conv2d(4, 5, 5, padding=2), (3, 4, 7, 10)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, padding=1), (3, 4, 40)),
    "conv1d-stride3": (lambda: nn.Conv1d(4, 6, 1, stride=3), (3, 4, 20)),
    "linear": (lambda: nn.Linear(20, 13), (9, 20)),
    "linear-3d-input": (lambda: nn.Linear(20, 13), (2, 3, 20)),
}


CASES = [(name, kernel) for name, (make, _) in LAYERS.items() for kernel in layer_geometry(make()).kernels()]


@needs_kernels
@pytest.mark.parametrize("density", [0.3, 1.0, 0.0])
@pytest.mark.parametrize(("name", "kernel"), CASES, ids=[f"{name}-{kernel}" for name, kernel in CASES])
def test_kernels_match_the_masked_path(name, kernel, density):
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    module = make()
    mask = random_mask(module.weight.shape, density)
    with torch.no_grad():
        module.weight.mul_(mask)
    float64 = nn.Sequential(copy.deepcopy(module).double())
    model, backend = attach(module, mask, kernels=[kernel])
    x = torch.randn(shape)
    grad_out = torch.randn_like(float64(x.double())).float()
    reference = forward_backward(float64, x.double(), grad_out.double())
    backend.use_masked(True)
    masked = forward_backward(model, x, grad_out)
    backend.use_masked(False)
    out, grad_w, grad_x = forward_backward(model, x, grad_out)
    assert backend.kernels == {"0.weight": kernel}
    assert close(out, reference[0]) and close(out, masked[0])
    assert close(grad_w[mask], reference[1][mask]) and close(grad_w[mask], masked[1][mask])
    assert torch.count_nonzero(grad_w[~mask]) == 0
    assert close(grad_x, reference[2]) and close(grad_x, masked[2])


@needs_kernels
def test_bias_gradient_matches():
    module = nn.Conv2d(3, 4, 3, padding=1)
    model, backend = attach(module, random_mask(module.weight.shape, 0.5))
    x = torch.randn(2, 3, 6, 6)
    grad_out = torch.randn(2, 4, 6, 6)
    model(x).backward(grad_out)
    assert close(module.bias.grad, grad_out.sum((0, 2, 3)))


# --------------------------------------------------------------------------------- gradients and masks

@needs_kernels
def test_gradients_accumulate_without_zero_grad():
    module = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    mask = random_mask(module.weight.shape, 0.4)
    model, _ = attach(module, mask)
    x, y = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    model(x).sum().backward()
    first = module.weight.grad.clone()
    model(y).sum().backward()  # adds, as autograd does
    module.weight.grad, total = None, module.weight.grad.clone()
    model(y).sum().backward()
    assert close(total, first + module.weight.grad)
    assert torch.count_nonzero(total[~mask]) == 0


@needs_kernels
def test_use_masked_gives_the_dense_gradient_then_back():
    module = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    mask = random_mask(module.weight.shape, 0.3)
    model, backend = attach(module, mask)
    x = torch.randn(2, 4, 8, 8)
    backend.use_masked(True)
    model(x).sum().backward()
    assert torch.count_nonzero(module.weight.grad[~mask]) > 0  # RigL's grow scores need these
    assert backend.kernels == {"0.weight": "masked"}
    dense = module.weight.grad.clone()
    module.weight.grad = None
    backend.use_masked(False)
    model(x).sum().backward()
    assert torch.count_nonzero(module.weight.grad[~mask]) == 0
    assert close(module.weight.grad[mask], dense[mask])


@needs_kernels
@pytest.mark.parametrize("kernel", ["rows", "batch"])
def test_rebuild_follows_a_new_mask(kernel):
    module = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    old = random_mask(module.weight.shape, 0.3, seed=1)
    model, backend = attach(module, old, kernels=[kernel])
    x = torch.randn(2, 4, 8, 8)
    model(x).sum().backward()
    new = random_mask(module.weight.shape, 0.3, seed=2)
    with torch.no_grad():
        module.weight.copy_(torch.randn_like(module.weight) * new)  # as an update: new weights, old ones 0
    backend.rebuild({"0.weight": new})
    module.weight.grad = None
    out = model(x)
    out.sum().backward()
    backend.use_masked(True)
    assert close(out, model(x))
    assert torch.count_nonzero(module.weight.grad[~new]) == 0  # the old mask's positions are clean
    assert close(module.weight.grad[new], torch.autograd.grad(model(x).sum(), module.weight)[0][new])


@needs_kernels
def test_state_dict_keys_stay_and_detach_restores_forward():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    keys = list(model.state_dict())
    weights = {"0.weight": model[0].weight, "3.weight": model[3].weight}
    masks = {name: random_mask(w.shape, 0.5) for name, w in weights.items()}
    backend = attach_backend(model, weights, masks, mode="sparse")
    model(torch.randn(2, 3, 6, 6))
    assert list(model.state_dict()) == keys
    assert set(backend.choices.values()) == {"sparse"}
    backend.detach()
    assert "forward" not in vars(model[0]) and "forward" not in vars(model[3])


@needs_kernels
@pytest.mark.parametrize("acq", ["set", "rigl"])
def test_training_with_the_backend_follows_masked_training(acq):
    """The same run (SET: random growth; RigL: growth by the dense gradient, its update steps on the masked
    path) with and without the backend: the same masks and weights."""

    def run(with_backend: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16, 4))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        engine = sparsify(model, optimizer, sparsity=0.7, total_steps=12, acq=acq, update_interval=3,
                          backend="sparse" if with_backend else "masked")
        data = torch.Generator().manual_seed(1)
        masked_steps = 0
        for _ in range(12):
            x, y = torch.randn(8, 3, 8, 8, generator=data), torch.randint(0, 4, (8,), generator=data)
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()  # the engine set the backend before the forward
            if engine.backend is not None:
                masked_steps += engine.backend.masked
            engine.step()
        assert engine.updates_done > 1
        if engine.backend is not None:
            assert masked_steps == (engine.updates_done if acq == "rigl" else 0)
        return engine.masks_by_name(), [p.detach().clone() for p in model.parameters()]

    sparse_masks, sparse_params = run(True)
    masked_masks, masked_params = run(False)
    assert all(torch.equal(sparse_masks[n], masked_masks[n]) for n in masked_masks)
    assert all(close(a, b, 1e-4) for a, b in zip(sparse_params, masked_params))


# ----------------------------------------------------------------------------------------- choosing

@needs_kernels
def test_auto_times_each_layer_and_reports_its_choice():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Flatten(), nn.Linear(8 * 64, 3))
    weights = {name: p for name, p in model.named_parameters() if name.endswith("weight")}
    masks = {name: random_mask(w.shape, 0.2) for name, w in weights.items()}
    backend = attach_backend(model, weights, masks, mode="auto")
    assert set(backend.choices.values()) == {"untimed"}
    model(torch.randn(4, 3, 8, 8)).sum().backward()
    assert set(backend.choices) == set(weights) and set(backend.choices.values()) <= {"sparse", "masked"}
    timings = backend.timings()
    assert set(timings) == set(weights)
    for name, kernel in backend.kernels.items():
        assert kernel == min(timings[name], key=timings[name].get)
    assert "masked" in timings["0.weight"] and "rows" in timings["0.weight"]
    assert backend.summary().startswith("sparse backend (auto")


@needs_kernels
def test_evaluation_forward_without_gradients():
    module = nn.Conv2d(3, 4, 3, padding=1)
    model, backend = attach(module, random_mask(module.weight.shape, 0.5), mode="auto")
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        out = model(x)
    backend.use_masked(True)
    assert close(out, model(x))


@needs_kernels
def test_layers_without_a_kernel_stay_masked():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3, dilation=2))
    weights = {"0.weight": model[0].weight, "1.weight": model[1].weight}
    masks = {name: random_mask(w.shape, 0.5) for name, w in weights.items()}
    backend = attach_backend(model, weights, masks, mode="sparse")
    assert backend.choices == {"0.weight": "masked", "1.weight": "masked"}
    assert "grouped" in backend.masked_layers["0.weight"]
    model(torch.randn(1, 4, 9, 9))


@needs_kernels
def test_a_layer_is_found_by_its_weight_whatever_its_name_and_a_weight_no_module_holds_stays_masked():
    model = nn.Sequential(nn.Conv2d(4, 4, 3))
    stray = nn.Parameter(torch.randn(4, 4, 3, 3))
    weights = {"renamed": model[0].weight, "0.weight": stray}
    masks = {name: random_mask(w.shape, 0.5) for name, w in weights.items()}
    backend = attach_backend(model, weights, masks, mode="sparse")
    assert backend.choices["renamed"] != "masked"
    assert backend.masked_layers == {"0.weight": "no module of the model owns 0.weight"}


# -------------------------------------------------------------------------------------- unavailable

@pytest.fixture
def no_kernels(monkeypatch):
    monkeypatch.setattr(sparse_backend, "_library", None)
    error = f"the sparse kernels are not built; {sparse_backend.BUILD_HINT}"
    monkeypatch.setattr(sparse_backend, "_library_error", error)


def test_sparse_mode_without_kernels_says_what_to_install(no_kernels):
    module = nn.Conv2d(2, 2, 3)
    with pytest.raises(BackendUnavailable, match=r"pip install -e \."):
        attach(module, random_mask(module.weight.shape, 0.5), mode="sparse")


def test_auto_mode_without_kernels_runs_masked_and_says_why(no_kernels):
    module = nn.Conv2d(2, 2, 3)
    model, backend = attach(module, random_mask(module.weight.shape, 0.5), mode="auto")
    assert backend.choices == {"0.weight": "masked"} and "not built" in backend.reason
    assert "not built" in backend.summary()
    model(torch.randn(1, 2, 5, 5)).sum().backward()


def test_cpu_without_avx2_is_refused(monkeypatch):
    monkeypatch.setattr(sparse_backend, "_library", None)
    monkeypatch.setattr(sparse_backend, "_library_error", None)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert "AVX2" in unavailable_reason()


def test_bad_arguments_are_refused():
    module = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="mode"):
        attach(module, torch.ones(2, 2, dtype=torch.bool), mode="fast")
    with pytest.raises(ValueError, match="kernels"):
        attach(module, torch.ones(2, 2, dtype=torch.bool), kernels=["tiles"])
