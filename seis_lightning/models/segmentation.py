"""Segmenters on the ResNet-18 encoder: ``FCNSegmenter`` (no skip connections) and ``UNetSegmenter``."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from seis_lightning.models.base import TaskModule
from seis_lightning.models.resnet import ENCODER_LAYERS, ResNet18Encoder


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()
    )


class FCNDecoder(nn.Module):
    """FCN head: two 3x3 stages on the bottleneck, a 1x1 classifier, bilinear upsampling by 8.

    Only the bottleneck (``layer4``, 1/8 of the input size) is used: no skip connections.
    """

    stages = ("block1", "block2", "classifier", "upsample")

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        in_channels = channels[-1]
        self.block1 = conv_bn_relu(in_channels, in_channels // 2)
        self.block2 = conv_bn_relu(in_channels // 2, in_channels // 4)
        self.classifier = nn.Conv2d(in_channels // 4, num_classes, 1)
        self.upsample = nn.Upsample(scale_factor=8, mode="bilinear", align_corners=False)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.upsample(self.classifier(self.block2(self.block1(features[-1]))))


class UpBlock(nn.Module):
    """Bilinear upsampling to the skip's size, concatenation with the skip, two 3x3 stages."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            conv_bn_relu(in_channels + skip_channels, out_channels), conv_bn_relu(out_channels, out_channels)
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """U-Net decoder: ``up1``..``up3`` each upsample by 2 and take the encoder stage of that size."""

    stages = ("up1", "up2", "up3", "classifier")

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.up1 = UpBlock(c4, c3, c3)
        self.up2 = UpBlock(c3, c2, c2)
        self.up3 = UpBlock(c2, c1, c1)
        self.classifier = nn.Conv2d(c1, num_classes, 1)

    def forward(self, features: list[Tensor]) -> Tensor:
        f1, f2, f3, f4 = features
        return self.classifier(self.up3(self.up2(self.up1(f4, f3), f2), f1))


class _EncoderDecoder(TaskModule):
    """:class:`ResNet18Encoder` and the decoder of a subclass; SEIS layers: encoder stages, then decoder stages."""

    task = "segmentation"
    decoder_type: ClassVar[type[FCNDecoder] | type[UNetDecoder]]

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        width: int = 64,
        lr: float = 1e-3,
        optimizer: Literal["adam", "sgd"] = "adam",
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr, optimizer, weight_decay, num_seg_classes=num_classes)
        self.save_hyperparameters()
        self.encoder = ResNet18Encoder(in_channels, width)
        self.decoder = self.decoder_type(num_classes, self.encoder.channels)
        self.seis_layers = [*ENCODER_LAYERS, *(f"decoder.{name}" for name in self.decoder.stages)]

    def forward(self, images: Tensor) -> Tensor:
        return self.decoder(self.encoder(images))


class FCNSegmenter(_EncoderDecoder):
    """FCN-style segmenter: :class:`ResNet18Encoder` and :class:`FCNDecoder`, without skip connections.

    Example:
        >>> import torch
        >>> FCNSegmenter(num_classes=5)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 5, 32, 32])

    Args:
        num_classes: segmentation classes (background included).
        in_channels: image channels.
        width: channels of the encoder's first stage (64: ResNet-18).
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay of the optimizer.
    """

    decoder_type = FCNDecoder


class UNetSegmenter(_EncoderDecoder):
    """U-Net-style segmenter: :class:`ResNet18Encoder` and :class:`UNetDecoder`, with skip connections.

    Example:
        >>> import torch
        >>> UNetSegmenter(num_classes=5)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 5, 32, 32])

    Args:
        num_classes: segmentation classes (background included).
        in_channels: image channels.
        width: channels of the encoder's first stage (64: ResNet-18).
        lr: learning rate.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: weight decay of the optimizer.
    """

    decoder_type = UNetDecoder
