"""``DigitsCNN``: three 3x3 convolutions, global average pooling and a linear classifier."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from seis_lightning.models.base import TaskModule


class DigitsCNN(TaskModule):
    """A small CNN for digits: ``conv1 -> conv2 -> conv3 -> pool -> fc``.

    ``conv1`` and ``conv2`` each end with a 2x2 max pooling, so on 28x28 digits the maps are 14x14,
    7x7 and 7x7 (the block outputs; a full-resolution 28x28 map would make the S x S spatial Gram
    16 times larger for little extra insight). ``pool`` averages over positions, ``fc``
    gives the logits. Each of these five modules outputs a tensor and is a default SEIS layer.

    Example:
        >>> import torch
        >>> DigitsCNN()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])

    Args:
        num_classes: output classes.
        in_channels: image channels.
        width: channels of ``conv1``; ``conv2`` and ``conv3`` have twice as many.
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay of the optimizer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: int = 32,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, optimizer, weight_decay)
        self.save_hyperparameters()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv3 = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, num_classes)
        self.seis_layers = ["conv1", "conv2", "conv3", "pool", "fc"]

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.pool(self.conv3(self.conv2(self.conv1(images)))))
