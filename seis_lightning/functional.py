"""The SEIS math as pure functions over tensors, in the order of ``SEIS_SPEC.md``.

1. :func:`seis_statistics`: the streaming statistics of one batch of paired activations
   (image count, map sums, spatial and channel Gram sums, null cross Grams).
2. :func:`seis_combine_statistics`: batches and processes combine by addition.
3. :func:`seis_from_statistics`: covariances centred on the mean feature map, SVD denoising,
   CCA, and the three scores with their null baselines.
4. :func:`seis_scores`: the one-shot convenience, 1 to 3 in a row.

Everything that depends on the reference activations ``a`` alone (their sums, Grams and
eigendecompositions) is computed once and shared by every transformation passed as a sequence
``b`` (spec, "Cost").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

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
# Canonical correlations this close form a tied block, whose canonical vectors the SVD leaves to
# rounding; the principal-axes rule fixes them (spec, "Ties").
TIE_TOLERANCE = 1e-9


class SEISWarning(UserWarning):
    """Warnings about the reliability of a SEIS score (too few samples, NaN scores)."""


def seis_maps(
    x: Tensor,
    layout: str = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
) -> tuple[Tensor, bool]:
    """Bring activations to float64 maps ``[N, C, S]``, average-pooled to ``max_positions``.

    Args:
        x: ``[N, C, *spatial]`` (1 to 3 spatial axes), ``[N, T, D]`` tokens with
            ``layout="channels_last"``, or ``[N, D]`` vectors (``S = 1``).
        layout: ``"channels_first"`` or ``"channels_last"`` (channels on the last axis).
        num_prefix_tokens: leading tokens (class/register tokens) to drop; only for a single
            sequence axis.
        max_positions: cap on ``S``; larger maps are average-pooled to fit (spec, "Large maps").

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
    x = x.detach().to(torch.float64)
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
        x = pool(x, size)
    return x.reshape(x.shape[0], x.shape[1], -1), pooled


def _unfold(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Spatial unfolding ``[..., N*C, S]`` and channel unfolding ``[..., N*S, C]`` of ``[..., N, C, S]``."""
    n, c, s = maps.shape[-3:]
    lead = maps.shape[:-3]
    return maps.reshape(*lead, n * c, s), maps.transpose(-1, -2).reshape(*lead, n * s, c)


def _reference_statistics(a: Tensor) -> dict[str, Tensor]:
    spatial, channel = _unfold(a)
    return {
        "num_images": torch.full((), float(a.shape[0]), dtype=torch.float64, device=a.device),  # no host copy
        "map_sum_a": a.sum(0),
        "spatial_gram_aa": spatial.mT @ spatial,
        "channel_gram_aa": channel.mT @ channel,
    }


def _paired_statistics(a: Tensor, b: Tensor) -> dict[str, Tensor]:
    """Statistics of ``a`` [N, C, S] against ``b`` [K, N, C, S], one entry per transformation."""
    num_transforms, n, c, s = b.shape
    spatial_a, channel_a = _unfold(a)
    spatial_b, channel_b = _unfold(b)
    # Null pairing (spec, "Null baseline"): image n against another transformed image of the
    # batch (roll by one: n against n-1). A single image has no derangement and adds nothing to the null.
    has_null = n >= 2
    weight = 1.0 if has_null else 0.0
    map_sum_b = b.sum(1)
    return {
        "map_sum_b": map_sum_b,
        "spatial_gram_bb": spatial_b.mT @ spatial_b,
        "spatial_gram_ab": spatial_a.mT @ spatial_b,
        "channel_gram_bb": channel_b.mT @ channel_b,
        "channel_gram_ab": channel_a.mT @ channel_b,
        "null_num_images": torch.full((num_transforms,), weight * n, dtype=torch.float64, device=b.device),
        "null_map_sum_a": weight * a.sum(0).expand_as(map_sum_b),
        "null_map_sum_b": weight * map_sum_b,
        "spatial_gram_ab_null": weight * _rolled_cross(spatial_a, spatial_b, c),
        "channel_gram_ab_null": weight * _rolled_cross(channel_a, channel_b, s),
    }


def _rolled_cross(x: Tensor, y: Tensor, rows_per_image: int) -> Tensor:
    """``Σ_n X_nᵀ Y_{n-1}`` (n - 1 mod N) over the images of unfolded ``x`` [N*r, D] and ``y`` [..., N*r, D].

    The same as ``x.mT @ y.roll(r, dims=-2)``, from two views of ``y`` instead of a rolled copy.
    """
    r = rows_per_image
    return x[r:].mT @ y[..., :-r, :] + x[:r].mT @ y[..., -r:, :]


def seis_statistics(
    a: Tensor,
    b: Tensor | Sequence[Tensor],
    *,
    layout: str = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
) -> dict[str, Tensor]:
    """Streaming statistics of one batch of paired activations (spec, "Streaming statistics").

    Args:
        a: activations of the original images (see :func:`seis_maps` for the shapes).
        b: activations of the transformed images, same shape as ``a``; or a sequence of such
            tensors, one per transformation, which share the statistics of ``a``.
        layout: see :func:`seis_maps`.
        num_prefix_tokens: see :func:`seis_maps`.
        max_positions: see :func:`seis_maps`.

    Returns:
        float64 tensors keyed by :data:`STATISTICS`. Paired statistics have a leading axis of
        length K when ``b`` is a sequence of K tensors. They add up over batches and processes.

    Raises:
        ValueError: if shapes, devices or dtypes do not fit.
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
    maps_a, _ = seis_maps(a, layout, num_prefix_tokens, max_positions)
    maps_b = torch.stack([seis_maps(item, layout, num_prefix_tokens, max_positions)[0] for item in bs])
    stats = {**_reference_statistics(maps_a), **_paired_statistics(maps_a, maps_b)}
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


def _tied_blocks(rho: Tensor) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of at least two canonical correlations equal within :data:`TIE_TOLERANCE`."""
    values = rho.tolist()
    blocks, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i - 1] - values[i] > TIE_TOLERANCE:
            if i - start >= 2:
                blocks.append((start, i))
            start = i
    return blocks


def _cca(whitener_x: Tensor, cross: Tensor, whitener_y: Tensor) -> tuple[Tensor, Tensor]:
    """Canonical correlations ρ (clipped to [0, 1]) and alignments ``|cos(w_i, v_i)|`` (spec, steps 3-5, "Ties")."""
    m = whitener_x.mT @ cross @ whitener_y
    u, rho, zt = torch.linalg.svd(m, full_matrices=False)
    z = zt.mT
    for start, stop in _tied_blocks(rho):
        if not rho[start] > TIE_TOLERANCE:
            continue  # correlations tied at 0 add nothing to invariance, whatever their basis
        # Principal-axes basis of the block: U_bᵀ = Q R with diag(R) >= 0, U_b <- U_b Q (= Rᵀ).
        q, r = torch.linalg.qr(u[:, start:stop].mT)
        signs = torch.where(r.diagonal() < 0, -1.0, 1.0).to(q.dtype)
        u_block = u[:, start:stop] @ (q * signs)
        u = torch.cat([u[:, :start], u_block, u[:, stop:]], dim=1)
        z = torch.cat([z[:, :start], m.mT @ u_block / rho[start:stop], z[:, stop:]], dim=1)
    w, v = whitener_x @ u, whitener_y @ z
    alignment = (w * v).sum(0).abs() / (w.norm(dim=0) * v.norm(dim=0))
    return rho.clamp(0, 1), alignment.clamp(0, 1)


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
    stats: Mapping[str, Tensor], whiteners_a: dict[str, Tensor | None], keep: float, eps: float
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
                stacklevel=3,
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
            rho, alignment = _cca(whitener_x, cross, whitener_y)
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
) -> dict[str, Any] | list[dict[str, Any]]:
    """Turn summed statistics into scores (spec, "Compute, per unfolding").

    Args:
        stats: statistics from :func:`seis_statistics`, possibly combined over batches.
        keep: share of variance kept by the SVD denoising, in (0, 1].
        eps: directions with eigenvalue below ``eps * λ_max`` are dropped.
        pooled: whether the maps were pooled to the position cap (reported as is).

    Returns:
        One mapping per transformation (a list when the statistics hold several) with the float
        scores ``equivariance``, ``invariance``, ``channel_invariance`` and ``<score>_null``, the
        retained dimensions ``spatial_kx``, ``spatial_ky``, ``channel_kx``, ``channel_ky``, the
        canonical correlations ``spatial_rho``, ``channel_rho`` (and ``*_rho_null``),
        ``num_images``, ``num_channels``, ``num_positions``, ``pooled``, and ``reasons``: why each
        NaN score is NaN.

    Raises:
        ValueError: if ``keep`` or ``eps`` is out of range or a statistic is missing.
    """
    if not 0 < keep <= 1:
        raise ValueError(f"Expected `keep` in (0, 1], but got {keep}.")
    if not 0 <= eps < 1:
        raise ValueError(f"Expected `eps` in [0, 1), but got {eps}.")
    missing = [name for name in STATISTICS if name not in stats]
    if missing:
        raise ValueError(f"Statistics are missing {missing}; build them with `seis_statistics`.")
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
    results = []
    for k in range(num_transforms):
        one = {**reference, **{name: stats[name][k] if many else stats[name] for name in PAIRED_STATISTICS}}
        result = _scores_of_one(one, whiteners_a, keep, eps)
        result["pooled"] = pooled
        if result["reasons"]:
            where = f" (transformation {k})" if many else ""
            details = "; ".join(f"{name}: {reason}" for name, reason in result["reasons"].items())
            warnings.warn(f"SEIS scores are NaN{where}: {details}.", SEISWarning, stacklevel=2)
        results.append(result)
    return results if many else results[0]


def seis_scores(
    a: Tensor,
    b: Tensor | Sequence[Tensor],
    *,
    keep: float = 0.99,
    eps: float = 1e-8,
    layout: str = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
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

    Returns:
        See :func:`seis_from_statistics`.
    """
    stats = seis_statistics(a, b, layout=layout, num_prefix_tokens=num_prefix_tokens, max_positions=max_positions)
    pooled = seis_maps(a[:1], layout, num_prefix_tokens, max_positions)[1]
    return seis_from_statistics(stats, keep=keep, eps=eps, pooled=pooled)
