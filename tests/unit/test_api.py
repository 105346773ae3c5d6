"""sparsify() on user models: exact counts, custom prunable, resume equals uninterrupted, argument checks, DDP."""
import io
import math
import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dst_cli.sparse import MasksDiverged, SparseConfigError, sparsify


class UserNet(nn.Module):
    """A model the library has never seen: Conv1d and Conv3d branches, a Linear head, a norm layer."""

    def __init__(self):
        super().__init__()
        self.signal = nn.Conv1d(2, 8, 3)               # (4, 2, 8) input -> 8 x 6
        self.volume = nn.Conv3d(1, 4, 2)               # (1, 3, 3, 3) input -> 4 x 2 x 2 x 2
        self.norm = nn.LayerNorm(48 + 32)
        self.head = nn.Linear(48 + 32, 5)

    def forward(self, x):
        signal, volume = x[:, :16].view(-1, 2, 8), x[:, 16:43].view(-1, 1, 3, 3, 3)
        features = torch.cat([self.signal(signal).flatten(1), self.volume(volume).flatten(1)], dim=1)
        return self.head(self.norm(features).relu())


def batches(seed: int, count: int):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 43, generator=generator), torch.randint(0, 5, (16,), generator=generator))
            for _ in range(count)]


def train(model, optimizer, engine, data):
    for inputs, targets in data:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        engine.step()


def make(acq="ee", schedule="itop", seed=0, **options):
    torch.manual_seed(seed)
    model = UserNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    engine = sparsify(model, optimizer, sparsity=0.8, total_steps=40, acq=acq, schedule=schedule,
                      update_interval=4, seed=seed, **options)
    return model, optimizer, engine


@pytest.mark.parametrize("acq", ["ee", "rigl", "set", "random"])
def test_user_model_with_conv1d_and_conv3d_keeps_exact_counts(acq):
    model, optimizer, engine = make(acq)
    assert engine.names == ["signal.weight", "volume.weight", "head.weight"]
    counts = list(engine.counts)
    assert abs(sum(counts) - 0.2 * (48 + 32 + 400)) <= len(counts)
    train(model, optimizer, engine, batches(1, 39))
    assert engine.updates_done == 9
    assert [int(m.sum()) for m in engine.masks.masks] == counts
    weights = dict(model.named_parameters())
    assert [int(torch.count_nonzero(weights[n])) for n in engine.names] <= counts
    assert all(torch.all(weights[n][~m] == 0) for n, m in zip(engine.names, engine.masks.masks))
    assert model.norm.weight.count_nonzero() == 80 and model.head.bias.count_nonzero() == 5  # dense stays dense


def test_custom_prunable_selects_the_sparse_layers():
    torch.manual_seed(0)
    model = UserNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = sparsify(model, optimizer, sparsity=0.5, total_steps=10, prunable=lambda name, m: name == "head")
    assert engine.names == ["head.weight"] and engine.counts == [200]
    assert int(torch.count_nonzero(model.signal.weight)) == 48


def test_uniform_keeps_the_first_layer_dense_unless_told_otherwise():
    torch.manual_seed(0)
    model = UserNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = sparsify(model, optimizer, sparsity=0.75, total_steps=10, distribution="uniform")
    assert engine.counts == [48, 8, 100]  # 48 dense, then exactly 25% of 32 and of 400
    engine = sparsify(model, optimizer, sparsity=0.75, total_steps=10, distribution="uniform",
                      dense_first_layer=False)
    assert engine.counts == [12, 8, 100]


@pytest.mark.parametrize("acq, schedule", [("ee", "itop"), ("set", "rigl"), ("rigl", "rigl")])
def test_resume_from_state_dicts_equals_uninterrupted_training(acq, schedule):
    data = batches(2, 30)
    model, optimizer, engine = make(acq, schedule)
    train(model, optimizer, engine, data)

    model, optimizer, engine = make(acq, schedule)
    train(model, optimizer, engine, data[:13])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "engine": engine.state_dict()},
               buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model, resumed_optimizer, resumed_engine = make(acq, schedule, seed=7)  # different masks and generator
    resumed_model.load_state_dict(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed_engine.load_state_dict(saved["engine"])
    train(resumed_model, resumed_optimizer, resumed_engine, data[13:])

    uninterrupted = make(acq, schedule)
    train(*uninterrupted, data)
    for name, value in uninterrupted[0].state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[name]), name
    expected, got = uninterrupted[2].state_dict(), resumed_engine.state_dict()
    assert {k: expected[k] for k in ("step_count", "optimizer_steps", "updates_done", "counts")} == \
           {k: got[k] for k in ("step_count", "optimizer_steps", "updates_done", "counts")}
    assert torch.equal(expected["generator"], got["generator"])
    for key in ("masks", "explored", "epoch_start"):
        assert all(torch.equal(expected[key][n], got[key][n]) for n in resumed_engine.names), key
    assert uninterrupted[2].stats() == resumed_engine.stats()


BAD_ARGUMENTS = [
    ({"sparsity": 1.5}, "sparsity", "sparsity=1.5 is invalid; allowed: a number in [0, 1)"),
    ({"sparsity": 1.0}, "sparsity", "sparsity=1.0 is invalid"),
    ({"sparsity": -0.1}, "sparsity", "sparsity=-0.1 is invalid"),
    ({"sparsity": math.nan}, "sparsity", "sparsity=nan is invalid"),
    ({"sparsity": "0.9"}, "sparsity", "sparsity=0.9 is invalid"),
    ({"total_steps": 0}, "total_steps", "total_steps=0 is invalid; allowed: an integer >= 1"),
    ({"total_steps": 2.5}, "total_steps", "total_steps=2.5 is invalid"),
    ({"acq": "foo"}, "acq", "acq=foo is invalid; allowed: set | random | static | rigl | ee"),
    ({"acq_options": {"c": -1.0}}, "acq.c", "acq.c=-1.0 is invalid; allowed: a finite number >= 0"),
    ({"acq_options": {"c": math.nan}}, "acq.c", "acq.c=nan is invalid"),
    ({"acq_options": {"eps": 0}}, "acq.eps", "acq.eps=0 is invalid; allowed: a finite number > 0"),
    ({"acq_options": {"bonus": "exp"}}, "acq.bonus", "acq.bonus=exp is invalid; allowed: log | sqrt"),
    ({"acq_options": "c=1"}, "acq_options", "acq_options=c=1 is invalid"),
    ({"distribution": "normal"}, "distribution", "distribution=normal is invalid; allowed: erk | er | uniform"),
    ({"dense_first_layer": "maybe"}, "dense_first_layer", "dense_first_layer=maybe is invalid; allowed: true or false"),
    ({"dense_last_layer": 1}, "dense_last_layer", "dense_last_layer=1 is invalid"),
    ({"schedule": "fast"}, "schedule", "schedule=fast is invalid; allowed: rigl | itop"),
    ({"update_interval": 0}, "schedule.update_interval", "schedule.update_interval=0 is invalid"),
    ({"rounding": "floor"}, "schedule.rounding", "schedule.rounding=floor is invalid; allowed: round | int | ceil"),
    ({"warmup": 1}, "warmup", "warmup is not a schedule option"),
    ({"prunable": "conv"}, "prunable", "prunable=conv is invalid"),
    ({"prunable": lambda name, module: False}, "prunable", "the model has no prunable weights"),
    ({"prunable": lambda name, module: name == "signal" or isinstance(module, nn.ReLU)}, "prunable", "no weight"),
    ({"seed": -1}, "seed", "seed=-1 is invalid; allowed: an integer in [0, 18446744073709551615]"),
    ({"seed": 10**23}, "seed", "seed=100000000000000000000000 is invalid"),
    ({"generator": 3}, "generator", "generator=3 is invalid"),
    ({"ddp": "ignore"}, "ddp", "ddp=ignore is invalid; allowed: check | broadcast"),
    ({"sparsity": 0.9, "dense_last_layer": True}, "sparsity", "below what the dense layers (2.weight) alone hold"),
]


@pytest.mark.parametrize("arguments, key, message", BAD_ARGUMENTS, ids=[b[1] + str(i) for i, b in enumerate(BAD_ARGUMENTS)])
def test_every_bad_argument_names_itself_and_leaves_the_model_untouched(arguments, key, message):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    options = {"sparsity": 0.9, "total_steps": 100, **arguments}
    with pytest.raises(SparseConfigError) as error:
        sparsify(model, optimizer, **options)
    assert error.value.key == key
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_an_optimizer_without_the_prunable_weights_is_refused():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model[1].parameters(), lr=0.1)
    with pytest.raises(SparseConfigError, match=r"does not hold the prunable weights \['0.weight'\]"):
        sparsify(model, optimizer, sparsity=0.5, total_steps=10)


# ----- DDP: a 2-process gloo group on CPU -----

def gloo_threads() -> list[str]:
    """The names of this process's gloo threads (Linux: /proc/self/task/*/comm; elsewhere none are seen)."""
    tasks = "/proc/self/task"
    if not os.path.isdir(tasks):
        return []
    names = []
    for task in os.listdir(tasks):
        try:
            with open(f"{tasks}/{task}/comm") as comm:
                names.append(comm.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(name for name in names if "gloo" in name)


def ddp_worker(rank: int, init_file: str, mode: str, diverge: bool, results: str) -> None:
    # Imported before the group exists: torch.distributed.nn.functional's collectives take group=group.WORLD
    # as a default argument, evaluated at import. Imported after init_process_group (the first optimizer
    # imports it through torch._dynamo), it holds the default group for good, destroy_process_group cannot
    # free it, and the gloo threads run on into interpreter shutdown, where freeing the group's last work
    # needs the GIL: std::terminate ("terminate called without an active exception"), SIGABRT (18 of 60
    # exits in a stress run on torch 2.14; none with this import first). run_ddp checks the threads are gone.
    import torch.distributed.nn  # noqa: F401
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=60))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(43, 16), nn.ReLU(), nn.Linear(16, 5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # random growth from a different seed on rank 1 makes its masks diverge at the first update
    engine = sparsify(model, optimizer, sparsity=0.7, total_steps=12, acq="set", update_interval=4, ddp=mode,
                      seed=rank if diverge else 0)
    if diverge:  # and its initial masks too: bring them in line so that only the update differs
        for mask in engine.masks.masks:
            dist.broadcast(mask, src=0)
        for i, mask in enumerate(engine.masks.masks):
            engine.masks.multipliers[i].copy_(mask)
        for tensor in (*model.parameters(), *engine.masks.explored):  # zeroed and recorded by rank 1's masks
            dist.broadcast(tensor.data, src=0)
    outcome = "completed"
    try:
        train(model, optimizer, engine, batches(5, 12))
    except MasksDiverged as error:
        outcome = str(error)
    momentum = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    torch.save({"outcome": outcome, "checksum": engine.masks_checksum(), "checks": engine.mask_checks,
                "counts": engine.counts, "weights": list(model.state_dict().values()), "momentum": momentum,
                "explored": engine.masks.explored}, f"{results}.{rank}")
    dist.destroy_process_group()
    with open(f"{results}.{rank}.threads", "w") as file:  # the group is gone: its threads are joined
        file.write(" ".join(gloo_threads()))


def run_ddp(tmp_path, mode, diverge):
    tmp_path.mkdir(exist_ok=True)
    results = str(tmp_path / "result")
    mp.spawn(ddp_worker, args=(str(tmp_path / "init"), mode, diverge, results), nprocs=2)
    for rank in range(2):
        with open(f"{results}.{rank}.threads") as file:
            assert file.read() == "", f"rank {rank}: gloo threads outlived destroy_process_group"
    return [torch.load(f"{results}.{rank}", weights_only=True) for rank in range(2)]


@pytest.mark.slow
def test_ddp_check_counts_agreeing_updates_and_names_a_divergence(tmp_path):
    agree = run_ddp(tmp_path / "agree", "check", diverge=False)
    assert [r["outcome"] for r in agree] == ["completed", "completed"]
    assert [r["checks"] for r in agree] == [2, 2]  # updates at 4 and 8 optimizer steps
    diverged = run_ddp(tmp_path / "diverge", "check", diverge=True)
    for result in diverged:
        assert result["outcome"].startswith("the ranks' masks differ after the mask update at step 4 (layers: ")


@pytest.mark.slow
def test_ddp_broadcast_makes_rank0s_masks_everyones(tmp_path):
    ranks = run_ddp(tmp_path, "broadcast", diverge=True)
    assert [r["outcome"] for r in ranks] == ["completed", "completed"]
    assert torch.equal(ranks[0]["checksum"], ranks[1]["checksum"])
    assert ranks[0]["counts"] == ranks[1]["counts"] and ranks[0]["checks"] == 2
    # and rank 0's weights, optimizer state and explored flags: the models stay one model
    for key in ("weights", "momentum", "explored"):
        assert all(torch.equal(a, b) for a, b in zip(ranks[0][key], ranks[1][key])), key


def test_masks_are_read_by_name_as_copies_and_the_engine_describes_itself():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = sparsify(model, optimizer, sparsity=0.8, total_steps=100, acq="ee", update_interval=10)
    masks = engine.masks_by_name()
    assert list(masks) == ["0.weight", "2.weight"] and sum(int(m.sum()) for m in masks.values()) == 60
    assert torch.equal(engine.mask("2.weight"), masks["2.weight"]) and masks["2.weight"].shape == (5, 20)
    masks["0.weight"].fill_(True)  # a copy: the engine's own mask is untouched
    assert int(engine.mask("0.weight").sum()) == engine.counts[0]
    with pytest.raises(KeyError, match="'1.weight' is not a sparse layer; the sparse layers: 0.weight, 2.weight"):
        engine.mask("1.weight")
    assert repr(engine) == ("SparseEngine(2 layers, 60/300 weights active (20.00%), distribution=erk, "
                            "acq=ee(c=0.0003, eps=1.0, bonus='log'), init=random(), "
                            "schedule=UpdateSchedule(total_steps=100, update_interval=10), backend=masked, step 0, 0 updates)")
    assert engine.summary() == "density 20.00%, explored 20.00%, turnover 0.00%, 0 updates in 0 steps"
    assert engine.stats(per_layer=False) == {"density": 0.2, "explored": 0.2, "turnover": 0.0}
