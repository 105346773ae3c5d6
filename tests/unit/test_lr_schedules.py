"""Learning-rate schedules as pure functions of the step: hand-computed factors, warm-up, and bad values."""
import math

import pytest

from dst_cli.errors import UserError
from dst_cli.lr_schedules import Constant, Cosine, Step


def factors(schedule) -> list[float]:
    return [schedule.factor(step) for step in range(1, schedule.total_steps + 1)]


def test_step_multiplies_by_gamma_from_each_milestone_epoch_on():
    # 4 epochs of 2 steps; milestones at 50% and 75%: epochs 2 and 3 (0-based) start x0.1 and x0.01
    schedule = Step(epochs=4, steps_per_epoch=2, milestones=(0.5, 0.75), gamma=0.1)
    assert factors(schedule) == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_rises_linearly_per_step_then_hands_over():
    schedule = Step(epochs=4, steps_per_epoch=2, warmup_epochs=1.5, milestones=(0.75,), gamma=0.5)
    assert factors(schedule) == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1, 0.5, 0.5])


def test_cosine_falls_from_the_peak_to_its_floor_after_the_warm_up():
    schedule = Cosine(epochs=2, steps_per_epoch=3, warmup_epochs=1 / 3, floor=0.1)  # 1 warm-up step, then 5
    expected = [1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 5)) for k in range(5)]
    assert factors(schedule) == pytest.approx(expected)
    assert Cosine(epochs=1, steps_per_epoch=4).factor(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 4)))


def test_constant_is_one_after_the_warm_up():
    assert factors(Constant(epochs=2, steps_per_epoch=2, warmup_epochs=1)) == pytest.approx([0.5, 1, 1, 1])


@pytest.mark.parametrize("schedule, message", [
    (lambda: Step(epochs=2, steps_per_epoch=5, warmup_epochs=3), "lr_schedule.warmup_epochs=3 is invalid; allowed: "
                                                                 "a number in [0, trainer.epochs=2]"),
    (lambda: Step(epochs=2, steps_per_epoch=5, milestones=(1.5,)), "lr_schedule.milestones=[1.5] is invalid"),
    (lambda: Step(epochs=2, steps_per_epoch=5, gamma=0), "lr_schedule.gamma=0 is invalid"),
    (lambda: Cosine(epochs=2, steps_per_epoch=5, floor=2), "lr_schedule.floor=2 is invalid"),
])
def test_bad_values_name_their_key(schedule, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        schedule()


def test_a_cosine_run_and_an_adam_run_train_from_the_command_line(make_cfg, tiny_overrides, tmp_path):
    from dst_cli.build import train
    from dst_cli.compose import with_derived_targets

    cosine = train(make_cfg(*tiny_overrides, "lr_schedule=cosine", "lr_schedule.floor=0.01"), tmp_path / "cosine")
    assert cosine["status"] == "completed" and cosine["lr_schedule"] == "cosine"
    adam = train(make_cfg(*with_derived_targets([*tiny_overrides, "optim._target_=torch.optim.Adam",
                                                 "optim.lr=1e-3"])), tmp_path / "adam")
    assert adam["status"] == "completed" and adam["optim"] == "Adam"
    assert adam["recipe"]["optim"]["_target_"] == "torch.optim.Adam" and adam["recipe"]["optim"]["lr"] == 1e-3
