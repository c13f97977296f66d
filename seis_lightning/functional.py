"""The SEIS math as pure functions over tensors, in the order of ``SEIS_SPEC.md``.

1. :func:`seis_statistics`: the streaming statistics of one batch of paired activations
   (image count, map sums, spatial and channel Gram sums, null cross Grams).
2. :func:`seis_combine_statistics`: batches and processes combine by addition.
3. :func:`seis_from_statistics`: covariances centred on the mean feature map, SVD denoising,
   CCA, and the three scores with their null baselines.
4. :func:`seis_scores`: the one-shot convenience, 1 to 3 in a row.
5. :func:`jackknife_se`: the delete-a-group jackknife's standard error (spec, "Uncertainty"), which
   :func:`seis_from_statistics` reports when the statistics are kept per group.

Everything that depends on the reference activations ``a`` alone (their sums, Grams and
eigendecompositions) is computed once and shared by every transformation passed as a sequence
``b`` (spec, "Cost").
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from seis_lightning._checks import check_options

LAYOUTS = ("channels_first", "channels_last")
SCORES = ("equivariance", "invariance", "channel_invariance")
SCORES_AND_NULLS = (*SCORES, *(f"{score}_null" for score in SCORES))
UNFOLDINGS = ("spatial", "channel")

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
# A centred variance below this share of the uncentred second moment counts as none: the rounding
# residue of ``ΣA_nᵀA_n - N ĀᵀĀ`` in float64 is about 1e-16 of it, and 1e-12 is a spread of 1e-6 of
# the maps' size, a few float32 rounding steps. Below it the layer is constant across images.
CONSTANT_TOLERANCE = 1e-12
# Neighbouring canonical correlations this close chain into a tied block, whose canonical vectors
# the SVD leaves to rounding; the principal-axes rule fixes them (spec, "Ties"). Float32 products
# spread exact ties by about 1e-7.
TIE_TOLERANCE = {"float64": 1e-9, "float32": 1e-6}
# CUDA compute capabilities whose float64 runs at half the float32 rate (P100, V100, A100, H100);
# other GPUs run it at 1/32 to 1/64, Apple MPS has none (spec, "Precision").
FULL_RATE_FLOAT64 = ((6, 0), (7, 0), (8, 0), (9, 0))
# Float32 Gram products carry rounding of about 1e-7 of λ_max (4e-8 to 1.2e-7 measured in the null
# space of rank-deficient maps, 256 to 262,144 rows): from float32 statistics, directions below
# 1e-6 λ_max are rounding, and ``eps`` is raised to this floor (:func:`statistics_eps`).
FLOAT32_EPS = 1e-6
# Gram products of at least this many variables are computed by blocks on and above the diagonal.
SYMMETRIC_GRAM_FROM = 64


class SEISWarning(UserWarning):
    """Warnings about the reliability of a SEIS score (too few samples, NaN scores)."""


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision of the Gram products on ``device``: ``"float64"`` or ``"float32"`` (spec, "Precision").

    ``"auto"`` picks ``"float64"`` on the CPU and on CUDA devices whose float64 runs at full rate
    (compute capability 6.0, 7.0, 8.0 or 9.0: :data:`FULL_RATE_FLOAT64`), and ``"float32"``
    elsewhere: Apple MPS, other GPUs. On the CPU float32 products are not within 1e-4 of float64
    everywhere (offsets of 1e5 times the spread reach 1e-4) and save little time (``bench/README.md``).

    Raises:
        ValueError: if ``precision`` is not one of ``("auto", "float64", "float32")``, or is
            ``"float64"`` on a device without float64 (MPS).
    """
    check_options(precision=precision)
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cpu":
            return "float64"
        full_rate = device.type == "cuda" and torch.cuda.get_device_capability(device) in FULL_RATE_FLOAT64
        return "float64" if full_rate else "float32"
    if precision == "float64" and not _has_float64(device):
        raise ValueError(f"Expected `precision` 'float32' or 'auto' on {device.type}, which has no float64.")
    return precision


def statistics_eps(eps: float, precision: str) -> float:
    """The ``eps`` to score statistics of ``precision`` with: at least :data:`FLOAT32_EPS` for float32."""
    return max(eps, FLOAT32_EPS) if precision == "float32" and eps >= 0 else eps


def _has_float64(device: torch.device) -> bool:
    return device.type != "mps"


@contextlib.contextmanager
def _ieee_float32() -> Iterator[None]:
    """Float32 products without TF32 (CUDA) or bf16 (oneDNN on CPU), whatever the user set; restored after."""
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    saved = [backend.fp32_precision for backend in backends]
    try:
        exact = torch.get_float32_matmul_precision() == "highest"
    except RuntimeError:  # torch refuses to answer once legacy and per-backend settings were mixed
        exact = False
    if exact and all(value in ("none", "ieee") for value in saved):
        yield
        return
    for backend in backends:
        backend.fp32_precision = "ieee"
    try:
        yield
    finally:
        for backend, value in zip(backends, saved):
            backend.fp32_precision = value


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
        x = pool(x.to(torch.float64 if _has_float64(x.device) else x.dtype), size)
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
        elif _has_float64(x.device):
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


def _float64_home(device: torch.device) -> torch.device:
    """Where float64 sums of tensors on ``device`` live (statistics, metric states): the device, or the CPU
    if it has no float64."""
    return device if _has_float64(device) else torch.device("cpu")


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
    layout: str = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
    jackknife_groups: int = 0,
    first_index: int = 0,
    precision: str = "auto",
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
        float64 tensors keyed by :data:`STATISTICS`. Paired statistics have a leading axis of
        length K when ``b`` is a sequence of K tensors (after the group axis, if any). They add up
        over batches and processes.

    Raises:
        ValueError: if shapes, devices or dtypes do not fit, or ``jackknife_groups`` is 1 or negative.
    """
    check_options(jackknife_groups=jackknife_groups)
    if isinstance(first_index, bool) or not isinstance(first_index, int) or first_index < 0:
        raise ValueError(f"Expected `first_index` to be a non-negative integer, but got {first_index!r}.")
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
    precision = resolve_precision(precision, a.device)
    # The maps keep their dtype: the unfoldings convert them on the way.
    maps_a, _ = seis_maps(a, layout, num_prefix_tokens, max_positions, dtype=None)
    maps_b = [seis_maps(item, layout, num_prefix_tokens, max_positions, dtype=None)[0] for item in bs]
    if jackknife_groups:
        stats = _group_statistics(maps_a, torch.stack(maps_b), jackknife_groups, first_index, precision)
        if not many:
            stats.update({name: stats[name][:, 0] for name in PAIRED_STATISTICS})
        return stats
    unfolded_a = _unfold([maps_a], precision)
    stats = {
        **_reference_statistics(maps_a, precision, unfolded_a),
        **_paired_statistics(maps_a, maps_b, precision, unfolded_a=unfolded_a),
    }
    if not many:
        stats.update({name: stats[name][0] for name in PAIRED_STATISTICS})
    return stats


def seis_combine_statistics(*stats: Mapping[str, Tensor]) -> dict[str, Tensor]:
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
    return total


def _whitener(cov: Tensor, second_moment: Tensor, keep: float, eps: float) -> Tensor | None:
    """SVD denoising (spec, step 2): ``V_k Λ_k^{-1/2}`` for the fewest directions holding ``keep``.

    ``None`` when nothing varies across images: the centred variance (the trace of ``cov``) is zero
    or below :data:`CONSTANT_TOLERANCE` of the uncentred ``second_moment``, where it is only the
    rounding left by subtracting the mean map from the Gram sums.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
    total = eigenvalues.sum()
    if not total > CONSTANT_TOLERANCE * second_moment:
        return None
    # The tolerance lets keep=1 keep exactly the non-negligible directions despite rounding.
    held = eigenvalues.cumsum(0) / total
    k_keep = int((held < keep - 1e-12).sum()) + 1
    k_eps = int((eigenvalues > eps * eigenvalues[0]).sum())
    k = max(1, min(k_keep, k_eps, len(eigenvalues)))
    return eigenvectors[:, :k] / eigenvalues[:k].sqrt()


def _tied_blocks(rho: Tensor, tolerance: float) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of at least two decreasing canonical correlations whose neighbours
    lie at most ``tolerance`` apart (chained: a block may span more than ``tolerance``; spec, "Ties")."""
    values = rho.tolist()
    blocks, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i - 1] - values[i] > tolerance:
            if i - start >= 2:
                blocks.append((start, i))
            start = i
    return blocks


def _svd(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``U, σ, V`` of ``m`` [kx, ky] (``r = min(kx, ky)`` columns), which never fails (spec, "Precision").

    LAPACK's default SVD (divide and conquer) may not converge on large tied blocks (1 seed in 40
    with hflip on a first conv layer); there, the CUDA ``gesvd`` driver, else the symmetric
    eigendecomposition of ``m mᵀ``: ``U`` its leading eigenvectors, ``σ`` the roots of their
    eigenvalues (errors ``1e-16 / σ``, below 1e-9 down to σ = 1e-7), ``v_i = mᵀu_i / σ_i``.
    """
    try:
        u, sigma, vt = torch.linalg.svd(m, full_matrices=False)
        return u, sigma, vt.mT
    except torch.linalg.LinAlgError:
        pass
    if m.device.type == "cuda":
        with contextlib.suppress(torch.linalg.LinAlgError):
            u, sigma, vt = torch.linalg.svd(m, full_matrices=False, driver="gesvd")
            return u, sigma, vt.mT
    return _svd_by_eigh(m)


def _svd_by_eigh(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The SVD of ``m`` from the eigendecomposition of ``m mᵀ`` (see :func:`_svd`)."""
    r = min(m.shape)
    eigenvalues, eigenvectors = torch.linalg.eigh(m @ m.mT)
    u = eigenvectors.flip(1)[:, :r]
    sigma = eigenvalues.flip(0)[:r].clamp_min(0).sqrt()
    v = m.mT @ u
    return u, sigma, v / torch.where(sigma > 0, sigma, 1.0)


def _cca(whitener_x: Tensor, cross: Tensor, whitener_y: Tensor, tie_tolerance: float) -> tuple[Tensor, Tensor]:
    """Canonical correlations ρ (clipped to [0, 1]) and alignments ``|cos(w_i, v_i)|`` (spec, steps 3-5, "Ties")."""
    m = whitener_x.mT @ cross @ whitener_y
    u, rho, z = _svd(m)
    for start, stop in _tied_blocks(rho, tie_tolerance):
        if not rho[start] > tie_tolerance:
            continue  # correlations tied at 0 add nothing to invariance, whatever their basis
        # Principal-axes basis of the block: U_bᵀ = Q R with diag(R) >= 0, U_b <- U_b Q (= Rᵀ).
        q, r = torch.linalg.qr(u[:, start:stop].mT)
        signs = torch.where(r.diagonal() < 0, -1.0, 1.0).to(q.dtype)
        u_block = u[:, start:stop] @ (q * signs)
        u = torch.cat([u[:, :start], u_block, u[:, stop:]], dim=1)
        z = torch.cat([z[:, :start], m.mT @ u_block / rho[start:stop], z[:, stop:]], dim=1)
    w, v = whitener_x @ u, whitener_y @ z
    alignment = (w * v).sum(0).abs() / (w.norm(dim=0) * v.norm(dim=0))
    # A zero correlation's v is zero from the eigh route: no alignment, and it counts 0 either way.
    return rho.clamp(0, 1), alignment.nan_to_num(0.0).clamp(0, 1)


def _centred_covariances(stats: Mapping[str, Tensor], unfolding: str) -> dict[str, Tensor]:
    """Covariances of one unfolding, centred on the mean feature map (spec, step 1)."""
    n = stats["num_images"]
    n_null = stats["null_num_images"]
    sum_a, sum_b = stats["map_sum_a"], stats["map_sum_b"]
    null_sum_a, null_sum_b = stats["null_map_sum_a"], stats["null_map_sum_b"]
    num_channels, num_positions = sum_a.shape
    if unfolding == "spatial":
        per_image = num_channels

        def outer(x: Tensor, y: Tensor) -> Tensor:
            return x.mT @ y

    else:
        per_image = num_positions

        def outer(x: Tensor, y: Tensor) -> Tensor:
            return x @ y.mT

    mean_a, mean_b = sum_a / n, sum_b / n
    # Σ_V (A_n - Ā)ᵀ(B_π(n) - B̄) over the images V that have a null partner.
    null_cross = (
        stats[f"{unfolding}_gram_ab_null"]
        - outer(mean_a, null_sum_b)
        - outer(null_sum_a, mean_b)
        + n_null * outer(mean_a, mean_b)
    )
    # The covariance of the original maps is the same for every transformation: seis_from_statistics
    # builds its whitener once.
    return {
        "yy": (stats[f"{unfolding}_gram_bb"] - n * outer(mean_b, mean_b)) / (n * per_image - 1),
        "yy_second_moment": stats[f"{unfolding}_gram_bb"].trace() / (n * per_image - 1),
        "xy": (stats[f"{unfolding}_gram_ab"] - n * outer(mean_a, mean_b)) / (n * per_image - 1),
        "xy_null": null_cross / (n_null * per_image - 1) if n_null >= 2 else None,
        "rows": n * per_image,
    }


def _nan_result(reason: str, num_channels: int, num_positions: int, num_images: int) -> dict[str, Any]:
    result: dict[str, Any] = {name: math.nan for name in SCORES}
    result.update({f"{name}_null": math.nan for name in SCORES})
    for unfolding in UNFOLDINGS:
        result.update({f"{unfolding}_kx": 0, f"{unfolding}_ky": 0, f"{unfolding}_rho": torch.empty(0)})
        result[f"{unfolding}_rho_null"] = torch.empty(0)
    result.update(num_images=num_images, num_channels=num_channels, num_positions=num_positions)
    result["reasons"] = {name: reason for name in SCORES_AND_NULLS}
    return result


def _scores_of_one(
    stats: Mapping[str, Tensor], whiteners_a: dict[str, Tensor | None], keep: float, eps: float, tie_tolerance: float
) -> dict[str, Any]:
    num_channels, num_positions = stats["map_sum_a"].shape
    num_images = int(stats["num_images"])
    if num_images < 2:
        return _nan_result(f"needs at least 2 images, got {num_images}", num_channels, num_positions, num_images)
    if not all(bool(torch.isfinite(stats[name]).all()) for name in STATISTICS):
        return _nan_result("the activations hold NaN or Inf values", num_channels, num_positions, num_images)
    result: dict[str, Any] = {"reasons": {}}
    score_of = {"spatial": "equivariance", "channel": "channel_invariance"}
    for unfolding in UNFOLDINGS:
        cov = _centred_covariances(stats, unfolding)
        whitener_x, whitener_y = whiteners_a[unfolding], _whitener(cov["yy"], cov["yy_second_moment"], keep, eps)
        score = score_of[unfolding]
        names = [score, f"{score}_null"] + (["invariance", "invariance_null"] if unfolding == "spatial" else [])
        result.update({f"{unfolding}_kx": 0, f"{unfolding}_ky": 0})
        result.update({f"{unfolding}_rho": torch.empty(0), f"{unfolding}_rho_null": torch.empty(0)})
        if whitener_x is None or whitener_y is None:
            side = "original" if whitener_x is None else "transformed"
            reason = f"the {side} activations do not vary across images (a dead or constant layer)"
            result.update({name: math.nan for name in names})
            result["reasons"].update({name: reason for name in names})
            continue
        kx, ky = whitener_x.shape[1], whitener_y.shape[1]
        result.update({f"{unfolding}_kx": kx, f"{unfolding}_ky": ky})
        rows = int(cov["rows"])
        if rows < 10 * max(kx, ky):
            warnings.warn(
                f"SEIS {unfolding} unfolding has {rows} rows for {max(kx, ky)} retained dimensions"
                f" (fewer than 10 per dimension): {score} is biased upwards; compare it with its null"
                " or use more probe images.",
                SEISWarning,
                stacklevel=4,
            )
        for suffix, cross in (("", cov["xy"]), ("_null", cov["xy_null"])):
            if cross is None:
                reason = "the null pairing needs batches of at least 2 images"
                result.update({f"{score}{suffix}": math.nan})
                result["reasons"][f"{score}{suffix}"] = reason
                if unfolding == "spatial":
                    result[f"invariance{suffix}"] = math.nan
                    result["reasons"][f"invariance{suffix}"] = reason
                continue
            rho, alignment = _cca(whitener_x, cross, whitener_y, tie_tolerance)
            result[f"{unfolding}_rho{suffix}"] = rho
            result[f"{score}{suffix}"] = float(rho.mean())
            if unfolding == "spatial":
                result[f"invariance{suffix}"] = float((rho * alignment).mean())
    result.update(num_images=num_images, num_channels=num_channels, num_positions=num_positions)
    return result


def seis_from_statistics(
    stats: Mapping[str, Tensor],
    *,
    keep: float = 0.99,
    eps: float = 1e-8,
    pooled: bool = False,
    precision: str = "float64",
) -> dict[str, Any] | list[dict[str, Any]]:
    """Turn summed statistics into scores (spec, "Compute, per unfolding").

    Args:
        stats: statistics from :func:`seis_statistics`, possibly combined over batches; with a
            leading group axis, scored with the delete-a-group jackknife (spec, "Uncertainty").
        keep: share of variance kept by the SVD denoising, in (0, 1].
        eps: directions with eigenvalue below ``eps * λ_max`` are dropped.
        pooled: whether the maps were pooled to the position cap (reported as is).
        precision: of the Gram products that built ``stats``, ``"float64"`` or ``"float32"``: it sets
            the tie tolerance (1e-9, 1e-6; spec, "Ties") and raises ``eps`` for float32 to
            :data:`FLOAT32_EPS` (:func:`statistics_eps`).

    Returns:
        One mapping per transformation (a list when the statistics hold several) with the float
        scores ``equivariance``, ``invariance``, ``channel_invariance`` and ``<score>_null``, the
        retained dimensions ``spatial_kx``, ``spatial_ky``, ``channel_kx``, ``channel_ky``, the
        canonical correlations ``spatial_rho``, ``channel_rho`` (and ``*_rho_null``),
        ``num_images``, ``num_channels``, ``num_positions``, ``pooled``, and ``reasons``: why each
        NaN score is NaN. Statistics with a group axis (``jackknife_groups``) add the standard
        errors ``<score>_se`` and ``<score>_null_se`` and, under ``jackknife``, each score's G
        leave-one-group-out values (for :func:`jackknife_se` of a mean over draws).

    Raises:
        ValueError: if ``keep`` or ``eps`` is out of range or a statistic is missing.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"Expected `keep` in (0, 1], but got {keep}.")
    if not 0 <= eps < 1:
        raise ValueError(f"Expected `eps` in [0, 1), but got {eps}.")
    if precision not in TIE_TOLERANCE:
        raise ValueError(f"Expected `precision` to be one of {tuple(TIE_TOLERANCE)}, but got {precision!r}.")
    missing = [name for name in STATISTICS if name not in stats]
    if missing:
        raise ValueError(f"Statistics are missing {missing}; build them with `seis_statistics`.")
    num_groups = stats["num_images"].shape[0] if stats["num_images"].ndim else 0
    if num_groups and bool((stats["num_images"] == 0).any()) and bool(stats["num_images"].sum() > 0):
        raise ValueError(
            f"Expected `jackknife_groups` at most the number of probe images, but got jackknife_groups={num_groups}"
            f" for {int(stats['num_images'].sum())} images; use fewer groups or more probe images."
        )
    total = {name: stats[name].sum(0) for name in STATISTICS} if num_groups else stats
    many = total["map_sum_b"].ndim == 3
    eps, tie_tolerance = statistics_eps(eps, precision), TIE_TOLERANCE[precision]
    results = _scores_of_set(total, keep, eps, tie_tolerance)
    for k, result in enumerate(results):
        result["pooled"] = pooled
        if result["reasons"]:
            where = f" (transformation {k})" if many else ""
            details = "; ".join(f"{name}: {reason}" for name, reason in result["reasons"].items())
            warnings.warn(f"SEIS scores are NaN{where}: {details}.", SEISWarning, stacklevel=2)
    if num_groups:
        # Delete-a-group jackknife (spec, "Uncertainty"): the scores without group g come from the
        # total minus group g, A's whiteners included; only the total warns.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SEISWarning)
            left_out = [
                _scores_of_set({name: total[name] - stats[name][g] for name in STATISTICS}, keep, eps, tie_tolerance)
                for g in range(num_groups)
            ]
        for k, result in enumerate(results):
            replicates = {
                name: torch.tensor([one[k][name] for one in left_out], dtype=torch.float64) for name in SCORES_AND_NULLS
            }
            result.update({f"{name}_se": jackknife_se(replicates[name]) for name in SCORES_AND_NULLS})
            result["jackknife"] = replicates
    return results if many else results[0]


def _scores_of_set(stats: Mapping[str, Tensor], keep: float, eps: float, tie_tolerance: float) -> list[dict[str, Any]]:
    """Scores of every transformation in ungrouped statistics, A's whiteners built once."""
    many = stats["map_sum_b"].ndim == 3
    num_channels, num_positions = stats["map_sum_a"].shape
    reference = {name: stats[name] for name in REFERENCE_STATISTICS}
    whiteners_a: dict[str, Tensor | None] = {"spatial": None, "channel": None}
    if int(stats["num_images"]) >= 2 and all(bool(torch.isfinite(t).all()) for t in reference.values()):
        n = stats["num_images"]
        sum_a = stats["map_sum_a"]
        mean_a = sum_a / n
        for unfolding, gram, centre, rows in (
            ("spatial", stats["spatial_gram_aa"], mean_a.mT @ mean_a, n * num_channels),
            ("channel", stats["channel_gram_aa"], mean_a @ mean_a.mT, n * num_positions),
        ):
            whiteners_a[unfolding] = _whitener((gram - n * centre) / (rows - 1), gram.trace() / (rows - 1), keep, eps)
    num_transforms = stats["map_sum_b"].shape[0] if many else 1
    return [
        _scores_of_one(
            {**reference, **{name: stats[name][k] if many else stats[name] for name in PAIRED_STATISTICS}},
            whiteners_a,
            keep,
            eps,
            tie_tolerance,
        )
        for k in range(num_transforms)
    ]


def jackknife_se(replicates: Tensor) -> float:
    """Delete-a-group jackknife standard error from G leave-one-group-out values (spec, "Uncertainty").

    ``se = sqrt((G - 1) / G · Σ_g (s_(g) - mean_g s_(g))²)``. For a score averaged over several
    draws of a random transformation, pass the draws' replicates averaged per group, e.g.
    ``torch.stack([r["jackknife"]["invariance"] for r in results]).mean(0)``: the SE of the mean.

    Raises:
        ValueError: if there are fewer than 2 replicates.
    """
    replicates = torch.as_tensor(replicates, dtype=torch.float64).flatten()
    num_groups = replicates.numel()
    if num_groups < 2:
        raise ValueError(f"Expected at least 2 jackknife replicates, but got {num_groups}.")
    return float(((num_groups - 1) / num_groups * (replicates - replicates.mean()).square().sum()).sqrt())


def seis_scores(
    a: Tensor,
    b: Tensor | Sequence[Tensor],
    *,
    keep: float = 0.99,
    eps: float = 1e-8,
    layout: str = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
    jackknife_groups: int = 0,
    precision: str = "auto",
) -> dict[str, Any] | list[dict[str, Any]]:
    """SEIS scores of activations ``a = f(x)`` against ``b = f(T x)`` in one call.

    The null pairs image ``n`` with the transformed image ``n - 1`` (mod N) of its batch.

    Example:
        >>> import torch
        >>> from seis_lightning.functional import seis_scores
        >>> a = torch.randn(64, 8, 6, 6, generator=torch.Generator().manual_seed(0))
        >>> scores = seis_scores(a, a.flip(-1))  # mirrored maps: moved, not lost
        >>> round(scores["equivariance"], 4), scores["invariance"] < 0.5
        (1.0, True)

    Args:
        a: activations of the original images.
        b: activations of the transformed images (or a sequence, one per transformation).
        keep: see :func:`seis_from_statistics`.
        eps: see :func:`seis_from_statistics`.
        layout: see :func:`seis_maps`.
        num_prefix_tokens: see :func:`seis_maps`.
        max_positions: see :func:`seis_maps`.
        jackknife_groups: 0 (off), or G >= 2 to add jackknife standard errors ``<score>_se``
            (image n in group n mod G; see :func:`seis_statistics`).
        precision: of the Gram products: see :func:`seis_statistics`. Float32 statistics are
            scored with ``eps`` at least :data:`FLOAT32_EPS` (:func:`statistics_eps`).

    Returns:
        See :func:`seis_from_statistics`.
    """
    stats = seis_statistics(
        a,
        b,
        layout=layout,
        num_prefix_tokens=num_prefix_tokens,
        max_positions=max_positions,
        jackknife_groups=jackknife_groups,
        precision=precision,
    )
    pooled = seis_maps(a[:1], layout, num_prefix_tokens, max_positions, dtype=None)[1]
    return seis_from_statistics(
        stats, keep=keep, eps=eps, pooled=pooled, precision=resolve_precision(precision, a.device)
    )
