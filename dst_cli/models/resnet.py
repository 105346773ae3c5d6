"""CIFAR ResNets as in kuangliu's pytorch-cifar and the ITOP code.

3x3 stride-1 stem conv without max-pool, four stages (strides 1, 2, 2, 2), a 1x1 conv + BN
shortcut where the shape changes, global average pooling and one Linear. Convs have no bias.
ResNet18 / ResNet50 for 10 classes have 11,173,962 / 23,520,842 parameters.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dst_cli.models.common import check_width, init_weights, scale_channels


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity when the shape is kept, else a strided 1x1 conv + BN."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = projection_shortcut(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4 (ResNet50)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


STAGE_PLANES = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)

ARCHITECTURES = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int, width: float):
        super().__init__()
        block, blocks_per_stage = ARCHITECTURES[depth]
        stem_channels = scale_channels(STAGE_PLANES[0], width)
        self.conv1 = nn.Conv2d(in_channels, stem_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        stages = []
        channels = stem_channels
        for planes, stride, num_blocks in zip(STAGE_PLANES, STAGE_STRIDES, blocks_per_stage):
            planes = scale_channels(planes, width)
            blocks = []
            for block_index in range(num_blocks):
                blocks.append(block(channels, planes, stride if block_index == 0 else 1))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def build_resnet(depth: int, num_classes: int, input_shape: tuple[int, int, int], width: float) -> nn.Module:
    """CIFAR ResNet18, 34 or 50 (depth)."""
    check_width(width)
    model = CifarResNet(depth, num_classes, input_shape[0], width)
    init_weights(model)
    return model


def build_resnet18(num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """CIFAR ResNet-18 (kuangliu / ITOP code).

    width: channel width factor (scales every layer's channels)
    """
    return build_resnet(18, num_classes, input_shape, width)


def build_resnet34(num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """CIFAR ResNet-34 (kuangliu / ITOP code).

    width: channel width factor (scales every layer's channels)
    """
    return build_resnet(34, num_classes, input_shape, width)


def build_resnet50(num_classes: int, input_shape: tuple[int, int, int], width: float = 1.0) -> nn.Module:
    """CIFAR ResNet-50 (kuangliu / ITOP code).

    width: channel width factor (scales every layer's channels)
    """
    return build_resnet(50, num_classes, input_shape, width)
