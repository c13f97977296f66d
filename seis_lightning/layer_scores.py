"""A probe pass's scores from its layers' statistics (:class:`~seis_lightning.metric.SEISMetric`), layer by layer:
each transformation's draws averaged, their jackknife replicates turned into standard errors (spec,
"Uncertainty"), one layer's failure kept to that layer, and NaN scores with the reason for a layer or a
transformation that was not scored."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from torch import Tensor

from seis_lightning.functional import SCORES, SEISWarning, family_se
from seis_lightning.metric import SEISMetric
from seis_lightning.progress import advance
from seis_lightning.results import LOGGED, STANDARD_ERRORS, ProbeResult
from seis_lightning.transforms import GeometricTransform, ImageMap


class Family(NamedTuple):
    """What a pass scored: its transformations, their draws (in the metrics' draw order), and the jackknife's
    groups (0: none)."""

    transforms: Sequence[GeometricTransform]
    draws: Sequence[tuple[str, ImageMap]]
    jackknife_groups: int


def _empty(family: Family, layers: list[str]) -> ProbeResult:
    """A result for ``layers`` with no scores yet: an empty ``{layer: ...}`` per transformation."""
    return ProbeResult({t.name: {} for t in family.transforms}, {t.name: {} for t in family.transforms}, layers)


def compute_each(
    metrics: dict[str, SEISMetric],
    layers: list[str],
    reasons: dict[str, str],
    family: Family,
    *,
    isolate: bool,
    bar: Any = None,
) -> ProbeResult:
    """:func:`compute` layer by layer, so that one layer whose computation fails loses only itself (in one
    process: across processes computing is a collective that every rank must reach); ``bar`` advances by a
    layer as each is computed."""
    if not isolate:
        return compute(metrics, layers, reasons, family, bar)
    result = _empty(family, layers)
    for layer in layers:
        try:
            one = compute({k: v for k, v in metrics.items() if k == layer}, [layer], reasons, family, bar)
        except Exception as error:
            reasons[layer] = f"computing its scores failed ({type(error).__name__}: {error})"
            one = compute({}, [layer], reasons, family, bar)
        for transform in result.scores:
            result.scores[transform].update(one.scores[transform])
            result.draws[transform].update(one.draws[transform])
        result.reasons.update(one.reasons)
        result.warnings += one.warnings
    return result


def compute(
    metrics: dict[str, SEISMetric], layers: list[str], reasons: dict[str, str], family: Family, bar: Any = None
) -> ProbeResult:
    """The scores of ``layers`` per transformation of the ``family``: the mean over its draws, and
    ``<score>_se`` with its jackknife groups; a layer without a metric has NaN scores and its reason from
    ``reasons``. The metrics' :class:`SEISWarning` are collected per layer."""
    _, draws, jackknife_groups = family
    names = LOGGED + (STANDARD_ERRORS if jackknife_groups else ())
    result = _empty(family, layers)
    for layer in layers:
        if layer not in metrics:
            why = reasons.get(layer, "it produced no output in the probe pass")
            result.reasons[layer] = f"SEIS layer {layer!r} was not scored: {why}."
            for transform in result.scores:
                result.scores[transform][layer] = {name: math.nan for name in names}
            advance(bar, layer)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SEISWarning)
            per_draw = metrics[layer].compute()
        result.warnings += [(layer, str(w.message)) for w in caught if issubclass(w.category, SEISWarning)]
        replicates: dict[str, dict[str, list[Tensor]]] = {}
        for (transform, _), one in zip(draws, per_draw):
            result.draws[transform].setdefault(layer, []).append({name: one[name] for name in LOGGED})
            for score in SCORES if jackknife_groups else ():
                replicates.setdefault(transform, {}).setdefault(score, []).append(one["jackknife"][score])
        for transform, per_transform in result.draws.items():
            values = {name: sum(d[name] for d in per_transform[layer]) / len(per_transform[layer]) for name in LOGGED}
            for score, per_draw_replicates in replicates.get(transform, {}).items():
                values[f"{score}_se"] = family_se(per_draw_replicates)
            result.scores[transform][layer] = values
        advance(bar, layer)
    return result


def with_failed_transforms(
    result: ProbeResult, transforms: Sequence[GeometricTransform], failed: Mapping[str, str], jackknife_groups: int
) -> ProbeResult:
    """``result`` with NaN scores for the transformations in ``failed`` (``{name: why}``), in the order of
    ``transforms``."""
    if not failed:
        return result
    names = LOGGED + (STANDARD_ERRORS if jackknife_groups else ())
    nan = {layer: {name: math.nan for name in names} for layer in result.layers}
    result.scores = {t.name: result.scores.get(t.name, nan) for t in transforms}
    result.draws = {t.name: result.draws.get(t.name, {}) for t in transforms}
    result.transform_reasons = {
        name: f"SEIS transformation {name!r} was not scored: {why}" for name, why in failed.items()
    }
    return result
