"""The SEIS math as pure functions over tensors, in the order of ``SEIS_SPEC.md``.

1. :func:`seis_statistics` (:mod:`seis_lightning.statistics`): the streaming statistics of one
   batch of paired activations; :func:`seis_combine_statistics` adds them over batches and processes.
2. :func:`seis_from_statistics` (:mod:`seis_lightning.scores`): covariances centred on the mean
   feature map, SVD denoising, CCA, and the three scores with their null baselines;
   :func:`jackknife_se` and :func:`family_se` their standard errors (spec, "Uncertainty").
3. :func:`seis_scores`: the one-shot convenience, 1 and 2 in a row.

The precision policy is :mod:`seis_lightning._precision`; the options, :mod:`seis_lightning.options`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from seis_lightning._precision import FLOAT32_EPS, FULL_RATE_FLOAT64, TIE_TOLERANCE, statistics_eps
from seis_lightning.options import LAYOUTS, Layout, Precision, SEISOptions, resolve_precision
from seis_lightning.scores import (
    CONSTANT_TOLERANCE,
    SCORES,
    SCORES_AND_NULLS,
    UNFOLDINGS,
    SEISResult,
    SEISWarning,
    family_se,
    jackknife_se,
    seis_from_statistics,
)
from seis_lightning.statistics import (
    PAIRED_STATISTICS,
    REFERENCE_STATISTICS,
    SHIFTS,
    STATISTICS,
    _bounded,
    _statistics,
    seis_combine_statistics,
    seis_maps,
    seis_statistics,
)

__all__ = [
    "CONSTANT_TOLERANCE",
    "FLOAT32_EPS",
    "FULL_RATE_FLOAT64",
    "LAYOUTS",
    "PAIRED_STATISTICS",
    "REFERENCE_STATISTICS",
    "SCORES",
    "SCORES_AND_NULLS",
    "SHIFTS",
    "STATISTICS",
    "TIE_TOLERANCE",
    "UNFOLDINGS",
    "SEISResult",
    "SEISWarning",
    "family_se",
    "jackknife_se",
    "resolve_precision",
    "seis_combine_statistics",
    "seis_from_statistics",
    "seis_maps",
    "seis_scores",
    "seis_statistics",
    "statistics_eps",
]


def seis_scores(
    a: Tensor,
    b: Tensor | Sequence[Tensor],
    *,
    keep: float = 0.99,
    eps: float = 1e-8,
    layout: Layout = "channels_first",
    num_prefix_tokens: int = 0,
    max_positions: int = 1024,
    jackknife_groups: int = 0,
    precision: Precision = "auto",
) -> SEISResult | list[SEISResult]:
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
    options = SEISOptions(
        keep=keep,
        eps=eps,
        layout=layout,
        num_prefix_tokens=num_prefix_tokens,
        max_positions=max_positions,
        jackknife_groups=jackknife_groups,
        precision=precision,
    ).resolved(a.device)
    # Vector layers on fewer images than channels are scored from the image side (spec, "Streaming statistics").
    stats = _bounded(_statistics(a, b, options, first_index=0, channel_rows=True))
    return seis_from_statistics(stats, keep=options.keep, eps=options.eps, precision=options.precision)
