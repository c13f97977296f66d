"""Streaming statistics of paired activations (``SEIS_SPEC.md``, "Streaming statistics", "Large maps").

:func:`seis_maps` brings activations to maps ``[N, C, S]``; :func:`seis_statistics` gives the
sufficient statistics of one batch (image count, map sums, spatial and channel Gram sums, null
cross Grams; float64), which :func:`seis_combine_statistics` adds over batches and processes.
Everything that depends on the reference activations ``a`` alone is computed once and shared by
every transformation passed as a sequence ``b`` (spec, "Cost").
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
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

# Gram products of at least this many variables are computed by blocks on and above the diagonal.
SYMMETRIC_GRAM_FROM = 64


def seis_maps(
    x: Tensor,
    layout: str = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
    dtype: torch.dtype | None = torch.float64,
) -> tuple[Tensor, bool]:
    """Bring activations to maps ``[N, C, S]``, average-pooled (in float64) to ``max_positions``.

    Args:
        x: ``[N, C, *spatial]`` (1 to 3 spatial axes), ``[N, T, D]`` tokens with
            ``layout="channels_last"``, or ``[N, D]`` vectors (``S = 1``).
        layout: ``"channels_first"`` or ``"channels_last"`` (channels on the last axis).
        num_prefix_tokens: leading tokens (class/register tokens) to drop; only for a single
            sequence axis.
        max_positions: cap on ``S``; larger maps are average-pooled to fit (spec, "Large maps").
        dtype: of the maps; ``None`` keeps float32 and float64 activations as they are (a view
            where possible) and brings other dtypes to float32.

    Returns:
        The maps and whether they were pooled.

    Raises:
        ValueError: if the layout, the number of axes or ``num_prefix_tokens`` does not fit.
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
    if dtype is not None:
        x = x.to(dtype)
    elif x.dtype not in (torch.float32, torch.float64):
        x = x.float()
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
    spatial = x.shape[2:]
    pooled = math.prod(spatial) > max_positions
    if pooled:
        ratio = (max_positions / math.prod(spatial)) ** (1 / len(spatial))
        size = tuple(max(1, math.floor(s * ratio + 1e-9)) for s in spatial)
        pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[len(spatial) - 1]
        x = pool(x.to(torch.float64 if _precision._has_float64(x.device) else x.dtype), size)
    x = x.reshape(x.shape[0], x.shape[1], -1)
    return (x if dtype is None else x.to(dtype)), pooled


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


def _unfold(maps: Sequence[Tensor], precision: str) -> tuple[Tensor, Tensor, Tensor]:
    """Spatial ``[J, N*C, S]`` and channel ``[N*S, J*C]`` unfoldings of J maps ``[N, C, S]``, and their sums.

    The channel unfoldings sit side by side (map j is column block j: :func:`_column_blocks`), so
    that one product reads them all. In ``float64`` both unfoldings are views of one buffer
    ``[J, C, N, S]``, and the spatial unfolding's rows run over (channel, image), which gives the same
    products as (image, channel) without a second copy. In ``float32`` the spatial rows run over
    (image, channel), which rounds about 10 times less than (channel, image) in the float32
    products, and each map is centred on its own mean map, so that its products keep what varies
    across images, not what they share (spec, "Precision"). The map sums ``[J, C, S]`` are float64.
    """
    n, c, s = maps[0].shape
    home = _float64_home(maps[0].device)
    float64 = precision != "float32"
    dtype = torch.float64 if float64 else torch.float32
    # float64: both unfoldings are views of one buffer [J, C, N, S] (spatial rows over (channel, image));
    # float32: spatial rows over (image, channel), which round less in float32 products.
    buffer = maps[0].new_empty(len(maps), c, n, s, dtype=dtype) if float64 else None
    spatial = buffer.transpose(1, 2) if float64 else maps[0].new_empty(len(maps), n, c, s, dtype=dtype)
    sums = []
    for block, x in zip(spatial, maps):
        if not n:
            sums.append(torch.zeros(c, s, dtype=torch.float64, device=home))
        elif _precision._has_float64(x.device):
            # Centre on the float64 mean map: its part at this precision, then the rounding of the rest.
            mean = _float64_mean(x)
            first = mean.to(dtype)
            torch.sub(x.to(dtype), first, out=block)
            if not float64:
                block.sub_((mean - first).to(dtype))
            sums.append(n * mean.to(home))
        else:  # no float64 here (MPS): the mean as a float32 mean plus the mean of what it leaves
            first = x.mean(0, dtype=torch.float32)
            torch.sub(x, first, out=block)
            rest = block.mean(0)
            block.sub_(rest)
            sums.append(n * (first.to(home, torch.float64) + rest.to(home, torch.float64)))
    if float64:
        return buffer.view(len(maps), c * n, s), buffer.view(-1, n * s).mT, torch.stack(sums)
    channel = spatial.transpose(1, 2).contiguous()  # [J, C, N, S]
    return spatial.view(len(maps), n * c, s), channel.view(-1, n * s).mT, torch.stack(sums)


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
    """Add ``n·m̄_xᵀm̄_y`` in float64 to ``grams`` ``[K, D, D]``, from map sums ``[K, C, S]`` (``sum_x`` may broadcast).

    Float32 products of centred maps plus these are the Gram sums (spec, "Precision").
    """
    x, y = (sum_x.mT, sum_y) if unfolding == "spatial" else (sum_x, sum_y.mT)
    return grams.baddbmm_(x.expand(len(grams), -1, -1), y, alpha=1 / max(n, 1))


def _reference_statistics(
    a: Tensor, precision: str = "float64", unfolded: tuple[Tensor, Tensor, Tensor] | None = None
) -> dict[str, Tensor]:
    """Statistics of the original maps ``a`` [N, C, S] (spec, "Streaming statistics"), float64 sums.

    ``unfolded``: ``_unfold([a], precision)`` when the caller has it already.
    """
    n = a.shape[0]
    spatial, channel, sums = unfolded or _unfold([a], precision)
    stats = {
        "num_images": torch.full((), float(n), dtype=torch.float64, device=sums.device),  # no host copy
        "map_sum_a": sums[0],
    }
    for unfolding, x in (("spatial", spatial[0]), ("channel", channel)):
        with _ieee_float32():
            gram = _gram(x).to(sums.device, torch.float64)
        _add_centres(gram[None], sums[:1], sums[:1], n, unfolding)
        stats[f"{unfolding}_gram_aa"] = gram
    return stats


def _paired_statistics(
    a: Tensor,
    b: Sequence[Tensor],
    precision: str = "float64",
    b_null: Sequence[Tensor] | None = None,
    unfolded_a: tuple[Tensor, Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """Statistics of ``a`` [N, C, S] against ``b`` [K, N, C, S], one entry per transformation.

    ``b_null`` [K, N, C, S], when given, holds each image's null partner already gathered (the
    jackknife's groups take theirs from the whole batch); without it, image n meets n - 1.
    ``unfolded_a``: ``_unfold([a], precision)`` when the caller has it already.

    Every map is centred on its own mean map and ``n·m̄ᵀm̄`` added back in float64 (spec,
    "Precision"). The channel cross Grams of all K transformations come from one wide product
    ``Aᵀ[B_1 … B_K]``.
    """
    num_transforms = len(b)
    n, c, s = a.shape
    float32 = precision == "float32"
    spatial_a, channel_a, sum_a = unfolded_a or _unfold([a], precision)
    maps_b = [*b, *b_null] if b_null is not None else list(b)
    spatial_b, channel_b, sums = _unfold(maps_b, precision)
    home = sums.device
    sum_b = sums[:num_transforms]
    null_sum_b = sum_b if b_null is None else sums[num_transforms:]
    stats = {"map_sum_b": sum_b}
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
        ys = _column_blocks(channel_b, len(maps_b))
        channel_gram = channel_a.new_empty(num_transforms, c, c)
        for k in range(num_transforms):
            _gram(ys[k], out=channel_gram[k])
        if b_null is None:
            channel_cross, channel_null = channel_a.mT @ channel_b, _rolled_cross(channel_a, channel_b, s)
        else:
            channel_cross, channel_null = (channel_a.mT @ channel_b).tensor_split(2, dim=1)
        channel = [channel_gram.to(home, torch.float64), _per_map(channel_cross, home), _per_map(channel_null, home)]
    for unfolding, (gram, cross, null) in (("spatial", spatial), ("channel", channel)):
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
            if "null" in name:
                stats[name].zero_()
    return {name: stats[name] for name in PAIRED_STATISTICS}


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
    a: Tensor, b: Tensor, groups: int, first_index: int, precision: str = "float64"
) -> dict[str, Tensor]:
    """Statistics of ``a`` [N, C, S] and ``b`` [K, N, C, S] per jackknife group, stacked first (spec, "Uncertainty").

    Image n of the batch, global index ``first_index + n``, goes to group ``(first_index + n) mod G``
    with its null pair (image n against transformed image n - 1 of the batch).
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
            **_reference_statistics(a_group, precision),
            **_paired_statistics(a_group, b[:, start::groups], precision, b_null=b_null),
        }
    zeros = {name: torch.zeros_like(value) for name, value in next(iter(per_group.values())).items()}
    return {name: torch.stack([per_group.get(g, zeros)[name] for g in range(groups)]) for name in STATISTICS}


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
) -> dict[str, Tensor]:
    """Streaming statistics of one batch of paired activations (spec, "Streaming statistics").

    Args:
        a: activations of the original images (see :func:`seis_maps` for the shapes).
        b: activations of the transformed images, same shape as ``a``; or a sequence of such
            tensors, one per transformation, which share the statistics of ``a``.
        layout: see :func:`seis_maps`.
        num_prefix_tokens: see :func:`seis_maps`.
        max_positions: see :func:`seis_maps`.
        jackknife_groups: 0 (off), or the number G >= 2 of groups of the delete-a-group jackknife
            (spec, "Uncertainty"): every statistic then carries a leading axis of length G.
        first_index: the global index of the batch's first image; image n goes to group
            ``(first_index + n) mod G``, with its null pair. Streaming callers count the images seen.
        precision: of the Gram products, ``"float64"``, ``"float32"`` (centred per batch, summed
            in float64) or ``"auto"`` (:func:`resolve_precision`; spec, "Precision").

    Returns:
        float64 tensors keyed by :data:`STATISTICS`, and ``pooled``: whether the maps were pooled
        to ``max_positions``. Paired statistics have a leading axis of length K when ``b`` is a
        sequence of K tensors (after the group axis, if any). They add up over batches and processes.

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
    return _statistics(a, b, options.resolved(a.device), first_index)


def _statistics(a: Tensor, b: Tensor | Sequence[Tensor], options: ResolvedOptions, first_index: int) -> dict:
    """:func:`seis_statistics` with validated, resolved options (:meth:`SEISOptions.resolved`)."""
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
    if groups:
        stats = _group_statistics(maps_a, torch.stack(maps_b), groups, first_index, precision)
        lead = (slice(None), 0)
    else:
        unfolded_a = _unfold([maps_a], precision)
        stats = {
            **_reference_statistics(maps_a, precision, unfolded_a),
            **_paired_statistics(maps_a, maps_b, precision, unfolded_a=unfolded_a),
        }
        lead = (0,)
    if not many:
        stats.update({name: stats[name][lead] for name in PAIRED_STATISTICS})
    stats["pooled"] = pooled
    return stats


def seis_combine_statistics(*stats: Mapping[str, Any]) -> dict[str, Any]:
    """Add up the statistics of several batches (or processes).

    Raises:
        ValueError: if no statistics are given or their shapes differ.
    """
    if not stats:
        raise ValueError("Expected statistics of at least one batch, but got none.")
    total = dict(stats[0])
    for other in stats[1:]:
        for name in STATISTICS:
            if total[name].shape != other[name].shape:
                raise ValueError(
                    f"Cannot combine statistics `{name}` of shapes {list(total[name].shape)} and"
                    f" {list(other[name].shape)}: the layers differ in channels or positions."
                )
            total[name] = total[name] + other[name]
    total["pooled"] = any(bool(one.get("pooled", False)) for one in stats)
    return total
