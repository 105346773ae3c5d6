"""The planted-teacher dataset: the teacher's support, determinism, the found metrics, the analysis script."""

import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import build_data, option_node
from dst_cli.data.planted import (
    connections_found,
    make_split,
    planted_teacher,
    relevant_share,
    teacher_from_config,
)
from dst_cli.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = {"train_size": 128, "val_size": 64, "test_size": 96}


def planted_cfg(**overrides):
    """The dataset=planted node with overrides, as dst-train hands it to its builder."""
    return option_node("dataset", "planted", **overrides)


def build(batch_size: int = 32, **overrides):
    return build_data(planted_cfg(**{**SMALL, **overrides}), batch_size=batch_size, seed=0, device="cpu")


def all_batches(loader, epoch: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader.batches(epoch))


def analysis_module():
    spec = importlib.util.spec_from_file_location("planted_analysis", REPO_ROOT / "scripts" / "planted_analysis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pattern(rows: list[set[int]], num_features: int) -> torch.Tensor:
    """A bool (len(rows), num_features) connection pattern: row u connects to the inputs in rows[u]."""
    mask = torch.zeros((len(rows), num_features), dtype=torch.bool)
    for unit, inputs in enumerate(rows):
        mask[unit, list(inputs)] = True
    return mask


# ---------------------------------------------------------------- the teacher


@pytest.mark.parametrize("num_features, units, fan_in", [(256, 8, 4), (12, 3, 4), (50, 7, 1)])
def test_teacher_support_is_exactly_as_planted(num_features, units, fan_in):
    teacher = planted_teacher(num_features, units, fan_in, num_classes=3, data_seed=5)
    assert teacher.first.shape == (units, num_features) and teacher.second.shape == (3, units)
    assert teacher.support.sum(dim=1).tolist() == [fan_in] * units  # exactly fan_in inputs per unit
    assert teacher.support.sum(dim=0).max().item() <= 1  # disjoint supports
    assert teacher.relevant.sum().item() == units * fan_in
    assert torch.allclose(teacher.first.norm(dim=1), torch.ones(units))  # pre-activations are N(0, 1)


def test_the_default_setting_has_32_relevant_inputs_of_256():
    teacher = teacher_from_config(OmegaConf.to_container(planted_cfg()))
    assert teacher.relevant.sum().item() == 32 and teacher.first.shape == (8, 256)


def test_more_teacher_inputs_than_features_is_one_readable_error():
    with pytest.raises(UserError, match=r"teacher_units=3 x fan_in=4 = 12 exceeds num_features=10"):
        planted_teacher(10, 3, 4, num_classes=2, data_seed=0)
    with pytest.raises(UserError, match=r"dataset.fan_in=0 must be a whole number >= 1"):
        planted_teacher(10, 3, 0, num_classes=2, data_seed=0)


def test_teacher_from_config_names_what_a_foreign_dataset_lacks():
    with pytest.raises(UserError, match="no num_features, teacher_units, fan_in, num_classes"):
        teacher_from_config({"_target_": "dst_cli.data.digits.build_digits", "data_seed": 0})


# ---------------------------------------------------------------- the data


def test_builds_through_the_dataset_config():
    data = build()
    assert data.num_classes == 4 and data.input_shape == (1, 1, 256)
    assert (len(data.train), len(data.val), len(data.test)) == (4, 2, 3)
    inputs, labels = next(iter(data.train.batches(0)))
    assert inputs.shape == (32, 1, 1, 256) and inputs.dtype == torch.float32 and labels.dtype == torch.int64
    assert sum(len(y) for _, y in all_batches(data.test)) == 96


def test_labels_are_the_teachers_on_every_split():
    data, teacher = build(), teacher_from_config(planted_cfg())
    for loader in (data.train, data.val, data.test):
        for inputs, labels in all_batches(loader):
            assert torch.equal(labels, teacher.labels(inputs.flatten(1)))


def test_same_data_seed_gives_the_same_data_and_another_seed_other_data():
    first, again, other = build(), build(), build(data_seed=1)
    for split in ("train", "val", "test"):
        batches, repeated = all_batches(getattr(first, split)), all_batches(getattr(again, split))
        assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(batches, repeated))
    assert not torch.equal(all_batches(first.test)[0][0], all_batches(other.test)[0][0])
    support = teacher_from_config(planted_cfg()).support
    assert not torch.equal(support, teacher_from_config(planted_cfg(data_seed=1)).support)


def test_a_split_does_not_depend_on_the_size_of_another():
    teacher = teacher_from_config(planted_cfg())
    test_inputs, test_labels = make_split(teacher, 50, data_seed=0, split="test")
    data = build(train_size=256, test_size=50)
    inputs, labels = (torch.cat(parts) for parts in zip(*all_batches(data.test)))
    assert torch.equal(inputs.flatten(1), test_inputs) and torch.equal(labels, test_labels)


# ---------------------------------------------------------------- the found metrics, on hand-made masks

# Teacher: unit 0 reads inputs {0, 1, 2}, unit 1 reads {3, 4, 5}; inputs 6 and 7 are noise.
TEACHER = pattern([{0, 1, 2}, {3, 4, 5}], 8)
RELEVANT = TEACHER.any(dim=0)


def test_connections_found_on_a_hand_made_student():
    # unit 0 meets teacher unit 0 in {0, 1} and unit 1 in {5}; unit 1 meets teacher unit 1 in {3, 4};
    # unit 2 meets teacher unit 0 in {2}. Best matches: 2 of unit 0's 3, 2 of unit 1's 3 -> 4 / 6.
    student = pattern([{0, 1, 5}, {3, 4}, {2, 6, 7}], 8)
    assert connections_found(TEACHER, student) == pytest.approx(4 / 6)
    # 8 connections, 6 of them on relevant inputs (all but 6 and 7)
    assert relevant_share(RELEVANT, student) == pytest.approx(6 / 8)


def test_metrics_do_not_depend_on_the_order_of_hidden_units_or_inputs():
    student = pattern([{0, 1, 5}, {3, 4}, {2, 6, 7}], 8)
    inputs = torch.tensor([7, 2, 5, 0, 3, 6, 1, 4])
    shuffled_student = student[torch.tensor([2, 0, 1])][:, inputs]
    shuffled_teacher = TEACHER[torch.tensor([1, 0])][:, inputs]
    assert connections_found(shuffled_teacher, shuffled_student) == pytest.approx(4 / 6)
    assert relevant_share(shuffled_teacher.any(dim=0), shuffled_student) == pytest.approx(6 / 8)


def test_metrics_at_their_extremes():
    exact = pattern([{3, 4, 5}, {6}, {0, 1, 2}], 8)  # every teacher unit's inputs in one student unit
    assert connections_found(TEACHER, exact) == 1.0
    split = pattern([{0, 1}, {2, 3}, {4, 5}], 8)  # all relevant inputs reached, but no unit has 3 of one teacher unit
    assert connections_found(TEACHER, split) == pytest.approx(4 / 6) and relevant_share(RELEVANT, split) == 1.0
    dense = torch.ones((4, 8), dtype=torch.bool)
    assert connections_found(TEACHER, dense) == 1.0 and relevant_share(RELEVANT, dense) == pytest.approx(6 / 8)
    empty = torch.zeros((3, 8), dtype=torch.bool)
    assert connections_found(TEACHER, empty) == 0.0 and relevant_share(RELEVANT, empty) == 0.0


# ---------------------------------------------------------------- the analysis script


def test_choose_c_takes_the_best_mean_validation_accuracy_and_the_smaller_c_on_a_tie():
    analysis = analysis_module()

    def grid(val_by_c: dict[float, tuple[float, float]]):
        return [analysis.Result(f"c={c:g}", sparsity, 0, c, 0.0, val, None, None)
                for c, vals in val_by_c.items() for sparsity, val in zip((0.9, 0.98), vals)]

    assert analysis.choose_c(grid({0.0: (0.80, 0.70), 1e-3: (0.78, 0.76), 1e-2: (0.90, 0.50)})) == 1e-3
    assert analysis.choose_c(grid({1e-2: (0.8, 0.7), 1e-3: (0.7, 0.8)})) == 1e-3


def test_the_generated_block_replaces_itself_and_keeps_the_reading(tmp_path):
    analysis = analysis_module()
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nreading above\n")
    analysis.write_between_markers(doc, "table 1\n")
    analysis.write_between_markers(doc, "table 2\n")
    text = doc.read_text()
    assert text.count(analysis.BEGIN) == 1 and "table 1" not in text and "table 2" in text
    doc.write_text(text + "reading below\n")
    analysis.write_between_markers(doc, "table 3\n")
    assert doc.read_text() == f"# Results\n\nreading above\n{analysis.BEGIN}\ntable 3\n{analysis.END}\nreading below\n"


@pytest.mark.slow
def test_study_layout_through_the_cli_and_the_analysis(tmp_path):
    """Two one-epoch planted runs and a dense one, then the report: found shares come from the checkpoints."""
    quick = ["experiment=planted", "trainer.epochs=1", "trainer.progress=none", "trainer.threads=1",
             "dataset.train_size=256", "dataset.val_size=64", "dataset.test_size=64", "~hydra.callbacks.sweep_report"]
    for method, overrides in {"rigl": ["acq=rigl", "sparsity=0.98", "seed=0,1"], "dense": ["acq=static", "sparsity=0"]}.items():
        command = [sys.executable, "-m", "dst_cli", "-m", *quick, *overrides,
                   f"hydra.sweep.dir={tmp_path / 'study' / 'planted' / method}"]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    script = [sys.executable, str(REPO_ROOT / "scripts" / "planted_analysis.py"), "report", str(tmp_path / "study")]
    result = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "study" / "results-planted.md").read_text()
    assert "| dense | 100.0 ± 0.0 (n=1) | – |" in text  # a dense first layer has every planted connection
    assert "| dense | 12.5 ± 0.0 (n=1) | – |" in text  # and reads 32 relevant inputs of 256
    sweep = tmp_path / "study" / "planted" / "rigl"
    accuracies = [json.loads((sweep / job / "summary.json").read_text())["final_test_acc"] * 100 for job in "01"]
    assert f"| rigl | – | {statistics.fmean(accuracies):.1f} ± {statistics.stdev(accuracies):.1f} |" in text
