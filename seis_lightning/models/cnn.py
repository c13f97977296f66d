"""``DigitsCNN``: three 3x3 convolutions, global average pooling and a linear classifier."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from seis_lightning.models.base import TaskModule

DOWNSAMPLES = ("maxpool", "blurpool")


class BlurPool2d(nn.Module):
    """Max-pooling made shift-tolerant as in Zhang 2019 ("Making convolutional networks shift-invariant again"):
    a 2x2 max pool with stride 1, then a 3x3 binomial blur ``[1, 2, 1]^T [1, 2, 1] / 16`` per channel with
    stride 2 on a reflect-padded map. The output has the size of ``nn.MaxPool2d(2)``'s for even sizes.

    Example:
        >>> import torch
        >>> BlurPool2d()(torch.zeros(2, 3, 28, 28)).shape
        torch.Size([2, 3, 14, 14])
    """

    def __init__(self) -> None:
        super().__init__()
        row = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (row[:, None] * row[None, :] / 16)[None, None], persistent=False)

    def forward(self, maps: Tensor) -> Tensor:
        maps = F.pad(F.max_pool2d(maps, 2, stride=1), (1, 1, 1, 1), mode="reflect")
        channels = maps.shape[1]
        kernel = self.kernel.to(maps.dtype).expand(channels, 1, 3, 3)
        return F.conv2d(maps, kernel, stride=2, groups=channels)


def _downsample(kind: str) -> nn.Module:
    return nn.MaxPool2d(2) if kind == "maxpool" else BlurPool2d()


class DigitsCNN(TaskModule):
    """A small CNN for digits: ``conv1 -> conv2 -> conv3 -> pool -> fc``.

    ``conv1`` and ``conv2`` each end with a 2x2 max pooling (``downsample="maxpool"``) or its blurred form
    (``"blurpool"``, :class:`BlurPool2d`), so on 28x28 digits the maps are 14x14,
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
        downsample: ``"maxpool"`` (``nn.MaxPool2d(2)``) or ``"blurpool"`` (:class:`BlurPool2d`: max pool with
            stride 1, then a binomial blur with stride 2), at the end of ``conv1`` and ``conv2``.

    Raises:
        ValueError: for a ``downsample`` other than ``"maxpool"`` or ``"blurpool"``.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: int = 32,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
        downsample: Literal["maxpool", "blurpool"] = "maxpool",
    ) -> None:
        if downsample not in DOWNSAMPLES:
            raise ValueError(f"Expected `downsample` to be one of {DOWNSAMPLES}, but got {downsample!r}.")
        super().__init__(lr, optimizer, weight_decay)
        self.save_hyperparameters()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), _downsample(downsample))
        self.conv2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), _downsample(downsample))
        self.conv3 = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, num_classes)
        self.seis_layers = ["conv1", "conv2", "conv3", "pool", "fc"]

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.pool(self.conv3(self.conv2(self.conv1(images)))))
