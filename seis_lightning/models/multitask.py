"""``MultiTaskUNet``: one ResNet-18 encoder, a classification head and a U-Net segmentation head."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from seis_lightning.models.base import TaskModule
from seis_lightning.models.resnet import ENCODER_LAYERS, ResNet18Encoder
from seis_lightning.models.segmentation import UNetDecoder


class MultiTaskUNet(TaskModule):
    """Classification and segmentation from a shared :class:`ResNet18Encoder`.

    The classification head (``pool``, ``fc``) reads the bottleneck; the segmentation head is a
    :class:`UNetDecoder`. ``forward`` returns ``(logits [B, num_classes], pixel logits
    [B, num_seg_classes, H, W])``; the loss is the sum of both cross-entropies, pixels labelled 255
    ignored. Batches are ``(image, label, mask)``.

    Example:
        >>> import torch
        >>> logits, pixel_logits = MultiTaskUNet(num_classes=4, num_seg_classes=5)(torch.zeros(2, 3, 32, 32))
        >>> logits.shape, pixel_logits.shape
        (torch.Size([2, 4]), torch.Size([2, 5, 32, 32]))

    Args:
        num_classes: classes of the image label.
        num_seg_classes: segmentation classes (background included).
        in_channels: image channels.
        width: channels of the encoder's first stage (64: ResNet-18).
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay of the optimizer.
    """

    task = "multitask"

    def __init__(
        self,
        num_classes: int = 21,
        num_seg_classes: int = 21,
        in_channels: int = 3,
        width: int = 64,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, optimizer, weight_decay, num_seg_classes=num_seg_classes)
        self.save_hyperparameters()
        self.encoder = ResNet18Encoder(in_channels, width)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(self.encoder.channels[-1], num_classes)
        self.decoder = UNetDecoder(num_seg_classes, self.encoder.channels)
        self.seis_layers = [*ENCODER_LAYERS, "pool", "fc", *(f"decoder.{name}" for name in self.decoder.stages)]

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.encoder(images)
        return self.fc(self.pool(features[-1])), self.decoder(features)
