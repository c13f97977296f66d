"""Training logic the models share: classification, segmentation or both, with one loss and its metrics."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from seis_lightning.data.base import IGNORE_INDEX

OPTIMIZERS = ("adam", "sgd")


class TaskModule(LightningModule):
    """A LightningModule trained with cross-entropy on labels, on masks, or on both (their sum).

    Subclasses set ``task`` and implement ``forward``, which returns logits ``[B, K]``
    (``"classification"``), pixel logits ``[B, K, H, W]`` (``"segmentation"``) or both as a tuple
    (``"multitask"``). Batches are ``(image, label, ...)``, ``(image, ..., mask)`` or
    ``(image, label, mask)``; masks use 255 for pixels to ignore. Logged per stage
    (``train``/``val``/``test``): ``<stage>_loss``, ``<stage>_acc`` for labels, and ``val_miou``,
    ``val_pixel_acc`` (``test_...``) for masks.

    Args:
        lr: learning rate.
        optimizer: ``"adam"``, or ``"sgd"`` with momentum 0.9.
        weight_decay: weight decay of the optimizer.
        num_seg_classes: segmentation classes, for the mask metrics (0: no masks).
    """

    task: ClassVar[Literal["classification", "segmentation", "multitask"]] = "classification"

    def __init__(self, lr: float, optimizer: str, weight_decay: float, num_seg_classes: int = 0) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"Expected `optimizer` to be one of {OPTIMIZERS}, but got {optimizer!r}.")
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        if num_seg_classes:
            metrics = MetricCollection(
                {
                    "miou": MulticlassJaccardIndex(num_seg_classes, ignore_index=IGNORE_INDEX),
                    "pixel_acc": MulticlassAccuracy(num_seg_classes, average="micro", ignore_index=IGNORE_INDEX),
                }
            )
            self.val_metrics = metrics.clone(prefix="val_")
            self.test_metrics = metrics.clone(prefix="test_")

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        images, batch_size = batch[0], len(batch[0])
        output = self(images)
        logits, pixel_logits = {
            "classification": (output, None),
            "segmentation": (None, output),
            "multitask": output,
        }[self.task]
        loss = images.new_zeros(())
        if logits is not None:
            labels = batch[1]
            loss = loss + F.cross_entropy(logits, labels)
            accuracy = (logits.argmax(1) == labels).float().mean()
            self.log(f"{stage}_acc", accuracy, prog_bar=stage == "val", batch_size=batch_size)
        if pixel_logits is not None:
            masks = batch[-1]
            loss = loss + F.cross_entropy(pixel_logits, masks, ignore_index=IGNORE_INDEX)
            if stage != "train":
                metrics = self.val_metrics if stage == "val" else self.test_metrics
                metrics.update(pixel_logits.argmax(1), masks)
                self.log_dict(metrics, batch_size=batch_size)
        self.log(f"{stage}_loss", loss, prog_bar=stage != "test", batch_size=batch_size)
        return loss
