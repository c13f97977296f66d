"""ResNet-18 for 32x32 images: the encoder the classifier and the segmenters share, and ``ResNet18Classifier``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from seis_lightning.models.base import TaskModule

ENCODER_LAYERS = ["encoder.stem", "encoder.layer1", "encoder.layer2", "encoder.layer3", "encoder.layer4"]


def _stage(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Two torchvision ``BasicBlock``s, the first one changing width and stride."""
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
        )
    return nn.Sequential(
        BasicBlock(in_channels, out_channels, stride, downsample), BasicBlock(out_channels, out_channels)
    )


class ResNet18Encoder(nn.Module):
    """ResNet-18 (torchvision's ``BasicBlock``, random weights) with a 3x3 stride-1 stem and no max pooling.

    ``stem`` and ``layer1`` keep the input resolution, ``layer2`` to ``layer4`` halve it each:
    on 32x32 images, 64 x 32x32, 64 x 32x32, 128 x 16x16, 256 x 8x8 and 512 x 4x4 with ``width=64``.

    Args:
        in_channels: image channels.
        width: channels of ``stem`` and ``layer1`` (64 in ResNet-18); each later stage doubles them.
            Narrower encoders keep the depth and the strides and train in minutes on a CPU.
    """

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.channels = (width, 2 * width, 4 * width, 8 * width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.layer1 = _stage(width, width, 1)
        self.layer2 = _stage(width, 2 * width, 2)
        self.layer3 = _stage(2 * width, 4 * width, 2)
        self.layer4 = _stage(4 * width, 8 * width, 2)
        for module in self.modules():  # torchvision's ResNet initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: Tensor) -> list[Tensor]:
        """The outputs of ``layer1`` to ``layer4``, for skip connections."""
        features = [self.stem(images)]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            features.append(layer(features[-1]))
        return features[1:]


class ResNet18Classifier(TaskModule):
    """ResNet-18 adapted to 32x32 images (CIFAR): :class:`ResNet18Encoder`, average pooling, linear.

    Example:
        >>> import torch
        >>> ResNet18Classifier(num_classes=100)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 100])

    Args:
        num_classes: output classes.
        in_channels: image channels.
        width: channels of the encoder's first stage (64: ResNet-18).
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay of the optimizer.
    """

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        width: int = 64,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, optimizer, weight_decay)
        self.save_hyperparameters()
        self.encoder = ResNet18Encoder(in_channels, width)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(self.encoder.channels[-1], num_classes)
        self.seis_layers = [*ENCODER_LAYERS, "pool", "fc"]

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.pool(self.encoder(images)[-1]))
