"""``ShapesDataModule``: seeded, procedurally drawn shapes with labels and segmentation masks."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torchvision.transforms import v2

from seis_lightning.data.base import FAKE_TRAIN, FAKE_VAL, ImageDataModule, ImageDataset, random_affine

SHAPES = ("circle", "square", "triangle", "cross")
TASKS = ("classification", "segmentation", "multitask")


def draw_shapes(num_images: int, image_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Draw one shape of a random class, position, size and colour per image on a noisy background.

    Args:
        num_images: images to draw.
        image_size: side of the square images.
        generator: the random stream; the same seed gives the same images.

    Returns:
        images ``[N, 3, S, S]`` in [0, 1], labels ``[N]`` (an index into :data:`SHAPES`) and masks
        ``[N, S, S]`` (0 on the background, ``1 + label`` on the shape), all drawn at once.
    """
    n, size = num_images, image_size
    labels = torch.randint(0, len(SHAPES), (n,), generator=generator)
    radius = size * (0.15 + 0.15 * torch.rand(n, 1, 1, generator=generator))
    centre = radius[:, None] + (size - 1 - 2 * radius[:, None]) * torch.rand(n, 2, 1, 1, generator=generator)
    grid = torch.arange(size, dtype=torch.float32)
    dx = (grid[None, None, :] - centre[:, 0]) / radius  # [N, 1, S]: within the shape where |dx| <= 1
    dy = (grid[None, :, None] - centre[:, 1]) / radius  # [N, S, 1]
    inside = torch.stack(
        [
            dx**2 + dy**2 <= 1,
            (dx.abs() <= 0.8) & (dy.abs() <= 0.8),
            (dy <= 0.8) & (dx.abs() <= (dy + 1) / 1.8),  # apex up, base down
            ((dx.abs() <= 0.3) & (dy.abs() <= 1)) | ((dy.abs() <= 0.3) & (dx.abs() <= 1)),
        ],
        dim=1,
    )[torch.arange(n), labels]
    background = 0.35 * torch.rand(n, 3, 1, 1, generator=generator)
    colour = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=generator)
    noise = 0.08 * torch.randn(n, 3, size, size, generator=generator)
    images = (torch.where(inside[:, None], colour, background) + noise).clamp(0, 1)
    masks = torch.where(inside, labels[:, None, None] + 1, 0)
    return images, labels, masks


class ShapesDataModule(ImageDataModule):
    """Seeded, procedurally drawn shapes (:data:`SHAPES`) on noisy backgrounds, 3 channels.

    Images are normalised with the channel means and standard deviations of the training images.
    Masks are 0 on the background and ``1 + label`` on the shape, so there are
    ``num_seg_classes = num_classes + 1`` segmentation classes. The test set is the validation set.
    Batches by ``task``:

    - ``"classification"``: ``(image, label)``, float32 ``[B, 3, S, S]`` and int64 ``[B]``;
    - ``"segmentation"``: ``(image, mask)``, mask int64 ``[B, S, S]``;
    - ``"multitask"``: ``(image, label, mask)``.

    Example:
        >>> datamodule = ShapesDataModule(task="multitask", num_train=8, num_val=8, batch_size=4)
        >>> datamodule.setup("fit")
        >>> [tuple(item.shape) for item in next(iter(datamodule.val_dataloader()))]
        [(4, 3, 32, 32), (4,), (4, 32, 32)]

    Args:
        task: which targets the batches carry.
        num_train: training images.
        num_val: validation images.
        batch_size: images per batch.
        num_workers: loader worker processes.
        image_size: side of the square images.
        seed: seed of the drawing; training and validation images come from separate streams.
        augment: apply the paper's random affine to training images and their masks, per sample.
        fake: random images, labels and masks of the same shapes (64 train, 32 validation).
    """

    num_classes = len(SHAPES)
    num_seg_classes = len(SHAPES) + 1

    def __init__(
        self,
        task: Literal["classification", "segmentation", "multitask"] = "classification",
        num_train: int = 2000,
        num_val: int = 512,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 32,
        seed: int = 0,
        augment: bool = False,
        fake: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers)
        if task not in TASKS:
            raise ValueError(f"Expected `task` to be one of {TASKS}, but got {task!r}.")
        self.save_hyperparameters()
        self.task = task
        self.num_train = FAKE_TRAIN if fake else num_train
        self.num_val = FAKE_VAL if fake else num_val
        self.image_size = image_size
        self.seed = seed
        self.augment = augment
        self.fake = fake

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (3, self.image_size, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, val = self._draw(self.num_train, 0), self._draw(self.num_val, 1)
        normalize = v2.Normalize(train[0].mean((0, 2, 3)).tolist(), train[0].std((0, 2, 3)).tolist())
        train_transform = v2.Compose([random_affine(), normalize]) if self.augment else normalize
        self.train_set = ImageDataset(*self._targets(train), transform=train_transform)
        self.val_set = ImageDataset(*self._targets(val), transform=normalize)

    def _draw(self, num_images: int, stream: int) -> tuple[Tensor, Tensor, Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 2 + stream)
        if not self.fake:
            return draw_shapes(num_images, self.image_size, generator)
        images = torch.rand(num_images, *self.image_shape, generator=generator)
        labels = torch.randint(0, self.num_classes, (num_images,), generator=generator)
        masks = torch.randint(
            0, self.num_seg_classes, (num_images, self.image_size, self.image_size), generator=generator
        )
        return images, labels, masks

    def _targets(self, drawn: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, ...]:
        images, labels, masks = drawn
        return {
            "classification": (images, labels),
            "segmentation": (images, masks),
            "multitask": (images, labels, masks),
        }[self.task]
