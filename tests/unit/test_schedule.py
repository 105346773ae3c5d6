"""The schedule as pure functions of the step, and each fidelity switch against a hand-computed case."""
import pytest
import torch
from torch import nn

from dst_cli.sparse import SCHEDULE_PRESETS, SparseConfigError, UpdateSchedule, schedule_preset, sparsify


def schedule(**overrides):
    options = dict(update_interval=100, drop_fraction=0.3, decay="cosine", stop_fraction=0.75,
                   min_drop_fraction=0.0, update_after_optimizer_step=False, rounding="round", total_steps=1000)
    return UpdateSchedule(**{**options, **overrides})


def test_updates_every_interval_up_to_the_stop_step():
    s = schedule()
    assert [t for t in range(0, 1001) if s.is_update_step(t)] == [100, 200, 300, 400, 500, 600, 700]
    assert list(s.update_steps()) == [100, 200, 300, 400, 500, 600, 700]
    assert [t for t in range(0, 1001) if schedule(update_at_step0=True).is_update_step(t)][:2] == [0, 100]
    # never after the last optimizer step of the run, even with stop_fraction 1
    assert list(schedule(stop_fraction=1.0, update_interval=250).update_steps()) == [250, 500, 750]


def test_cosine_decay_values():
    s = schedule()
    assert s.drop_fraction_at(0) == pytest.approx(0.3)
    assert s.drop_fraction_at(375) == pytest.approx(0.15)  # half way to the stop step
    assert s.drop_fraction_at(750) == pytest.approx(0.0)


def test_itop_cosine_has_a_floor():
    s = schedule(drop_fraction=0.5, min_drop_fraction=0.005, stop_fraction=1.0)
    assert s.drop_fraction_at(1000) == pytest.approx(0.005)
    assert s.drop_fraction_at(500) == pytest.approx(0.005 + 0.495 * 0.5)


@pytest.mark.parametrize("decay, expected", [("linear", 0.3 * (1 - 300 / 750)), ("constant", 0.3)])
def test_linear_and_constant_decay(decay, expected):
    assert schedule(decay=decay).drop_fraction_at(300) == pytest.approx(expected)


@pytest.mark.parametrize("active, fraction, expected", [
    (7, 0.3, {"round": 2, "int": 2, "ceil": 3}),    # 2.1
    (9, 0.3, {"round": 3, "int": 2, "ceil": 3}),    # 2.7
    (10, 0.05, {"round": 0, "int": 0, "ceil": 1}),  # 0.5: ceil still replaces one weight
])
def test_rounding_of_the_drop_count(active, fraction, expected):
    for rounding, k in expected.items():
        assert schedule(drop_fraction=fraction, decay="constant", rounding=rounding).drop_count(active, 100) == k


def test_presets_hold_the_references_values():
    rigl, itop = schedule_preset("rigl", 1000), schedule_preset("itop", 10_000)
    assert (rigl.update_interval, rigl.drop_fraction, rigl.stop_step, rigl.rounding) == (100, 0.3, 750, "int")
    assert rigl.update_at_step0 and rigl.skip_optimizer_step_on_update and rigl.regrow_dropped
    assert (itop.update_interval, itop.drop_fraction, itop.min_drop_fraction, itop.rounding) == (1000, 0.5, 0.005, "ceil")
    assert itop.update_after_optimizer_step and itop.regrow_dropped and not itop.update_at_step0
    assert schedule_preset("rigl", 1000, update_interval=50).update_interval == 50
    assert set(SCHEDULE_PRESETS) >= {"rigl", "itop"}


@pytest.mark.parametrize("overrides, key", [
    ({"update_interval": 0}, "schedule.update_interval"),
    ({"drop_fraction": 1.5}, "schedule.drop_fraction"),
    ({"drop_fraction": float("nan")}, "schedule.drop_fraction"),
    ({"min_drop_fraction": 0.6}, "schedule.min_drop_fraction"),
    ({"decay": "exp"}, "schedule.decay"),
    ({"rounding": "floor"}, "schedule.rounding"),
    ({"regrow_dropped": "yes"}, "schedule.regrow_dropped"),
    ({"update_at_step0": True}, "schedule.update_after_optimizer_step"),  # itop updates after the step
    ({"warmup": 3}, "warmup"),
])
def test_bad_schedule_options_name_the_key(overrides, key):
    with pytest.raises(SparseConfigError) as error:
        schedule_preset("itop", 1000, **overrides)
    assert error.value.key == key
    assert key in str(error.value)


# ----- the step order of the presets, on a tiny model trained through engine.step() -----

def tiny_run(schedule_name, steps, **overrides):
    """Train a 4->3 linear layer with SGD + momentum; record per call: optimizer steps and the weights."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.5, total_steps=steps, acq="rigl", schedule=schedule_name,
                      **overrides)
    inputs, targets = torch.randn(8, 4), torch.randint(0, 3, (8,))
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        weights_before = model.weight.detach().clone()
        masks_before = engine.masks.masks[0].clone()
        engine.step()
        momentum = optimizer.state[model.weight].get("momentum_buffer", torch.zeros(3, 4)).clone()
        history.append((engine.optimizer_steps, engine.updates_done, weights_before, masks_before,
                        model.weight.detach().clone(), engine.masks.masks[0].clone(), momentum))
    return engine, model, optimizer, history


def test_rigl_updates_at_step0_instead_of_the_optimizer_step():
    engine, model, _, history = tiny_run("rigl", 12, update_interval=5)
    optimizer_steps, updates, weights_before, masks_before, weights_after, masks_after, _ = history[0]
    assert (optimizer_steps, updates) == (0, 1)           # the first call updated the mask, took no step
    stayed = masks_before & masks_after
    assert torch.equal(weights_after[stayed], weights_before[stayed])
    assert not torch.equal(masks_before, masks_after)
    assert history[1][:2] == (1, 1)                       # the next call takes the first optimizer step
    # updates at 0 and 5 optimizer steps (stop = int(0.75 * 12) = 9): 12 calls = 10 optimizer steps + 2 updates
    assert (engine.step_count, engine.optimizer_steps, engine.updates_done) == (12, 10, 2)
    assert [h[1] for h in history].index(2) == 6          # the second update is the 7th call (5 steps + 1 update)


def test_skipping_the_optimizer_step_leaves_the_momentum_of_kept_weights_untouched():
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=0.5, total_steps=20, acq="rigl", schedule="rigl",
                      update_interval=2, update_at_step0=False)
    inputs, targets = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for call in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        momentum = optimizer.state[model.weight].get("momentum_buffer")
        momentum = None if momentum is None else momentum.clone()
        weights, mask = model.weight.detach().clone(), engine.masks.masks[0].clone()
        engine.step()
    # the third call is the update at 2 optimizer steps: no optimizer step, kept weights and momentum unchanged
    assert (engine.optimizer_steps, engine.updates_done) == (2, 1)
    stayed = mask & engine.masks.masks[0]
    assert torch.equal(model.weight.detach()[stayed], weights[stayed])
    assert torch.equal(optimizer.state[model.weight]["momentum_buffer"][stayed], momentum[stayed])


def test_itop_updates_after_the_optimizer_step_so_grown_weights_wait_at_zero():
    engine, _, _, history = tiny_run("itop", 6, update_interval=3, regrow_dropped=False)
    optimizer_steps, updates, _, masks_before, weights_after, masks_after, momentum = history[2]
    assert (optimizer_steps, updates) == (3, 1)           # the third optimizer step, then the update
    grown = masks_after & ~masks_before
    assert grown.any()
    assert torch.all(weights_after[grown] == 0) and torch.all(momentum[grown] == 0)


def test_updating_before_the_optimizer_step_gives_grown_weights_their_first_step_at_once():
    _, _, _, history = tiny_run("itop", 6, update_interval=3, update_after_optimizer_step=False,
                                regrow_dropped=False)
    optimizer_steps, updates, _, masks_before, weights_after, masks_after, _ = history[3]
    assert (optimizer_steps, updates) == (4, 1)           # the update at 3 steps taken, then step 4
    grown = masks_after & ~masks_before
    assert grown.any() and torch.all(weights_after[grown] != 0)


def test_gradual_preset_is_itop_with_granets_pruning_window():
    gradual, itop = schedule_preset("gradual", 16_000), schedule_preset("itop", 16_000)
    assert (gradual.initial_density, gradual.prune_start_step, gradual.prune_end_step) == (0.5, 0, 11_000)
    assert {f: getattr(gradual, f) for f in ("update_interval", "drop_fraction", "min_drop_fraction", "rounding",
            "regrow_dropped", "update_after_optimizer_step")} == \
           {f: getattr(itop, f) for f in ("update_interval", "drop_fraction", "min_drop_fraction", "rounding",
            "regrow_dropped", "update_after_optimizer_step")}
    assert itop.initial_density is None and itop.planned_active(5000, 100, 0.1) is None
    # no pruning at or before the window's start; the cubic in it; the final density from its end on
    late = schedule_preset("gradual", 1000, prune_start_fraction=0.2, prune_end_fraction=0.6)
    assert late.planned_active(200, 1000, 0.1) is None
    assert late.planned_active(400, 1000, 0.1) == int(1000 * (0.1 + 0.4 * 0.5**3)) == 150
    assert late.planned_active(600, 1000, 0.1) == late.planned_active(900, 1000, 0.1) == 100


def test_gradual_updates_wait_for_the_pruning_window():
    # GraNet core.py:344: no pruning and no drop-and-grow before init_prune_epoch's step. Window [0.2, 0.6] of
    # 1000 steps = [200, 600]; updates every 100 from the first multiple of 100 at or after 200.
    late = schedule_preset("gradual", 1000, prune_start_fraction=0.2, prune_end_fraction=0.6, update_interval=100)
    assert [t for t in range(0, 1001) if late.is_update_step(t)] == list(late.update_steps()) == \
        [200, 300, 400, 500, 600, 700, 800, 900]
    # a start off the grid (250): the first update is at 300
    off_grid = schedule_preset("gradual", 1000, prune_start_fraction=0.25, prune_end_fraction=0.6,
                               update_interval=100)
    assert [t for t in range(0, 1001) if off_grid.is_update_step(t)] == list(off_grid.update_steps()) == \
        [300, 400, 500, 600, 700, 800, 900]
    # update_at_step0 does not open the window early; without gradual pruning nothing waits
    early = schedule_preset("gradual", 1000, prune_start_fraction=0.2, prune_end_fraction=0.6, update_interval=100,
                            update_after_optimizer_step=False, update_at_step0=True)
    assert list(early.update_steps())[:2] == [200, 300] and not early.is_update_step(0)
    assert list(schedule_preset("itop", 1000, prune_start_fraction=0.2, update_interval=100).update_steps())[0] == 100
