"""Vector layers scored from the image side (spec, "Streaming statistics"): while a layer with one
position has seen fewer images than it has channels, it keeps its vectors instead of its D×D channel
Grams and its channel unfolding is scored from the n×n image Gram. Exact: the same scores, nulls,
retained dimensions and jackknife SEs as the Gram sums (float64, 1e-9) and as the float64 reference."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from seis_lightning import SEISMetric, seis_scores
from seis_lightning.functional import SCORES_AND_NULLS, SEISWarning, seis_combine_statistics, seis_from_statistics
from seis_lightning.options import SEISOptions
from seis_lightning.statistics import CHANNEL_GRAMS, _has_rows, _statistics
from tests.reference import reference_scores
from tests.test_jackknife import _reference_half_samples
from tests.test_metric import ddp_scores, one_process_scores

BATCH = 16


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def vectors(num_images: int, dim: int, num_transforms: int, seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Correlated float64 vectors ``[N, D]`` with a common offset, and ``num_transforms`` noisy re-encodings."""
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / math.sqrt(dim)
    a = torch.randn(num_images, dim, generator=generator, dtype=torch.float64) @ mixing + 3.0
    bs = []
    for _ in range(num_transforms):
        q = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))[0]
        bs.append(a @ q + 0.3 * torch.randn(num_images, dim, generator=generator, dtype=torch.float64))
    return a, bs


def streamed(metric: SEISMetric, a: torch.Tensor, bs: list[torch.Tensor], by_draw: bool = False) -> SEISMetric:
    for index in torch.arange(len(a)).split(BATCH):
        if by_draw:
            for k, b in enumerate(bs):
                metric.update(a[index], b[index], draw=k)
        else:
            metric.update(a[index], [b[index] for b in bs] if metric.num_transforms else bs[0][index])
    return metric


def gram_side(a: torch.Tensor, bs: list[torch.Tensor], groups: int, num_transforms: int | None) -> list[dict]:
    """The same batches through the channel Gram sums (the route the image side replaces)."""
    options = SEISOptions(precision="float64", jackknife_groups=groups).resolved(a.device)
    batches = []
    for index in torch.arange(len(a)).split(BATCH):
        b = [x[index] for x in bs] if num_transforms else bs[0][index]
        batches.append(_statistics(a[index], b, options, int(index[0]), batches[0] if batches else None))
    assert all(name in batches[0] for name in CHANNEL_GRAMS)
    result = seis_from_statistics(seis_combine_statistics(*batches), precision="float64")
    return result if num_transforms else [result]


def assert_same(result: dict, expected: dict, jackknife: bool) -> None:
    for name in SCORES_AND_NULLS:
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name
        if jackknife:
            assert result[f"{name}_se"] == pytest.approx(expected[f"{name}_se"], abs=1e-9), name
            np.testing.assert_allclose(result["jackknife"][name], expected["jackknife"][name], rtol=0, atol=1e-9)
    for name in ("spatial_kx", "spatial_ky", "channel_kx", "channel_ky", "num_images"):
        assert result[name] == expected[name], name
    np.testing.assert_allclose(result["channel_rho"], expected["channel_rho"], rtol=0, atol=1e-9)


@pytest.mark.parametrize(("num_images", "dim"), [(48, 64), (64, 24)])
@pytest.mark.parametrize("groups", [0, 4])
@pytest.mark.parametrize("num_transforms", [None, 3])
def test_streamed_vectors_equal_the_gram_sums_and_the_reference(num_images, dim, groups, num_transforms):
    """More channels than images (48 < 64): the metric keeps the vectors to the end; fewer (64 > 24):
    it keeps them until 24 images are in, then the channel Grams. Either way the scores, nulls and SEs
    are those of the Gram sums, and the float64 reference's."""
    a, bs = vectors(num_images, dim, num_transforms or 1)
    metric = streamed(SEISMetric(num_transforms=num_transforms, precision="float64", jackknife_groups=groups), a, bs)
    assert _has_rows(metric._states()) == (num_images < dim)
    assert bool(metric.channel_gram_aa.ndim) == (num_images >= dim)
    results = metric.compute()
    results = results if num_transforms else [results]
    for result, expected, b in zip(results, gram_side(a, bs, groups, num_transforms), bs):
        assert_same(result, expected, jackknife=bool(groups))
        reference = reference_scores(a[:, :, None].numpy(), b[:, :, None].numpy(), batch_size=BATCH)
        for name in SCORES_AND_NULLS:
            assert result[name] == pytest.approx(reference[name], abs=1e-9), name
        assert (result["channel_kx"], result["channel_ky"]) == (reference["channel_kx"], reference["channel_ky"])
        assert result["invariance"] == pytest.approx(result["equivariance"], abs=1e-12)  # S = 1


@pytest.mark.parametrize("groups", [4, 9])
def test_image_side_standard_errors_equal_the_float64_reference(groups):
    """Each half-sample keeps the vectors of its groups' images, their null partners with them (image
    n - 1 of the whole set here, one batch), and is scored like the reference on those images."""
    a, (b,) = vectors(40, 56, 1, seed=1)
    result = seis_scores(a, b, jackknife_groups=groups, precision="float64")
    kept = (groups + 1) // 2
    count = math.comb(groups, kept)
    scale = math.sqrt(kept / (groups - kept) * (count - 1) / count)
    maps_a, maps_b = a[:, :, None].numpy(), b[:, :, None].numpy()
    index = np.arange(len(a))
    values = []
    for half in _reference_half_samples(groups):
        images = index[np.isin(index % groups, half)]
        reference = reference_scores(maps_a[images], maps_b[images], b_null=maps_b[(images - 1) % len(a)])
        values.append([reference[name] for name in SCORES_AND_NULLS])
    values = np.array(values)
    for i, name in enumerate(SCORES_AND_NULLS):
        assert result[f"{name}_se"] == pytest.approx(scale * values[:, i].std(ddof=1), abs=1e-9), name
    assert result["channel_invariance_se"] > 0


def test_draws_one_at_a_time_and_merged_metrics_equal_one_metric():
    """``update(..., draw=k)`` fills each draw's vectors; ``merge_state`` (as a distributed sync would)
    joins two metrics' vectors about the first one's shifts, jackknife groups by global offset."""
    a, bs = vectors(64, 80, 3, seed=2)
    make = lambda: SEISMetric(num_transforms=3, precision="float64", jackknife_groups=8)  # noqa: E731
    expected = gram_side(a, bs, 8, 3)
    by_draw = streamed(make(), a, bs, by_draw=True)
    first, second = make(), make()
    for i, index in enumerate(torch.arange(len(a)).split(BATCH)):
        (first if i % 2 else second).update(a[index], [b[index] for b in bs], offset=int(index[0]))
    second.merge_state(first)
    for metric in (by_draw, second):
        assert _has_rows(metric._states())
        for result, one in zip(metric.compute(), expected):
            assert_same(result, one, jackknife=True)


def test_merging_past_the_channel_count_turns_vectors_into_grams():
    """Two metrics of 24 images each hold vectors of 32 channels; merged (48 images) they hold Grams."""
    a, bs = vectors(48, 32, 1, seed=3)
    first, second = SEISMetric(precision="float64"), SEISMetric(precision="float64")
    first.update(a[:24], bs[0][:24])
    second.update(a[24:], bs[0][24:])
    assert _has_rows(first._states()) and _has_rows(second._states())
    first.merge_state(second)
    assert not _has_rows(first._states()) and first.channel_gram_aa.shape == (32, 32)
    reference = reference_scores(a[:, :, None].numpy(), bs[0][:, :, None].numpy(), batch_size=24)
    result = first.compute()
    for name in SCORES_AND_NULLS:
        assert result[name] == pytest.approx(reference[name], abs=1e-9), name


def test_forward_continues_on_the_image_side():
    a, bs = vectors(48, 64, 1, seed=4)
    metric = SEISMetric(precision="float64", jackknife_groups=4)
    for index in torch.arange(len(a)).split(BATCH):
        batch = metric(a[index], bs[0][index])
        assert batch["num_images"] == BATCH
    assert_same(metric.compute(), gram_side(a, bs, 4, None)[0], jackknife=True)


def _without_spread(message: str) -> str:
    return re.sub(r"spread is \d\.\de-\d+", "spread is <rounding>", message)


def _warnings_and_result(run) -> tuple[list[str], dict]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run()
    return sorted(str(w.message) for w in caught if issubclass(w.category, SEISWarning)), result


@pytest.mark.parametrize(
    "case",
    ["constant_b", "constant_a", "one_image", "single_image_batches", "few_rows"],
)
def test_warnings_and_nan_reasons_are_those_of_the_gram_sums(case):
    a, (b,) = vectors(12, 40, 1, seed=5)
    batch = BATCH
    if case == "constant_b":
        b = torch.full_like(b, 2.5)
    elif case == "constant_a":
        a = torch.full_like(a, -1.0) + 1e-17 * b  # below what float64 resolves about the offset
    elif case == "one_image":
        a, b = a[:1], b[:1]
    elif case == "single_image_batches":
        batch = 1

    def run(rows: bool):
        options = SEISOptions(precision="float64").resolved(a.device)
        batches = []
        for index in torch.arange(len(a)).split(batch):
            stats = _statistics(a[index], b[index], options, 0, batches[0] if batches else None, channel_rows=rows)
            batches.append(stats)
        assert _has_rows(batches[0]) == rows
        return lambda: seis_from_statistics(seis_combine_statistics(*batches), precision="float64")

    messages, result = _warnings_and_result(run(rows=True))
    expected_messages, expected = _warnings_and_result(run(rows=False))
    # A constant layer's reason quotes its spread, rounding (about 1e-17) that each route rounds its own way.
    assert [_without_spread(m) for m in messages] == [_without_spread(m) for m in expected_messages] and messages
    assert {name: _without_spread(r) for name, r in result["reasons"].items()} == {
        name: _without_spread(r) for name, r in expected["reasons"].items()
    }
    for name in SCORES_AND_NULLS:
        if math.isnan(expected[name]):
            assert math.isnan(result[name]), name
        else:
            assert result[name] == pytest.approx(expected[name], abs=1e-9), name
    assert (result["channel_kx"], result["channel_ky"]) == (expected["channel_kx"], expected["channel_ky"])


def test_float32_statistics_on_the_image_side_stay_within_float32_accuracy():
    """``precision="float32"``: the vectors are kept in float64 and scored with the float32 ``eps`` per
    direction, within the spec's 1e-4 of float64 as the float32 Gram sums are."""
    a, (b,) = vectors(48, 64, 1, seed=6)
    result = streamed(SEISMetric(precision="float32"), a.float(), [b.float()]).compute()
    reference = reference_scores(a[:, :, None].numpy(), b[:, :, None].numpy(), batch_size=BATCH)
    for name in ("equivariance", "channel_invariance", "channel_invariance_null"):
        assert result[name] == pytest.approx(reference[name], abs=1e-4), name


def test_image_side_state_is_smaller_than_the_grams_it_replaces():
    a, bs = vectors(32, 96, 2, seed=7)
    rows = streamed(SEISMetric(num_transforms=2, precision="float64", jackknife_groups=4), a, bs)
    row_floats = sum(value.numel() for value in rows._states().values())
    grams = 4 * (1 + 3 * 2) * 96 * 96  # G (1 + 3K) D²
    assert row_floats < grams / 5


def test_state_dict_round_trip_keeps_the_vectors():
    a, bs = vectors(32, 48, 1, seed=9)
    metric = streamed(SEISMetric(precision="float64", jackknife_groups=4), a, bs)
    metric.persistent(True)
    restored = SEISMetric(precision="float64", jackknife_groups=4)
    restored.persistent(True)
    restored.load_state_dict(metric.state_dict())
    assert restored.channel_rows_b.shape == (32, 48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchmetrics: compute before update
        assert_same(restored.compute(), metric.compute(), jackknife=True)


def _vector_metric() -> SEISMetric:
    return SEISMetric(precision="float64", jackknife_groups=4)


@pytest.mark.distributed
@pytest.mark.parametrize(("dim", "sizes"), [(80, [16, 16, 16, 16]), (40, [48, 16])], ids=["joined", "mixed"])
def test_two_processes_equal_one(dim, sizes, tmp_path):
    """Joined: 64 images of 80 channels, each rank keeps its vectors and the sync joins them. Mixed: 40
    channels, rank 0's 48 images are Grams by then and rank 1's 16 are vectors, which the sync turns into
    Grams first. Either way, one process's scores and SEs."""
    a, (b,) = vectors(sum(sizes), dim, 1, seed=8)
    batches_a, batches_b = list(a.split(sizes)), list(b.split(sizes))
    synced = ddp_scores(_vector_metric, batches_a, batches_b, tmp_path)["scores"]
    expected = one_process_scores(_vector_metric, batches_a, batches_b)
    for name in SCORES_AND_NULLS:
        assert synced[name] == pytest.approx(expected[name], abs=1e-9), name
        assert synced[f"{name}_se"] == pytest.approx(expected[f"{name}_se"], abs=1e-9), name
