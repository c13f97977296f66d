"""BlurPool (Zhang 2019) on the digits CNN: the layer against a float64 hand computation, the option, the recipe pair,
and the pieces of scripts/blurpool_aliasing.py that turn scores into the table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from scripts.blurpool_aliasing import map_strides, run_gap, table
from seis_lightning.models import DigitsCNN
from seis_lightning.models.cnn import BlurPool2d

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def blurpool_reference(maps: np.ndarray) -> np.ndarray:
    """Zhang 2019's max-blur-pool written out in float64: 2x2 max at stride 1, reflect padding by one, then the
    binomial [1, 2, 1] x [1, 2, 1] / 16 at every second position."""
    batch, channels, height, width = maps.shape
    pooled = np.empty((batch, channels, height - 1, width - 1))
    for i in range(height - 1):
        for j in range(width - 1):
            pooled[..., i, j] = maps[..., i : i + 2, j : j + 2].max(axis=(-2, -1))
    padded = np.pad(pooled, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    weights = np.outer([1, 2, 1], [1, 2, 1]) / 16
    rows, columns = (padded.shape[-2] - 3) // 2 + 1, (padded.shape[-1] - 3) // 2 + 1
    out = np.empty((batch, channels, rows, columns))
    for i in range(rows):
        for j in range(columns):
            window = padded[..., 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            out[..., i, j] = (window * weights).sum(axis=(-2, -1))
    return out


@pytest.mark.parametrize("size", [(28, 28), (14, 14), (9, 12)])
def test_blurpool_is_max_at_stride_1_then_a_binomial_blur_at_stride_2(size):
    maps = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = BlurPool2d()(maps)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), blurpool_reference(maps.numpy()), rtol=0, atol=1e-12)
    assert out.shape[-2:] == nn.MaxPool2d(2)(maps).shape[-2:] or size == (9, 12)  # even sizes: max pool's size


def test_blurpool_keeps_a_constant_and_float32_matches_float64():
    assert torch.equal(BlurPool2d()(torch.full((1, 2, 8, 8), 3.0)), torch.full((1, 2, 4, 4), 3.0))
    maps = torch.randn(2, 4, 14, 14, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(BlurPool2d()(maps), BlurPool2d()(maps.double()).float(), rtol=0, atol=1e-6)


def test_digits_cnn_keeps_max_pooling_by_default_and_blurpool_changes_only_the_pools():
    plain, blurred = DigitsCNN(), DigitsCNN(downsample="blurpool")
    assert plain.hparams.downsample == "maxpool" and isinstance(plain.conv1[2], nn.MaxPool2d)
    assert isinstance(blurred.conv1[2], BlurPool2d) and isinstance(blurred.conv2[2], BlurPool2d)
    # The same parameters and checkpoint keys (the blur kernel is a constant, not saved), the same map sizes.
    assert list(plain.state_dict()) == list(blurred.state_dict())
    blurred.load_state_dict(plain.state_dict())
    images = torch.randn(2, 1, 28, 28)
    assert map_strides(plain, images, ["conv1.1", "conv1", "conv2", "conv3", "pool", "fc"]) == {
        "conv1.1": 1,
        "conv1": 2,
        "conv2": 4,
        "conv3": 4,
        "pool": None,
        "fc": None,
    }
    assert map_strides(blurred, images, ["conv1", "conv2"]) == {"conv1": 2, "conv2": 4}
    assert blurred(images).shape == (2, 10)


def test_digits_cnn_names_a_wrong_downsample():
    with pytest.raises(ValueError, match=r"`downsample` to be one of \('maxpool', 'blurpool'\), but got 'avg'"):
        DigitsCNN(downsample="avg")


def test_the_recipe_pair_differs_only_in_the_downsampling():
    configs = {
        kind: yaml.safe_load((RECIPES / f"digits_cnn_{kind}.yaml").read_text()) for kind in ("maxpool", "blurpool")
    }
    for kind, config in configs.items():
        assert config["model"]["init_args"].pop("downsample") == kind
        assert config["trainer"]["logger"]["init_args"].pop("name") == f"digits_cnn_{kind}"
    assert configs["maxpool"] == configs["blurpool"]
    assert "shift:0:6:0.5" in configs["maxpool"]["seis"]["transforms"]


def _rows(kind, seed, layer, stride, curve):
    return [
        {
            "downsample": kind,
            "seed": str(seed),
            "layer": layer,
            "stride": str(stride),
            "shift": f"{0.5 * k:g}",
            "equivariance": str(value),
            "equivariance_se": "0.01",
            "equivariance_null": "0.1",
        }
        for k, value in enumerate(curve)
    ]


def test_run_gap_uses_the_balanced_window_of_each_stride():
    shifts = [0.5 * k for k in range(13)]  # 0 to 6 px
    # A steady fall of equivariance with the shift and no aliasing: the balanced windows give 0.
    falling = [1 - 0.02 * d for d in shifts]
    for stride in (1, 2, 4):
        gap, se = run_gap(_rows("maxpool", 0, "x", stride, falling))
        assert gap == pytest.approx(0, abs=1e-12), stride
    # Stride 2, window 0-5 px: multiples {2, 4} at 0.9, odd half-multiples {1, 3, 5} at 0.6, the rest ignored.
    curve = [1.0 if d == 0 else 0.9 if d in (2, 4) else 0.6 if d in (1, 3, 5) else 0.0 for d in shifts]
    gap, se = run_gap(_rows("maxpool", 0, "x", 2, curve))
    assert gap == pytest.approx(0.3) and se == pytest.approx(math.sqrt(2 * 0.01**2 / 4 + 3 * 0.01**2 / 9))


def test_table_compares_the_gaps_over_seeds_with_the_welch_rule():
    curve = lambda top, low: [1.0 if d == 0 else top if d in (2, 4, 6) else low for d in (0.5 * k for k in range(13))]  # noqa: E731
    runs = []
    for seed, (a, b) in enumerate([(0.30, 0.05), (0.32, 0.06), (0.28, 0.04)]):
        runs += _rows("maxpool", seed, "conv1", 2, curve(0.95, 0.95 - a))
        runs += _rows("blurpool", seed, "conv1", 2, curve(0.95, 0.95 - b))
        runs += _rows("maxpool", seed, "pool", "", [0.9] * 13)
        runs += _rows("blurpool", seed, "pool", "", [0.9] * 13)
    (row,) = table(runs, jackknife_groups=10)  # layers without a stride have no gap
    assert (row["layer"], row["stride"]) == ("conv1", 2)
    assert row["maxpool_gap"] == pytest.approx(0.30) and row["blurpool_gap"] == pytest.approx(0.05)
    assert row["maxpool_seed_se"] == pytest.approx(0.02 / math.sqrt(3))
    assert row["delta"] == pytest.approx(-0.25) and row["verdict"] == "lowered"
