"""A planted sparse teacher: labels from a random sparse network whose connections are known.

Inputs x ~ N(0, I_d), d = `num_features`. The teacher has `teacher_units` hidden units; unit j reads
exactly `fan_in` inputs, the supports of different units are disjoint, so teacher_units * fan_in
inputs are relevant and all others are pure noise. Each unit's weight row has unit norm, so its
pre-activation z_j is N(0, 1); h_j = relu(z_j) - E[relu(z)] (centred, so no class is favoured on
average) and the label is argmax over `num_classes` of W2 h, W2 ~ N(0, 1). Labels are a
deterministic function of x: 100% test accuracy is reachable, and a network that reads the relevant
inputs needs few connections. With few samples and many noise inputs a dense student overfits.

Everything is a function of `data_seed` (teacher and each split have their own generator), so the
teacher is rebuilt from a run's dataset config by `teacher_from_config` (scripts/planted_analysis.py).

Which planted connections a student found is measured on its first layer's nonzero pattern
(`connections_found`, `relevant_share`): hidden units may come in any order, so both metrics are
invariant under permutations of the student's (and the teacher's) hidden units.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dst_cli.data.base import Data, LoaderSettings, count
from dst_cli.data.loaders import split_sizes, tensor_data
from dst_cli.data.sampling import seeded_generator
from dst_cli.data.transforms import Normalize
from dst_cli.errors import UserError

RELU_MEAN = 1 / math.sqrt(2 * math.pi)  # E[relu(z)] for z ~ N(0, 1)
IDENTITY = Normalize(mean=(0.0,), std=(1.0,))  # inputs are standard normal by construction
TEACHER_OPTIONS = ("num_features", "teacher_units", "fan_in", "num_classes", "data_seed")


@dataclass(frozen=True)
class Teacher:
    first: Tensor  # (teacher_units, num_features): exactly fan_in nonzeros per row, disjoint supports
    second: Tensor  # (num_classes, teacher_units)

    @property
    def support(self) -> Tensor:
        """The planted connections: bool (teacher_units, num_features)."""
        return self.first != 0

    @property
    def relevant(self) -> Tensor:
        """The inputs some teacher unit reads: bool (num_features,)."""
        return self.support.any(dim=0)

    def labels(self, inputs: Tensor) -> Tensor:
        hidden = torch.relu(inputs @ self.first.T) - RELU_MEAN
        return (hidden @ self.second.T).argmax(dim=1)


def planted_teacher(num_features: int, teacher_units: int, fan_in: int, num_classes: int, data_seed: int) -> Teacher:
    """The teacher of a planted dataset; a function of its arguments only."""
    num_features = count("num_features", num_features, minimum=1)
    units = count("teacher_units", teacher_units, minimum=1)
    fan_in = count("fan_in", fan_in, minimum=1)
    num_classes = count("num_classes", num_classes, minimum=2)
    if units * fan_in > num_features:
        raise UserError(
            f"dataset planted: teacher_units={units} x fan_in={fan_in} = {units * fan_in} exceeds "
            f"num_features={num_features}; the supports are disjoint, so use num_features >= {units * fan_in}"
        )
    generator = seeded_generator("planted", data_seed, "teacher")
    inputs = torch.randperm(num_features, generator=generator)[: units * fan_in].view(units, fan_in)
    weights = torch.randn((units, fan_in), generator=generator)
    weights = weights / weights.norm(dim=1, keepdim=True)
    first = torch.zeros((units, num_features)).scatter_(1, inputs, weights)
    second = torch.randn((num_classes, units), generator=generator)
    return Teacher(first, second)


def teacher_from_config(dataset: Mapping[str, Any]) -> Teacher:
    """The teacher of a run's `dataset` config node (e.g. from its .hydra/config.yaml)."""
    missing = [name for name in TEACHER_OPTIONS if name not in dataset]
    if missing:
        raise UserError(f"the dataset config has no {', '.join(missing)}; is it a planted dataset?")
    return planted_teacher(**{name: dataset[name] for name in TEACHER_OPTIONS})


def make_split(teacher: Teacher, size: int, data_seed: int, split: str) -> tuple[Tensor, Tensor]:
    """`size` samples labelled by the teacher; each split has its own generator, so changing one size
    leaves the other splits unchanged."""
    generator = seeded_generator("planted", data_seed, split)
    inputs = torch.randn((size, teacher.first.shape[1]), generator=generator)
    return inputs, teacher.labels(inputs)


def build_planted(
    settings: LoaderSettings,
    num_features: int = 256,
    teacher_units: int = 8,
    fan_in: int = 4,
    num_classes: int = 4,
    train_size: int = 4000,
    val_size: int = 1000,
    test_size: int = 2000,
    data_seed: int = 0,
) -> Data:
    """A planted sparse teacher (offline, generated): x ~ N(0, I), labels from a random sparse ReLU network
    whose connections are known (scripts/planted_analysis.py measures the share of them a student found).

    num_features: inputs, of which teacher_units x fan_in are relevant and the rest noise
    teacher_units: hidden units of the teacher
    fan_in: inputs each teacher unit reads (disjoint supports)
    num_classes: classes (the argmax over the teacher's outputs)
    train_size: training samples
    val_size: validation samples (0: no validation loader)
    test_size: test samples
    data_seed: fixes the teacher and the samples independently of the run seed
    """
    teacher = planted_teacher(num_features, teacher_units, fan_in, num_classes, data_seed)
    splits = {}
    for name, size in split_sizes(train_size, val_size, test_size).items():
        inputs, labels = make_split(teacher, size, data_seed, name)
        splits[name] = (inputs.view(-1, 1, 1, num_features), labels)
    return tensor_data("planted", splits, settings, IDENTITY, num_classes, (1, 1, num_features))


def connections_found(support: Tensor, student: Tensor) -> float:
    """Share of the planted connections the student reproduces, each teacher unit matched to its best
    student unit: sum_j max_u |S_j & A_u| / sum_j |S_j|.

    `support` (teacher_units, d) and `student` (student_units, d) are bool input-connection patterns
    (`student`: the nonzeros of the first layer's weight). A teacher unit computes relu of a weighted
    sum of all its inputs, which one student unit can only reproduce if it is connected to all of
    them; the metric is 1 exactly when every teacher unit's inputs are all wired into some student
    unit, and is unchanged by any reordering of either network's hidden units. It reads topology only
    (weight sizes are ignored). Chance level: a random mask of density p scores about the mean over
    teacher units of the largest of student_units Binomial(fan_in, p) draws, over fan_in (the static
    rows of the study show it; a dense layer scores 1).
    """
    overlap = support.float() @ student.float().T  # (teacher_units, student_units)
    return (overlap.max(dim=1).values.sum() / support.sum()).item()


def relevant_share(relevant: Tensor, student: Tensor) -> float:
    """Share of the student's first-layer connections that read a relevant input (0 if it has none).

    A random mask scores relevant.mean() in expectation (the relevant share of the inputs); a student that spends its
    connections on noise inputs scores lower, one that found the relevant inputs approaches 1.
    """
    active = student.sum()
    return (student[:, relevant].sum() / active).item() if active else 0.0
