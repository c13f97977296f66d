"""Aliasing (spec, "Transformations", "Aliasing gap"): a layer's total stride, the gap between equivariance at
multiples of the stride and at odd half-multiples with its SE (hand-computed values), and the stride pattern of a
random CNN's max-pool under exact pixel shifts."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torchvision.transforms.v2.functional as TF  # noqa: N812
from torch import nn

from seis_lightning import score_model
from seis_lightning.sweeps import AliasingGap, aliasing_gap, aliasing_gaps, layer_stride
from seis_lightning.transforms import parse_transforms
from tests.conftest import digits_images


@pytest.mark.parametrize(
    ("input_hw", "map_hw", "stride"),
    [((28, 28), (14, 14), 2), ((24, 24), (12, 12), 2), ((24, 24), (24, 24), 1), ((224, 224), (7, 7), 32)],
)
def test_layer_stride_divides(input_hw, map_hw, stride):
    assert layer_stride(input_hw, map_hw) == (stride, "") and isinstance(layer_stride(input_hw, map_hw)[0], int)


def test_layer_stride_is_along_the_width_the_shifts_move():
    assert layer_stride((24, 32), (12, 8)) == (4, "")


@pytest.mark.parametrize(
    ("input_hw", "map_hw", "words"),
    [
        ((28, 28), (13, 13), "input width 28 is not a multiple of the map's width 13"),
        ((28, 28), (1, 1), "one position wide"),
        ((24, 24), (48, 48), "input width 24 is not a multiple of the map's width 48"),
        ((28, 28), None, "no spatial map"),
    ],
)
def test_layer_stride_says_why_it_has_none(input_hw, map_hw, words):
    stride, reason = layer_stride(input_hw, map_hw)
    assert stride is None and words in reason and "declare" in reason


def test_aliasing_gap_hand_computed():
    shifts, values = [0, 1, 2, 3, 4], [1.0, 0.8, 0.98, 0.84, 0.96]
    gap = aliasing_gap(shifts, values, 2)
    assert isinstance(gap, AliasingGap) and gap.reason == "" and math.isnan(gap.se)
    assert gap.gap == pytest.approx((0.98 + 0.96) / 2 - (0.8 + 0.84) / 2, abs=1e-12)  # 0 (the identity) left out
    # per-shift SEs, independent: sqrt((0.02^2 + 0.04^2) / 2^2 + (0.01^2 + 0.03^2) / 2^2)
    se = aliasing_gap(shifts, values, 2, se=[0.0, 0.01, 0.02, 0.03, 0.04]).se
    assert se == pytest.approx(math.sqrt(0.00075), abs=1e-12)
    # stride 4 on a sweep of 2 px steps; a shift at neither kind (1 px) is not used; negative shifts count
    assert aliasing_gap([-4, -2, 0, 1, 2, 4, 6], [0.9, 0.5, 1.0, 0.1, 0.7, 0.95, 0.6], 4).gap == pytest.approx(
        (0.9 + 0.95) / 2 - (0.5 + 0.7 + 0.6) / 3, abs=1e-12
    )
    # stride 1: whole pixels against half pixels
    assert aliasing_gap([0, 0.5, 1, 1.5], [1.0, 0.9, 0.99, 0.91], 1).gap == pytest.approx(0.99 - 0.905, abs=1e-12)


def test_aliasing_gap_se_from_jackknife_replicates():
    """Replicates [replicate, shifts]: the gap of each, and the sample sd of those gaps (the jackknife's SE)."""
    replicates = [[0.8, 1.0, 0.8], [0.7, 0.9, 0.9], [0.9, 1.0, 0.8]]  # gaps 0.2, 0.1, 0.15
    gap = aliasing_gap([1, 2, 3], [0.8, 0.95, 0.85], 2, se=[9.0, 9.0, 9.0], replicates=replicates)
    assert gap.gap == pytest.approx(0.95 - 0.825, abs=1e-12)
    assert gap.se == pytest.approx(math.sqrt(0.005 / 2), abs=1e-12)  # replicates win over per-shift SEs: their sd


@pytest.mark.parametrize(
    ("shifts", "values", "stride", "words"),
    [
        ([0, 1, 2], [1.0, 0.8, 0.9], None, "no stride"),
        ([0, 1, 3], [1.0, 0.8, 0.9], 2, "no shift at a non-zero multiple of the stride 2"),
        ([0, 2, 4], [1.0, 0.8, 0.9], 2, "no shift at an odd half-multiple of the stride 2"),
        ([1, 2, 3], [0.8, math.nan, 0.9], 2, "equivariance is NaN at shift 2"),
    ],
)
def test_aliasing_gap_is_nan_with_a_reason(shifts, values, stride, words):
    gap = aliasing_gap(shifts, values, stride)
    assert math.isnan(gap.gap) and math.isnan(gap.se) and words in gap.reason


def test_aliasing_gap_checks_its_arguments():
    with pytest.raises(ValueError, match="one equivariance per shift: 3 shifts, 2 values"):
        aliasing_gap([1, 2, 3], [0.5, 0.6], 2)
    with pytest.raises(ValueError, match="Expected a positive `stride`, but got 0"):
        aliasing_gap([1, 2, 3], [0.5, 0.6, 0.7], 0)


def test_aliasing_gaps_of_a_shift_sweep():
    transforms = parse_transforms(["hflip", "shift:0:3:1", "rotate:0:20:10"])
    values = {"shift0_0": 1.0, "shift1_0": 0.7, "shift2_0": 0.9, "shift3_0": 0.6, "hflip": 0.1}
    values |= {"rotate0": 1.0, "rotate10": 0.2, "rotate20": 0.3}
    scores = {
        name: {layer: {"equivariance": v, "equivariance_se": 0.01} for layer in ("conv", "pool", "fc")}
        for name, v in values.items()
    }
    gaps = aliasing_gaps(scores, transforms, {"conv": 1, "pool": 2})
    assert list(gaps) == ["conv", "pool", "fc"]
    assert gaps["pool"].gap == pytest.approx(0.9 - 0.65, abs=1e-12)
    assert gaps["pool"].se == pytest.approx(math.sqrt(0.01**2 + 2 * 0.01**2 / 4), abs=1e-12)
    assert math.isnan(gaps["conv"].gap) and "odd half-multiple of the stride 1" in gaps["conv"].reason
    assert math.isnan(gaps["fc"].gap) and "no stride for layer 'fc'" in gaps["fc"].reason
    assert aliasing_gaps(scores, parse_transforms(["rotate:0:20:10"]), {"pool": 2}) == {}  # no shift sweep


def _smooth_images(count: int, size: int, seed: int, sigma: float = 1.5) -> torch.Tensor:
    noise = torch.randn(count, 1, size + 8, size + 8, generator=torch.Generator().manual_seed(seed))
    return TF.gaussian_blur(noise, kernel_size=[9, 9], sigma=[sigma, sigma])[..., 4:-4, 4:-4]


@pytest.mark.xfail(
    strict=True,
    reason="Written before its outcome; measured equivariance 0.923 (1 px), 0.915 (2 px), 0.911 (3 px): images"
    " blurred at sigma 1.5 px leave the pool's maps smooth enough that a half-position shift of them is a linear"
    " interpolation of positions, which the CCA's map P absorbs; only the loss at the border (a steady fall) shows."
    " With sharper inputs the pattern is there: see the next test.",
)
def test_a_stride_2_max_pool_follows_shifts_by_its_stride_better_than_by_odd_pixels():
    """Issue 29's stride pattern on a seeded random CNN: equivariance of its one stride-2 max-pool at 2 px exceeds
    that at 1 px and at 3 px (exact whole-pixel shifts of smooth 24x24 images), so its aliasing gap is positive."""
    model = _pooled_cnn(0)
    images = _smooth_images(256, 24, seed=1)
    transforms = ["shift:1,0", "shift:2,0", "shift:3,0"]
    scores = score_model(model, images, layers=["2"], transforms=transforms, precision="float64")
    equivariance = {d: scores[f"shift{d}_0"]["2"]["equivariance"] for d in (1, 2, 3)}
    assert equivariance[2] > equivariance[1] and equivariance[2] > equivariance[3], equivariance
    stride, _ = layer_stride((24, 24), (12, 12))
    assert aliasing_gap([1, 2, 3], [equivariance[d] for d in (1, 2, 3)], stride).gap > 0


def _pooled_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1))


@pytest.mark.parametrize("images", ["blur_sigma_1", "digits"])
def test_the_stride_pattern_with_sharper_images(images):
    """Written after the test above failed (measured: 0.81-0.85 at 1 and 3 px, 0.92-0.94 at 2 px for noise blurred
    at sigma 1 px; 0.88-0.94 and 0.9996-0.9999 for the digits; 4 random CNNs): the max-pool's equivariance at its
    stride (2 px) exceeds that at 1 px and 3 px by more than 0.05, and its aliasing gap is above 0.05."""
    probe = _smooth_images(256, 24, seed=1, sigma=1.0) if images == "blur_sigma_1" else digits_images(256, size=24)
    transforms = parse_transforms("shift:1:3:1")
    scores = score_model(_pooled_cnn(0), probe, layers=["2"], transforms=transforms, precision="float64")
    equivariance = [scores[f"shift{d}_0"]["2"]["equivariance"] for d in (1, 2, 3)]
    assert equivariance[1] > max(equivariance[0], equivariance[2]) + 0.05, equivariance
    gaps = aliasing_gaps(scores, transforms, {"2": layer_stride((24, 24), (12, 12)).stride})
    assert gaps["2"].gap == pytest.approx(equivariance[1] - (equivariance[0] + equivariance[2]) / 2, abs=1e-12)
    assert gaps["2"].gap > 0.05


def test_score_model_returns_strides_and_aliasing_gaps_with_the_scores():
    """``score_model`` reads each layer's stride from its map size and sums a ``shift`` sweep up per layer."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(), nn.Linear(144, 3)
    )
    images = torch.rand(32, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = score_model(model, images, layers=["0", "1", "4"], transforms=["shift:0:3:1"], precision="float64")
    assert sorted(scores) == ["shift0_0", "shift1_0", "shift2_0", "shift3_0"]  # still the plain mapping
    assert {layer: stride.stride for layer, stride in scores.strides.items()} == {"0": 1, "1": 2, "4": None}
    pool = [scores[f"shift{k}_0"]["1"]["equivariance"] for k in range(4)]
    expected = aliasing_gap([0, 1, 2, 3], pool, 2)
    assert scores.aliasing["1"].gap == pytest.approx(expected.gap, abs=1e-12)
    assert "stride" in scores.aliasing["4"].reason and math.isnan(scores.aliasing["4"].gap)
    assert set(scores.sweeps) == {f"sweep_shift/equivariance_halfway/{layer}" for layer in ("0", "1", "4")}


def test_the_callback_logs_each_layer_s_aliasing_gap_with_a_shift_sweep(tmp_path):
    """``seis/aliasing/<layer>``: the gap of each layer that has a stride, and ``seis/sweep_shift/aliasing``, the
    figure, read back from TensorBoard."""
    from seis_lightning import SEISCallback
    from tests.lightning_helpers import TinyCNN, digits_loaders, read_events, trainer

    train, val = digits_loaders()
    callback = SEISCallback(num_samples=64, transforms=["shift:0:3:1"], layers=["conv1", "conv2"], precision="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer(tmp_path, [callback], max_epochs=1).fit(TinyCNN(), train, val)
    events = read_events(tmp_path / "tb" / "version_0")
    scores = callback.scores
    for layer, stride in (("conv1", 1), ("conv2", 2)):
        curve = [scores[f"shift{k}_0"][layer]["equivariance"] for k in range(4)]
        expected = aliasing_gap([0, 1, 2, 3], curve, stride)
        if expected.reason:  # stride 1 with whole-pixel shifts only: no half-multiple, nothing logged
            assert f"seis/aliasing/{layer}" not in events.Tags()["scalars"]
            continue
        logged = events.Scalars(f"seis/aliasing/{layer}")
        assert [e.step for e in logged] == [0, 5] and logged[-1].value == pytest.approx(expected.gap, abs=1e-5)
    # and the figure of equivariance against the shift, stride multiples marked (tests/test_aliasing_outputs.py)
    images = events.Images("seis/sweep_shift/aliasing")
    assert [image.step for image in images] == [0, 5] and all(image.width > 300 for image in images)
