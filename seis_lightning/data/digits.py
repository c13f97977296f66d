"""``DigitsDataModule``: scikit-learn's bundled 8x8 handwritten digits, upsampled, no download."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torchvision.transforms import v2

from seis_lightning.data.base import FAKE_TRAIN, FAKE_VAL, ImageDataModule, ImageDataset, random_affine


class DigitsDataModule(ImageDataModule):
    """The 1797 handwritten digits of ``sklearn.datasets.load_digits``, upsampled to ``image_size``.

    The 8x8 images are upsampled bilinearly, scaled to [0, 1] and normalised with the mean and
    standard deviation of the training split. Batches are ``(image, label)``: float32
    ``[B, num_channels, image_size, image_size]`` and int64 ``[B]``; the test set is the validation set.

    Example:
        >>> datamodule = DigitsDataModule(fake=True)
        >>> datamodule.setup("fit")
        >>> images, labels = next(iter(datamodule.train_dataloader()))
        >>> images.shape, labels.dtype
        (torch.Size([64, 1, 28, 28]), torch.int64)

    Args:
        batch_size: images per batch.
        num_workers: loader worker processes.
        image_size: side of the upsampled images (28 or 32, say).
        val_fraction: share of the images held out for validation.
        seed: seed of the train/validation split (and of the fake images).
        augment: apply the paper's random affine (rotation ±25°, shift ±10 %, scale 0.9–1.1) to
            training images, per sample.
        num_channels: 1, or 3 to repeat the gray channel for RGB models.
        fake: random images and labels of the same shapes (64 train, 32 validation), for smoke tests.
    """

    num_classes = 10

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 28,
        val_fraction: float = 0.2,
        seed: int = 0,
        augment: bool = False,
        num_channels: int = 1,
        fake: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if num_channels not in (1, 3):
            raise ValueError(f"Expected `num_channels` to be 1 or 3, but got {num_channels!r}.")
        if not 0 < val_fraction < 1:
            raise ValueError(f"Expected `val_fraction` in (0, 1), but got {val_fraction!r}.")
        self.save_hyperparameters()
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.augment = augment
        self.num_channels = num_channels
        self.fake = fake

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (self.num_channels, self.image_size, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        if self.fake:
            images = torch.rand(FAKE_TRAIN + FAKE_VAL, *self.image_shape, generator=generator)
            labels = torch.randint(0, self.num_classes, (FAKE_TRAIN + FAKE_VAL,), generator=generator)
            train, val = torch.arange(FAKE_TRAIN), torch.arange(FAKE_TRAIN, FAKE_TRAIN + FAKE_VAL)
        else:
            images, labels = self._load()
            order = torch.randperm(len(images), generator=generator)
            num_val = round(len(images) * self.val_fraction)
            train, val = order[num_val:], order[:num_val]
        mean, std = images[train].mean().item(), images[train].std().item()
        normalize = v2.Normalize([mean] * self.num_channels, [std] * self.num_channels)
        train_transform = v2.Compose([random_affine(), normalize]) if self.augment else normalize
        self.train_set = ImageDataset(images[train], labels[train], transform=train_transform)
        self.val_set = ImageDataset(images[val], labels[val], transform=normalize)

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = load_digits_images(self.image_size)
        return images.expand(-1, self.num_channels, -1, -1).contiguous(), labels


def load_digits_images(image_size: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 bundled handwritten digits (no download) as images ``[N, 1, size, size]`` in
    [0, 1] (bilinear upsampling of the 8x8 originals), and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return images.clamp(0, 1), torch.as_tensor(digits.target)
