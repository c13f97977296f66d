"""The position cap (``SEIS_SPEC.md``, "Large maps"): maps above ``max_positions`` keep a fixed random subset.

The rule, restated here: ``max_positions`` flat positions drawn by ``torch.randperm(S)`` from a generator seeded
with 0, kept in increasing order, the same for every map of ``S`` positions. Checked on hand-made maps (exact
values), thin maps (``r27_thin_map_pooling.py``), every spatial rank and tokens, dtypes, batches, and the
scores against the float64 reference on the kept positions.
"""

from __future__ import annotations

import pytest
import torch

from seis_lightning.functional import seis_maps, seis_scores
from tests.reference import reference_scores


def kept(num_positions: int, cap: int) -> torch.Tensor:
    if num_positions <= cap:
        return torch.arange(num_positions)
    return torch.randperm(num_positions, generator=torch.Generator().manual_seed(0))[:cap].sort().values


def test_hand_made_map_keeps_its_values_at_the_kept_positions():
    x = torch.arange(36.0).view(1, 1, 6, 6)  # each value is its flat position
    maps, pooled = seis_maps(x, max_positions=9)
    values = maps[0, 0]
    assert pooled and maps.shape == (1, 1, 9)
    assert torch.equal(values, kept(36, 9).double())
    assert torch.equal(values, values.unique())  # nine distinct positions, in increasing order
    maps, pooled = seis_maps(x, max_positions=36)  # at the cap: untouched
    assert not pooled and maps.tolist() == [[list(map(float, range(36)))]]
    maps, _ = seis_maps(x[:, :, :1], max_positions=5)  # a 1 x 6 map keeps 5 of its 6 positions
    assert torch.equal(maps[0, 0], kept(6, 5).double())


@pytest.mark.parametrize("shape", [(4, 3, 1, 2000), (4, 3, 1, 4096), (4, 3, 1, 10, 200), (4, 3, 3, 1000)])
def test_thin_maps_reach_the_cap(shape, generator):
    """r27: a [N, C, 1, W] map used to keep 2048 positions for a cap of 1024 (axes of length 1 cannot shrink)."""
    x = torch.randn(shape, generator=generator)
    maps, pooled = seis_maps(x)
    assert pooled and maps.shape == (4, 3, 1024)
    assert torch.equal(maps, x.flatten(2)[:, :, kept(x[0, 0].numel(), 1024)].double())


def test_thin_map_scores_within_the_cap(generator):
    a = torch.randn(64, 2, 1, 200, generator=generator, dtype=torch.float64)
    b = a.roll(1, -1) + 0.1 * torch.randn(a.shape, generator=generator, dtype=torch.float64)
    result = seis_scores(a, b, max_positions=50, precision="float64")
    assert result["pooled"] and result["num_positions"] == 50
    positions = kept(200, 50)
    expected = reference_scores(a.flatten(2)[:, :, positions], b.flatten(2)[:, :, positions])
    for name in ("equivariance", "invariance", "channel_invariance", "equivariance_null"):
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 3000), (2, 3, 40, 40), (2, 3, 56, 56), (2, 3, 1, 1, 5000), (2, 3, 7, 1, 300), (2, 3, 12, 12, 12)],
)
@pytest.mark.parametrize("cap", [1, 16, 100, 576, 1024])
def test_every_spatial_rank_keeps_exactly_the_cap(shape, cap, generator):
    x = torch.randn(shape, generator=generator)
    num_positions = x[0, 0].numel()
    maps, pooled = seis_maps(x, max_positions=cap)
    assert pooled == (num_positions > cap)
    assert maps.shape == (2, 3, min(num_positions, cap))
    assert torch.equal(maps, x.flatten(2)[:, :, kept(num_positions, cap)].double())


def test_tokens_keep_the_kept_tokens_after_the_prefix(generator):
    x = torch.randn(2, 2001, 5, generator=generator)  # [N, T, D]: a class token and 2000 patches
    maps, pooled = seis_maps(x, layout="channels_last", num_prefix_tokens=1, max_positions=1000)
    assert pooled and torch.equal(maps, x[:, 1:][:, kept(2000, 1000)].movedim(-1, 1).double())


def test_dtype_is_kept_and_values_are_exact(generator):
    x = torch.randn(2, 4, 50, 50, generator=generator, dtype=torch.float64) * 1e6 + 1e9
    positions = kept(2500, 1024)
    maps, _ = seis_maps(x, dtype=None)  # float64 stays float64, values copied, not averaged
    assert maps.dtype == torch.float64 and torch.equal(maps, x.flatten(2)[:, :, positions])
    maps, _ = seis_maps(x.float(), dtype=torch.float64)
    assert maps.dtype == torch.float64 and torch.equal(maps, x.float().flatten(2)[:, :, positions].double())
    maps, _ = seis_maps(x.bfloat16(), dtype=None)
    assert maps.dtype == torch.float32 and torch.equal(maps, x.bfloat16().flatten(2)[:, :, positions].float())


def test_positions_depend_on_the_shape_only(generator):
    """A and B, and every batch, keep the same positions: the maps of a batch are the rows of the whole's."""
    x = torch.randn(6, 3, 45, 45, generator=generator)
    whole, _ = seis_maps(x)
    parts = [seis_maps(part)[0] for part in x.split([1, 2, 3])]
    assert torch.equal(whole, torch.cat(parts))
    assert torch.equal(seis_maps(x.flip(0))[0], whole.flip(0))
    assert torch.equal(seis_maps(x.transpose(-1, -2).contiguous().transpose(-1, -2))[0], whole)  # any memory layout


def test_reduced_maps_pass_through_again_unchanged(generator):
    """A hook may reduce each batch's maps before the statistics, which reduce them again: nothing changes."""
    x = torch.randn(3, 2, 70, 33, generator=generator)
    once, pooled = seis_maps(x, max_positions=300)
    twice, again = seis_maps(once, max_positions=300)
    assert pooled and not again and torch.equal(once, twice)
