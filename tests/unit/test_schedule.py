import pytest

from dst_cli.sparse.schedule import UpdateSchedule


def schedule(**overrides):
    options = dict(update_interval=100, drop_fraction=0.3, decay="cosine", stop_fraction=0.75,
                   min_drop_fraction=0.0, total_steps=1000)
    return UpdateSchedule(**{**options, **overrides})


def test_updates_every_interval_until_the_stop_fraction():
    s = schedule()
    assert [t for t in range(1, 1001) if s.is_update_step(t)] == [100, 200, 300, 400, 500, 600, 700]
    assert s.count_updates(1000) == 7
    assert s.count_updates(250) == 2


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
