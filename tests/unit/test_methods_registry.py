"""The method registry: what method=NAME selects, and how a run's row is named from what it ran."""
import pytest

from dst_cli.methods import METHODS, ROW_ORDER, method_label, method_sets


@pytest.mark.parametrize("acq, schedule, init, sparsity, label", [
    ("static", "itop", "random", 0.0, "dense"),
    ("ee", "itop", "random", 0.9, "ee"),
    ("rigl", "rigl", "random", 0.9, "rigl"),
    ("rigl", "itop", "random", 0.9, "rigl-itop"),
    ("rigl", "gradual", "random", 0.9, "granet"),
    ("rigl", "gradual", "grasp", 0.9, "granet"),     # a dynamic method keeps its name; the report adds the init
    ("static", "itop", "snip", 0.9, "snip"),
    ("static", "itop", "random", 0.9, "static"),
    ("static", "rigl", "snip", 0.9, "snip-rigl"),
    ("set", "rigl", "random", 0.9, "set-rigl"),
    ("grad_momentum", "itop", "random", 0.9, "grad_momentum"),  # a user's acq, by its config name
])
def test_a_run_is_named_by_what_it_ran(acq, schedule, init, sparsity, label):
    assert method_label(acq, schedule, init, sparsity) == label


def test_every_method_names_itself_and_the_rows_follow_the_papers():
    for method in METHODS:
        sparsity = method.sets.get("sparsity", 0.9)
        assert method_label(method.acq, method.schedule, method.init, sparsity) == method.name
    assert ROW_ORDER[0] == "dense" and ROW_ORDER[-1] == "ee" and ROW_ORDER.index("rigl") < ROW_ORDER.index("granet")


def test_a_method_sets_its_acquisitions_schedule_defaults_too():
    dsr = next(method for method in METHODS if method.name == "dsr")
    assert method_sets(dsr) == {"schedule.regrow_dropped": False}
    dense = next(method for method in METHODS if method.name == "dense")
    assert method_sets(dense) == {"sparsity": 0.0}
