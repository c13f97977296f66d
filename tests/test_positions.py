"""The position cap (``SEIS_SPEC.md``, "Large maps"): maps above ``max_positions`` keep every k-th position.

The reduction is checked on hand-made maps (exact values), thin maps (``r27_thin_map_pooling.py``), every
spatial rank and tokens, against a brute-force statement of the rule: the smallest integer k with
``prod(ceil(s / k)) <= max_positions``, positions whose every coordinate is a multiple of k.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seis_lightning.functional import seis_maps, seis_scores
from tests.reference import reference_scores


def lattice(x: torch.Tensor, cap: int) -> tuple[torch.Tensor, int]:
    """Brute force: the maps ``[N, C, S]`` of ``x`` ``[N, C, *spatial]`` at the positions the rule keeps, and k."""
    spatial = x.shape[2:]
    k = next(k for k in itertools.count(1) if math.prod(math.ceil(s / k) for s in spatial) <= cap)
    kept = [i for i, index in enumerate(itertools.product(*map(range, spatial))) if all(j % k == 0 for j in index)]
    return x.flatten(2)[:, :, kept], k


def test_hand_made_map_keeps_every_kth_position():
    x = torch.arange(36.0).view(1, 1, 6, 6)
    maps, pooled = seis_maps(x, max_positions=9)  # k = 2: 3 x 3
    assert pooled and maps.tolist() == [[[0.0, 2.0, 4.0, 12.0, 14.0, 16.0, 24.0, 26.0, 28.0]]]
    maps, pooled = seis_maps(x, max_positions=8)  # k = 2 leaves 9: k = 3, 2 x 2
    assert pooled and maps.tolist() == [[[0.0, 3.0, 18.0, 21.0]]]
    maps, pooled = seis_maps(x, max_positions=36)  # at the cap: untouched
    assert not pooled and maps.tolist() == [[list(map(float, range(36)))]]
    maps, _ = seis_maps(torch.arange(7.0).view(1, 1, 7), max_positions=3)  # 1-D, k = 3: 0, 3, 6
    assert maps.tolist() == [[[0.0, 3.0, 6.0]]]


@pytest.mark.parametrize(
    ("shape", "positions"),
    [((4, 3, 1, 2000), 1000), ((4, 3, 1, 4096), 1024), ((4, 3, 1, 10, 200), 500), ((4, 3, 3, 1000), 1000)],
)
def test_thin_maps_reach_the_cap(shape, positions, generator):
    """r27: a [N, C, 1, W] map used to keep 2048 positions for a cap of 1024 (axes of length 1 cannot shrink)."""
    x = torch.randn(shape, generator=generator)
    maps, pooled = seis_maps(x)
    expected, _ = lattice(x, 1024)
    assert pooled and maps.shape == (4, 3, positions)
    assert torch.equal(maps, expected.double())


def test_thin_map_scores_within_the_cap(generator):
    a = torch.randn(64, 2, 1, 200, generator=generator, dtype=torch.float64)
    b = a.roll(1, -1) + 0.1 * torch.randn(a.shape, generator=generator, dtype=torch.float64)
    result = seis_scores(a, b, max_positions=64, precision="float64")
    assert result["pooled"] and result["num_positions"] == 50  # every 4th position: 3 would leave 67
    expected = reference_scores(a[..., ::4].flatten(2), b[..., ::4].flatten(2))
    for name in ("equivariance", "invariance", "channel_invariance", "equivariance_null"):
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 3000), (2, 3, 40, 40), (2, 3, 56, 56), (2, 3, 1, 1, 5000), (2, 3, 7, 1, 300), (2, 3, 12, 12, 12)],
)
@pytest.mark.parametrize("cap", [1, 16, 100, 576, 1024])
def test_every_spatial_rank_meets_the_cap_with_the_smallest_stride(shape, cap, generator):
    x = torch.randn(shape, generator=generator)
    maps, pooled = seis_maps(x, max_positions=cap)
    expected, k = lattice(x, cap)
    assert pooled == (math.prod(shape[2:]) > cap)
    assert maps.shape[2] <= cap
    assert k == 1 or math.prod(math.ceil(s / (k - 1)) for s in shape[2:]) > cap  # no smaller stride fits
    assert torch.equal(maps, expected.double())


def test_tokens_keep_every_kth_token_after_the_prefix(generator):
    x = torch.randn(2, 2001, 5, generator=generator)  # [N, T, D]: a class token and 2000 patches
    maps, pooled = seis_maps(x, layout="channels_last", num_prefix_tokens=1, max_positions=1000)
    assert pooled and torch.equal(maps, x[:, 1::2].movedim(-1, 1).double())  # k = 2: patches 0, 2, ...


def test_dtype_is_kept_and_values_are_exact(generator):
    x = torch.randn(2, 4, 50, 50, generator=generator, dtype=torch.float64) * 1e6 + 1e9
    maps, _ = seis_maps(x, dtype=None)  # float64 stays float64, values copied, not averaged
    assert maps.dtype == torch.float64 and torch.equal(maps, x[..., ::2, ::2].flatten(2))
    maps, _ = seis_maps(x.float(), dtype=torch.float64)
    assert maps.dtype == torch.float64 and torch.equal(maps, x.float()[..., ::2, ::2].flatten(2).double())
    maps, _ = seis_maps(x.bfloat16(), dtype=None)
    assert maps.dtype == torch.float32 and torch.equal(maps, x.bfloat16()[..., ::2, ::2].flatten(2).float())


def test_positions_depend_on_the_shape_only(generator):
    """A and B, and every batch, keep the same positions: the maps of a batch are the rows of the whole's."""
    x = torch.randn(6, 3, 45, 45, generator=generator)
    whole, _ = seis_maps(x)
    parts = [seis_maps(part)[0] for part in x.split([1, 2, 3])]
    assert torch.equal(whole, torch.cat(parts))
    assert torch.equal(seis_maps(x.flip(0))[0], whole.flip(0))


def test_reduced_maps_pass_through_again_unchanged(generator):
    """A hook may reduce each batch's maps before the statistics, which reduce them again: nothing changes."""
    x = torch.randn(3, 2, 70, 33, generator=generator)
    once, pooled = seis_maps(x, max_positions=300)
    twice, again = seis_maps(once, max_positions=300)
    assert pooled and not again and torch.equal(once, twice)
