"""Shared fixtures: seeded activations of a small random CNN on the embedded digits."""

from __future__ import annotations

import pytest
import torch

from seis_lightning.synthetic import digits_images, random_cnn

__all__ = ["digits_images", "random_cnn"]


@pytest.fixture(scope="session")
def digit_maps() -> torch.Tensor:
    """Maps [512, 32, 14, 14] of the first block of a random CNN over 512 digits."""
    with torch.no_grad():
        return random_cnn()[:3](digits_images(512))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored after: on a shared 2-core machine two threads wait on each other
    some 10x longer. Modules use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
