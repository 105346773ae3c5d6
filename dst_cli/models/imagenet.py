"""torchvision's ImageNet ResNet-50, randomly initialised (weights are never downloaded)."""

from torch import nn


def build_resnet50_imagenet(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """torchvision resnet50; the stem conv is rebuilt when the input is not 3-channel."""
    import torchvision  # imported here: it pulls in torch._dynamo (~1.4 s) that other runs do not need

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    in_channels = input_shape[0]
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        # Same init torchvision gives its own stem conv.
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model
