"""``VOCSegmentationDataModule``: Pascal VOC 2012 segmentation, resized small, with a clear offline message."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import VOCSegmentation
from torchvision.transforms import v2

from seis_lightning.data.base import (
    FAKE_TRAIN,
    FAKE_VAL,
    IGNORE_INDEX,
    ImageDataModule,
    ImageDataset,
    missing_files_error,
)

NUM_CLASSES = 21  # background and 20 object classes
TASKS = ("segmentation", "multitask")
MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics
STD = (0.229, 0.224, 0.225)
EXPECTED = (
    "VOCdevkit/VOC2012/ with the folders JPEGImages, SegmentationClass and ImageSets/Segmentation"
    " (as extracted from the archive VOCtrainval_11-May-2012.tar)"
)


def dominant_class(masks: Tensor) -> Tensor:
    """The most frequent object class of each mask ``[..., H, W]``; 0 where only background is present.

    Background (0) and ignored pixels (255) do not count; ties go to the smaller class index.
    """
    valid = (masks > 0) & (masks < NUM_CLASSES)
    counts = torch.zeros(*masks.shape[:-2], NUM_CLASSES)
    counts.scatter_add_(-1, masks.where(valid, 0).flatten(-2), valid.flatten(-2).float())
    return counts.argmax(-1)


class _Resize:
    """``(PIL image, PIL mask)`` to a normalised float image and an int64 mask, both ``size x size``."""

    def __init__(self, size: int) -> None:
        self.transform = v2.Compose(
            [v2.ToImage(), v2.Resize((size, size)), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
        )

    def __call__(self, image: Image.Image, mask: Image.Image) -> tuple[Tensor, Tensor]:
        # The mask is wrapped as a Mask so that Resize uses nearest neighbour and keeps 255 as is.
        image, mask = self.transform(image, tv_tensors.Mask(torch.as_tensor(np.array(mask), dtype=torch.int64)))
        return image.as_subclass(Tensor), mask.as_subclass(Tensor)


class _WithLabel(Dataset):
    """``(image, mask)`` samples as ``(image, dominant class, mask)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        image, mask = self.dataset[index]
        return image, dominant_class(mask), mask


class VOCSegmentationDataModule(ImageDataModule):
    """Pascal VOC 2012 segmentation (``torchvision.datasets.VOCSegmentation``), 21 classes, resized square.

    Training uses the ``train`` image set, validation and test the ``val`` image set. Images are
    resized (bilinear) to ``image_size x image_size`` and normalised with the ImageNet statistics;
    masks are resized by nearest neighbour, keeping 255 (object boundaries) as the ignore index.
    Batches by ``task``:

    - ``"segmentation"``: ``(image, mask)``, float32 ``[B, 3, S, S]`` and int64 ``[B, S, S]``;
    - ``"multitask"``: ``(image, label, mask)``, with the label (int64 ``[B]``) the most frequent
      object class of the mask, 0 if there is none (:func:`dominant_class`).

    Without the files and without ``download=True``, ``prepare_data`` and ``setup`` raise a
    ``FileNotFoundError`` naming the folders and the directory they belong in.

    Example:
        >>> datamodule = VOCSegmentationDataModule(fake=True, task="multitask", batch_size=8)
        >>> datamodule.setup("fit")
        >>> [tuple(item.shape) for item in next(iter(datamodule.train_dataloader()))]
        [(8, 3, 64, 64), (8,), (8, 64, 64)]

    Args:
        root: directory holding (or to receive) ``VOCdevkit/``.
        download: download the 2 GB archive (needs internet) if it is missing.
        task: which targets the batches carry.
        image_size: side of the resized images (64 or 32, say).
        batch_size: images per batch.
        num_workers: loader worker processes.
        fake: random images and blocky random masks of the same shapes (64 train, 32 validation).
        seed: seed of the fake data.
    """

    num_classes = NUM_CLASSES
    num_seg_classes = NUM_CLASSES

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        task: Literal["segmentation", "multitask"] = "segmentation",
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
        fake: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if task not in TASKS:
            raise ValueError(f"Expected `task` to be one of {TASKS}, but got {task!r}.")
        self.save_hyperparameters()
        self.root = root
        self.download = download
        self.task = task
        self.image_size = image_size
        self.fake = fake
        self.seed = seed

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (3, self.image_size, self.image_size)

    def prepare_data(self) -> None:
        if not self.fake:
            self._dataset("train", download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset("train")
            self.val_set = self._dataset("val")

    def _dataset(self, image_set: str, download: bool = False) -> Dataset:
        if self.fake:
            return self._fake(image_set)
        try:
            dataset = VOCSegmentation(
                self.root, year="2012", image_set=image_set, download=download, transforms=_Resize(self.image_size)
            )
        except (RuntimeError, OSError) as error:  # torchvision's "Dataset not found", URLError, a missing split
            raise missing_files_error("Pascal VOC 2012", Path(self.root), EXPECTED, error) from error
        return _WithLabel(dataset) if self.task == "multitask" else dataset

    def _fake(self, image_set: str) -> Dataset:
        generator = torch.Generator().manual_seed(self.seed * 2 + (image_set == "val"))
        num_images = FAKE_TRAIN if image_set == "train" else FAKE_VAL
        images = torch.randn(num_images, *self.image_shape, generator=generator)
        blocks = torch.randint(0, NUM_CLASSES, (num_images, 1, 4, 4), generator=generator).float()
        masks = F.interpolate(blocks, size=self.image_shape[1:], mode="nearest")[:, 0].long()
        masks[:, :, 0] = IGNORE_INDEX  # a column of boundary pixels, as in the real masks
        targets = (dominant_class(masks), masks) if self.task == "multitask" else (masks,)
        return ImageDataset(images, *targets)
