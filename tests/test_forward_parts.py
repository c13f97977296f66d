"""Forward passes in parts (issue 28): the probe's chunk (null pairing, statistics) is not the forward's batch.

A chunk of ``batch_size`` images goes through the model in parts of at most ``forward_batch_size`` images
(``None``: as many as keep the largest captured output under ``FORWARD_BYTES``), so that a probe pass's
peak memory follows the forward's activations of a few images, not of the chunk. The scores must not
depend on the parts, every chunk must run as many forward passes (models whose forward is a collective),
and default layers leave out eval-mode BatchNorm (a fixed affine map of each channel).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seis_lightning import score_model
from seis_lightning.forward import FORWARD_BYTES, forward_parts
from seis_lightning.functional import SEISWarning
from seis_lightning.pass_plan import max_chunk_size, pass_plan

pytestmark = pytest.mark.filterwarnings("ignore::seis_lightning.functional.SEISWarning")

SCORES = ("equivariance", "invariance", "channel_invariance", "equivariance_null", "channel_invariance_null")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1), nn.Flatten()
    ).double()


def _counting_forward(sizes: list[int]):
    def forward(model: nn.Module, images: torch.Tensor):
        sizes.append(len(images))
        return model(images)

    return forward


def _images(n: int, size: int = 8) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("forward_batch_size", [1, 3, 4])
def test_scores_do_not_depend_on_the_forward_parts(forward_batch_size):
    images = _images(14)
    kwargs = {"layers": ["0", "2", "3"], "transforms": ["rotate:30", "hflip"], "batch_size": 8, "precision": "float64"}
    whole = score_model(_model(), images, forward_batch_size=8, **kwargs)
    parts = score_model(_model(), images, forward_batch_size=forward_batch_size, **kwargs)
    for transform in whole:
        for layer in whole[transform]:
            for score in SCORES:
                assert parts[transform][layer][score] == pytest.approx(whole[transform][layer][score], abs=1e-12)


def test_each_forward_pass_runs_at_most_forward_batch_size_images_and_every_chunk_as_many_passes():
    """7 images in chunks of 4 and 3; parts of 1 image: the chunk of 3 runs a fourth, discarded, pass."""
    sizes: list[int] = []
    score_model(
        _model(),
        _images(7),
        layers=["0", "3"],
        transforms=["hflip"],
        batch_size=4,
        forward_batch_size=1,
        forward_fn=_counting_forward(sizes),
        precision="float64",
    )
    # layers named and forward_batch_size given: no pass to find them or size the parts; then
    # 2 chunks x (the images + 1 draw) x 4 parts
    assert sizes == [1] * (2 * 2 * 4)


@pytest.mark.parametrize("layers", [["0", "2"], None], ids=["named", "default"])
def test_the_automatic_parts_keep_the_largest_captured_output_under_the_budget(layers):
    """A layer of 16 x 128 x 128 float32 maps (1 MiB per image): parts of 32 images for a 32 MiB budget.

    One forward pass of 2 images sizes the parts: with named layers a pass of its own, with default layers the
    pass that finds them (no second one)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.AdaptiveAvgPool2d(4), nn.Flatten())
    per_image = 16 * 128 * 128 * 4
    sizes: list[int] = []
    result = score_model(
        model,
        torch.rand(80, 1, 128, 128, generator=torch.Generator().manual_seed(0)),
        layers=layers,
        transforms=["hflip"],
        batch_size=80,
        forward_fn=_counting_forward(sizes),
        max_positions=64,
    )
    assert "0" in result["hflip"]  # the 1 MiB-per-image layer is scored (a default layer too), and sets the parts
    largest = FORWARD_BYTES // per_image
    assert max(sizes) <= largest
    assert forward_parts(per_image, 80, None) == math.ceil(80 / largest)
    # the pass that sizes the parts, then the chunk in 3 near-equal parts, for the images and the draw
    assert sizes == [2] + [27, 27, 26] * 2


@pytest.mark.parametrize(("num_images", "batch_size", "world_size"), [(7, 4, 1), (64, 64, 1), (10, 3, 2), (9, 4, 3)])
def test_max_chunk_size_is_the_largest_chunk_of_any_rank(num_images, batch_size, world_size):
    chunks = [chunk for rank in range(world_size) for chunk in pass_plan(num_images, batch_size, rank, world_size)]
    assert max_chunk_size(num_images, batch_size, world_size) == max(chunk.stop - chunk.start for chunk in chunks)


def test_forward_batch_size_is_checked():
    with pytest.raises(ValueError, match="`forward_batch_size` to be None or a positive integer"):
        score_model(_model(), _images(4), forward_batch_size=0)


class WithBatchNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.free = nn.BatchNorm2d(4, track_running_stats=False)  # batch statistics even in eval: a new map
        self.head = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.head(self.free(self.bn(self.conv(x))))


def test_default_layers_leave_out_eval_batchnorm_but_score_it_when_named():
    torch.manual_seed(0)
    model = WithBatchNorm()
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert list(score_model(model, images, transforms=["hflip"])["hflip"]) == ["conv", "free", "head"]
    named = score_model(model, images, layers=["bn"], transforms=["hflip"], precision="float64")["hflip"]
    assert math.isfinite(named["bn"]["equivariance"])
    assert model.training  # put back as it was


def test_a_layer_whose_maps_change_shape_between_parts_is_not_scored_and_says_why():
    class Ragged(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.crop = nn.Identity()
            self.calls = 0

        def forward(self, x):
            y = self.conv(x)
            self.calls += 1
            return self.crop(y[..., : 8 - self.calls % 2]).mean((2, 3))

    torch.manual_seed(0)
    with pytest.warns(SEISWarning, match=r"'crop'.*gives maps of shapes"):
        scores = score_model(
            Ragged(), _images(8).float(), layers=["conv", "crop"], transforms=["hflip"], forward_batch_size=4
        )["hflip"]
    assert math.isnan(scores["crop"]["equivariance"]) and math.isfinite(scores["conv"]["equivariance"])
