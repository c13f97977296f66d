"""Probe images: spread over the data, from every kind of source, with clear errors (issue 16, section 2)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from seis_lightning import score_model
from seis_lightning.probe import ProbeError, probe_images, spread


class ClassSortedFolder(Dataset):
    """Like torchvision's ``ImageFolder``: items sorted by class; each image is filled with its label."""

    def __init__(self, num_classes: int = 10, per_class: int = 20) -> None:
        self.labels = [label for label in range(num_classes) for _ in range(per_class)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        label = self.labels[index]
        return torch.full((3, 8, 8), float(label)), label


class Stream(IterableDataset):
    def __iter__(self):
        for index in range(100):
            yield torch.full((1, 4, 4), float(index))


def _classes(images: torch.Tensor) -> set[int]:
    return {int(value) for value in images[:, 0, 0, 0]}


@pytest.mark.parametrize(
    ("length", "count", "expected"),
    [(10, 4, [0, 3, 6, 9]), (200, 3, [0, 100, 199]), (3, 10, [0, 1, 2]), (5, 1, [0]), (0, 4, [])],
)
def test_spread_is_even_with_first_and_last(length, count, expected):
    assert spread(length, count).tolist() == expected


@pytest.mark.parametrize("as_loader", [False, True], ids=["dataset", "dataloader"])
def test_class_sorted_dataset_is_probed_across_all_classes(as_loader):
    folder = ClassSortedFolder()
    source = DataLoader(folder, batch_size=16, shuffle=False) if as_loader else folder
    images = probe_images(source, 30, batch_size=7)
    assert images.shape == (30, 3, 8, 8)
    assert _classes(images) == set(range(10))  # the first 30 items would be classes 0 and 1 only
    assert torch.equal(images, torch.stack([folder[i][0] for i in spread(len(folder), 30).tolist()]))


def test_tensor_and_iterable_sources():
    tensor = torch.arange(50.0).view(50, 1, 1, 1).expand(50, 1, 2, 2)
    assert probe_images(tensor, 6)[:, 0, 0, 0].tolist() == [0, 10, 20, 29, 39, 49]
    assert len(probe_images(tensor, 500)) == 50
    # Iterable sources have no length: their first images.
    stream = probe_images(DataLoader(Stream(), batch_size=8), 20)
    assert stream[:, 0, 0, 0].tolist() == list(range(20))
    batches = ({"pixel_values": torch.rand(4, 3, 5, 5), "label": torch.zeros(4)} for _ in range(10))
    assert probe_images(batches, 10).shape == (10, 3, 5, 5)


def test_input_getter_and_collate_fn_of_the_loader():
    folder = ClassSortedFolder(4, 5)
    loader = DataLoader(folder, batch_size=4, collate_fn=lambda items: {"x": torch.stack([i[0] for i in items])})
    assert probe_images(loader, 8).shape == (8, 3, 8, 8)
    assert probe_images(folder, 8, input_getter=lambda batch: batch[0] * 0).abs().sum() == 0
    with pytest.raises(ProbeError, match="`input_getter`"):
        probe_images(folder, 8, input_getter="missing")
    with pytest.raises(ProbeError, match="`input_getter`"):
        probe_images([{"label": torch.zeros(4)}], 8)


def test_channels_last_images_name_the_layout():
    with pytest.raises(ProbeError, match=r"channels-last.*\[N, H, W, C\].*permute\(0, 3, 1, 2\)"):
        probe_images(torch.rand(8, 16, 16, 3), 8)
    with pytest.raises(ProbeError, match="channels-last"):  # score_model checks its images too
        score_model(torch.nn.Conv2d(3, 4, 3), torch.rand(8, 16, 16, 3))


def test_uint8_images_say_how_to_convert():
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(ProbeError, match=r"uint8.*ToDtype\(torch.float32, scale=True\).*images.float\(\) / 255"):
        probe_images(images, 8)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(1, 3, 8, 8), "found 1 probe image"),
        (torch.rand(8, 64), r"as \[N, C, H, W\]"),
        (torch.randint(0, 5, (8, 3, 4, 4)), "floating-point"),
    ],
)
def test_other_unusable_images(images, message):
    with pytest.raises(ProbeError, match=message):
        probe_images(images, 8)
