"""``CIFAR100DataModule``: torchvision's CIFAR-100, with a clear message when the files are missing."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR100
from torchvision.transforms import v2

from seis_lightning.data.base import (
    FAKE_TRAIN,
    FAKE_VAL,
    ImageDataModule,
    ImageDataset,
    missing_files_error,
    random_affine,
)

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
EXPECTED = "the folder cifar-100-python/ with the files train, test and meta (or the archive cifar-100-python.tar.gz)"


class CIFAR100DataModule(ImageDataModule):
    """CIFAR-100 (``torchvision.datasets.CIFAR100``): 50 000 training and 10 000 test images, 100 classes.

    The official test split serves as validation and test set. Batches are ``(image, label)``:
    float32 ``[B, 3, 32, 32]`` normalised with the CIFAR-100 channel statistics, and int64 ``[B]``.
    Without the files and without ``download=True``, ``prepare_data`` and ``setup`` raise a
    ``FileNotFoundError`` naming the files and the directory they belong in.

    Example:
        >>> datamodule = CIFAR100DataModule(fake=True, batch_size=16)
        >>> datamodule.setup("fit")
        >>> images, labels = next(iter(datamodule.train_dataloader()))
        >>> images.shape, labels.dtype
        (torch.Size([16, 3, 32, 32]), torch.int64)

    Args:
        root: directory holding (or to receive) ``cifar-100-python/``.
        download: download the archive (about 160 MB, needs internet) if it is missing.
        batch_size: images per batch.
        num_workers: loader worker processes.
        augment: training images get a random crop (padding 4), a horizontal flip and the paper's
            random affine (rotation ±25°, shift ±10 %, scale 0.9–1.1), per sample.
        fake: random images and labels of the same shapes (64 train, 32 validation), no files needed.
        seed: seed of the fake images.
    """

    num_classes = 100
    image_shape = (3, 32, 32)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        augment: bool = False,
        fake: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        self.save_hyperparameters()
        self.root = root
        self.download = download
        self.augment = augment
        self.fake = fake
        self.seed = seed

    def prepare_data(self) -> None:
        if not self.fake:
            for train in (True, False):
                self._dataset(train, None, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        augmentation = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), random_affine()]
        normalize = v2.Normalize(MEAN, STD)
        train_transform = v2.Compose([*to_tensor, *(augmentation if self.augment else []), normalize])
        val_transform = v2.Compose([*to_tensor, normalize])
        self.train_set = self._dataset(True, train_transform)
        self.val_set = self._dataset(False, val_transform)

    def _dataset(self, train: bool, transform: v2.Transform | None, download: bool = False) -> Dataset:
        if self.fake:
            generator = torch.Generator().manual_seed(self.seed * 2 + (not train))
            num_images = FAKE_TRAIN if train else FAKE_VAL
            images = torch.rand(num_images, *self.image_shape, generator=generator)
            labels = torch.randint(0, self.num_classes, (num_images,), generator=generator)
            return ImageDataset(images, labels, transform=transform)
        try:
            return CIFAR100(self.root, train=train, transform=transform, download=download)
        except (RuntimeError, OSError) as error:  # torchvision's "Dataset not found", URLError, ...
            raise missing_files_error("CIFAR-100", Path(self.root), EXPECTED, error) from error
