"""Magnitude sweeps: which scored transformations make up a curve, and the numbers that sum each up.

A sweep is the transformations that share a ``family`` (``rotate``, ``translate``, ``scale``, ``shift``) at two
or more magnitudes, e.g. from ``"rotate:0:60:20"`` (see :func:`~seis_lightning.transforms.parse_transforms`).
Its summaries per layer (spec, "Transformations"):

- the *half-way magnitude* of equivariance, for a fall: where equivariance has fallen half-way from its
  value at the sweep's first (smallest) magnitude to its null, interpolated linearly between the two
  magnitudes that bracket the crossing. A small half-way magnitude means the layer stops following the
  input early. It is ``NaN``, with a reason (:func:`halfway`, :func:`sweep_summary_reasons`), where it is
  undefined: the curve never falls that far within the sweep, starts at its null, or rises back above
  half-way (not a fall: a periodic curve, which the aliasing gap sums up);
- the *aliasing gap* of a ``shift`` sweep (pixels) at a layer of total stride ``s``: mean equivariance at
  the shifts that are non-zero multiples of ``s`` minus the mean at odd half-multiples of ``s``
  (:func:`aliasing_gap`, :func:`aliasing_gaps`, :func:`layer_stride`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from seis_lightning.transforms import GeometricTransform

Scores = Mapping[str, Mapping[str, Mapping[str, float]]]  # transform -> layer -> score -> value
SUMMARY = "equivariance_halfway"
SHIFT_FAMILY = "shift"  # the sweep in pixels, whose curve the aliasing gap sums up
ALIASING = "aliasing_gap"  # its name next to the scores: rows of seis_scores.csv, comparisons
_ON_GRID = 1e-6  # a shift is a multiple of the stride when shift / stride is this close to a whole number


def sweep_families(transforms: Sequence[GeometricTransform]) -> dict[str, list[tuple[float, str]]]:
    """``{family: [(magnitude, transform name), ...]}`` in increasing magnitude, for every family scored
    at two or more magnitudes."""
    families: dict[str, dict[float, str]] = {}
    for transform in transforms:
        if transform.family is not None and transform.magnitude is not None:
            families.setdefault(transform.family, {}).setdefault(transform.magnitude, transform.name)
    return {family: sorted(members.items()) for family, members in families.items() if len(members) > 1}


def halfway(magnitudes: Sequence[float], values: Sequence[float], nulls: Sequence[float]) -> tuple[float, str]:
    """``(half-way magnitude, reason)``: where ``values`` fall to half-way between ``values[0]`` and the mean of
    ``nulls``, linearly interpolated, and ``""``; or ``NaN`` and why it is undefined (a NaN score, a start not
    above the null, no fall that far, or a curve that rises back above half-way: not a fall).

    Example:
        >>> halfway([0, 10, 20], [1.0, 0.8, 0.4], [0.2, 0.2, 0.2])  # half-way is 0.6
        (15.0, '')
        >>> halfway([0, 1, 2], [1.0, 0.5, 0.95], [0.2, 0.2, 0.2])[1]
        'equivariance rises back above half-way (0.6) at 2 after falling below it at 1: not a fall (a periodic curve?)'
    """
    if not values:
        return math.nan, "no magnitudes"
    for magnitude, value, null in zip(magnitudes, values, nulls, strict=True):
        if not (math.isfinite(value) and math.isfinite(null)):
            return math.nan, f"equivariance or its null is NaN at magnitude {magnitude:g}"
    null = sum(nulls) / len(nulls)
    target = (values[0] + null) / 2
    if values[0] <= null:
        return math.nan, (
            f"equivariance at the first magnitude {magnitudes[0]:g} ({values[0]:.3g})"
            f" is not above its null ({null:.3g})"
        )
    crossing = next((k for k in range(1, len(values)) if values[k] <= target), None)
    if crossing is None:
        lowest = min(range(len(values)), key=values.__getitem__)
        return math.nan, (
            f"equivariance never falls half-way (to {target:.3g}) within the sweep:"
            f" lowest {values[lowest]:.3g} at {magnitudes[lowest]:g}"
        )
    back = next((k for k in range(crossing + 1, len(values)) if values[k] > target), None)
    if back is not None:
        return math.nan, (
            f"equivariance rises back above half-way ({target:.3g}) at {magnitudes[back]:g} after falling below it"
            f" at {magnitudes[crossing]:g}: not a fall (a periodic curve?)"
        )
    before, after = values[crossing - 1], values[crossing]
    fraction = (before - target) / (before - after)
    return magnitudes[crossing - 1] + fraction * (magnitudes[crossing] - magnitudes[crossing - 1]), ""


def halfway_magnitude(magnitudes: Sequence[float], values: Sequence[float], nulls: Sequence[float]) -> float:
    """The half-way magnitude of :func:`halfway`, ``NaN`` where it is undefined.

    Example:
        >>> halfway_magnitude([0, 10, 20], [1.0, 0.8, 0.4], [0.2, 0.2, 0.2])  # half-way is 0.6
        15.0
    """
    return halfway(magnitudes, values, nulls)[0]


def _halfways(prefix: str, scores: Scores, transforms: Sequence[GeometricTransform]) -> dict[str, tuple[float, str]]:
    summaries = {}
    for family, members in sweep_families(transforms).items():
        names = [name for _, name in members if name in scores]
        magnitudes = [magnitude for magnitude, name in members if name in scores]
        for layer in scores[names[0]] if names else ():
            values = [scores[name][layer]["equivariance"] for name in names]
            nulls = [scores[name][layer]["equivariance_null"] for name in names]
            summaries[f"{prefix}/sweep_{family}/{SUMMARY}/{layer}"] = halfway(magnitudes, values, nulls)
    return summaries


def sweep_summaries(prefix: str, scores: Scores, transforms: Sequence[GeometricTransform]) -> dict[str, float]:
    """The half-way magnitude of each layer of each sweep, ``<prefix>/sweep_<family>/equivariance_halfway/<layer>``
    (``NaN`` where undefined: :func:`sweep_summary_reasons` says why)."""
    return {key: value for key, (value, _) in _halfways(prefix, scores, transforms).items()}


def sweep_summary_reasons(prefix: str, scores: Scores, transforms: Sequence[GeometricTransform]) -> dict[str, str]:
    """Why each ``NaN`` of :func:`sweep_summaries` is undefined, under the same keys (only the ``NaN`` ones)."""
    return {key: reason for key, (_, reason) in _halfways(prefix, scores, transforms).items() if reason}


class Stride(NamedTuple):
    """A layer's total stride along the width, in input pixels per map position; ``None`` and why when unknown."""

    stride: int | None
    reason: str


class AliasingGap(NamedTuple):
    """Mean equivariance at multiples of the stride minus the mean at odd half-multiples, its SE, and why a value
    is ``NaN`` (``""`` when the gap is defined; ``se`` is ``NaN`` when no SE or replicates were given)."""

    gap: float
    se: float
    reason: str


def layer_stride(input_hw: tuple[int, int], map_hw: tuple[int, int] | None) -> Stride:
    """The total stride of a layer whose map is ``map_hw`` for inputs ``input_hw``: input width over map width,
    when it divides (the stride along the width, which the ``shift`` sweep moves; the height is not used).

    Example:
        >>> layer_stride((28, 28), (14, 14))
        Stride(stride=2, reason='')

    Returns:
        ``(stride, "")``, or ``(None, reason)`` when the layer has no spatial map, is one position wide, or the
        widths do not divide (unpadded convolutions, odd sizes, upsampling): declare the stride then.
    """
    if map_hw is None:
        return Stride(None, "the layer has no spatial map (S = 1), so no stride: declare one if it has")
    width, map_width = int(input_hw[-1]), int(map_hw[-1])
    if map_width <= 1:
        return Stride(None, "the map is one position wide: no stride to alias at; declare one if it has")
    if width % map_width:
        return Stride(
            None,
            f"the input width {width} is not a multiple of the map's width {map_width} (unpadded convolutions,"
            " odd sizes or upsampling): the ratio is not the stride; declare it",
        )
    return Stride(width // map_width, "")


def aliasing_gap(
    shifts_px: Sequence[float],
    equivariance: Sequence[float],
    stride: float | None,
    se: Sequence[float] | None = None,
    replicates: Sequence[Sequence[float]] | None = None,
) -> AliasingGap:
    """The aliasing gap of a layer of total ``stride`` from its equivariance at horizontal shifts ``shifts_px``.

    ``gap = mean_{d in M} e(d) - mean_{d in H} e(d)``, with ``M`` the shifts that are non-zero multiples of the
    stride and ``H`` its odd half-multiples (``s/2, 3s/2, ...``, either sign); other shifts are not used. Its SE
    (spec, "Aliasing gap"): from ``replicates`` (the jackknife's replicates ``result["jackknife"]["equivariance"]``
    of each shift, ``[replicate][shift]``, the same half-samples at every shift), the sample standard deviation
    of the replicates' gaps; else from the per-shift ``se``, as if
    independent, ``sqrt(sum_M se^2 / |M|^2 + sum_H se^2 / |H|^2)`` (an upper side: scores at different shifts
    of the same images are positively correlated); else ``NaN``.

    Example:
        >>> aliasing_gap([0, 1, 2, 3], [1.0, 0.75, 1.0, 0.75], stride=2)  # 0, the identity, is not used
        AliasingGap(gap=0.25, se=nan, reason='')

    Raises:
        ValueError: for as many values (or SEs, or replicate entries) as shifts not given, or ``stride <= 0``.
    """
    count = len(shifts_px)
    if len(equivariance) != count or (se is not None and len(se) != count):
        raise ValueError(
            f"Expected one equivariance per shift: {count} shifts, {len(equivariance)} values"
            + ("" if se is None else f", {len(se)} SEs")
            + "."
        )
    if replicates is not None and any(len(row) != count for row in replicates):
        raise ValueError(f"Expected replicates [G][shift] with {count} shifts in every row.")
    if stride is not None and not stride > 0:
        raise ValueError(f"Expected a positive `stride`, but got {stride}.")
    if stride is None:
        return AliasingGap(math.nan, math.nan, "no stride: give the layer's total stride (layer_stride or declared)")
    ratios = [d / stride for d in shifts_px]
    multiples = [k for k, r in enumerate(ratios) if r != 0 and abs(r - round(r)) <= _ON_GRID]
    halves = [k for k, r in enumerate(ratios) if abs(r - 0.5 - round(r - 0.5)) <= _ON_GRID]
    if not multiples:
        return AliasingGap(math.nan, math.nan, f"no shift at a non-zero multiple of the stride {stride:g}")
    if not halves:
        return AliasingGap(math.nan, math.nan, f"no shift at an odd half-multiple of the stride {stride:g}")
    for k in multiples + halves:
        if not math.isfinite(equivariance[k]):
            return AliasingGap(math.nan, math.nan, f"equivariance is NaN at shift {shifts_px[k]:g}")

    def gap_of(values: Sequence[float]) -> float:
        return sum(values[k] for k in multiples) / len(multiples) - sum(values[k] for k in halves) / len(halves)

    if replicates is not None and len(replicates) >= 2:
        # The jackknife's replicates are scaled so that their sample standard deviation is the SE
        # (spec, "Uncertainty"): so is the gap's, a linear function of them.
        gaps = [gap_of(row) for row in replicates]
        mean = sum(gaps) / len(gaps)
        spread = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (len(gaps) - 1))
    elif se is not None:
        spread = math.sqrt(
            sum(se[k] ** 2 for k in multiples) / len(multiples) ** 2
            + sum(se[k] ** 2 for k in halves) / len(halves) ** 2
        )
    else:
        spread = math.nan
    return AliasingGap(gap_of(equivariance), spread, "")


def aliasing_gaps(
    scores: Scores, transforms: Sequence[GeometricTransform], strides: Mapping[str, float | None]
) -> dict[str, AliasingGap]:
    """The aliasing gap of each layer from the ``shift`` sweep among ``transforms`` (``{}`` without one), in the
    layers' order of ``scores``; per-shift SEs from ``equivariance_se`` when scored with the jackknife.

    Args:
        scores: ``{transform: {layer: {score: value}}}``, as :func:`~seis_lightning.score_model` returns.
        transforms: the scored transformations.
        strides: ``{layer: total stride}`` (:func:`layer_stride`, or declared); a layer missing or ``None`` gets
            a ``NaN`` gap with the reason.
    """
    members = [(m, name) for m, name in sweep_families(transforms).get(SHIFT_FAMILY, []) if name in scores]
    if len(members) < 2:
        return {}
    shifts = [magnitude for magnitude, _ in members]
    gaps = {}
    for layer in scores[members[0][1]]:
        values = [scores[name][layer] for _, name in members]
        se = [v["equivariance_se"] for v in values] if all("equivariance_se" in v for v in values) else None
        gap = aliasing_gap(shifts, [v["equivariance"] for v in values], strides.get(layer), se=se)
        if strides.get(layer) is None:
            gap = gap._replace(reason=f"no stride for layer {layer!r}: give it (layer_stride or declared)")
        gaps[layer] = gap
    return gaps
