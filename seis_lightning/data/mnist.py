"""``MNISTDataModule``: torchvision's MNIST, with a clear message when the files are missing."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import MNIST
from torchvision.transforms import v2

from seis_lightning.data.base import (
    FAKE_TRAIN,
    FAKE_VAL,
    ImageDataModule,
    ImageDataset,
    missing_files_error,
    random_affine,
)

MEAN, STD = 0.1307, 0.3081
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class MNISTDataModule(ImageDataModule):
    """MNIST (``torchvision.datasets.MNIST``): 60 000 training and 10 000 test digits, 28x28, gray.

    The official test split serves as validation and test set. Batches are ``(image, label)``: float32
    ``[B, 1, 28, 28]`` normalised with MNIST's mean and standard deviation (0.1307, 0.3081), and int64
    ``[B]``. The files are torchvision's raw ones, ``<root>/MNIST/raw/train-images-idx3-ubyte`` and the
    three others; without them and without ``download=True``, ``prepare_data`` and ``setup`` raise a
    ``FileNotFoundError`` naming the missing files and the folder they belong in (offline, see
    ``scripts/mnist_from_csv.py``).

    Example:
        >>> datamodule = MNISTDataModule(fake=True, batch_size=16)
        >>> datamodule.setup("fit")
        >>> images, labels = next(iter(datamodule.train_dataloader()))
        >>> images.shape, labels.dtype
        (torch.Size([16, 1, 28, 28]), torch.int64)

    Args:
        root: directory holding (or to receive) ``MNIST/raw/``.
        download: download the files (about 12 MB, needs internet) if they are missing.
        batch_size: images per batch.
        num_workers: loader worker processes.
        augment: apply the paper's random affine (rotation ±25°, shift ±10 %, scale 0.9–1.1) to
            training images, per sample.
        train_size: train on this many training images, a seeded random subset (``None``: all 60 000).
        val_size: validate on this many test images, a seeded random subset (``None``: all 10 000).
        fake: random images and labels of the same shapes (64 train, 32 validation), no files needed.
        seed: seed of the subsets (and of the fake images).
    """

    num_classes = 10
    image_shape = (1, 28, 28)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 0,
        augment: bool = False,
        train_size: int | None = None,
        val_size: int | None = None,
        fake: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers)
        for name, size in (("train_size", train_size), ("val_size", val_size)):
            if size is not None and size < 1:
                raise ValueError(f"Expected `{name}` to be None or a positive number of images, but got {size!r}.")
        self.save_hyperparameters()
        self.root = root
        self.download = download
        self.augment = augment
        self.train_size = train_size
        self.val_size = val_size
        self.fake = fake
        self.seed = seed

    def prepare_data(self) -> None:
        if not self.fake:
            for train in (True, False):
                self._load(train, download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        normalize = v2.Normalize([MEAN], [STD])
        train_transform = v2.Compose([random_affine(), normalize]) if self.augment else normalize
        self.train_set = ImageDataset(*self._load(True), transform=train_transform)
        self.val_set = ImageDataset(*self._load(False), transform=normalize)

    def _load(self, train: bool, download: bool = False) -> tuple[Tensor, Tensor]:
        """Images ``[N, 1, 28, 28]`` in [0, 1] and labels of one split (its seeded subset)."""
        generator = torch.Generator().manual_seed(self.seed * 2 + (not train))
        if self.fake:
            num_images = FAKE_TRAIN if train else FAKE_VAL
            images = torch.rand(num_images, *self.image_shape, generator=generator)
            return images, torch.randint(0, self.num_classes, (num_images,), generator=generator)
        try:
            dataset = MNIST(self.root, train=train, download=download)
        except (RuntimeError, OSError) as error:  # torchvision's "Dataset not found", URLError, ...
            raw = Path(self.root) / "MNIST" / "raw"
            missing = [name for name in RAW_FILES if not (raw / name).exists()] or list(RAW_FILES)
            expected = f"the files {', '.join(missing)} (torchvision's raw MNIST files)"
            raise missing_files_error("MNIST", raw, expected, error) from error
        images, labels = dataset.data[:, None].float() / 255, dataset.targets
        size = self.train_size if train else self.val_size
        if size is not None and size < len(images):
            keep = torch.randperm(len(images), generator=generator)[:size].sort().values
            images, labels = images[keep], labels[keep]
        return images, labels
