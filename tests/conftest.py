"""Shared fixtures: seeded activations of a small random CNN on the embedded digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from sklearn.datasets import load_digits


def digits_images(num_images: int, size: int = 28, offset: int = 0) -> torch.Tensor:
    """The first ``num_images`` (from ``offset``) scikit-learn digits, upsampled to ``size``, in [0, 1]."""
    images = torch.as_tensor(load_digits().images[offset : offset + num_images], dtype=torch.float32) / 16
    return F.interpolate(images[:, None], size=(size, size), mode="bilinear", align_corners=False)


def random_cnn(seed: int = 0) -> torch.nn.Module:
    """A small random CNN whose first block gives 32 maps of 14x14 on 28x28 digits."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    ).eval()


@pytest.fixture(scope="session")
def digit_maps() -> torch.Tensor:
    """Maps [512, 32, 14, 14] of the first block of a random CNN over 512 digits."""
    with torch.no_grad():
        return random_cnn()[:3](digits_images(512))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
