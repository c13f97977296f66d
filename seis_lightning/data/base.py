"""Pieces the data modules share: an in-memory image dataset, the loaders, the augmentation, the offline error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from seis_lightning.transforms import PAPER_AFFINE

FAKE_TRAIN = 64
FAKE_VAL = 32
IGNORE_INDEX = 255


def random_affine() -> v2.RandomAffine:
    """The paper's random-affine augmentation: rotation ±25°, shift ±10 %, scale 0.9–1.1."""
    return v2.RandomAffine(**PAPER_AFFINE)


class ImageDataset(Dataset):
    """Images ``[N, C, H, W]`` with their targets, a torchvision v2 transform applied per sample.

    Targets of shape ``[N]`` are labels; targets of shape ``[N, H, W]`` are segmentation masks,
    which a geometric transform moves together with the image (nearest neighbour).

    Args:
        images: float images ``[N, C, H, W]``.
        targets: labels ``[N]`` and/or masks ``[N, H, W]``, returned in this order after the image.
        transform: a ``torchvision.transforms.v2`` transform of ``(image, *targets)``.
    """

    def __init__(self, images: Tensor, *targets: Tensor, transform: Callable | None = None) -> None:
        self.images = images
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        sample = (
            tv_tensors.Image(self.images[index]),
            *(tv_tensors.Mask(t[index]) if t.ndim == 3 else t[index] for t in self.targets),
        )
        if self.transform is not None:
            sample = self.transform(*sample)
        return tuple(item.as_subclass(Tensor) for item in sample)


class ImageDataModule(LightningDataModule):
    """Loaders over ``train_set`` and ``val_set`` (also the test set), which ``setup`` assigns.

    Args:
        batch_size: images per batch.
        num_workers: loader worker processes.
    """

    def __init__(self, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before its data loaders are asked for.")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


def missing_files_error(dataset: str, directory: str | Path, expected: str, error: BaseException) -> FileNotFoundError:
    """The error raised when a dataset is neither on disk nor downloadable, saying what goes where."""
    return FileNotFoundError(
        f"{dataset} was not found or could not be downloaded ({type(error).__name__}: {error}). Expected {expected}"
        f" in the directory {Path(directory).expanduser().resolve()}. Put the files there, or pass download=True,"
        " which needs internet access."
    )
