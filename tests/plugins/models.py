"""A model no built-in config describes: 1-d convolutions over the flattened image (Conv1d is prunable)."""
import math

import torch
from torch import nn


class Conv1dNet(nn.Module):
    """conv1d(k=3) -> ReLU -> conv1d(k=3) -> ReLU -> linear over all positions."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], channels: int = 32):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.conv1 = nn.Conv1d(input_shape[0], channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3, padding=1)
        self.head = nn.Linear(channels * math.prod(input_shape[1:]), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)  # (batch, channels, positions)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.flatten(1))


class CrashingNet(Conv1dNet):
    """Conv1dNet whose training forward pass fails after `steps` calls: a crash in the middle of a run."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], steps: int = 3):
        super().__init__(num_classes, input_shape, channels=4)
        self.steps = steps
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                raise RuntimeError("simulated crash in forward")
        return super().forward(x)


class ExplodingNet(Conv1dNet):
    """A model whose constructor fails with an error that is not about its arguments."""

    def __init__(self, num_classes: int, input_shape: tuple[int, ...]):
        raise RuntimeError("CUDA driver too old (simulated)")


class CtrlCNet(CrashingNet):
    """Conv1dNet whose training forward pass is hit by a second Ctrl-C after `steps` calls."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.calls >= self.steps:
            raise KeyboardInterrupt
        return super().forward(x)
