"""Scores from summed statistics (``SEIS_SPEC.md``, "Compute, per unfolding", "Ties", "Uncertainty").

Covariances centred on the mean feature map, SVD denoising, CCA with the tie rule, the three scores
with their null baselines, and the delete-half jackknife's standard errors.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict

import torch
from torch import Tensor

from seis_lightning._precision import TIE_TOLERANCE, statistics_eps
from seis_lightning.options import check_options
from seis_lightning.statistics import (
    PAIRED_ROWS,
    PAIRED_STATISTICS,
    REFERENCE_STATISTICS,
    ROW_STATISTICS,
    SHIFTS,
    _has_rows,
    _of_groups,
    _outer,
    _shifts,
    _sum_names,
)

SCORES = ("equivariance", "invariance", "channel_invariance")
SCORES_AND_NULLS = (*SCORES, *(f"{score}_null" for score in SCORES))
UNFOLDINGS = ("spatial", "channel")

# Variation across images below this share of the activations' own size (root mean squares of the
# centred and the uncentred values) is what float64 cannot resolve about the shift: each value
# carries 1.1e-16 of its size, and 1e-14 is about 90 such steps. Below it the layer is constant up
# to rounding; above it the centred sums resolve the spread at any offset (spec, "Precision").
CONSTANT_TOLERANCE = 1e-14

# Delete-half jackknife (spec, "Uncertainty"): at most this many half-samples of the G groups, each
# scored like the total (so HALF_SAMPLES + 1 score sets per layer), drawn with this seed when
# there are more to choose from.
HALF_SAMPLES = 32
HALF_SAMPLE_SEED = 0


class SEISResult(TypedDict, total=False):
    """The scores of one layer and transformation (:func:`seis_from_statistics`)."""

    equivariance: float
    invariance: float
    channel_invariance: float
    equivariance_null: float
    invariance_null: float
    channel_invariance_null: float
    spatial_kx: int
    spatial_ky: int
    channel_kx: int
    channel_ky: int
    spatial_rho: Tensor
    channel_rho: Tensor
    spatial_rho_null: Tensor
    channel_rho_null: Tensor
    num_images: int
    num_channels: int
    num_positions: int
    pooled: bool
    reasons: dict[str, str]
    # with jackknife groups (spec, "Uncertainty"): the delete-half jackknife
    equivariance_se: float
    invariance_se: float
    channel_invariance_se: float
    equivariance_null_se: float
    invariance_null_se: float
    channel_invariance_null_se: float
    jackknife: dict[str, Tensor]


class SEISWarning(UserWarning):
    """Warnings about the reliability of a SEIS score (too few samples, NaN scores)."""


def _whitener(cov: Tensor, second_moment: Tensor, keep: float, eps: float, precision: str) -> Tensor | str:
    """SVD denoising (spec, step 2): ``V_k Λ_k^{-1/2}`` for the fewest directions holding ``keep``.

    Directions below ``eps`` are dropped: below ``eps · λ_max`` for float64 statistics; for float32,
    below ``eps · vᵀ diag(cov) v`` for each unit eigenvector ``v``, the size of float32 rounding in
    that direction (spec, "Precision"), so that small but real channels stay. A reason (a ``str``)
    instead when nothing varies across images beyond what float64 resolves: the centred variance
    (the trace of ``cov``) at most :data:`CONSTANT_TOLERANCE` squared of the uncentred
    ``second_moment``.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
    return _kept_directions(eigenvalues, eigenvectors, cov.diagonal(), second_moment, keep, eps, precision)


def _whitener_of_rows(rows: Tensor, shift: Tensor, keep: float, eps: float, precision: str) -> Tensor | str:
    """:func:`_whitener` of the covariance of vectors ``rows`` [n, D] taken about ``shift`` [D, 1], from the
    image side (n×n).

    With ``x`` the centred vectors, ``x xᵀ = U Σ² Uᵀ``: the covariance ``xᵀx / (n - 1)`` has the nonzero
    eigenvalues ``σ²/(n - 1)`` with eigenvectors ``xᵀu / ‖xᵀu‖`` and is zero elsewhere (rank at most n - 1),
    so the same directions are kept and the same whitener returned (columns up to sign; spec, "Streaming
    statistics").
    """
    n = rows.shape[0]
    x = rows - rows.mean(0)
    second_moment = (rows + shift[:, 0]).square().sum() / (n - 1)
    eigenvalues, u = torch.linalg.eigh(x @ x.mT / (n - 1))
    eigenvalues, u = eigenvalues.flip(0).clamp_min(0), u.flip(1)
    eigenvectors = x.mT @ u
    eigenvectors = eigenvectors / eigenvectors.norm(dim=0).clamp_min(torch.finfo(x.dtype).tiny)
    diagonal = x.square().sum(0) / (n - 1)
    return _kept_directions(eigenvalues, eigenvectors, diagonal, second_moment, keep, eps, precision)


def _kept_directions(
    eigenvalues: Tensor,
    eigenvectors: Tensor,
    diagonal: Tensor,
    second_moment: Tensor,
    keep: float,
    eps: float,
    precision: str,
) -> Tensor | str:
    """The whitener (or the reason) of :func:`_whitener` from the covariance's eigenvalues (decreasing,
    non-negative), unit eigenvectors and diagonal."""
    total = eigenvalues.sum()
    if not total > 0:
        return "do not vary across images (a dead or constant layer)"
    if not total > CONSTANT_TOLERANCE**2 * second_moment:
        spread = float((total / second_moment).sqrt())
        return (
            f"do not vary across images beyond rounding: their spread is {spread:.1e} of their size, below"
            f" the {CONSTANT_TOLERANCE:.0e} that float64 resolves (a constant layer)"
        )
    # The tolerance lets keep=1 keep exactly the non-negligible directions despite rounding.
    held = eigenvalues.cumsum(0) / total
    k_keep = int((held < keep - 1e-12).sum()) + 1
    per_direction = precision == "float32"
    floor = eps * (eigenvectors.square() * diagonal[:, None]).sum(0) if per_direction else eps * eigenvalues[0]
    kept = (eigenvalues > floor) & (torch.arange(len(eigenvalues), device=eigenvalues.device) < k_keep)
    kept[0] = True
    return eigenvectors[:, kept] / eigenvalues[kept].sqrt()


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


# The eigh route's singular values and vectors carry errors of about 1e-16 · σ_max/σ_i and
# 1e-16 · σ_max/g_i (g_i: the gap from σ_i to its nearest untied neighbour), and move a score by about
# 1e-16 times their mean (measured 1.7e-16 over the zoo): below this mean it is the route, 1e-11 off
# LAPACK's SVD at most; above it (near-ties, σ near 0), LAPACK's SVD.
EIGH_ROUTE_CONDITION = 1e5


def _svd(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``U, σ, V`` of ``m`` [kx, ky] (``r = min(kx, ky)`` columns), which never fails (spec, "Precision").

    First the symmetric eigendecomposition of the smaller of ``m mᵀ`` and ``mᵀm`` (about 2x cheaper
    than LAPACK's SVD; spec, "Compute, per unfolding"), kept where its errors are below 1e-11
    (:data:`EIGH_ROUTE_CONDITION`). Else LAPACK's default SVD (divide and conquer), which may not
    converge on large tied blocks (1 seed in 40 with hflip on a first conv layer); there, the CUDA
    ``gesvd`` driver, else the eigh route whatever its errors (``1e-16 / σ``, below 1e-9 down to
    σ = 1e-7).
    """
    route = _svd_by_eigh(m)
    if _eigh_route_condition(route[1]) <= EIGH_ROUTE_CONDITION:
        return route
    try:
        u, sigma, vt = torch.linalg.svd(m, full_matrices=False)
        return u, sigma, vt.mT
    except torch.linalg.LinAlgError:
        pass
    if m.device.type == "cuda":
        with contextlib.suppress(torch.linalg.LinAlgError):
            u, sigma, vt = torch.linalg.svd(m, full_matrices=False, driver="gesvd")
            return u, sigma, vt.mT
    return route


def _svd_by_eigh(m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The SVD of ``m`` from the eigendecomposition of ``m mᵀ`` or ``mᵀm``, the smaller (see :func:`_svd`)."""
    if m.shape[0] > m.shape[1]:
        v, sigma, u = _svd_by_eigh(m.mT)
        return u, sigma, v
    eigenvalues, eigenvectors = torch.linalg.eigh(m @ m.mT)
    u = eigenvectors.flip(1)
    sigma = eigenvalues.flip(0).clamp_min(0).sqrt()
    v = m.mT @ u
    return u, sigma, v / torch.where(sigma > 0, sigma, 1.0)


def _eigh_route_condition(sigma: Tensor) -> float:
    """``mean_i(σ_max/σ_i) + mean_i(σ_max/g_i)``, ``g_i`` the gap from ``σ_i`` to its nearest neighbour
    over the gaps above 1e-9 (ties below it take the principal-axes basis, whichever the route)."""
    if not len(sigma) or not sigma[0] > 0:
        return math.inf
    scaled = sigma / sigma[0]
    gaps = scaled[:-1] - scaled[1:]
    nearest = torch.minimum(
        torch.cat([gaps, gaps.new_full((1,), math.inf)]), torch.cat([gaps.new_full((1,), math.inf), gaps])
    )
    untied = nearest[(nearest > 1e-9) & nearest.isfinite()]
    by_gap = float((1 / untied).mean()) if len(untied) else 0.0
    return float((1 / scaled).mean()) + by_gap


def _cca(
    whitener_x: Tensor, cross: Tensor, whitener_y: Tensor, tie_tolerance: float, overlap: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Canonical correlations ρ (clipped to [0, 1]) and alignments ``|cos(w_i, v_i)|`` (spec, steps 3-5, "Ties").

    ``overlap``: ``Wxᵀ Wy``, shared by a draw's score and null: ``w_iᵀv_i = u_iᵀ Wxᵀ Wy z_i``, and
    ``‖w_i‖² = Σ_k u_ki² ‖Wx e_k‖²`` (the whiteners' columns are orthogonal), so the canonical
    vectors are never formed in position space. ``None`` (the channel unfolding, which reads ρ
    only): ρ and ``None``, from the singular values alone.
    """
    m = whitener_x.mT @ cross @ whitener_y
    if overlap is None:
        return _canonical_correlations(m), None
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
    inner = (u * (overlap @ z)).sum(0).abs()
    norm_w = (u.square() * whitener_x.square().sum(0)[:, None]).sum(0)
    norm_v = (z.square() * whitener_y.square().sum(0)[:, None]).sum(0)
    alignment = inner / (norm_w * norm_v).sqrt()
    # A zero correlation's v is zero from the eigh route: no alignment, and it counts 0 either way.
    return rho.clamp(0, 1), alignment.nan_to_num(0.0).clamp(0, 1)


def _canonical_correlations(m: Tensor) -> Tensor:
    """The singular values of ``m``, clipped to [0, 1] (the channel unfolding reads ρ only)."""
    with contextlib.suppress(torch.linalg.LinAlgError):
        return torch.linalg.svdvals(m).clamp(0, 1)
    return _svd(m)[1].clamp(0, 1)


def _second_moment(gram: Tensor, map_sum: Tensor, shift: Tensor, n: Tensor) -> Tensor:
    """``Σ_n ‖X_n‖²`` (uncentred) from a Gram sum and map sum about ``shift``: ``tr G + 2⟨s, K⟩ + n‖K‖²``."""
    return gram.trace() + 2 * (map_sum * shift).sum() + n * shift.square().sum()


class _Covariances(NamedTuple):
    """The covariances of one unfolding and transformation, centred on the mean feature maps (spec, step 1)."""

    yy: Tensor
    yy_second_moment: Tensor  # uncentred, the scale of "does not vary" (:data:`CONSTANT_TOLERANCE`)
    xy: Tensor
    xy_null: Tensor | None  # None: no image has a null partner
    rows: int


def _centred_covariances(stats: Mapping[str, Tensor], unfolding: str) -> _Covariances:
    """Covariances of one unfolding, centred on the mean feature map (spec, step 1).

    The statistics may be taken about any shift (:data:`~seis_lightning.statistics.SHIFTS`): the
    centred Grams do not depend on it.
    """
    n = stats["num_images"]
    n_null = stats["null_num_images"]
    sum_a, sum_b = stats["map_sum_a"], stats["map_sum_b"]
    null_sum_a, null_sum_b = stats["null_map_sum_a"], stats["null_map_sum_b"]
    num_channels, num_positions = sum_a.shape
    per_image = num_channels if unfolding == "spatial" else num_positions
    gram_bb, gram_ab, gram_ab_null = (stats[f"{unfolding}_gram_{pair}"] for pair in ("bb", "ab", "ab_null"))

    def outer(x: Tensor, y: Tensor) -> Tensor:
        return _outer(x, y, unfolding)

    mean_a, mean_b = sum_a / n, sum_b / n
    # Σ_V (A_n - Ā)ᵀ(B_π(n) - B̄) over the images V that have a null partner.
    null_cross = gram_ab_null - outer(mean_a, null_sum_b) - outer(null_sum_a, mean_b) + n_null * outer(mean_a, mean_b)
    # The covariance of the original maps is the same for every transformation: seis_from_statistics
    # builds its whitener once.
    return _Covariances(
        yy=(gram_bb - n * outer(mean_b, mean_b)) / (n * per_image - 1),
        yy_second_moment=_second_moment(gram_bb, sum_b, _shifts(stats)[1], n) / (n * per_image - 1),
        xy=(gram_ab - n * outer(mean_a, mean_b)) / (n * per_image - 1),
        xy_null=null_cross / (n_null * per_image - 1) if n_null >= 2 else None,
        rows=int(n * per_image),
    )


class _ImageSide(NamedTuple):
    """A vector layer's channel unfolding for one transformation, as its centred vectors (the image
    side, :data:`~seis_lightning.statistics.ROW_STATISTICS`): A's and B's, A's that have a null
    partner and their partners' (centred on the means of all images, as the Gram route's null)."""

    x: Tensor
    y: Tensor
    x_null: Tensor
    y_null: Tensor

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    def whitened_cross(self, whitener_x: Tensor, whitener_y: Tensor, null: bool) -> Tensor | None:
        """``M = Wxᵀ Cxy Wy = (X Wx)ᵀ(Y Wy) / (n - 1)`` (the null's over its pairs), never forming ``Cxy``;
        ``None`` for the null when fewer than 2 images have a partner."""
        x, y = (self.x_null, self.y_null) if null else (self.x, self.y)
        if len(x) < 2:
            return None
        return (x @ whitener_x).mT @ (y @ whitener_y) / (len(x) - 1)


def _image_side(stats: Mapping[str, Tensor]) -> _ImageSide:
    """The :class:`_ImageSide` of statistics holding one transformation's vectors."""
    rows_a, rows_b, rows_null = (stats[name] for name in ("channel_rows_a", *PAIRED_ROWS))
    x, mean_b = rows_a - rows_a.mean(0), rows_b.mean(0)
    has_null = stats["row_has_null"] > 0
    return _ImageSide(x, rows_b - mean_b, x[has_null], rows_null[has_null] - mean_b)


@dataclass
class _UnfoldingScores:
    """What one unfolding gives: its score (equivariance for the spatial unfolding, channel
    invariance for the channel one), invariance (spatial only), their nulls, and why any is NaN."""

    kx: int = 0
    ky: int = 0
    rho: Tensor = field(default_factory=lambda: torch.empty(0))
    rho_null: Tensor = field(default_factory=lambda: torch.empty(0))
    score: float = math.nan
    score_null: float = math.nan
    invariance: float = math.nan
    invariance_null: float = math.nan
    reasons: dict[str, str] = field(default_factory=dict)  # by score name, e.g. "equivariance_null"


# The score names of each unfolding's fields (spec, steps 4 and 5).
_NAMES = {
    "spatial": {
        "score": "equivariance",
        "score_null": "equivariance_null",
        "invariance": "invariance",
        "invariance_null": "invariance_null",
    },
    "channel": {"score": "channel_invariance", "score_null": "channel_invariance_null"},
}


def _result(
    spatial: _UnfoldingScores, channel: _UnfoldingScores, num_images: int, num_channels: int, num_positions: int
) -> SEISResult:
    return SEISResult(
        equivariance=spatial.score,
        invariance=spatial.invariance,
        channel_invariance=channel.score,
        equivariance_null=spatial.score_null,
        invariance_null=spatial.invariance_null,
        channel_invariance_null=channel.score_null,
        spatial_kx=spatial.kx,
        spatial_ky=spatial.ky,
        channel_kx=channel.kx,
        channel_ky=channel.ky,
        spatial_rho=spatial.rho,
        channel_rho=channel.rho,
        spatial_rho_null=spatial.rho_null,
        channel_rho_null=channel.rho_null,
        num_images=num_images,
        num_channels=num_channels,
        num_positions=num_positions,
        reasons={**spatial.reasons, **channel.reasons},
    )


def _nan_result(reason: str, num_channels: int, num_positions: int, num_images: int) -> SEISResult:
    unfoldings = [
        _UnfoldingScores(reasons=dict.fromkeys(_NAMES[unfolding].values(), reason)) for unfolding in UNFOLDINGS
    ]
    return _result(*unfoldings, num_images, num_channels, num_positions)


def _scores_of_one(
    stats: Mapping[str, Tensor], whiteners_a: dict[str, Tensor | str], keep: float, eps: float, precision: str
) -> SEISResult:
    num_channels, num_positions = stats["map_sum_a"].shape
    num_images = int(stats["num_images"])
    if num_images < 2:
        return _nan_result(f"needs at least 2 images, got {num_images}", num_channels, num_positions, num_images)
    reason = _non_finite_reason(stats, precision)
    if reason:
        return _nan_result(reason, num_channels, num_positions, num_images)
    spatial = _unfolding_scores(stats, "spatial", whiteners_a["spatial"], keep, eps, precision)
    channel = _unfolding_scores(stats, "channel", whiteners_a["channel"], keep, eps, precision)
    return _result(spatial, channel, num_images, num_channels, num_positions)


def _non_finite_reason(stats: Mapping[str, Tensor], precision: str) -> str:
    """Why statistics hold NaN or Inf values, or ``""``: the activations do, or only their Gram products.

    The map sums and shifts are float64 sums of the activations themselves: finite there and not in
    the Grams, the products overflowed (float32 above about 1e19).
    """
    if all(bool(torch.isfinite(stats[name]).all()) for name in (*_sum_names(stats), *ROW_STATISTICS) if name in stats):
        return ""
    sums = ("map_sum_a", "map_sum_b", "null_map_sum_a", "null_map_sum_b", *SHIFTS)
    if all(bool(torch.isfinite(stats[name]).all()) for name in sums if name in stats):
        fix = "use precision='float64'" if precision == "float32" else "scale the activations down"
        return f"the {precision} Gram products overflowed on finite activations; {fix}"
    return "the activations hold NaN or Inf values"


def _unfolding_scores(
    stats: Mapping[str, Tensor],
    unfolding: str,
    whitener_x: Tensor | str,
    keep: float,
    eps: float,
    precision: str,
) -> _UnfoldingScores:
    """Steps 2-5 of the spec for one unfolding."""
    names = _NAMES[unfolding]
    if unfolding == "channel" and _has_rows(stats):  # a vector layer on fewer images than channels
        side = _image_side(stats)
        whitener_y = _whitener_of_rows(stats["channel_rows_b"], _shifts(stats)[1], keep, eps, precision)
        rows = side.rows
    else:
        cov = _centred_covariances(stats, unfolding)
        whitener_y = _whitener(cov.yy, cov.yy_second_moment, keep, eps, precision)
        rows = cov.rows
    tie_tolerance = TIE_TOLERANCE[precision]
    out = _UnfoldingScores()
    if isinstance(whitener_x, str) or isinstance(whitener_y, str):
        side, reason = ("original", whitener_x) if isinstance(whitener_x, str) else ("transformed", whitener_y)
        out.reasons = dict.fromkeys(names.values(), f"the {side} activations {reason}")
        return out
    out.kx, out.ky = whitener_x.shape[1], whitener_y.shape[1]
    if rows < 10 * max(out.kx, out.ky):
        warnings.warn(
            f"SEIS {unfolding} unfolding has {rows} rows for {max(out.kx, out.ky)} retained dimensions"
            f" (fewer than 10 per dimension): {names['score']} is biased upwards; compare it with its null"
            " or use more probe images.",
            SEISWarning,
            stacklevel=5,
        )
    # Invariance reads the canonical vectors; the channel score, ρ only.
    overlap = whitener_x.mT @ whitener_y if unfolding == "spatial" else None

    def correlations(null: bool) -> tuple[Tensor, Tensor | None] | None:
        if unfolding == "channel" and _has_rows(stats):
            m = side.whitened_cross(whitener_x, whitener_y, null)
            return None if m is None else (_canonical_correlations(m), None)
        cross = cov.xy_null if null else cov.xy
        return None if cross is None else _cca(whitener_x, cross, whitener_y, tie_tolerance, overlap)

    rho, alignment = correlations(null=False)
    out.rho, out.score = rho, float(rho.mean())
    if alignment is not None:
        out.invariance = float((rho * alignment).mean())
    null = correlations(null=True)
    if null is None:
        reason = "the null pairing needs batches of at least 2 images"
        out.reasons = {name: reason for role, name in names.items() if role.endswith("_null")}
        return out
    rho, alignment = null
    out.rho_null, out.score_null = rho, float(rho.mean())
    if alignment is not None:
        out.invariance_null = float((rho * alignment).mean())
    return out


def seis_from_statistics(
    stats: Mapping[str, Tensor],
    *,
    keep: float = 0.99,
    eps: float = 1e-8,
    pooled: bool | None = None,
    precision: str = "float64",
) -> SEISResult | list[SEISResult]:
    """Turn summed statistics into scores (spec, "Compute, per unfolding").

    Args:
        stats: statistics from :func:`seis_statistics`, possibly combined over batches; with a
            leading group axis, scored with the delete-half jackknife over the groups (spec, "Uncertainty").
        keep: share of variance kept by the SVD denoising, in (0, 1].
        eps: directions with eigenvalue below ``eps * λ_max`` are dropped.
        pooled: whether the maps were pooled to the position cap (reported as is); ``None``: the
            statistics' own ``pooled`` (:func:`~seis_lightning.statistics.seis_statistics`).
        precision: of the Gram products that built ``stats``, ``"float64"`` or ``"float32"``: it sets
            the tie tolerance (1e-9, 1e-6; spec, "Ties") and raises ``eps`` for float32 to
            :data:`FLOAT32_EPS` (:func:`statistics_eps`), applied per direction (spec, "Precision").

    Returns:
        One mapping per transformation (a list when the statistics hold several) with the float
        scores ``equivariance``, ``invariance``, ``channel_invariance`` and ``<score>_null``, the
        retained dimensions ``spatial_kx``, ``spatial_ky``, ``channel_kx``, ``channel_ky``, the
        canonical correlations ``spatial_rho``, ``channel_rho`` (and ``*_rho_null``),
        ``num_images``, ``num_channels``, ``num_positions``, ``pooled``, and ``reasons``: why each
        NaN score is NaN. Statistics with a group axis (``jackknife_groups``) add the standard
        errors ``<score>_se`` and ``<score>_null_se`` and, under ``jackknife``, each score's
        replicates over the half-samples of the groups (:func:`jackknife_se`; :func:`family_se` for
        a mean over draws).

    Raises:
        ValueError: if ``keep`` or ``eps`` is out of range or a statistic is missing.
    """
    check_options(keep=keep, eps=eps)
    if precision not in TIE_TOLERANCE:
        raise ValueError(f"Expected `precision` to be one of {tuple(TIE_TOLERANCE)}, but got {precision!r}.")
    required = (*_sum_names(stats), *(ROW_STATISTICS if _has_rows(stats) else ()))
    missing = [name for name in required if name not in stats]
    if missing:
        raise ValueError(f"Statistics are missing {missing}; build them with `seis_statistics`.")
    num_groups = stats["num_images"].shape[0] if stats["num_images"].ndim else 0
    if num_groups and bool((stats["num_images"] == 0).any()) and bool(stats["num_images"].sum() > 0):
        raise ValueError(
            f"Expected `jackknife_groups` at most the number of probe images, but got jackknife_groups={num_groups}"
            f" for {int(stats['num_images'].sum())} images; use fewer groups or more probe images."
        )
    total = _of_groups(stats) if num_groups else stats
    many = total["map_sum_b"].ndim == 3
    eps = statistics_eps(eps, precision)
    results = _scores_of_set(total, keep, eps, precision)
    for k, result in enumerate(results):
        result["pooled"] = bool(stats.get("pooled", False)) if pooled is None else pooled
        if result["reasons"]:
            where = f" (transformation {k})" if many else ""
            details = "; ".join(f"{name}: {reason}" for name, reason in result["reasons"].items())
            warnings.warn(f"SEIS scores are NaN{where}: {details}.", SEISWarning, stacklevel=2)
    if num_groups:
        # Delete-half jackknife (spec, "Uncertainty"): each replicate scores the images of the groups
        # it keeps, A's whiteners included; only the total warns.
        kept_groups, scale = _half_samples(num_groups)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SEISWarning)
            halves = [_scores_of_set(_of_groups(stats, kept), keep, eps, precision) for kept in kept_groups]
        for k, result in enumerate(results):
            replicates = {}
            for name in SCORES_AND_NULLS:
                values = torch.tensor([one[k][name] for one in halves], dtype=torch.float64)
                replicates[name] = values.mean() + scale * (values - values.mean())
            se = {name: jackknife_se(replicates[name]) for name in SCORES_AND_NULLS}
            result.update(
                equivariance_se=se["equivariance"],
                invariance_se=se["invariance"],
                channel_invariance_se=se["channel_invariance"],
                equivariance_null_se=se["equivariance_null"],
                invariance_null_se=se["invariance_null"],
                channel_invariance_null_se=se["channel_invariance_null"],
                jackknife=replicates,
            )
    return results if many else results[0]


def _scores_of_set(stats: Mapping[str, Any], keep: float, eps: float, precision: str) -> list[SEISResult]:
    """Scores of every transformation in ungrouped statistics, A's whiteners built once."""
    many = stats["map_sum_b"].ndim == 3
    num_channels, num_positions = stats["map_sum_a"].shape
    shift_a, shift_b = _shifts(stats)
    reference_names = [name for name in REFERENCE_STATISTICS if name in stats]
    if _has_rows(stats):
        reference_names += ["channel_rows_a", "row_group", "row_has_null"]
    reference = {name: stats[name] for name in reference_names}
    # Read only when A's statistics are finite and count 2 images or more (_scores_of_one says why not).
    whiteners_a: dict[str, Tensor | str] = {"spatial": "", "channel": ""}
    if int(stats["num_images"]) >= 2 and all(bool(torch.isfinite(t).all()) for t in reference.values()):
        n = stats["num_images"]
        sum_a = stats["map_sum_a"]
        mean_a = sum_a / n
        for unfolding, rows in (("spatial", n * num_channels), ("channel", n * num_positions)):
            if unfolding == "channel" and "channel_rows_a" in reference:  # the image side (S = 1)
                whiteners_a[unfolding] = _whitener_of_rows(reference["channel_rows_a"], shift_a, keep, eps, precision)
                continue
            gram = stats[f"{unfolding}_gram_aa"]
            centred = gram - n * _outer(mean_a, mean_a, unfolding)
            second_moment = _second_moment(gram, sum_a, shift_a, n) / (rows - 1)
            whiteners_a[unfolding] = _whitener(centred / (rows - 1), second_moment, keep, eps, precision)
    num_transforms = stats["map_sum_b"].shape[0] if many else 1
    return [
        _scores_of_one(
            {
                **reference,
                **{
                    name: stats[name][k] if many else stats[name]
                    for name in (*PAIRED_STATISTICS, *PAIRED_ROWS)
                    if name in stats
                },
                "shift_b": shift_b[k] if many and shift_b.ndim == 3 else shift_b,
            },
            whiteners_a,
            keep,
            eps,
            precision,
        )
        for k in range(num_transforms)
    ]


def _half_samples(num_groups: int) -> tuple[list[tuple[int, ...]], float]:
    """The half-samples of the delete-half jackknife and the scale of their replicates (spec, "Uncertainty").

    Each half-sample keeps ``m = ceil(G/2)`` of the G groups (deletes ``d = G - m``): all ``C(G, m)``
    of them, in lexicographic order, when there are at most :data:`HALF_SAMPLES`; otherwise
    :data:`HALF_SAMPLES` distinct ones drawn by ``random.Random(HALF_SAMPLE_SEED)`` (its own stream,
    the same on every rank and every run). The scale ``sqrt(m/d · (N_S - 1)/N_S)``, ``N_S = C(G, m)``,
    makes the sample standard deviation of the scaled replicates the delete-d jackknife SE.
    """
    kept = -(-num_groups // 2)
    deleted = num_groups - kept
    count = math.comb(num_groups, kept)
    if count <= HALF_SAMPLES:
        halves = list(itertools.combinations(range(num_groups), kept))
    else:
        generator, seen = random.Random(HALF_SAMPLE_SEED), set()
        halves = []
        while len(halves) < HALF_SAMPLES:
            half = tuple(sorted(generator.sample(range(num_groups), kept)))
            if half not in seen:
                seen.add(half)
                halves.append(half)
    return halves, math.sqrt(kept / deleted * (count - 1) / count)


def jackknife_se(replicates: Tensor) -> float:
    """Standard error from the replicates under ``result["jackknife"][score]`` (spec, "Uncertainty").

    Their sample standard deviation, ``sqrt(Σ_b (r_b - mean_b r_b)² / (B - 1))``: the replicates are
    the delete-half jackknife's, scaled so that this is its SE. The replicates of two results from
    the same probe images and groups pair up: ``jackknife_se(r1 - r2)`` is the SE of the
    difference. For a score averaged over several draws of a random transformation, :func:`family_se`.

    Raises:
        ValueError: if there are fewer than 2 replicates.
    """
    replicates = torch.as_tensor(replicates, dtype=torch.float64).flatten()
    count = replicates.numel()
    if count < 2:
        raise ValueError(f"Expected at least 2 jackknife replicates, but got {count}.")
    return float(((replicates - replicates.mean()).square().sum() / (count - 1)).sqrt())


def family_se(replicates_per_draw: Sequence[Tensor]) -> float:
    """Standard error of a random family's score, the mean over its draws (spec, "Transformations", "Uncertainty").

    Each draw's replicates (``result["jackknife"][score]``, all from the same groups of probe images
    and so the same half-samples) are averaged per half-sample, and :func:`jackknife_se` of those
    means is the SE of the family's mean: the draws share their images, so their errors are not
    independent.

    Raises:
        ValueError: if no draws are given, or fewer than 2 replicates each.
    """
    if not replicates_per_draw:
        raise ValueError("Expected the jackknife replicates of at least one draw, but got none.")
    return jackknife_se(torch.stack([torch.as_tensor(r, dtype=torch.float64) for r in replicates_per_draw]).mean(0))
