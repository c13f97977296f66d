"""``SEISMetric``: streaming state, merging, resets, distributed sync."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seis_lightning import SEISMetric, seis_scores
from seis_lightning.functional import SCORES, SEISWarning
from tests.reference import reference_scores
from tests.test_functional import ALL_SCORES, assert_matches_reference, warped


@pytest.fixture
def pair(digit_maps, generator):
    a = digit_maps[:192, :, ::2, ::2]
    return a, warped(a, generator)


def test_many_updates_equal_the_reference(pair):
    a, b = pair
    metric = SEISMetric(precision="float64")
    for x, y in zip(a.split(64), b.split(64)):
        metric.update(x, y)
    result = metric.compute()
    assert_matches_reference(result, reference_scores(a.flatten(2), b.flatten(2), batch_size=64))
    whole = seis_scores(a, b, precision="float64")
    for name in SCORES:
        assert result[name] == pytest.approx(whole[name], abs=1e-9)
    assert result["num_images"] == 192 and not result["pooled"]


def test_merged_metrics_equal_one_metric(pair):
    a, b = pair
    one, first, second = SEISMetric(), SEISMetric(), SEISMetric()
    for i, (x, y) in enumerate(zip(a.split(32), b.split(32))):
        one.update(x, y)
        (first if i % 2 else second).update(x, y)
    first.merge_state(second)
    merged, expected = first.compute(), one.compute()
    for name in ALL_SCORES:
        assert merged[name] == pytest.approx(expected[name], abs=1e-9)


def test_reset_forgets_everything(pair, generator):
    a, b = pair
    metric = SEISMetric()
    metric.update(torch.randn(8, 3, 4, generator=generator), torch.randn(8, 3, 4, generator=generator))
    metric.reset()
    metric.update(a, b)
    assert metric.compute()["equivariance"] == pytest.approx(seis_scores(a, b)["equivariance"], abs=1e-12)


def test_several_transformations_share_one_metric(pair):
    a, b = pair
    bs = [b, a.roll(1, dims=-1), a]
    metric = SEISMetric(num_transforms=3)
    for i in range(0, len(a), 48):
        metric.update(a[i : i + 48], [t[i : i + 48] for t in bs])
    results = metric.compute()
    assert len(results) == 3
    for t, result in zip(bs, results):
        single = SEISMetric()
        for i in range(0, len(a), 48):
            single.update(a[i : i + 48], t[i : i + 48])
        expected = single.compute()
        for name in ALL_SCORES:
            assert result[name] == pytest.approx(expected[name], abs=1e-12)
    assert results[2]["invariance"] == pytest.approx(1, abs=1e-9)


def state_bytes(metric: SEISMetric) -> int:
    return sum(value.numel() * value.element_size() for value in metric.metric_state.values())


def test_state_does_not_grow_with_images(generator):
    """State for a 64-channel 28x28 layer: fixed by the first batch, whatever the image count."""
    metric = SEISMetric()
    a = torch.randn(4, 64, 28, 28, generator=generator)
    metric.update(a, a)
    size = state_bytes(metric)
    s, c = 28 * 28, 64
    # map sums (4 of C x S) and the 2 shifts they are about, Grams (4 spatial S x S, 4 channel C x C), counts,
    # and the 5 scalar defaults of the image side (kept by vector layers only): float64.
    assert size == 8 * (6 * c * s + 4 * s * s + 4 * c * c + 2 + 5)
    for _ in range(3):
        metric.update(a, a)
    assert state_bytes(metric) == size


def test_half_and_bfloat16_inputs(pair):
    a, b = pair
    expected = seis_scores(a.to(torch.bfloat16).float(), b.to(torch.bfloat16).float())
    metric = SEISMetric()
    metric.update(a.to(torch.bfloat16), b.to(torch.bfloat16))
    result = metric.compute()
    for name in ALL_SCORES:
        assert result[name] == pytest.approx(expected[name], abs=1e-9)
    assert all(state.dtype == torch.float64 for state in metric.metric_state.values())


def test_tokens_with_a_class_token(generator):
    tokens = torch.randn(64, 17, 6, generator=generator)
    metric = SEISMetric(layout="channels_last", num_prefix_tokens=1)
    metric.update(tokens, torch.cat([tokens[:, :1], tokens[:, 1:].flip(1)], dim=1))  # patch tokens reversed
    result = metric.compute()
    assert result["num_positions"] == 16 and result["num_channels"] == 6
    assert result["equivariance"] == pytest.approx(1, abs=1e-9)


def test_compute_before_update_is_nan_with_a_reason():
    with pytest.warns(SEISWarning, match="needs at least 2 images, got 0"):
        result = SEISMetric().compute()
    assert all(math.isnan(result[name]) for name in ALL_SCORES)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"keep": 0}, r"`keep` to be a number in \(0, 1\]"),
        ({"keep": 1.01}, r"`keep` to be a number in \(0, 1\]"),
        ({"eps": -1e-3}, r"`eps` to be a number in \[0, 1\)"),
        ({"layout": "NHWC"}, "`layout` to be one of"),
        ({"num_transforms": 0}, "`num_transforms` to be None or a positive integer"),
        ({"max_positions": 0}, "`max_positions` to be a positive integer"),
        ({"num_prefix_tokens": -1}, "`num_prefix_tokens` to be a non-negative integer"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SEISMetric(**kwargs)


def test_update_rejects_a_layer_change_and_wrong_b(generator):
    metric = SEISMetric()
    metric.update(torch.randn(4, 3, 5, 5, generator=generator), torch.randn(4, 3, 5, 5, generator=generator))
    with pytest.raises(ValueError, match=r"give 4 channels x 25 positions, but earlier batches gave 3 x 25"):
        metric.update(torch.randn(4, 4, 5, 5), torch.randn(4, 4, 5, 5))
    with pytest.raises(ValueError, match="set `num_transforms`"):
        metric.update(torch.randn(4, 3, 5, 5), [torch.randn(4, 3, 5, 5)])
    with pytest.raises(ValueError, match="num_transforms=2 tensors, but got 1 tensors"):
        SEISMetric(num_transforms=2).update(torch.randn(4, 3, 5, 5), [torch.randn(4, 3, 5, 5)])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ddp_scores(make_metric, a: list[torch.Tensor], b: list[torch.Tensor], tmp_path) -> dict:
    """Two gloo processes, each feeding every other batch to ``make_metric()``: rank 0's scores and metric device."""
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(2, _free_port(), make_metric, a, b, out), nprocs=2, join=True)
    return torch.load(out)


def one_process_scores(make_metric, a: list[torch.Tensor], b: list[torch.Tensor]) -> dict:
    """What ``ddp_scores`` gives, from one process fed every batch."""
    metric = make_metric()
    for x, y in zip(a, b):
        metric.update(x, y)
    return metric.compute()


def _ddp_worker(rank: int, world_size: int, port: int, make_metric, a, b, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        metric = make_metric()
        for x, y in zip(a[rank::world_size], b[rank::world_size]):  # batches split across ranks
            metric.update(x, y)
        result = metric.compute()  # syncs the summed states over the process group
        if rank == 0:
            scores = {name: value for name, value in result.items() if isinstance(value, float)}
            torch.save({"scores": scores, "device": str(metric.device)}, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_equal_one(pair, tmp_path):
    a, b = pair
    batches_a, batches_b = list(a.split(32)), list(b.split(32))
    synced = ddp_scores(SEISMetric, batches_a, batches_b, tmp_path)["scores"]
    expected = one_process_scores(SEISMetric, batches_a, batches_b)
    for name in ALL_SCORES:
        assert synced[name] == pytest.approx(expected[name], abs=1e-9), name


def _offset_pair(generator, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps with a common offset of ``offset`` times their spread, float64, and noisy rolled copies."""
    maps = torch.randn(192, 4, 6, 6, generator=generator, dtype=torch.float64)
    shift = offset * (1 + torch.rand(4, 6, 6, generator=generator, dtype=torch.float64))
    b = maps.roll(1, -1) + 0.3 * torch.randn(maps.shape, generator=generator, dtype=torch.float64)
    return maps + shift, b + shift


def test_forward_and_merge_state_at_a_large_offset_equal_the_reference(generator):
    """``forward`` (torchmetrics adds each batch's states to the running total) and ``merge_state`` add
    sums taken about different mean maps: they are moved to one shift first (spec, "Precision")."""
    a, b = _offset_pair(generator, 1e5)
    expected = reference_scores(a.flatten(2), b.flatten(2), batch_size=32)
    streamed, first, second = (SEISMetric(precision="float64") for _ in range(3))
    for i, (x, y) in enumerate(zip(a.split(32), b.split(32))):
        batch = streamed(x, y)  # forward: this batch's scores, and the running total
        assert batch["num_images"] == 32
        (first if i % 2 else second).update(x, y)
    first.merge_state(second)
    for result in (streamed.compute(), first.compute()):
        assert result["num_images"] == 192
        for name in ALL_SCORES:
            assert result[name] == pytest.approx(expected[name], abs=1e-9), name


@pytest.mark.distributed
def test_two_processes_at_a_large_offset_equal_the_reference(generator, tmp_path):
    """Each process's sums are about its own first batch's mean maps; syncing moves them to rank 0's
    before adding (spec, "Precision"). Jackknife groups are moved group by group."""
    a, b = _offset_pair(generator, 1e5)
    expected = reference_scores(a.flatten(2), b.flatten(2), batch_size=32)
    batches_a, batches_b = list(a.split(32)), list(b.split(32))
    synced = ddp_scores(_float64_jackknife_metric, batches_a, batches_b, tmp_path)["scores"]
    one_process = one_process_scores(_float64_jackknife_metric, batches_a, batches_b)
    for name in ALL_SCORES:
        assert synced[name] == pytest.approx(expected[name], abs=1e-9), name
    for name in SCORES:
        assert one_process[f"{name}_se"] > 0
        assert synced[f"{name}_se"] == pytest.approx(one_process[f"{name}_se"], abs=1e-9), name


def _float64_jackknife_metric() -> SEISMetric:
    return SEISMetric(precision="float64", jackknife_groups=4)


@pytest.mark.parametrize("groups", [0, 3])
def test_update_one_transformation_at_a_time_equals_all_at_once(groups):
    """``update(a, b_k, draw=k)`` for k = 0..K-1 adds what ``update(a, [b_0, ..., b_K-1])`` adds (the probe pass
    feeds each transformation's maps as soon as its forward pass has run)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 4, 3, 3, generator=g, dtype=torch.float64) + 5.0
    bs = [a.roll(k + 1, -1) + 0.3 * torch.randn(a.shape, generator=g, dtype=torch.float64) for k in range(3)]
    together = SEISMetric(num_transforms=3, precision="float64", jackknife_groups=groups)
    one_by_one = SEISMetric(num_transforms=3, precision="float64", jackknife_groups=groups)
    for rows in (slice(0, 16), slice(16, 40)):
        together.update(a[rows], [b[rows] for b in bs])
        for k, b in enumerate(bs):
            one_by_one.update(a[rows], b[rows], draw=k)
    for expected, got in zip(together.compute(), one_by_one.compute()):
        for name in ("equivariance", "invariance", "channel_invariance", "equivariance_null", "invariance_null"):
            assert got[name] == pytest.approx(expected[name], abs=1e-12), name
        if groups:
            assert got["invariance_se"] == pytest.approx(expected["invariance_se"], abs=1e-12)


def test_update_with_draw_is_refused_without_num_transforms_or_out_of_range():
    a = torch.randn(8, 2, 3, 3)
    with pytest.raises(ValueError, match="`draw` needs `num_transforms`"):
        SEISMetric().update(a, a, draw=0)
    with pytest.raises(ValueError, match=r"Expected `draw` in \[0, 2\)"):
        SEISMetric(num_transforms=2).update(a, a, draw=2)
    with pytest.raises(ValueError, match="must be the one tensor of transformation 1"):
        SEISMetric(num_transforms=2).update(a, [a], draw=1)
