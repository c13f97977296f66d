"""ResNet-18 for 32x32 images: the encoder the classifier and the segmenters share, and ``ResNet18Classifier``."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torchvision.models import resnet18

from seis_lightning.models.base import TaskModule

ENCODER_LAYERS = ["encoder.stem", "encoder.layer1", "encoder.layer2", "encoder.layer3", "encoder.layer4"]


class ResNet18Encoder(nn.Module):
    """torchvision's ResNet-18 (random weights) with a 3x3 stride-1 stem and no max pooling, for 32x32 images.

    ``stem`` and ``layer1`` keep the input resolution, ``layer2`` to ``layer4`` halve it each:
    on 32x32 images, 64 x 32x32, 64 x 32x32, 128 x 16x16, 256 x 8x8 and 512 x 4x4.

    Args:
        in_channels: image channels.
    """

    channels = (64, 128, 256, 512)

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        resnet = resnet18(weights=None)
        stem = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
        self.stem = nn.Sequential(stem, resnet.bn1, resnet.relu)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

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
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay of the optimizer.
    """

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, optimizer, weight_decay)
        self.save_hyperparameters()
        self.encoder = ResNet18Encoder(in_channels)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(ResNet18Encoder.channels[-1], num_classes)
        self.seis_layers = [*ENCODER_LAYERS, "pool", "fc"]

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.pool(self.encoder(images)[-1]))
