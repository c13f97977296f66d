"""Magnitude sweeps: which scored transformations make up a curve, and the one number that sums each up.

A sweep is the transformations that share a ``family`` (``rotate``, ``translate``, ``scale``) at two or
more magnitudes, e.g. from ``"rotate:0:60:20"`` (see :func:`~seis_lightning.transforms.parse_transforms`).
Its summary per layer is the *half-way magnitude* of equivariance: where equivariance has fallen half-way
from its value at the sweep's first (smallest) magnitude to its null, interpolated linearly between the
two magnitudes that bracket the crossing. A small half-way magnitude means the layer stops following the
input early; ``NaN`` means it never falls that far within the sweep (or starts at its null).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from seis_lightning.transforms import GeometricTransform

Scores = Mapping[str, Mapping[str, Mapping[str, float]]]  # transform -> layer -> score -> value
SUMMARY = "equivariance_halfway"


def sweep_families(transforms: Sequence[GeometricTransform]) -> dict[str, list[tuple[float, str]]]:
    """``{family: [(magnitude, transform name), ...]}`` in increasing magnitude, for every family scored
    at two or more magnitudes."""
    families: dict[str, dict[float, str]] = {}
    for transform in transforms:
        if transform.family is not None and transform.magnitude is not None:
            families.setdefault(transform.family, {}).setdefault(transform.magnitude, transform.name)
    return {family: sorted(members.items()) for family, members in families.items() if len(members) > 1}


def halfway_magnitude(magnitudes: Sequence[float], values: Sequence[float], nulls: Sequence[float]) -> float:
    """Where ``values`` first fall to half-way between ``values[0]`` and the mean of ``nulls``, linearly
    interpolated; ``NaN`` when they never do or ``values[0]`` is not above the null.

    Example:
        >>> halfway_magnitude([0, 10, 20], [1.0, 0.8, 0.4], [0.2, 0.2, 0.2])  # half-way is 0.6
        15.0
    """
    finite = [math.isfinite(v) for v in (*values, *nulls)]
    if not values or not all(finite):
        return math.nan
    null = sum(nulls) / len(nulls)
    target = (values[0] + null) / 2
    if values[0] <= null:
        return math.nan
    for k in range(1, len(values)):
        if values[k] <= target:
            fraction = (values[k - 1] - target) / (values[k - 1] - values[k])
            return magnitudes[k - 1] + fraction * (magnitudes[k] - magnitudes[k - 1])
    return math.nan


def sweep_summaries(prefix: str, scores: Scores, transforms: Sequence[GeometricTransform]) -> dict[str, float]:
    """The half-way magnitude of each layer of each sweep, ``<prefix>/sweep_<family>/equivariance_halfway/<layer>``."""
    summaries = {}
    for family, members in sweep_families(transforms).items():
        names = [name for _, name in members if name in scores]
        magnitudes = [magnitude for magnitude, name in members if name in scores]
        for layer in scores[names[0]] if names else ():
            values = [scores[name][layer]["equivariance"] for name in names]
            nulls = [scores[name][layer]["equivariance_null"] for name in names]
            summaries[f"{prefix}/sweep_{family}/{SUMMARY}/{layer}"] = halfway_magnitude(magnitudes, values, nulls)
    return summaries
