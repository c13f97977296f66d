"""Streaming statistics of paired activations (``SEIS_SPEC.md``, "Streaming statistics", "Large maps").

:func:`seis_maps` brings activations to maps ``[N, C, S]``; :func:`seis_statistics` gives the
sufficient statistics of one batch (image count, map sums, spatial and channel Gram sums, null
cross Grams; float64), which :func:`seis_combine_statistics` adds over batches and processes.
Everything that depends on the reference activations ``a`` alone is computed once and shared by
every transformation passed as a sequence ``b`` (spec, "Cost").

The sums are taken about a shift, one mean map per side (:data:`SHIFTS`): ``Σ(A_n - K_A)``,
``Σ(A_n - K_A)ᵀ(B_n - K_B)``, ... (spec, "Precision"). A batch's own mean map is its shift unless
earlier statistics' shifts are passed (``shift=``); statistics about the same shifts add by plain
addition, and :func:`seis_combine_statistics` first moves them to the first one's shifts
(:func:`_reshift`). With a shift near the data, the centred Grams ``G - N (Ā-K)ᵀ(B̄-K)`` lose
nothing to cancellation, whatever the activations' common offset.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from seis_lightning import _precision
from seis_lightning._precision import _float64_home, _ieee_float32
from seis_lightning.options import LAYOUTS, Layout, Precision, ResolvedOptions, SEISOptions

# Statistics that depend on the reference activations only; the others carry one entry per
# transformation (a leading dimension K when ``b`` is a sequence).
REFERENCE_STATISTICS = ("num_images", "map_sum_a", "spatial_gram_aa", "channel_gram_aa")
PAIRED_STATISTICS = (
    "map_sum_b",
    "spatial_gram_bb",
    "spatial_gram_ab",
    "channel_gram_bb",
    "channel_gram_ab",
    "null_num_images",
    "null_map_sum_a",
    "null_map_sum_b",
    "spatial_gram_ab_null",
    "channel_gram_ab_null",
)
STATISTICS = REFERENCE_STATISTICS + PAIRED_STATISTICS
CHANNEL_GRAMS = ("channel_gram_aa", "channel_gram_bb", "channel_gram_ab", "channel_gram_ab_null")
# Vector layers (S = 1) seen on fewer images than channels keep, instead of CHANNEL_GRAMS, the vectors
# themselves about the shifts (the image side; spec, "Streaming statistics"): ``channel_rows_a`` [R, C],
# ``channel_rows_b`` and the null partners' ``channel_rows_b_null`` [K, R, C] (zero rows where an image
# has no partner), and per row its jackknife group (0 without groups) and whether it has a null partner.
ROW_STATISTICS = ("channel_rows_a", "channel_rows_b", "channel_rows_b_null", "row_group", "row_has_null")
PAIRED_ROWS = ("channel_rows_b", "channel_rows_b_null")
# The mean maps the sums are taken about: ``[C, S]`` for ``a``, one per transformation for ``b``
# (no group axis: every jackknife group shares them).
SHIFTS = ("shift_a", "shift_b")

# Gram products of at least this many variables are computed by blocks on and above the diagonal.
SYMMETRIC_GRAM_FROM = 64


def seis_maps(
    x: Tensor,
    layout: str = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
    dtype: torch.dtype | None = torch.float64,
) -> tuple[Tensor, bool]:
    """Bring activations to maps ``[N, C, S]``, at most ``max_positions`` of them (spec, "Large maps").

    A map with more positions keeps ``max_positions`` of them, a fixed random subset chosen from the
    number of positions alone (:func:`_kept_positions`), in their order: the maps of A and B, of every
    batch, process and run keep the same positions. Nothing is averaged, so invariance and
    channel_invariance keep their full-resolution readings; equivariance, a mean over as many
    canonical correlations as the positions allow, changes with their number whatever is kept
    (0.05 to 0.07 lower at the stems of ``docs/figures/position_cap_study.csv``, default cap).

    Args:
        x: ``[N, C, *spatial]`` (1 to 3 spatial axes), ``[N, T, D]`` tokens with
            ``layout="channels_last"``, or ``[N, D]`` vectors (``S = 1``).
        layout: ``"channels_first"`` or ``"channels_last"`` (channels on the last axis).
        num_prefix_tokens: leading tokens (class/register tokens) to drop; only for a single
            sequence axis.
        max_positions: cap on ``S``; larger maps keep this many of their positions.
        dtype: of the maps; ``None`` keeps float32 and float64 activations as they are (a view
            where possible) and brings other dtypes to float32.

    Returns:
        The maps and whether positions were left out to meet the cap (``pooled``).

    Raises:
        ValueError: if the layout, the number of axes or ``num_prefix_tokens`` does not fit.

    Example:
        >>> import torch
        >>> maps, pooled = seis_maps(torch.arange(36.0).view(1, 1, 6, 6), max_positions=9)
        >>> maps.shape, pooled
        (torch.Size([1, 1, 9]), True)
    """
    if layout not in LAYOUTS:
        raise ValueError(f"Expected `layout` to be one of {LAYOUTS}, but got {layout!r}.")
    if not 2 <= x.ndim <= 5:
        raise ValueError(
            "Expected activations of shape [N, D], [N, C, *spatial] with 1 to 3 spatial axes, or"
            f" [N, T, D] tokens, but got a tensor of shape {list(x.shape)}."
        )
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"Expected real activations, but got dtype {x.dtype}.")
    x = x.detach()
    if layout == "channels_last" and x.ndim > 2:
        x = x.movedim(-1, 1)
    if num_prefix_tokens:
        if x.ndim != 3 or not 0 <= num_prefix_tokens < x.shape[2]:
            raise ValueError(
                f"`num_prefix_tokens={num_prefix_tokens}` needs tokens [N, T, D] with more than"
                f" {num_prefix_tokens} tokens, but got activations of shape {list(x.shape)}."
            )
        x = x[:, :, num_prefix_tokens:]
    if x.ndim == 2:
        x = x.unsqueeze(-1)
    pooled = math.prod(x.shape[2:]) > max_positions
    if pooled:  # positions are taken before any cast: only the kept ones are gathered and converted
        kept = torch.unravel_index(_kept_positions(math.prod(x.shape[2:]), max_positions), x.shape[2:])
        x = x[(slice(None), slice(None), *(index.to(x.device) for index in kept))]
    if dtype is not None:
        x = x.to(dtype)
    elif x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return x.reshape(x.shape[0], x.shape[1], -1), pooled


@functools.lru_cache(maxsize=64)
def _kept_positions(num_positions: int, max_positions: int) -> Tensor:
    """The flat indices of the positions a map of ``num_positions`` keeps under the cap, in increasing order.

    ``max_positions`` of them drawn without replacement by ``torch.randperm`` from a generator seeded
    with 0 (spec, "Large maps"): a function of the two counts alone, so it is drawn once per shape and kept
    (every batch, pass and layer of that shape reads the same, unmodified tensor). All of them when they fit.
    """
    if num_positions <= max_positions:
        return torch.arange(num_positions)
    generator = torch.Generator().manual_seed(0)
    return torch.randperm(num_positions, generator=generator)[:max_positions].sort().values


def _float64_mean(x: Tensor) -> Tensor:
    """The mean map ``[C, S]`` of maps ``x`` ``[N, C, S]``, summed in float64.

    Float32 reductions round differently at different positions (their order depends on the memory
    layout and on a position's place in a vector register); float64 sums differ by about 1e-16, far
    below float32's rounding, so positions that hold the same values get the same float32 centre.
    On the CPU the images are converted a few at a time, not all at once.
    """
    if x.device.type != "cpu":
        return x.sum(0, dtype=torch.float64) / x.shape[0]
    per_chunk = max(1, 2**16 // max(1, x[0].numel()))
    total = torch.zeros(x.shape[1:], dtype=torch.float64)
    for chunk in x.split(per_chunk):
        total += chunk.sum(0, dtype=torch.float64)
    return total / x.shape[0]


def _mean_map(x: Tensor) -> Tensor:
    """The float64 mean map ``[C, S]`` of maps ``x`` ``[N, C, S]`` on their float64 home, as :func:`_unfold` has it."""
    if _precision._has_float64(x.device):
        return _float64_mean(x)
    first = x.mean(0, dtype=torch.float32)
    home = _float64_home(x.device)
    return first.to(home, torch.float64) + (x - first).mean(0).to(home, torch.float64)


def _unfold(maps: Sequence[Tensor], precision: str) -> tuple[Tensor, Tensor, Tensor]:
    """Spatial ``[J, N*C, S]`` and channel ``[N*S, J*C]`` unfoldings of J maps ``[N, C, S]``, and their mean maps.

    The channel unfoldings sit side by side (map j is column block j: :func:`_column_blocks`), so
    that one product reads them all. In ``float64`` both unfoldings are views of one buffer
    ``[J, C, N, S]``, and the spatial unfolding's rows run over (channel, image), which gives the same
    products as (image, channel) without a second copy. In ``float32`` the spatial rows run over
    (image, channel), which rounds about 10 times less than (channel, image) in the float32
    products. Each map is centred on its own mean map, so that its products keep what varies
    across images, not what they share (spec, "Precision"); float64 activations are centred in
    float64 before a float32 cast. The mean maps ``[J, C, S]`` are float64.
    """
    n, c, s = maps[0].shape
    home = _float64_home(maps[0].device)
    float64 = precision != "float32"
    dtype = torch.float64 if float64 else torch.float32
    # float64: both unfoldings are views of one buffer [J, C, N, S] (spatial rows over (channel, image));
    # float32: spatial rows over (image, channel), which round less in float32 products.
    buffer = maps[0].new_empty(len(maps), c, n, s, dtype=dtype) if float64 else None
    spatial = buffer.transpose(1, 2) if float64 else maps[0].new_empty(len(maps), n, c, s, dtype=dtype)
    means = []
    for block, x in zip(spatial, maps):
        if not n:
            means.append(torch.zeros(c, s, dtype=torch.float64, device=home))
        elif _precision._has_float64(x.device):
            mean = _float64_mean(x)
            if float64 or x.dtype == torch.float64:
                torch.sub(x, mean, out=block)  # in float64, element by element: no float64 copy of x
            else:
                # Centre on the float64 mean map: its part at this precision, then the rounding of the rest.
                first = mean.to(dtype)
                torch.sub(x.to(dtype), first, out=block)
                block.sub_((mean - first).to(dtype))
            means.append(mean.to(home))
        else:  # no float64 here (MPS): the mean as a float32 mean plus the mean of what it leaves
            first = x.mean(0, dtype=torch.float32)
            torch.sub(x, first, out=block)
            rest = block.mean(0)
            block.sub_(rest)
            means.append(first.to(home, torch.float64) + rest.to(home, torch.float64))
    if float64:
        return buffer.view(len(maps), c * n, s), buffer.view(-1, n * s).mT, torch.stack(means)
    channel = spatial.transpose(1, 2).contiguous()  # [J, C, N, S]
    return spatial.view(len(maps), n * c, s), channel.view(-1, n * s).mT, torch.stack(means)


def _column_blocks(x: Tensor, num_blocks: int) -> tuple[Tensor, ...]:
    """The unfoldings ``[R, D]`` of each map, as views of the side-by-side ``x`` ``[R, num_blocks * D]``."""
    return x.unflatten(1, (num_blocks, -1)).unbind(1)


def _gram(x: Tensor, symmetric: bool = True, out: Tensor | None = None) -> Tensor:
    """``xᵀx`` of ``x`` [R, D] (into ``out``); ``symmetric``: by blocks on and above the diagonal.

    From :data:`SYMMETRIC_GRAM_FROM` variables on, 2 blocks (3/4 of the work), 4 from 4 times that (5/8).
    """
    d = x.shape[1]
    out = x.new_empty(d, d) if out is None else out
    if not symmetric or d < SYMMETRIC_GRAM_FROM:
        return torch.mm(x.mT, x, out=out)
    blocks = 4 if d >= 4 * SYMMETRIC_GRAM_FROM else 2
    edges = [d * i // blocks for i in range(blocks + 1)]
    for low, high in itertools.pairwise(edges):
        torch.mm(x[:, low:high].mT, x[:, low:], out=out[low:high, low:])
        out[high:, low:high] = out[low:high, high:].mT
    return out


def _per_map(products: Tensor, home: torch.device) -> Tensor:
    """Side-by-side products ``[D, K*D]`` as K float64 matrices ``[K, D, D]`` on ``home``."""
    d = products.shape[0]
    return products.unflatten(1, (-1, d)).transpose(0, 1).to(home, torch.float64, memory_format=torch.contiguous_format)


def _add_centres(grams: Tensor, sum_x: Tensor, sum_y: Tensor, n: int, unfolding: str) -> Tensor:
    """Add ``n·(m̄_x-K_x)ᵀ(m̄_y-K_y)`` in float64 to ``grams`` ``[K, D, D]``, from map sums about the shifts
    ``[K, C, S]`` (``sum_x`` may broadcast).

    Products of maps centred on their own mean plus these are the Gram sums about the shifts (spec, "Precision").
    """
    x, y = (sum_x.mT, sum_y) if unfolding == "spatial" else (sum_x, sum_y.mT)
    return grams.baddbmm_(x.expand(len(grams), -1, -1), y, alpha=1 / max(n, 1))


def _reference_statistics(
    a: Tensor,
    precision: str,
    shift_a: Tensor | None,
    unfolded: tuple[Tensor, Tensor, Tensor] | None = None,
    channel: bool = True,
) -> dict[str, Tensor]:
    """Statistics of the original maps ``a`` [N, C, S] about ``shift_a`` [C, S] (spec, "Streaming statistics").

    ``shift_a``: ``None`` for the batch's own mean map (returned as ``shift_a``). ``unfolded``:
    ``_unfold([a], precision)`` when the caller has it already. ``channel=False`` leaves out the
    channel Gram (the image side keeps the vectors instead: :func:`_rows`).
    """
    n = a.shape[0]
    spatial, channel_unfolded, means = unfolded or _unfold([a], precision)
    shift_a = means[0] if shift_a is None else shift_a
    sums = n * (means[:1] - shift_a)
    stats = {
        "num_images": torch.full((), float(n), dtype=torch.float64, device=sums.device),  # no host copy
        "map_sum_a": sums[0],
        "shift_a": shift_a,
    }
    for unfolding, x in (("spatial", spatial[0]), ("channel", channel_unfolded))[: 2 if channel else 1]:
        with _ieee_float32():
            gram = _gram(x).to(sums.device, torch.float64)
        _add_centres(gram[None], sums, sums, n, unfolding)
        stats[f"{unfolding}_gram_aa"] = gram
    return stats


def _paired_statistics(
    a: Tensor,
    b: Sequence[Tensor],
    precision: str,
    shift_a: Tensor,
    shift_b: Tensor | None,
    b_null: Sequence[Tensor] | None = None,
    unfolded_a: tuple[Tensor, Tensor, Tensor] | None = None,
    channel: bool = True,
) -> dict[str, Tensor]:
    """Statistics of ``a`` [N, C, S] against ``b`` [K, N, C, S], one entry per transformation, about the shifts.

    ``shift_a`` [C, S] and ``shift_b`` [K, C, S]: the mean maps the sums are taken about; ``shift_b``
    ``None`` for each transformation's own mean map (returned as ``shift_b``).
    ``b_null`` [K, N, C, S], when given, holds each image's null partner already gathered (the
    jackknife's groups take theirs from the whole batch); without it, image n meets n - 1.
    ``unfolded_a``: ``_unfold([a], precision)`` when the caller has it already. ``channel=False``
    leaves out the channel Grams (:data:`CHANNEL_GRAMS`).

    Every map is centred on its own mean map and ``n·(m̄-K)ᵀ(m̄-K)`` added back in float64 (spec,
    "Precision"). The channel cross Grams of all K transformations come from one wide product
    ``Aᵀ[B_1 … B_K]``.
    """
    num_transforms = len(b)
    n, c, s = a.shape
    float32 = precision == "float32"
    spatial_a, channel_a, means_a = unfolded_a or _unfold([a], precision)
    maps_b = [*b, *b_null] if b_null is not None else list(b)
    spatial_b, channel_b, means = _unfold(maps_b, precision)
    home = means.device
    shift_b = means[:num_transforms] if shift_b is None else shift_b
    sum_a = n * (means_a[:1] - shift_a)
    sum_b = n * (means[:num_transforms] - shift_b)
    null_sum_b = sum_b if b_null is None else n * (means[num_transforms:] - shift_b)
    stats = {"map_sum_b": sum_b, "shift_b": shift_b}
    with _ieee_float32():
        x = spatial_a[0]
        d = x.shape[1]
        gram, cross, null = x.new_empty(3, num_transforms, d, d)
        for k in range(num_transforms):
            _gram(spatial_b[k], out=gram[k])
            torch.mm(x.mT, spatial_b[k], out=cross[k])
            if b_null is None:
                null[k] = _rolled_cross(x, spatial_b[k], c) if float32 else _rolled_spatial_cross(x, spatial_b[k], n)
            else:
                torch.mm(x.mT, spatial_b[num_transforms + k], out=null[k])
        spatial = [p.to(home, torch.float64) for p in (gram, cross, null)]
    unfoldings = {"spatial": spatial}
    if channel:
        unfoldings["channel"] = _channel_grams(channel_a, channel_b, len(maps_b), num_transforms, s, b_null, home)
    for unfolding, (gram, cross, null) in unfoldings.items():
        _add_centres(gram, sum_b, sum_b, n, unfolding)
        _add_centres(cross, sum_a, sum_b, n, unfolding)
        _add_centres(null, sum_a, null_sum_b, n, unfolding)
        stats.update({f"{unfolding}_gram_bb": gram, f"{unfolding}_gram_ab": cross, f"{unfolding}_gram_ab_null": null})
    stats["null_num_images"] = torch.full((num_transforms,), float(n), dtype=torch.float64, device=home)
    stats["null_map_sum_a"] = sum_a.expand_as(sum_b).clone()
    stats["null_map_sum_b"] = null_sum_b.clone()
    if n < 2 and b_null is None:
        # Null pairing (spec, "Null baseline"): image n against another transformed image of the
        # batch (roll by one: n against n-1). A single image has no derangement and adds nothing.
        for name in PAIRED_STATISTICS:
            if "null" in name and name in stats:
                stats[name].zero_()
    return {name: stats[name] for name in (*PAIRED_STATISTICS, "shift_b") if name in stats}


def _channel_grams(
    channel_a: Tensor,
    channel_b: Tensor,
    num_maps: int,
    num_transforms: int,
    num_positions: int,
    b_null: Sequence[Tensor] | None,
    home: torch.device,
) -> list[Tensor]:
    """The channel Grams ``B_kᵀB_k``, ``AᵀB_k`` and the null's ``AᵀB_π,k`` [K, C, C] of the channel
    unfoldings (``channel_b`` holds the ``num_maps`` maps of B side by side, the null partners after
    the transformations when ``b_null`` is given), float64 on ``home``."""
    c = channel_a.shape[1]
    with _ieee_float32():
        ys = _column_blocks(channel_b, num_maps)
        channel_gram = channel_a.new_empty(num_transforms, c, c)
        for k in range(num_transforms):
            _gram(ys[k], out=channel_gram[k])
        if b_null is None:
            channel_cross, channel_null = channel_a.mT @ channel_b, _rolled_cross(channel_a, channel_b, num_positions)
        else:
            channel_cross, channel_null = (channel_a.mT @ channel_b).tensor_split(2, dim=1)
    return [channel_gram.to(home, torch.float64), _per_map(channel_cross, home), _per_map(channel_null, home)]


def _rows(
    maps_a: Tensor, maps_b: Sequence[Tensor], shift_a: Tensor, shift_b: Tensor, groups: int, first_index: int
) -> dict[str, Tensor]:
    """The image side of vector maps ``[N, C, 1]`` (:data:`ROW_STATISTICS`): the vectors about the shifts,
    float64, with each image's null partner (image n - 1 of the batch; none in a batch of one image)
    and jackknife group ``(first_index + n) mod G``."""
    n, home = maps_a.shape[0], shift_a.device
    rows_a = maps_a[:, :, 0].to(home, torch.float64) - shift_a[:, 0]
    rows_b = torch.stack([x[:, :, 0].to(home, torch.float64) for x in maps_b]) - shift_b[:, None, :, 0]
    index = torch.arange(first_index, first_index + n, dtype=torch.float64, device=home)
    return {
        "channel_rows_a": rows_a,
        "channel_rows_b": rows_b,
        "channel_rows_b_null": rows_b.roll(1, dims=1) if n >= 2 else torch.zeros_like(rows_b),
        "row_group": index % groups if groups else torch.zeros_like(index),
        "row_has_null": torch.full((n,), float(n >= 2), dtype=torch.float64, device=home),
    }


def _has_rows(stats: Mapping[str, Any]) -> bool:
    """Whether ``stats`` keep a vector layer's image side (:data:`ROW_STATISTICS`) instead of channel Grams."""
    rows = stats.get("channel_rows_a")
    return rows is not None and rows.ndim > 0


def _sum_names(stats: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the summed statistics in ``stats``: :data:`STATISTICS`, less the channel Grams on the image side."""
    return tuple(name for name in STATISTICS if name not in CHANNEL_GRAMS) if _has_rows(stats) else STATISTICS


def _rows_to_grams(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The image side of ``stats`` turned into the channel Gram sums it stands for (per group), exactly:
    the vectors are about the shifts, so their products are the Gram sums about the shifts."""
    if not _has_rows(stats):
        return dict(stats)
    rows_a, rows_b, rows_null = (stats[name] for name in ("channel_rows_a", "channel_rows_b", "channel_rows_b_null"))
    many = rows_b.ndim == 3
    rows_b, rows_null = (rows_b, rows_null) if many else (rows_b[None], rows_null[None])
    groups = stats["num_images"].shape[0] if stats["num_images"].ndim else 0

    def grams(x: Tensor, ys: Tensor, nulls: Tensor) -> dict[str, Tensor]:
        out = {
            "channel_gram_aa": x.mT @ x,
            "channel_gram_bb": ys.mT @ ys,
            "channel_gram_ab": x.mT @ ys,
            "channel_gram_ab_null": x.mT @ nulls,  # rows without a partner are zero
        }
        return out if many else {**out, **{name: out[name][0] for name in CHANNEL_GRAMS[1:]}}

    if groups:
        per_group = []
        for group in range(groups):
            kept = stats["row_group"] == group
            per_group.append(grams(rows_a[kept], rows_b[:, kept], rows_null[:, kept]))
        channel = {name: torch.stack([one[name] for one in per_group]) for name in CHANNEL_GRAMS}
    else:
        channel = grams(rows_a, rows_b, rows_null)
    return {**{name: value for name, value in stats.items() if name not in ROW_STATISTICS}, **channel}


def _bounded(stats: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` on the cheaper side: the image side only while there are fewer images than channels."""
    if _has_rows(stats) and stats["channel_rows_a"].shape[0] >= stats["channel_rows_a"].shape[1]:
        return _rows_to_grams(stats)
    return dict(stats)


def _of_groups(stats: Mapping[str, Any], kept: Sequence[int] | None = None) -> dict[str, Any]:
    """The statistics of the images of jackknife groups ``kept`` (all: ``None``) of grouped ``stats``:
    their sums added, their vectors selected (the image side), about the same shifts."""
    out = {name: (stats[name] if kept is None else stats[name][list(kept)]).sum(0) for name in _sum_names(stats)}
    out.update(zip(SHIFTS, _shifts(stats)))
    if _has_rows(stats):
        group = stats["row_group"]
        rows = (
            torch.ones_like(group, dtype=torch.bool)
            if kept is None
            else torch.isin(group, torch.tensor(kept, dtype=group.dtype, device=group.device))
        )
        out.update({name: stats[name][..., rows, :] for name in ("channel_rows_a", *PAIRED_ROWS)})
        out.update({name: stats[name][rows] for name in ("row_group", "row_has_null")})
    return out


def _rolled_cross(x: Tensor, y: Tensor, rows_per_image: int) -> Tensor:
    """``Σ_n X_nᵀ Y_{n-1}`` (n - 1 mod N) over the images of unfolded ``x`` [N*r, D], ``y`` [N*r, E].

    The same as ``x.mT @ y.roll(r, dims=0)``, from two views of ``y`` instead of a rolled copy.
    """
    r = rows_per_image
    return torch.mm(x[r:].mT, y[:-r]).addmm_(x[:r].mT, y[-r:])


def _rolled_spatial_cross(x: Tensor, y: Tensor, num_images: int) -> Tensor:
    """``Σ_n X_nᵀ Y_{n-1}`` (n - 1 mod N) for spatial unfoldings [C*N, S] with rows over (channel, image).

    Row (c, n) against the row before it, (c, n - 1), except where n = 0: there the row before is
    (c - 1, N - 1), whose product is taken back, and (c, N - 1) is added.
    """
    first = x.unflatten(0, (-1, num_images))[:, 0]  # rows (c, 0): [C, S]
    last = y.unflatten(0, (-1, num_images))[:, -1]  # rows (c, N - 1)
    out = torch.mm(x[1:].mT, y[:-1]).addmm_(first[1:].mT, last[:-1], alpha=-1)
    return out.addmm_(first.mT, last)


def _group_statistics(
    a: Tensor,
    b: Tensor,
    groups: int,
    first_index: int,
    precision: str,
    shift_a: Tensor,
    shift_b: Tensor,
    channel: bool = True,
) -> dict[str, Tensor]:
    """Statistics of ``a`` [N, C, S] and ``b`` [K, N, C, S] per jackknife group, stacked first (spec, "Uncertainty").

    Image n of the batch, global index ``first_index + n``, goes to group ``(first_index + n) mod G``
    with its null pair (image n against transformed image n - 1 of the batch). Every group's sums
    are about the same shifts, so that the groups add up. ``channel=False``: without the channel Grams.
    """
    n = a.shape[0]
    per_group: dict[int, dict[str, Tensor]] = {}
    for group in range(groups):
        start = (group - first_index) % groups
        if start >= n:
            continue  # a batch smaller than G leaves this group empty: zeros, below
        partners = (torch.arange(n, device=a.device)[start::groups] - 1) % n
        b_null = b[:, partners] if n >= 2 else None
        a_group = a[start::groups]
        per_group[group] = {
            **_reference_statistics(a_group, precision, shift_a, channel=channel),
            **_paired_statistics(
                a_group, b[:, start::groups], precision, shift_a, shift_b, b_null=b_null, channel=channel
            ),
        }
    zeros = {name: torch.zeros_like(value) for name, value in next(iter(per_group.values())).items()}
    names = STATISTICS if channel else tuple(name for name in STATISTICS if name not in CHANNEL_GRAMS)
    stats = {name: torch.stack([per_group.get(g, zeros)[name] for g in range(groups)]) for name in names}
    return {**stats, "shift_a": shift_a, "shift_b": shift_b}


def seis_statistics(
    a: Tensor,
    b: Tensor | Sequence[Tensor],
    *,
    layout: Layout = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
    jackknife_groups: int = 0,
    first_index: int = 0,
    precision: Precision = "auto",
    shift: Mapping[str, Any] | None = None,
) -> dict[str, Tensor]:
    """Streaming statistics of one batch of paired activations (spec, "Streaming statistics").

    Args:
        a: activations of the original images (see :func:`seis_maps` for the shapes).
        b: activations of the transformed images, same shape as ``a``; or a sequence of such
            tensors, one per transformation, which share the statistics of ``a``.
        layout: see :func:`seis_maps`.
        num_prefix_tokens: see :func:`seis_maps`.
        max_positions: see :func:`seis_maps`.
        jackknife_groups: 0 (off), or the number G >= 2 of groups of the delete-half jackknife
            (spec, "Uncertainty"): every statistic then carries a leading axis of length G.
        first_index: the global index of the batch's first image; image n goes to group
            ``(first_index + n) mod G``, with its null pair. Streaming callers count the images seen.
        precision: of the Gram products, ``"float64"``, ``"float32"`` (centred per batch, summed
            in float64) or ``"auto"`` (:func:`resolve_precision`; spec, "Precision").
        shift: earlier statistics (e.g. the first batch's), whose shifts ``shift_a`` and
            ``shift_b`` these sums are then taken about, so that the two add by plain addition.
            ``None``: this batch's own mean maps.

    Returns:
        float64 tensors keyed by :data:`STATISTICS`, the mean maps they are taken about
        (:data:`SHIFTS`), and ``pooled``: whether the maps were reduced to ``max_positions`` (:func:`seis_maps`).
        Paired statistics and ``shift_b`` have a leading axis of length K when ``b`` is a sequence
        of K tensors (after the group axis, if any). :func:`seis_combine_statistics` adds them over
        batches and processes.

    Raises:
        ValueError: if shapes, devices or dtypes do not fit, or ``jackknife_groups`` is 1 or negative.
    """
    options = SEISOptions(
        layout=layout,
        num_prefix_tokens=num_prefix_tokens,
        max_positions=max_positions,
        jackknife_groups=jackknife_groups,
        precision=precision,
    )
    if isinstance(first_index, bool) or not isinstance(first_index, int) or first_index < 0:
        raise ValueError(f"Expected `first_index` to be a non-negative integer, but got {first_index!r}.")
    if shift is not None and not (
        isinstance(shift, Mapping) and all(isinstance(shift.get(name), Tensor) for name in SHIFTS)
    ):
        raise ValueError(f"Expected `shift` to be statistics from `seis_statistics`, with tensors {SHIFTS}.")
    return _statistics(a, b, options.resolved(a.device), first_index, shift)


def _statistics(
    a: Tensor,
    b: Tensor | Sequence[Tensor],
    options: ResolvedOptions,
    first_index: int,
    shift: Mapping[str, Any] | None = None,
    reference: bool = True,
    channel_rows: bool = False,
) -> dict:
    """:func:`seis_statistics` with validated, resolved options (:meth:`SEISOptions.resolved`).

    ``shift["shift_b"]`` may be ``None``: each transformation's own mean maps. ``reference=False``
    (with ``shift_a`` given) leaves out the statistics of ``a`` alone (:data:`REFERENCE_STATISTICS`),
    for a caller that has them already and adds one more transformation's statistics.
    ``channel_rows``: vector maps (one position) keep their image side (:data:`ROW_STATISTICS`)
    instead of the channel Grams (spec, "Streaming statistics"); other maps ignore it.

    Raises:
        ValueError: as :func:`seis_statistics`, and if the maps' channels and positions differ from
            those of the statistics that give ``shift``.
    """
    many = not isinstance(b, Tensor)
    bs = list(b) if many else [b]
    if not bs:
        raise ValueError("Expected at least one tensor of transformed activations `b`, but got none.")
    for k, item in enumerate(bs):
        name = f"b[{k}]" if many else "b"
        if not isinstance(item, Tensor):
            raise ValueError(f"Expected `{name}` to be a tensor, but got {type(item).__name__}.")
        if item.shape != a.shape:
            raise ValueError(
                f"Expected `{name}` to have the shape of `a`, {list(a.shape)}, but got {list(item.shape)}."
            )
        if item.device != a.device:
            raise ValueError(f"Expected `{name}` on the device of `a`, {a.device}, but got {item.device}.")
    if a.shape[0] < 1:
        raise ValueError(f"Expected at least one image, but got activations of shape {list(a.shape)}.")
    precision, groups = options.precision, options.jackknife_groups
    # The maps keep their dtype: the unfoldings convert them on the way.
    maps_a, pooled = seis_maps(a, options.layout, options.num_prefix_tokens, options.max_positions, dtype=None)
    maps_b = [seis_maps(x, options.layout, options.num_prefix_tokens, options.max_positions, dtype=None)[0] for x in bs]
    shift_a = shift_b = None
    if shift is not None:
        home = _float64_home(maps_a.device)
        shift_a, shift_b = shift["shift_a"].to(home, torch.float64), shift["shift_b"]
        if shift_a.shape != maps_a.shape[1:]:
            (c_old, s_old), (c_new, s_new) = shift_a.shape, maps_a.shape[1:]
            raise ValueError(
                f"Activations of shape {list(a.shape)} give {c_new} channels x {s_new} positions, but"
                f" earlier batches gave {c_old} x {s_old}; statistics of one layer need maps of one shape."
            )
        if shift_b is not None:
            shift_b = shift_b.to(home, torch.float64)
            shift_b = shift_b if many else shift_b[None]
            if len(shift_b) != len(bs):
                raise ValueError(f"Expected {len(shift_b)} transformations, as earlier batches had, but got {len(bs)}.")
    rows = channel_rows and maps_a.shape[2] == 1
    if groups:
        shift_a = _mean_map(maps_a) if shift_a is None else shift_a
        shift_b = torch.stack([_mean_map(x) for x in maps_b]) if shift_b is None else shift_b
        stats = _group_statistics(
            maps_a, torch.stack(maps_b), groups, first_index, precision, shift_a, shift_b, channel=not rows
        )
        lead = (slice(None), 0)
    else:
        unfolded_a = _unfold([maps_a], precision)
        own = (
            _reference_statistics(maps_a, precision, shift_a, unfolded_a, channel=not rows)
            if reference
            else {"shift_a": shift_a}
        )
        paired = _paired_statistics(
            maps_a, maps_b, precision, own["shift_a"], shift_b, unfolded_a=unfolded_a, channel=not rows
        )
        stats = {**own, **paired}
        lead = (0,)
    if rows:
        stats.update(_rows(maps_a, maps_b, stats["shift_a"], stats["shift_b"], groups, first_index))
    if not many:
        stats.update({name: stats[name][lead] for name in PAIRED_STATISTICS if name in stats})
        stats.update({name: stats[name][0] for name in PAIRED_ROWS if name in stats})
        stats["shift_b"] = stats["shift_b"][0]
    stats["pooled"] = pooled
    return stats


def seis_combine_statistics(*stats: Mapping[str, Any]) -> dict[str, Any]:
    """Add up the statistics of several batches (or processes), about the first one's shifts.

    Statistics about other shifts are moved to those first (:func:`_reshift`); statistics without
    shifts count as taken about zero.

    Raises:
        ValueError: if no statistics are given or their shapes differ.
    """
    if not stats:
        raise ValueError("Expected statistics of at least one batch, but got none.")
    total = dict(stats[0])
    for other in stats[1:]:
        for name in set(_sum_names(total)) & set(_sum_names(other)):
            if total[name].shape != other[name].shape:
                raise ValueError(
                    f"Cannot combine statistics `{name}` of shapes {list(total[name].shape)} and"
                    f" {list(other[name].shape)}: the layers differ in channels or positions."
                )
        total = _add_statistics(total, other)
    total["pooled"] = any(bool(one.get("pooled", False)) for one in stats)
    return total


def _is_empty(stats: Mapping[str, Any]) -> bool:
    """Whether ``stats`` are a metric's defaults, before any update: scalar zeros."""
    return not stats["map_sum_a"].ndim


def _add_statistics(total: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """``total + other`` about ``total``'s shifts (``other``'s if ``total`` is empty).

    Image sides (:data:`ROW_STATISTICS`) are joined; beside channel Grams, they become Grams first.
    """
    if _is_empty(other):
        return dict(total)
    if _is_empty(total):
        return dict(other)
    if _has_rows(total) != _has_rows(other):
        total, other = _rows_to_grams(total), _rows_to_grams(other)
    shift_a, shift_b = _shifts(total)
    other = _reshift(other, shift_a, shift_b)
    out = {**total, **{name: total[name] + other[name] for name in _sum_names(total)}}
    if _has_rows(total):
        out.update({name: torch.cat([total[name], other[name]], dim=-2) for name in ("channel_rows_a", *PAIRED_ROWS)})
        out.update({name: torch.cat([total[name], other[name]]) for name in ("row_group", "row_has_null")})
    return {**out, "shift_a": shift_a, "shift_b": shift_b}


def _shifts(stats: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """The shifts of ``stats``: zeros where they have none (statistics from before shifts were kept)."""
    zero = torch.zeros((), dtype=torch.float64, device=stats["map_sum_a"].device)
    return stats.get("shift_a", zero), stats.get("shift_b", zero)


def _outer(x: Tensor, y: Tensor, unfolding: str) -> Tensor:
    """The Gram of maps ``x``, ``y`` [..., C, S] in one unfolding: ``xᵀy`` (spatial, S×S) or ``xyᵀ`` (channel, C×C)."""
    return x.mT @ y if unfolding == "spatial" else x @ y.mT


def _reshift(stats: Mapping[str, Any], shift_a: Tensor, shift_b: Tensor) -> dict[str, Any]:
    """``stats`` taken about ``shift_a``, ``shift_b`` instead of their own shifts.

    With ``d = K_old - K_new``: ``Σ(X - K_new) = s + n d`` and ``Σ(X - K_new)ᵀ(Y - K_new) =
    G + sₓᵀd_y + d_xᵀs_y + n d_xᵀd_y``, per group and transformation (``s`` the sums about the old
    shifts). The shifts are mean maps of the same kind of data, so ``d`` is of the order of the
    spread and nothing cancels.
    """
    old_a, old_b = _shifts(stats)
    d_a, d_b = old_a - shift_a, old_b - shift_b
    out = dict(stats)
    paired_lead = stats["map_sum_b"].ndim > stats["map_sum_a"].ndim  # a transformation axis K

    def count(name: str, lead: bool) -> Tensor:
        n = stats[name]
        return n.reshape(*n.shape, *((1,) if lead else ()), 1, 1)

    n_a, n_b, n_null = count("num_images", False), count("num_images", paired_lead), count("null_num_images", False)
    s_a, s_b = stats["map_sum_a"], stats["map_sum_b"]
    s_a_paired = s_a.unsqueeze(-3) if paired_lead else s_a
    null_a, null_b = stats["null_map_sum_a"], stats["null_map_sum_b"]
    # Each Gram sum: (sums of its left maps, their d), (sums of its right maps, their d), image count.
    sides = {
        "aa": ((s_a, d_a), (s_a, d_a), n_a),
        "bb": ((s_b, d_b), (s_b, d_b), n_b),
        "ab": ((s_a_paired, d_a), (s_b, d_b), n_b),
        "ab_null": ((null_a, d_a), (null_b, d_b), n_null),
    }
    rows = _has_rows(stats)
    for unfolding in ("spatial",) if rows else ("spatial", "channel"):
        for pair, ((s_x, d_x), (s_y, d_y), n) in sides.items():
            name = f"{unfolding}_gram_{pair}"
            moved = _outer(s_x, d_y, unfolding) + _outer(d_x, s_y, unfolding) + n * _outer(d_x, d_y, unfolding)
            out[name] = stats[name] + moved
    out["map_sum_a"] = s_a + n_a * d_a
    out["map_sum_b"] = s_b + n_b * d_b
    out["null_map_sum_a"] = null_a + n_null * d_a
    out["null_map_sum_b"] = null_b + n_null * d_b
    if rows:  # vectors [.., R, C] about the shifts [.., C, 1]: each moves by d, partners only where they exist
        move_b = d_b[..., None, :, 0] if paired_lead else d_b[None, :, 0]
        out["channel_rows_a"] = stats["channel_rows_a"] + d_a[None, :, 0]
        out["channel_rows_b"] = stats["channel_rows_b"] + move_b
        out["channel_rows_b_null"] = stats["channel_rows_b_null"] + stats["row_has_null"][:, None] * move_b
    out["shift_a"], out["shift_b"] = shift_a, shift_b
    return out
